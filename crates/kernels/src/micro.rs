//! The register-tiled micro-kernel the convolution and the GEMM share.
//!
//! One call computes a tile of [`NR`] rows × up to [`micro_width`] columns:
//! `c[r][j] (+)= Σ_k v[k][j]·s[k][r]`. The *vector* operand `v` runs along the columns (contiguous
//! in the output rows) and comes in 16-lane pieces: piece `i` of step `k` is at
//! `v + k·step + i·stride` (a conv packs one panel of `mr` positions with `stride` 16; the GEMM's
//! weights are panels of 16 columns, `stride` = one whole panel). The *scalar* operand `s` is
//! packed `[k][NR]` and broadcast, one value per row. The accumulators start from the output, from a bias per row (a conv's
//! output channel) or from a bias per column (a linear layer's output).
//!
//! Tile shapes: AVX-512 6 rows × 4 vectors (64 columns, 24 of the 32 registers), AVX2 6 rows × 2
//! vectors (12 of 16), portable 6 × 16: the same [`NR`] rows everywhere, so a conv's weights,
//! packed once at load, fit whichever instruction set runs. (A 4 × 6-vector AVX-512 tile, fewer
//! broadcasts per FMA, was faster on L1-resident operands but not in the conv or the GEMM, where
//! its wider vector operand streams from L2.)

use crate::isa::Isa;

/// Rows per tile, and per packed panel of the scalar operand.
pub const NR: usize = 6;
/// Lanes per piece of the vector operand (one AVX-512 vector, two AVX2 ones).
pub const LANES: usize = 16;
/// The widest tile in columns.
pub const MR_MAX: usize = 64;

/// Tile width in columns for `isa`.
pub fn micro_width(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 64,
        Isa::Avx2 | Isa::Portable => 16,
    }
}

/// A zeroed `f32` buffer whose first element is 64-byte aligned (a cache line: the kernels'
/// 16-lane loads then never straddle two lines). A large `Vec` from the allocator starts 16
/// bytes into a page, which made every second AVX2 load and every AVX-512 load of a packed
/// panel a split load.
#[derive(Debug, Clone)]
pub struct AlignedVec {
    storage: Vec<f32>,
    start: usize,
    len: usize,
}

impl AlignedVec {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let storage = zeroed(len + 16);
        let start = storage.as_ptr().align_offset(64).min(16);
        AlignedVec { storage, start, len }
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.storage[self.start..][..self.len]
    }

    /// The values, writable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.storage[self.start..][..self.len]
    }
}

/// `len` zeros. On Linux a buffer of 8 MiB or more is offered transparent huge pages
/// (`MADV_HUGEPAGE`, which is what THP's usual `madvise` mode waits for): SDXL's 9.6 GiB of
/// packed weights then fault in 2 MiB at a time instead of 4 KiB (the kernel's page zeroing was
/// most of a UNet load), and the GEMMs stream them with 512 times fewer TLB entries.
pub fn zeroed(len: usize) -> Vec<f32> {
    let values = vec![0f32; len];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&values);
    values
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(values: &[f32]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(values);
    if bytes < 4 * HUGE {
        return;
    }
    let start = values.as_ptr() as usize;
    let (first, end) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    if end > first {
        // SAFETY: advice only (the contents and the mapping stay as they are); the range is
        // whole huge pages inside `values`' own allocation. A kernel without THP answers EINVAL,
        // which changes nothing and is ignored.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

/// The output pointer shared by the tasks (each writes its own rectangle).
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);

// SAFETY: the tasks write disjoint parts of the buffer behind the pointer (see `run_task`), which
// outlives them; the pointer is only an address until then.
unsafe impl Send for SendPtr {}
// SAFETY: as for Send.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub fn offset(self, elements: usize) -> SendPtr {
        SendPtr(self.0.wrapping_add(elements))
    }
}

/// The vector operand of one tile.
#[derive(Debug, Clone, Copy)]
pub struct Vectors {
    /// Piece 0 of step 0.
    pub ptr: *const f32,
    /// Floats from one 16-lane piece to the next within a step.
    pub stride: usize,
    /// Floats from one step to the next.
    pub step: usize,
    /// 16-lane pieces per step (`micro_width / 16`, fewer at a GEMM's last columns).
    pub pieces: usize,
}

/// How the accumulators start.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// From the output (a later slice of the reduction).
    Output,
    /// From one value per row.
    RowBias(*const f32),
    /// From one value per column (`pieces`·16 of them).
    ColumnBias(*const f32),
}

/// Where one tile goes.
#[derive(Debug, Clone, Copy)]
pub struct Tile {
    /// Valid rows (≤ NR).
    pub rows: usize,
    /// Valid columns (≤ `pieces`·16).
    pub cols: usize,
    /// Output row stride.
    pub ldc: usize,
    /// Starting values.
    pub start: Start,
}

/// One tile, through a staging buffer at the edges.
///
/// # Safety
/// `c` valid for reads and writes of `tile.rows` rows of `tile.cols` values at stride `tile.ldc`;
/// `v` valid for `kc` steps of `v.pieces` pieces (≤ `micro_width(isa) / 16`); `s` for `kc`·[`NR`]
/// values; a row bias for [`NR`] values, a column bias for `v.pieces`·16; `isa` supported by
/// this CPU.
pub unsafe fn tile_product(
    isa: Isa,
    kc: usize,
    v: Vectors,
    s: *const f32,
    c: *mut f32,
    tile: Tile,
) {
    let width = v.pieces * LANES;
    if tile.rows == NR && tile.cols == width {
        // SAFETY: a whole tile, valid per this function's contract.
        unsafe { micro_kernel(isa, kc, v, s, c, tile.ldc, tile.start) };
        return;
    }
    let mut staging = [0f32; NR * MR_MAX];
    if matches!(tile.start, Start::Output) {
        for r in 0..tile.rows {
            // SAFETY: row r < rows, `cols` values, per the contract.
            let src = unsafe { std::slice::from_raw_parts(c.add(r * tile.ldc), tile.cols) };
            staging[r * width..][..tile.cols].copy_from_slice(src);
        }
    }
    // SAFETY: the staging buffer holds a whole tile (NR rows of `width` ≤ MR_MAX) at stride
    // `width`.
    unsafe { micro_kernel(isa, kc, v, s, staging.as_mut_ptr(), width, tile.start) };
    for r in 0..tile.rows {
        // SAFETY: as above.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(r * tile.ldc), tile.cols) };
        dst.copy_from_slice(&staging[r * width..][..tile.cols]);
    }
}

/// The whole register tile for `isa`.
///
/// # Safety
/// `c` valid for [`NR`] rows of `v.pieces`·16 values at stride `ldc`, the rest as
/// [`tile_product`].
unsafe fn micro_kernel(
    isa: Isa,
    kc: usize,
    v: Vectors,
    s: *const f32,
    c: *mut f32,
    ldc: usize,
    start: Start,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: forwarded contract; AVX-512F is present (`isa`); `pieces` selects the
            // instantiation that reads exactly that many pieces.
            unsafe {
                match v.pieces {
                    4 => x86::kernel_avx512::<4>(kc, v, s, c, ldc, start),
                    3 => x86::kernel_avx512::<3>(kc, v, s, c, ldc, start),
                    2 => x86::kernel_avx512::<2>(kc, v, s, c, ldc, start),
                    _ => x86::kernel_avx512::<1>(kc, v, s, c, ldc, start),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: forwarded contract; AVX2 and FMA are present (`isa`).
            unsafe { x86::kernel_avx2(kc, v, s, c, ldc, start) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 | Isa::Avx2 => {
            // SAFETY: forwarded contract.
            unsafe { kernel_portable(kc, v, s, c, ldc, start) }
        }
        Isa::Portable => {
            // SAFETY: forwarded contract.
            unsafe { kernel_portable(kc, v, s, c, ldc, start) }
        }
    }
}

/// Starting value of row `r`, column `j` of a tile.
///
/// # Safety
/// As [`micro_kernel`].
unsafe fn start_value(start: Start, c: *const f32, ldc: usize, r: usize, j: usize) -> f32 {
    // SAFETY: r < NR, j < mr: inside the extents of the contract.
    unsafe {
        match start {
            Start::Output => *c.add(r * ldc + j),
            Start::RowBias(bias) => *bias.add(r),
            Start::ColumnBias(bias) => *bias.add(j),
        }
    }
}

/// Portable 6×16 tile.
///
/// # Safety
/// As [`micro_kernel`] with one piece.
unsafe fn kernel_portable(
    kc: usize,
    v: Vectors,
    s: *const f32,
    c: *mut f32,
    ldc: usize,
    start: Start,
) {
    let mut acc = [[0f32; LANES]; NR];
    for (r, row) in acc.iter_mut().enumerate() {
        for (j, sum) in row.iter_mut().enumerate() {
            // SAFETY: forwarded contract.
            *sum = unsafe { start_value(start, c, ldc, r, j) };
        }
    }
    for k in 0..kc {
        // SAFETY: step k's piece and scalars are inside the operands (contract).
        let (x, w) = unsafe {
            (
                std::slice::from_raw_parts(v.ptr.add(k * v.step), LANES),
                std::slice::from_raw_parts(s.add(k * NR), NR),
            )
        };
        for (row, &weight) in acc.iter_mut().zip(w) {
            for (sum, &value) in row.iter_mut().zip(x) {
                *sum += value * weight;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: row r of the tile.
        unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), LANES) }.copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m512, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps,
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps,
    };

    use super::{NR, Start, Vectors};

    /// 6 rows × `P` zmm (P ≤ 4: up to 24 accumulators).
    ///
    /// # Safety
    /// As `micro_kernel` with `P` pieces, on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel_avx512<const P: usize>(
        kc: usize,
        v: Vectors,
        mut s: *const f32,
        c: *mut f32,
        ldc: usize,
        start: Start,
    ) {
        // SAFETY: every access stays in the extents of the contract (kc steps of P pieces of
        // `v`, kc·NR scalars, NR rows of P·16 at stride ldc of `c`, the bias's NR or P·16
        // values).
        unsafe {
            let mut acc: [[__m512; P]; NR] = [[_mm512_set1_ps(0.0); P]; NR];
            for (r, row) in acc.iter_mut().enumerate() {
                for (i, sum) in row.iter_mut().enumerate() {
                    *sum = match start {
                        Start::Output => _mm512_loadu_ps(c.add(r * ldc + i * 16)),
                        Start::RowBias(bias) => _mm512_set1_ps(*bias.add(r)),
                        Start::ColumnBias(bias) => _mm512_loadu_ps(bias.add(i * 16)),
                    };
                }
            }
            let (stride, step) = (v.stride, v.step);
            let mut p = v.ptr;
            for _ in 0..kc {
                let mut x = [_mm512_set1_ps(0.0); P];
                for (i, xv) in x.iter_mut().enumerate() {
                    *xv = _mm512_loadu_ps(p.add(i * stride));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let weight = _mm512_set1_ps(*s.add(r));
                    for (sum, &xv) in row.iter_mut().zip(&x) {
                        *sum = _mm512_fmadd_ps(xv, weight, *sum);
                    }
                }
                p = p.add(step);
                s = s.add(NR);
            }
            for (r, row) in acc.iter().enumerate() {
                for (i, sum) in row.iter().enumerate() {
                    _mm512_storeu_ps(c.add(r * ldc + i * 16), *sum);
                }
            }
        }
    }

    /// 6 rows × 16 columns (2 ymm per row: 12 accumulators).
    ///
    /// # Safety
    /// As `micro_kernel` with one piece, on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_avx2(
        kc: usize,
        v: Vectors,
        mut s: *const f32,
        c: *mut f32,
        ldc: usize,
        start: Start,
    ) {
        // SAFETY: as in `kernel_avx512`, with one 16-lane piece per step.
        unsafe {
            let mut acc: [[__m256; 2]; NR] = [[_mm256_set1_ps(0.0); 2]; NR];
            for (r, row) in acc.iter_mut().enumerate() {
                for (i, sum) in row.iter_mut().enumerate() {
                    *sum = match start {
                        Start::Output => _mm256_loadu_ps(c.add(r * ldc + i * 8)),
                        Start::RowBias(bias) => _mm256_set1_ps(*bias.add(r)),
                        Start::ColumnBias(bias) => _mm256_loadu_ps(bias.add(i * 8)),
                    };
                }
            }
            let step = v.step;
            let mut p = v.ptr;
            for _ in 0..kc {
                let x = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))];
                for (r, row) in acc.iter_mut().enumerate() {
                    let weight = _mm256_set1_ps(*s.add(r));
                    for (sum, &xv) in row.iter_mut().zip(&x) {
                        *sum = _mm256_fmadd_ps(xv, weight, *sum);
                    }
                }
                p = p.add(step);
                s = s.add(NR);
            }
            for (r, row) in acc.iter().enumerate() {
                for (i, sum) in row.iter().enumerate() {
                    _mm256_storeu_ps(c.add(r * ldc + i * 8), *sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_small_and_large_are_zeros_and_aligned_ones_start_on_a_line() {
        for len in [0, 1, 1000, (9 << 20) / 4 + 3] {
            let values = zeroed(len);
            assert_eq!(values.len(), len);
            assert!(values.iter().all(|&v| v == 0.0));
            let aligned = AlignedVec::zeros(len);
            assert_eq!(aligned.as_slice().len(), len);
            assert_eq!(aligned.as_slice().as_ptr() as usize % 64, 0);
        }
    }
}
