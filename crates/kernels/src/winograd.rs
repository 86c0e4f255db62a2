//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions: each 2×2 block of outputs ("tile") costs
//! 16 multiply-adds per input/output channel pair instead of 36.
//!
//! With `d` a tile's 4×4 input patch of one channel and `g` a 3×3 kernel, the tile's outputs are
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`; summed over input channels, the elementwise products become 16
//! independent matrix products, one per position ξ of the 4×4 transformed tile:
//! `M_ξ[co][t] = Σ_ci U_ξ[co][ci] · V_ξ[ci][t]`, with `U = G g Gᵀ` (the weights) and
//! `V = Bᵀ d B` (the input). They run on the conv's micro-kernel with the same operand roles:
//! `V_ξ` as the vector operand (tiles along the lanes), `U_ξ` as the broadcast scalars, packed
//! `[panel][ξ][ci][NR]` per call from the conv's packed weights (keeping them transformed
//! would hold 16/9 as many values for every 3×3 conv of the model; per call, the transform
//! costs a few percent of the products it feeds on 32×32 planes and larger, about 15 % on 16×16
//! ones, and more than it saves below 64 tiles, where `conv::WINOGRAD_MIN_TILES` keeps im2col).
//! The transformed weights go to a buffer kept between calls (the largest so far: 210 MB for
//! SDXL's 2560→1280 convolutions), so they are not faulted in again every time.
//!
//! Tiles of every image of the batch are numbered together (so the low-resolution layers still
//! have enough of them to share each transformed weight) and split into blocks; a task takes a
//! block and a range of output-channel panels and, `kc` input channels at a time, transforms
//! its tiles' input patches into `V` panels for all 16 ξ, runs the 16 products into its own
//! accumulator `M[ξ][co][t]`, and at the end transforms `M` back into output pixels, adding the
//! bias. The transforms' coefficients are 0, ±1 and ±½, so they add little rounding: the result
//! stays within the direct convolution's error bounds (tested against the f64 definition).

use std::sync::Mutex;

use rayon::prelude::*;

use crate::conv::Conv2dShape;
use crate::isa::{self, Isa};
use crate::micro::{AlignedVec, LANES, NR, SendPtr, Start, Tile, Vectors, tile_product};

/// Positions of a transformed tile (4×4).
const XI: usize = 16;
/// Tiles transformed together (one inner loop the compiler vectorises).
const CHUNK: usize = 16;

/// The transformed weights of the last call, kept for the next one (see the module docs).
static WEIGHTS: Mutex<Option<AlignedVec>> = Mutex::new(None);

/// Where every task of one convolution looks.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub isa: Isa,
    pub shape: Conv2dShape,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub out_h: usize,
    pub out_w: usize,
    /// Micro-kernel width (tiles per vector panel).
    pub mr: usize,
    /// Tiles per task (a multiple of `mr`).
    pub block: usize,
    /// Input channels per slice.
    pub kc: usize,
}

impl Plan {
    fn tiles_x(&self) -> usize {
        self.out_w.div_ceil(2)
    }

    fn tiles_per_image(&self) -> usize {
        self.out_h.div_ceil(2) * self.tiles_x()
    }
}

/// Whether a convolution of `shape` can run here: 3×3, stride 1 (any padding).
pub(crate) fn applies(shape: Conv2dShape) -> bool {
    shape.kernel_h == 3 && shape.kernel_w == 3 && shape.stride == 1
}

/// Output tiles of one forward pass of `batch` images with outputs of `out_h`×`out_w`.
pub(crate) fn tiles(batch: usize, out_h: usize, out_w: usize) -> usize {
    batch * out_h.div_ceil(2) * out_w.div_ceil(2)
}

/// The convolution of `input` (`[batch][in][height][width]`) into `out` (`[batch][out][oh][ow]`),
/// with the weights as [`crate::conv::PackedConv2d`] packs them (`[panel][ci·9 + tap][NR]`)
/// and the bias padded to whole panels. Sizes are the caller's to check.
pub(crate) fn forward(plan: &Plan, panels: &[f32], bias: &[f32], input: &[f32], out: &mut [f32]) {
    let Plan { shape, batch, .. } = *plan;
    let (cin, cout) = (shape.in_channels, shape.out_channels);
    let panel_count = cout.div_ceil(NR);
    let per_panel = XI * cin * NR;
    let taken = WEIGHTS.lock().ok().and_then(|mut kept| kept.take());
    let mut weights = match taken {
        Some(kept) if kept.as_slice().len() >= panel_count * per_panel => kept,
        _ => AlignedVec::zeros(panel_count * per_panel),
    };
    transform_weights(
        plan.isa,
        cin,
        panels,
        &mut weights.as_mut_slice()[..panel_count * per_panel],
    );
    let weights_slice = &weights.as_slice()[..panel_count * per_panel];

    let tiles = tiles(batch, plan.out_h, plan.out_w);
    let blocks = tiles.div_ceil(plan.block);
    // Enough tasks for every thread (4 each, for balance), splitting the output channels when
    // there are few blocks; a task keeps at least 8 panels (48 channels).
    let wanted = 4 * rayon::current_num_threads();
    let chunks = if blocks >= wanted {
        1
    } else {
        wanted.div_ceil(blocks).min(panel_count.div_ceil(8)).max(1)
    };
    let per_chunk = panel_count.div_ceil(chunks);
    let chunks = panel_count.div_ceil(per_chunk);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let out_len = out.len();
    (0..blocks * chunks).into_par_iter().for_each_init(
        || Scratch::new(plan, per_chunk),
        |scratch, task| {
            let (block, chunk) = (task / chunks, task % chunks);
            let t0 = block * plan.block;
            let count = plan.block.min(tiles - t0);
            let range = chunk * per_chunk..((chunk + 1) * per_chunk).min(panel_count);
            run_task(plan, weights_slice, bias, input, t0, count, range, scratch, out_ptr, out_len);
        },
    );
    if let Ok(mut kept) = WEIGHTS.lock() {
        *kept = Some(weights);
    }
}

/// One task's buffers, reused across its tasks.
struct Scratch {
    /// `[ξ][tile panel][kcv][mr]`.
    v: AlignedVec,
    /// `[ξ][co of the range][block]`.
    m: AlignedVec,
}

impl Scratch {
    fn new(plan: &Plan, per_chunk: usize) -> Self {
        Scratch {
            v: AlignedVec::zeros(XI * plan.kc * plan.block),
            m: AlignedVec::zeros(XI * per_chunk * NR * plan.block),
        }
    }
}

/// `U = G g Gᵀ` for every (output channel, input channel): `panels` `[panel][ci·9 + tap][NR]`
/// into `dst` `[panel][ξ][ci][NR]`.
fn transform_weights(isa: Isa, cin: usize, panels: &[f32], dst: &mut [f32]) {
    let k = cin * 9;
    dst.par_chunks_mut(XI * cin * NR).enumerate().for_each(|(panel, dst)| {
        let src = &panels[panel * k * NR..][..k * NR];
        transform_panel_on(isa, cin, src, dst);
    });
}

isa::per_isa!(fn transform_panel_on(cin: usize, src: &[f32], dst: &mut [f32]) => transform_panel);

/// Input channels transformed together: their NR output channels each are the lanes.
const WEIGHT_CHANNELS: usize = 8;

/// One panel's `U`, [`WEIGHT_CHANNELS`] input channels at a time: each tap gathered into
/// lanes `(ci, r)`, the transform run across the lanes, each ξ written as one run.
#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn transform_panel(cin: usize, src: &[f32], dst: &mut [f32]) {
    const L: usize = WEIGHT_CHANNELS * NR;
    let mut ci0 = 0;
    while ci0 < cin {
        let n = WEIGHT_CHANNELS.min(cin - ci0);
        let mut taps = [[0f32; L]; 9];
        for c in 0..n {
            for (t, lanes) in taps.iter_mut().enumerate() {
                lanes[c * NR..][..NR].copy_from_slice(&src[((ci0 + c) * 9 + t) * NR..][..NR]);
            }
        }
        let mut u = [[0f32; L]; XI];
        for l in 0..L {
            let tap = |ky: usize, kx: usize| taps[ky * 3 + kx][l];
            // G g (4×3), held by columns, then (G g) Gᵀ (4×4) row by row.
            let columns: [[f32; 4]; 3] =
                std::array::from_fn(|kx| g_rows([tap(0, kx), tap(1, kx), tap(2, kx)]));
            for a in 0..4 {
                let row = g_rows(columns.map(|column| column[a]));
                for (b, value) in row.into_iter().enumerate() {
                    u[a * 4 + b][l] = value;
                }
            }
        }
        for (xi, lanes) in u.iter().enumerate() {
            dst[(xi * cin + ci0) * NR..][..n * NR].copy_from_slice(&lanes[..n * NR]);
        }
        ci0 += n;
    }
}

/// `G x` for one 3-vector: G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn g_rows([x0, x1, x2]: [f32; 3]) -> [f32; 4] {
    [x0, 0.5 * (x0 + x1 + x2), 0.5 * (x0 - x1 + x2), x2]
}

/// Tiles `t0..t0 + count` × output-channel panels `range`.
fn run_task(
    plan: &Plan,
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    t0: usize,
    count: usize,
    range: std::ops::Range<usize>,
    scratch: &mut Scratch,
    out: SendPtr,
    out_len: usize,
) {
    let Plan { isa, shape, mr, kc, .. } = *plan;
    let (cin, cout) = (shape.in_channels, shape.out_channels);
    let tile_panels = count.div_ceil(mr);
    let ldm = tile_panels * mr;
    let co_rows = range.len() * NR;
    let zeros = [0f32; NR];
    let m = &mut scratch.m.as_mut_slice()[..XI * co_rows * ldm];
    let m_ptr = SendPtr(m.as_mut_ptr());
    let mut c0 = 0;
    while c0 < cin {
        let kcv = kc.min(cin - c0);
        let xi_stride = tile_panels * kcv * mr;
        let v = &mut scratch.v.as_mut_slice()[..XI * xi_stride];
        transform_input(isa, &InputJob { plan, input, t0, count, c0, kcv }, v);
        let start = if c0 == 0 { Start::RowBias(zeros.as_ptr()) } else { Start::Output };
        for xi in 0..XI {
            for (local, panel) in range.clone().enumerate() {
                let u = &weights[((panel * XI + xi) * cin + c0) * NR..][..kcv * NR];
                let rows = NR.min(cout - panel * NR);
                for ip in 0..tile_panels {
                    let cols = mr.min(count - ip * mr);
                    let a = &v[xi * xi_stride + ip * kcv * mr..][..kcv * mr];
                    let vectors =
                        Vectors { ptr: a.as_ptr(), stride: LANES, step: mr, pieces: mr / LANES };
                    let c = m_ptr.offset((xi * co_rows + local * NR) * ldm + ip * mr);
                    let tile = Tile { rows, cols, ldc: ldm, start };
                    // SAFETY: `c` is rows `local·NR..+rows` (< co_rows) × columns
                    // `ip·mr..+cols` (≤ count ≤ ldm) of ξ's `co_rows`×`ldm` accumulator inside
                    // this task's own buffer; `a` is a whole packed panel (kcv steps of mr),
                    // `u` kcv·NR values, the row bias NR zeros; `isa` was detected.
                    unsafe { tile_product(isa, kcv, vectors, u.as_ptr(), c.0, tile) };
                }
            }
        }
        c0 += kcv;
    }
    let job = OutputJob { plan, m, co_rows, ldm, bias, t0, count, range, out, out_len };
    transform_output(isa, &job);
}

/// One slice of a task's input transform.
struct InputJob<'a> {
    plan: &'a Plan,
    input: &'a [f32],
    /// Tiles `t0..t0 + count`.
    t0: usize,
    count: usize,
    /// Input channels `c0..c0 + kcv`.
    c0: usize,
    kcv: usize,
}

isa::per_isa!(
    /// `V = Bᵀ d B` of the job's tiles and input channels into `v[ξ][tile panel][kk][mr]`.
    fn transform_input(job: &InputJob, v: &mut [f32]) => transform_input_portable
);

#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn transform_input_portable(job: &InputJob, v: &mut [f32]) {
    let InputJob { plan, input, t0, count, c0, kcv } = *job;
    let Plan { shape, height, width, mr, .. } = *plan;
    let pad = shape.padding;
    let tiles_x = plan.tiles_x();
    let per_image = plan.tiles_per_image();
    let plane = height * width;
    let xi_stride = count.div_ceil(mr) * kcv * mr;
    // Four input rows of up to CHUNK tiles (2 columns each, and 2 more for the last tile).
    let mut patch = [[0f32; 2 * CHUNK + 2]; 4];
    let mut values = [[0f32; CHUNK]; XI];
    let mut j = 0;
    while j < count {
        let t = t0 + j;
        let (image, rest) = (t / per_image, t % per_image);
        let (ty, tx) = (rest / tiles_x, rest % tiles_x);
        // Tiles side by side in one tile row and one vector panel.
        let n = CHUNK.min(tiles_x - tx).min(count - j).min(mr - j % mr);
        let dst0 = (j / mr) * kcv * mr + j % mr;
        for kk in 0..kcv {
            let source = &input[(image * shape.in_channels + c0 + kk) * plane..][..plane];
            for (i, row) in patch.iter_mut().enumerate() {
                // Input row 2·ty + i − pad, columns 2·tx − pad ..
                let iy = (2 * ty + i).checked_sub(pad).filter(|&iy| iy < height);
                let Some(iy) = iy else {
                    row.fill(0.0);
                    continue;
                };
                let line = &source[iy * width..][..width];
                // Column q of the patch is input column 2·tx + q − pad: inside for q in lo..hi.
                let len = 2 * n + 2;
                let lo = pad.saturating_sub(2 * tx).min(len);
                let hi = (width + pad).saturating_sub(2 * tx).clamp(lo, len);
                if lo == 0 && hi == row.len() {
                    // The usual case, a whole chunk inside the image: a fixed-size copy.
                    row.copy_from_slice(&line[2 * tx - pad..][..2 * CHUNK + 2]);
                    continue;
                }
                row[..lo].fill(0.0);
                for (value, &x) in row[lo..hi].iter_mut().zip(&line[2 * tx + lo - pad..]) {
                    *value = x;
                }
                row[hi..len].fill(0.0);
            }
            transform_patch(&patch, &mut values);
            for (xi, lanes) in values.iter().enumerate() {
                let at = xi * xi_stride + dst0 + kk * mr;
                if n == CHUNK {
                    v[at..at + CHUNK].copy_from_slice(lanes);
                } else {
                    for (value, &x) in v[at..at + n].iter_mut().zip(lanes) {
                        *value = x;
                    }
                }
            }
        }
        j += n;
    }
}

/// `Bᵀ d B` for CHUNK tiles side by side: tile `l` reads columns `2l..2l + 4` of `patch`.
/// Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]].
#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn transform_patch(patch: &[[f32; 2 * CHUNK + 2]; 4], values: &mut [[f32; CHUNK]; XI]) {
    // Rows first: r[i][b][l] = (d B)[i][b] of tile l.
    let mut r = [[[0f32; CHUNK]; 4]; 4];
    for (i, row) in patch.iter().enumerate() {
        for l in 0..CHUNK {
            let (d0, d1, d2, d3) = (row[2 * l], row[2 * l + 1], row[2 * l + 2], row[2 * l + 3]);
            r[i][0][l] = d0 - d2;
            r[i][1][l] = d1 + d2;
            r[i][2][l] = d2 - d1;
            r[i][3][l] = d1 - d3;
        }
    }
    // Then columns: V[a][b] = (Bᵀ r)[a][b].
    for b in 0..4 {
        for l in 0..CHUNK {
            let (r0, r1, r2, r3) = (r[0][b][l], r[1][b][l], r[2][b][l], r[3][b][l]);
            values[b][l] = r0 - r2;
            values[4 + b][l] = r1 + r2;
            values[8 + b][l] = r2 - r1;
            values[12 + b][l] = r1 - r3;
        }
    }
}

/// `Aᵀ x` for one 4-vector: Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn a_rows([x0, x1, x2, x3]: [f32; 4]) -> [f32; 2] {
    [x0 + x1 + x2, x1 - x2 - x3]
}

/// A task's output transform.
struct OutputJob<'a> {
    plan: &'a Plan,
    /// The accumulator `[ξ][co_rows][ldm]`.
    m: &'a [f32],
    co_rows: usize,
    ldm: usize,
    bias: &'a [f32],
    /// Tiles `t0..t0 + count`, output-channel panels `range`.
    t0: usize,
    count: usize,
    range: std::ops::Range<usize>,
    /// The whole output, `out_len` values.
    out: SendPtr,
    out_len: usize,
}

isa::per_isa!(
    /// `Aᵀ M A` plus the bias for the job's output channels and tiles, into the output pixels
    /// that exist (the last tile row or column may cover one).
    fn transform_output(job: &OutputJob) => transform_output_portable
);

#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn transform_output_portable(job: &OutputJob) {
    let OutputJob { plan, m, co_rows, ldm, bias, t0, count, ref range, out, out_len } = *job;
    let Plan { shape, out_h, out_w, .. } = *plan;
    let cout = shape.out_channels;
    let tiles_x = plan.tiles_x();
    let per_image = plan.tiles_per_image();
    let plane = out_h * out_w;
    let first = range.start * NR;
    let last = (range.end * NR).min(cout);
    let mut j = 0;
    while j < count {
        // Up to CHUNK tiles side by side in one tile row.
        let t = t0 + j;
        let (image, rest) = (t / per_image, t % per_image);
        let (ty, tx) = (rest / tiles_x, rest % tiles_x);
        let n = CHUNK.min(tiles_x - tx).min(count - j);
        let rows = (out_h - 2 * ty).min(2);
        let cols = (out_w - 2 * tx).min(2 * n);
        for (local, &bias) in bias[first..last].iter().enumerate() {
            let co = first + local;
            let mut x = [[0f32; CHUNK]; XI];
            for (xi, lanes) in x.iter_mut().enumerate() {
                let from = &m[(xi * co_rows + local) * ldm + j..][..n];
                if n == CHUNK {
                    lanes.copy_from_slice(from);
                } else {
                    lanes[..n].copy_from_slice(from);
                }
            }
            let pixels = output_pixels(&x, bias);
            let base = (image * cout + co) * plane + 2 * ty * out_w + 2 * tx;
            for (i, line) in pixels.iter().enumerate().take(rows) {
                let at = base + i * out_w;
                debug_assert!(at + cols <= out_len);
                // SAFETY: `at..at + cols` is output row 2·ty + i (< out_h), columns
                // 2·tx..2·tx + cols (≤ out_w) of channel co of this image, inside the output
                // (`out_len` values); those pixels belong to this task's tiles and channels,
                // which no other task writes.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), cols) };
                dst.copy_from_slice(&line[..cols]);
            }
        }
        j += n;
    }
}

/// `Aᵀ M A + bias` for CHUNK tiles side by side: two output rows of 2·CHUNK pixels.
#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn output_pixels(x: &[[f32; CHUNK]; XI], bias: f32) -> [[f32; 2 * CHUNK]; 2] {
    let mut pixels = [[0f32; 2 * CHUNK]; 2];
    for l in 0..CHUNK {
        // t = Aᵀ M (2×4), then y = t A (2×2).
        let columns: [[f32; 2]; 4] =
            std::array::from_fn(|c| a_rows([x[c][l], x[4 + c][l], x[8 + c][l], x[12 + c][l]]));
        for (i, line) in pixels.iter_mut().enumerate() {
            let [left, right] = a_rows(columns.map(|column| column[i]));
            line[2 * l] = left + bias;
            line[2 * l + 1] = right + bias;
        }
    }
    pixels
}
