//! Matrix product with a right-hand side packed once: `C = A·B (+ bias)`, the linear layers'
//! (and attention's) product on the CPU.
//!
//! `B` (`k`×`n`: a linear layer's weight transposed) is packed at load into panels as wide as the
//! micro-kernel's tile, `[panel][k][w]` (zero columns past `n`): `w` = 64 where AVX-512 runs, 16
//! elsewhere, so the tile's operand is one contiguous stream. Either kernel reads either width
//! (the AVX2 one a 16-column slice of a 64-wide panel, the AVX-512 one four 16-wide panels side
//! by side), so the instruction set may change after packing.
//! `A` (`m`×`k`, row-major: the activations) is packed per call, `kc` columns at a time, into
//! panels of [`NR`] rows `[panel][kc][NR]` whose values the micro-kernel broadcasts. The bias
//! starts the accumulators of the first `kc` slice.
//!
//! `A` is packed once per call, in parallel, before the tasks start (every task reads its rows'
//! panels; packing per task repeated it for every column range). Loop order per task (a block of
//! up to `mc` rows × a range of column groups): for each `kc` slice, for each group of columns,
//! run the micro-kernel down the row panels, so the group's `kc`×64 slice of `B` stays in cache
//! while every row panel passes it. Tasks write disjoint rectangles of `C`; rayon runs them.

use rayon::prelude::*;

use crate::isa::{self, Isa};
use crate::micro::{
    AlignedVec, LANES, NR, SendPtr, Start, Tile, Vectors, micro_width, tile_product,
};
use crate::{Result, bail};

/// Cache blocking of [`PackedMatrix::matmul_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of `A` per task (rounded up to a multiple of [`NR`]).
    pub mc: usize,
    /// Longest reduction slice packed at a time; a reduction of `k` is cut into
    /// `k.div_ceil(kc)` slices of equal length (1280 into two of 640, not 768 + 512).
    pub kc: usize,
}

impl Default for Blocking {
    /// Measured with `examples/gemm_tune` on SDXL's linear shapes (2-core Zen 4): slices of
    /// 512–768 beat 256 by 3–13 % (the output tile is read and written once per slice), most on
    /// the AVX2 path.
    fn default() -> Self {
        Blocking { mc: 192, kc: 768 }
    }
}

/// The right-hand side of a product, packed for the micro-kernels (done once, at load).
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    /// Columns per panel (16 or 64).
    width: usize,
    /// `[panel][k][width]` at [`panel_stride`]: column `panel·width + j`, zeros past `n`.
    panels: AlignedVec,
    /// Padded to whole panels; zeros without a bias.
    bias: Vec<f32>,
    has_bias: bool,
    blocking: Blocking,
}

impl PackedMatrix {
    /// Packs a linear layer: `weight` is `[out_features][in_features]` (torch's layout), the
    /// product is `x·weightᵀ + bias`, so `k` = `in_features` and `n` = `out_features`.
    ///
    /// # Errors
    /// Lengths that do not match.
    pub fn from_linear(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        if weight.len() != out_features * in_features {
            return bail(format!(
                "linear: weight has {} values, {out_features}x{in_features} needs {}",
                weight.len(),
                out_features * in_features
            ));
        }
        Self::from_linear_strided(weight, out_features, in_features, in_features, bias)
    }

    /// As [`PackedMatrix::from_linear`], with row `j` of the weight at `weight[j·row_stride..]`
    /// (e.g. one head's keys inside (tokens, heads × head dim) projections).
    ///
    /// # Errors
    /// A stride below `in_features`, or a slice too short for the rows.
    pub fn from_linear_strided(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        row_stride: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        let (k, n) = (in_features, out_features);
        check_rows("linear: weight", weight.len(), n, k, row_stride)?;
        Self::pack(k, n, bias, |panel, width, dst| {
            for j in 0..width {
                let column = panel * width + j;
                if column >= n {
                    break;
                }
                for (kk, &value) in weight[column * row_stride..][..k].iter().enumerate() {
                    dst[kk * width + j] = value;
                }
            }
        })
    }

    /// Packs a row-major `k`×`n` matrix `b`: the product is `a·b + bias`.
    ///
    /// # Errors
    /// Lengths that do not match.
    pub fn from_row_major(b: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Result<Self> {
        if b.len() != k * n {
            return bail(format!(
                "matmul: right-hand side has {} values, {k}x{n} needs {}",
                b.len(),
                k * n
            ));
        }
        Self::from_row_major_strided(b, k, n, n, bias)
    }

    /// As [`PackedMatrix::from_row_major`], with row `kk` of `b` at `b[kk·row_stride..]`.
    ///
    /// # Errors
    /// A stride below `n`, or a slice too short for the rows.
    pub fn from_row_major_strided(
        b: &[f32],
        k: usize,
        n: usize,
        row_stride: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        check_rows("matmul: right-hand side", b.len(), k, n, row_stride)?;
        Self::pack(k, n, bias, |panel, width, dst| {
            let first = panel * width;
            if first >= n {
                return;
            }
            let valid = width.min(n - first);
            for (kk, row) in dst.chunks_exact_mut(width).enumerate() {
                row[..valid].copy_from_slice(&b[kk * row_stride + first..][..valid]);
            }
        })
    }

    fn pack(
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Result<Self> {
        if let Some(bias) = bias
            && bias.len() != n
        {
            return bail(format!("matmul: bias has {} values, {n} output columns", bias.len()));
        }
        let width = micro_width(isa::current());
        let panel_count = n.div_ceil(width);
        let stride = panel_stride(k, width);
        let mut panels = AlignedVec::zeros(panel_count * stride);
        if k > 0 {
            panels
                .as_mut_slice()
                .par_chunks_mut(stride)
                .enumerate()
                .for_each(|(panel, dst)| fill(panel, width, &mut dst[..k * width]));
        }
        let mut padded_bias = vec![0f32; panel_count * width];
        if let Some(bias) = bias {
            padded_bias[..n].copy_from_slice(bias);
        }
        Ok(Self {
            k,
            n,
            width,
            panels,
            bias: padded_bias,
            has_bias: bias.is_some(),
            blocking: Blocking::default(),
        })
    }

    /// The reduction length (a linear layer's input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The output columns (a linear layer's output features).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Changes the cache blocking (benchmarks; results do not change beyond rounding).
    #[must_use]
    pub fn with_blocking(mut self, blocking: Blocking) -> Self {
        self.blocking = Blocking { mc: blocking.mc.max(1), kc: blocking.kc.max(1) };
        self
    }

    /// The matrix back as a linear layer's `[n][k]` weight.
    pub fn linear_weight(&self) -> Vec<f32> {
        let mut weight = vec![0f32; self.n * self.k];
        for (column, row) in weight.chunks_exact_mut(self.k.max(1)).enumerate().take(self.n) {
            let width = self.width;
            let panel = &self.panels.as_slice()[(column / width) * panel_stride(self.k, width)..];
            for (kk, value) in row.iter_mut().enumerate() {
                *value = panel[kk * width + column % width];
            }
        }
        weight
    }

    /// The bias, if there is one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.has_bias.then(|| &self.bias[..self.n])
    }

    /// `a` (`m`×`k`, row-major) times the matrix, plus the bias: `m`×`n`, row-major.
    ///
    /// # Errors
    /// As [`PackedMatrix::matmul_into`].
    pub fn matmul(&self, a: &[f32], m: usize) -> Result<Vec<f32>> {
        let mut c = vec![0f32; m * self.n];
        self.matmul_into(a, m, &mut c)?;
        Ok(c)
    }

    /// As [`PackedMatrix::matmul`], into `c` (`m`×`n`, overwritten).
    ///
    /// # Errors
    /// `a` or `c` of the wrong length.
    pub fn matmul_into(&self, a: &[f32], m: usize, c: &mut [f32]) -> Result<()> {
        let (k, n) = (self.k, self.n);
        if a.len() != m * k {
            return bail(format!(
                "matmul: left-hand side has {} values, {m}x{k} needs {}",
                a.len(),
                m * k
            ));
        }
        if c.len() != m * n {
            return bail(format!("matmul: output has {} values, {m}x{n} needs {}", c.len(), m * n));
        }
        self.matmul_strided_into(a, k, m, c, n, Threads::Pool)
    }

    /// As [`PackedMatrix::matmul_into`] with row `i` of `a` at `a[i·lda..]` and of `c` at
    /// `c[i·ldc..]` (only the `n` values of each output row are written), on `threads`.
    ///
    /// # Errors
    /// Strides below the row lengths, or slices too short for the rows.
    pub fn matmul_strided_into(
        &self,
        a: &[f32],
        lda: usize,
        m: usize,
        c: &mut [f32],
        ldc: usize,
        threads: Threads,
    ) -> Result<()> {
        let parallel = threads == Threads::Pool;
        let (k, n) = (self.k, self.n);
        check_rows("matmul: left-hand side", a.len(), m, k, lda)?;
        check_rows("matmul: output", c.len(), m, n, ldc)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            for row in 0..m {
                c[row * ldc..][..n].copy_from_slice(&self.bias[..n]);
            }
            return Ok(());
        }
        let isa = isa::current();
        let mr = micro_width(isa);
        let kc = k.div_ceil(k.div_ceil(self.blocking.kc));
        let mc = self.blocking.mc.min(m).div_ceil(NR) * NR;
        let row_blocks = m.div_ceil(mc);
        let groups = n.div_ceil(mr);
        // Enough tasks for every thread (8 each, for balance: `A` is packed already, so a task
        // costs only its tiles), splitting the columns when there are few row blocks.
        let wanted = if parallel { 8 * rayon::current_num_threads() } else { 1 };
        let chunks = wanted.div_ceil(row_blocks).min(groups);
        let per_chunk = groups.div_ceil(chunks.max(1));
        let chunks = groups.div_ceil(per_chunk);
        // A packed once for all tasks: slice by slice of `kc` columns, `[row panel][kcv][NR]`.
        let padded_rows = m.div_ceil(NR) * NR;
        let mut packed = AlignedVec::zeros(padded_rows * k);
        let mut k0 = 0;
        while k0 < k {
            let kcv = kc.min(k - k0);
            let slice = &mut packed.as_mut_slice()[k0 * padded_rows..][..padded_rows * kcv];
            let pack = |(panel, dst): (usize, &mut [f32])| {
                pack_panel(a, lda, m, panel * NR, k0, kcv, dst);
            };
            if parallel {
                slice.par_chunks_mut(kcv * NR).enumerate().for_each(pack);
            } else {
                slice.chunks_mut(kcv * NR).enumerate().for_each(pack);
            }
            k0 += kcv;
        }
        let out = SendPtr(c.as_mut_ptr());
        let job = Job { isa, mr, m, k, n, ldc, kc, mc, padded_rows, packed: packed.as_slice() };
        let task = |task: usize| {
            let (block, chunk) = (task / chunks, task % chunks);
            let group_range = chunk * per_chunk..((chunk + 1) * per_chunk).min(groups);
            self.run_task(&job, block * mc, group_range, out);
        };
        if parallel {
            (0..row_blocks * chunks).into_par_iter().for_each(task);
        } else {
            (0..row_blocks * chunks).for_each(task);
        }
        Ok(())
    }

    /// The vector operand of the tile at columns `col0..col0 + cols` (`cols` ≤ `mr`, `col0` a
    /// multiple of `mr`), steps from `k0`.
    fn vectors(&self, col0: usize, k0: usize, mr: usize, cols: usize) -> Vectors {
        let (k, width) = (self.k, self.width);
        let stride = panel_stride(k, width);
        let pieces = cols.div_ceil(LANES);
        if width >= mr {
            // The tile's columns lie in one panel (mr divides width): 16-column pieces side by
            // side, one step of `width` per k.
            let at = col0 / width * stride + k0 * width + col0 % width;
            Vectors {
                ptr: self.panels.as_slice()[at..].as_ptr(),
                stride: LANES,
                step: width,
                pieces,
            }
        } else {
            // 16-wide panels, `mr / 16` of them side by side.
            let at = col0 / width * stride + k0 * width;
            Vectors { ptr: self.panels.as_slice()[at..].as_ptr(), stride, step: width, pieces }
        }
    }

    /// Rows `r0..r0 + mc` (or fewer at the end) × column groups `groups` of `C`.
    fn run_task(&self, job: &Job, r0: usize, groups: std::ops::Range<usize>, out: SendPtr) {
        let Job { isa, mr, m, k, n, ldc, kc, mc, padded_rows, packed } = *job;
        let rows = mc.min(m - r0);
        let row_panels = rows.div_ceil(NR);
        let mut k0 = 0;
        while k0 < k {
            let kcv = kc.min(k - k0);
            // This slice's panels of this task's rows (r0 is a multiple of NR).
            let slice = &packed[k0 * padded_rows + r0 * kcv..][..row_panels * kcv * NR];
            for group in groups.clone() {
                let col0 = group * mr;
                let cols = mr.min(n - col0);
                let vectors = self.vectors(col0, k0, mr, cols);
                let start = if k0 == 0 {
                    Start::ColumnBias(self.bias[col0..].as_ptr())
                } else {
                    Start::Output
                };
                for panel in 0..row_panels {
                    let tile = Tile { rows: NR.min(rows - panel * NR), cols, ldc, start };
                    let c = out.offset((r0 + panel * NR) * ldc + col0);
                    let scalars = slice[panel * kcv * NR..].as_ptr();
                    // SAFETY: `c` is this task's rectangle (rows r0 + panel·NR.., < m, at stride
                    // ldc; columns col0..+cols, ≤ n ≤ ldc) of the output, checked to hold m rows,
                    // which no other task writes and which outlives the loop over the tasks.
                    // The vector operand: `pieces` 16-column pieces from col0, all packed (see
                    // `vectors`), steps k0..k0 + kcv ≤ k; the scalars: kcv·NR packed values;
                    // the column bias: pieces·16 values from col0, inside the bias padded to
                    // whole panels.
                    unsafe { tile_product(isa, kcv, vectors, scalars, c.0, tile) };
                }
            }
            k0 += kcv;
        }
    }
}

/// Floats from one packed panel to the next: `k`·`width` and one cache line more. Without the
/// extra line 16-wide panels read side by side by an AVX-512 tile would start `k`·64 bytes apart,
/// a multiple of 4 KiB for every `k` divisible by 64 (all of SDXL's), their lines all in the
/// same L1 sets.
fn panel_stride(k: usize, width: usize) -> usize {
    k * width + LANES
}

/// Where a product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Split across rayon's pool.
    Pool,
    /// All on the calling thread: for callers that run many small products side by side
    /// (attention's heads), where splitting each one would cost more than it gains.
    Caller,
}

/// What every task of one product shares.
#[derive(Clone, Copy)]
struct Job<'a> {
    isa: Isa,
    mr: usize,
    m: usize,
    k: usize,
    n: usize,
    /// Output row stride.
    ldc: usize,
    kc: usize,
    mc: usize,
    /// Rows of the packed `A`, rounded up to whole panels.
    padded_rows: usize,
    /// `A` packed by [`pack_panel`], slice after slice.
    packed: &'a [f32],
}

/// Packs rows `r0..r0 + NR` of `a` (`m` rows at stride `lda`), columns `k0..k0 + kcv`, into
/// one panel `[kcv][NR]`, zeros for rows past `m`.
fn pack_panel(a: &[f32], lda: usize, m: usize, r0: usize, k0: usize, kcv: usize, dst: &mut [f32]) {
    if r0 + NR <= m {
        // A whole panel: the destination written in order, one step (NR values) at a time.
        let rows: [&[f32]; NR] = std::array::from_fn(|r| &a[(r0 + r) * lda + k0..][..kcv]);
        for (kk, step) in dst[..kcv * NR].chunks_exact_mut(NR).enumerate() {
            for (value, row) in step.iter_mut().zip(&rows) {
                *value = row[kk];
            }
        }
        return;
    }
    for r in 0..NR {
        let row = r0 + r;
        if row < m {
            let src = &a[row * lda + k0..][..kcv];
            for (kk, &value) in src.iter().enumerate() {
                dst[kk * NR + r] = value;
            }
        } else {
            for kk in 0..kcv {
                dst[kk * NR + r] = 0.0;
            }
        }
    }
}

/// That `len` values hold `rows` rows of `width` at stride `stride`.
fn check_rows(what: &str, len: usize, rows: usize, width: usize, stride: usize) -> Result<()> {
    if stride < width {
        return bail(format!("{what}: row stride {stride} is below the row length {width}"));
    }
    let needed = if rows == 0 { 0 } else { (rows - 1) * stride + width };
    if len < needed {
        return bail(format!(
            "{what} has {len} values, {rows} rows of {width} at stride {stride} need {needed}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::set_avx512_allowed;
    use crate::testing::{on_each_isa, values};

    /// `a·wᵀ + bias` by the definition, in f64.
    fn reference(
        a: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                let mut sum = bias.map_or(0.0, |bias| f64::from(bias[j]));
                for kk in 0..k {
                    sum += f64::from(a[i * k + kk]) * f64::from(weight[j * k + kk]);
                }
                #[allow(clippy::cast_possible_truncation, reason = "test reference")]
                out.push(sum as f32);
            }
        }
        out
    }

    fn check(m: usize, k: usize, n: usize, with_bias: bool) {
        let a = values(m * k, 1);
        let weight = values(n * k, 2);
        let bias = with_bias.then(|| values(n, 3));
        let expected = reference(&a, &weight, bias.as_deref(), m, k, n);
        let tolerance = 1e-5 * (k.max(1) as f32).sqrt();
        // Small blocks too, so that several kc slices, row blocks and edge tiles occur.
        for blocking in
            [Blocking::default(), Blocking { mc: 7, kc: 5 }, Blocking { mc: 12, kc: 64 }]
        {
            let packed = PackedMatrix::from_linear(&weight, n, k, bias.as_deref())
                .unwrap()
                .with_blocking(blocking);
            let got = packed.matmul(&a, m).unwrap();
            assert_eq!(got.len(), expected.len());
            for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (g - e).abs() <= tolerance * (1.0 + e.abs()),
                    "{m}x{k}x{n} {blocking:?} isa {}: c[{}][{}] = {g}, expected {e}",
                    isa::current().name(),
                    i / n,
                    i % n
                );
            }
        }
    }

    #[test]
    fn odd_sizes_and_edges() {
        on_each_isa(|| {
            check(1, 1, 1, true);
            check(5, 3, 17, true);
            check(7, 33, 65, false);
            check(13, 70, 80, true);
            check(6, 16, 64, false);
            check(31, 129, 200, true);
        });
    }

    #[test]
    fn sdxl_like_shapes() {
        on_each_isa(|| {
            check(154, 96, 320, false);
            check(64, 320, 160, true);
        });
    }

    /// Panels packed for one instruction set (64 wide under AVX-512, 16 under AVX2) give the same
    /// product when the other one runs: the switch may change after a model loaded.
    #[test]
    fn panels_packed_for_one_isa_run_on_the_other() {
        if Isa::detect() != Isa::Avx512 {
            return;
        }
        let (m, k, n) = (17, 45, 150);
        let a = values(m * k, 9);
        let weight = values(n * k, 10);
        let bias = values(n, 11);
        let expected = reference(&a, &weight, Some(&bias), m, k, n);
        for (pack_avx512, run_avx512) in [(true, false), (false, true)] {
            set_avx512_allowed(pack_avx512);
            let packed = PackedMatrix::from_linear(&weight, n, k, Some(&bias)).unwrap();
            set_avx512_allowed(run_avx512);
            let got = packed.matmul(&a, m).unwrap();
            set_avx512_allowed(true);
            for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "packed avx512={pack_avx512}, run avx512={run_avx512}: c[{i}] = {g}, expected {e}"
                );
            }
        }
    }

    /// Strided operands, as attention reads one head of (tokens, heads × head dim) projections and
    /// writes its output into the same layout: only that head's columns of `c` change.
    #[test]
    fn strided_operands_and_output() {
        let (m, k, n, stride) = (13, 7, 19, 30);
        let a_wide = values(m * stride, 12);
        let w_wide = values(n * stride, 13);
        let offset = 5;
        // The dense copies the strided views stand for.
        let a: Vec<f32> =
            (0..m).flat_map(|i| a_wide[i * stride + offset..][..k].to_vec()).collect();
        let w: Vec<f32> =
            (0..n).flat_map(|j| w_wide[j * stride + offset..][..k].to_vec()).collect();
        let expected = reference(&a, &w, None, m, k, n);
        on_each_isa(|| {
            let packed =
                PackedMatrix::from_linear_strided(&w_wide[offset..], n, k, stride, None).unwrap();
            let mut c = vec![7.0f32; m * 40];
            let mut serial = c.clone();
            packed
                .matmul_strided_into(&a_wide[offset..], stride, m, &mut c[3..], 40, Threads::Pool)
                .unwrap();
            packed
                .matmul_strided_into(
                    &a_wide[offset..],
                    stride,
                    m,
                    &mut serial[3..],
                    40,
                    Threads::Caller,
                )
                .unwrap();
            assert_eq!(c, serial, "one thread or many, the same sums");
            for i in 0..m {
                for j in 0..40 {
                    let got = c[i * 40 + j];
                    if (3..3 + n).contains(&j) {
                        let e = expected[i * n + j - 3];
                        assert!(
                            (got - e).abs() <= 1e-5 * (1.0 + e.abs()),
                            "c[{i}][{j}] = {got}, expected {e}"
                        );
                    } else {
                        assert!((got - 7.0).abs() <= 0.0, "c[{i}][{j}] outside the output changed");
                    }
                }
            }
            // The same matrix given row-major (k×n) through a stride.
            let mut b_wide = vec![0f32; k * 25];
            for kk in 0..k {
                for j in 0..n {
                    b_wide[kk * 25 + j] = w[j * k + kk];
                }
            }
            let row_major = PackedMatrix::from_row_major_strided(&b_wide, k, n, 25, None).unwrap();
            assert_eq!(row_major.linear_weight(), w);
        });
        let packed = PackedMatrix::from_linear(&values(6, 1), 3, 2, None).unwrap();
        let mut c = vec![0f32; 10];
        let err =
            packed.matmul_strided_into(&[0.0; 4], 1, 2, &mut c, 3, Threads::Pool).unwrap_err();
        assert!(err.0.contains("row stride 1 is below the row length 2"), "{}", err.0);
        let err =
            packed.matmul_strided_into(&[0.0; 4], 2, 2, &mut c[..4], 3, Threads::Pool).unwrap_err();
        assert!(err.0.contains("output has 4 values"), "{}", err.0);
        assert!(PackedMatrix::from_linear_strided(&[0.0; 5], 3, 2, 2, None).is_err());
    }

    #[test]
    fn row_major_right_hand_side_and_round_trip() {
        let (m, k, n) = (9, 21, 35);
        let a = values(m * k, 4);
        let weight = values(n * k, 5);
        let bias = values(n, 6);
        let linear = PackedMatrix::from_linear(&weight, n, k, Some(&bias)).unwrap();
        assert_eq!(linear.linear_weight(), weight);
        assert_eq!(linear.bias(), Some(&bias[..]));
        assert_eq!((linear.k(), linear.n()), (k, n));
        // The same matrix given row-major (k×n) packs to the same panels and product.
        let mut b = vec![0f32; k * n];
        for j in 0..n {
            for kk in 0..k {
                b[kk * n + j] = weight[j * k + kk];
            }
        }
        let row_major = PackedMatrix::from_row_major(&b, k, n, Some(&bias)).unwrap();
        assert_eq!(row_major.linear_weight(), weight);
        assert_eq!(row_major.matmul(&a, m).unwrap(), linear.matmul(&a, m).unwrap());
    }

    #[test]
    fn empty_reductions_and_errors() {
        let bias = values(3, 7);
        let empty = PackedMatrix::from_linear(&[], 3, 0, Some(&bias)).unwrap();
        assert_eq!(empty.matmul(&[], 2).unwrap(), [&bias[..], &bias[..]].concat());
        let no_rows = PackedMatrix::from_linear(&values(6, 8), 3, 2, None).unwrap();
        assert_eq!(no_rows.matmul(&[], 0).unwrap(), Vec::<f32>::new());
        assert!(no_rows.matmul(&[0.0; 5], 3).unwrap_err().0.contains("left-hand side has 5"));
        assert!(
            PackedMatrix::from_linear(&[0.0; 5], 3, 2, None)
                .unwrap_err()
                .0
                .contains("weight has 5")
        );
        assert!(
            PackedMatrix::from_linear(&[0.0; 6], 3, 2, Some(&[0.0; 2]))
                .unwrap_err()
                .0
                .contains("bias has 2")
        );
        assert!(
            PackedMatrix::from_row_major(&[0.0; 4], 3, 2, None)
                .unwrap_err()
                .0
                .contains("right-hand side")
        );
        let mut c = vec![0f32; 5];
        assert!(no_rows.matmul_into(&[0.0; 4], 2, &mut c).unwrap_err().0.contains("output has 5"));
    }
}
