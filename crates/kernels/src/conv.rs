//! 2-D convolution as a blocked im2col feeding a register-tiled micro-kernel.
//!
//! The output of one image is a matrix `out[co][p]` (`p` = output position, row-major over the
//! output plane), the product of the weights `W[co][k]` (`k` = `ci`·`kh`·`kw` + `ky`·`kw` + `kx`)
//! and the im2col matrix `col[k][p]`. That matrix is never built whole: each task takes a block of
//! up to `mc` output positions and, `kc` rows of `k` at a time, packs that slice of `col` into
//! panels of `mr` positions (the micro-kernel's vector width times its vector count), then runs the
//! micro-kernel over every pair (panel of `mr` positions, panel of [`NR`] output channels). The
//! weights are packed once, at load, into panels of [`NR`] output channels with `k` outermost, so a
//! micro-kernel streams both operands contiguously. The bias initialises the accumulators of the
//! first `kc` slice, so no pass over the output adds it afterwards.
//!
//! Parallelism: rayon tasks over (image, block of positions, range of output-channel panels);
//! each task writes a disjoint rectangle of the output.
//!
//! 3×3 stride-1 convolutions large enough to repay a per-call weight transform run as Winograd
//! F(2×2, 3×3) instead (`crate::winograd`, [`Algorithm`]), from the same packed weights.

use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;

use crate::isa::{self, Isa};
use crate::micro::{
    AlignedVec, LANES, SendPtr, Start, Tile, Vectors, micro_width, tile_product, zeroed,
};
use crate::{Result, bail, winograd};

/// Output channels per micro-kernel tile (and per packed weight panel).
pub use crate::micro::NR;

/// A convolution's geometry: square stride and padding on both axes, no dilation, one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (each side, both axes).
    pub padding: usize,
}

impl Conv2dShape {
    /// Output (height, width) for an input of `height`×`width`.
    ///
    /// # Errors
    /// A zero stride or kernel, or a padded input smaller than the kernel.
    pub fn output_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        if self.stride == 0 || self.kernel_h == 0 || self.kernel_w == 0 {
            return bail(format!("conv2d: stride and kernel must be positive, got {self:?}"));
        }
        let padded_h = height + 2 * self.padding;
        let padded_w = width + 2 * self.padding;
        if padded_h < self.kernel_h || padded_w < self.kernel_w {
            return bail(format!(
                "conv2d: input {height}x{width} with padding {} is smaller than the {}x{} kernel",
                self.padding, self.kernel_h, self.kernel_w
            ));
        }
        Ok((
            (padded_h - self.kernel_h) / self.stride + 1,
            (padded_w - self.kernel_w) / self.stride + 1,
        ))
    }

    /// The reduction length `in_channels`·`kernel_h`·`kernel_w`.
    pub fn reduction(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Multiply-adds ×2 for one forward pass over `batch` images of `height`×`width`.
    ///
    /// # Errors
    /// As [`Conv2dShape::output_size`].
    pub fn flops(&self, batch: usize, height: usize, width: usize) -> Result<f64> {
        let (oh, ow) = self.output_size(height, width)?;
        Ok(2.0 * (batch * self.out_channels * oh * ow) as f64 * self.reduction() as f64)
    }
}

/// Cache blocking of [`PackedConv2d::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Output positions per task (rounded up to the micro-kernel's width).
    pub mc: usize,
    /// Reduction rows packed at a time.
    pub kc: usize,
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking { mc: 256, kc: 256 }
    }
}

/// How [`PackedConv2d::forward`] computes a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// What [`set_override`] chose; without one, Winograd F(2×2, 3×3) for 3×3 stride-1
    /// convolutions with enough channels and output tiles to repay the per-call weight
    /// transform ([`winograd_pays`]), im2col otherwise.
    Auto,
    /// Always the blocked im2col.
    Im2col,
    /// Winograd F(2×2, 3×3) wherever it applies (3×3, stride 1), im2col elsewhere.
    Winograd,
}

impl Algorithm {
    /// The name [`Algorithm::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Im2col => "im2col",
            Algorithm::Winograd => "winograd",
        }
    }

    /// An algorithm by name (`auto`, `im2col`, `winograd`, any case); `None` for anything else.
    pub fn parse(text: &str) -> Option<Algorithm> {
        [Algorithm::Auto, Algorithm::Im2col, Algorithm::Winograd]
            .into_iter()
            .find(|algorithm| text.trim().eq_ignore_ascii_case(algorithm.name()))
    }
}

/// The environment variable the front ends read into [`set_override`]: `auto`, `im2col` or
/// `winograd`. `im2col` gives the bits of releases before Winograd (the two differ by
/// rounding only).
pub const ALGORITHM_VAR: &str = "IMAGELAB_CPU_CONV";

/// 0: none (by size); else `Algorithm as u8`.
static OVERRIDE: AtomicU8 = AtomicU8::new(0);

/// Makes every [`Algorithm::Auto`] convolution use `algorithm` (`None` or `Some(Auto)`: choose
/// by size again). Takes effect for the next call.
pub fn set_override(algorithm: Option<Algorithm>) {
    let value = match algorithm {
        None | Some(Algorithm::Auto) => 0,
        Some(Algorithm::Im2col) => 1,
        Some(Algorithm::Winograd) => 2,
    };
    OVERRIDE.store(value, Ordering::Relaxed);
}

/// The algorithm [`set_override`] set, if any.
pub fn override_algorithm() -> Option<Algorithm> {
    match OVERRIDE.load(Ordering::Relaxed) {
        1 => Some(Algorithm::Im2col),
        2 => Some(Algorithm::Winograd),
        _ => None,
    }
}

/// Fewest output tiles (2×2 outputs each, over the batch) for which [`Algorithm::Auto`] takes
/// Winograd: below this the per-call weight transform costs more than the products save
/// (`examples/conv_tune` on SDXL's 3×3 shapes, 2-core Zen 4: 1280 channels on one 16×16 image,
/// 64 tiles, 1.2× faster; on two 8×8 images, 32 tiles, 1.2–1.7× slower).
pub const WINOGRAD_MIN_TILES: usize = 64;
/// Fewest input and output channels for which [`Algorithm::Auto`] takes Winograd.
pub const WINOGRAD_MIN_CHANNELS: usize = 64;

/// Whether [`Algorithm::Auto`] runs `shape` on `batch` images of `height`×`width` as Winograd.
pub fn winograd_pays(shape: Conv2dShape, batch: usize, height: usize, width: usize) -> bool {
    let Ok((oh, ow)) = shape.output_size(height, width) else { return false };
    winograd::applies(shape)
        && shape.in_channels >= WINOGRAD_MIN_CHANNELS
        && shape.out_channels >= WINOGRAD_MIN_CHANNELS
        && winograd::tiles(batch, oh, ow) >= WINOGRAD_MIN_TILES
}

/// A convolution with its weights packed for the micro-kernels (done once, at load).
#[derive(Debug, Clone)]
pub struct PackedConv2d {
    shape: Conv2dShape,
    /// `[panel][k][NR]`: output channel `panel·NR + r`, zero rows past `out_channels`.
    panels: Vec<f32>,
    /// Padded to whole panels; zeros without a bias.
    bias: Vec<f32>,
    has_bias: bool,
    blocking: Blocking,
    algorithm: Algorithm,
}

impl PackedConv2d {
    /// Packs `weight` (`[out][in][kh][kw]`, torch's and candle's layout) and `bias` (`[out]`).
    ///
    /// # Errors
    /// Lengths that do not match `shape`, or an empty shape.
    pub fn new(shape: Conv2dShape, weight: &[f32], bias: Option<&[f32]>) -> Result<Self> {
        let k = shape.reduction();
        if k == 0 || shape.out_channels == 0 || shape.stride == 0 {
            return bail(format!("conv2d: empty shape {shape:?}"));
        }
        if weight.len() != shape.out_channels * k {
            return bail(format!(
                "conv2d: weight has {} values, shape {shape:?} needs {}",
                weight.len(),
                shape.out_channels * k
            ));
        }
        if let Some(bias) = bias
            && bias.len() != shape.out_channels
        {
            return bail(format!(
                "conv2d: bias has {} values, {} output channels",
                bias.len(),
                shape.out_channels
            ));
        }
        let panel_count = shape.out_channels.div_ceil(NR);
        let mut panels = zeroed(panel_count * k * NR);
        panels.par_chunks_mut(k * NR).enumerate().for_each(|(panel, dst)| {
            for r in 0..NR {
                let co = panel * NR + r;
                if co >= shape.out_channels {
                    break;
                }
                for (kk, &value) in weight[co * k..(co + 1) * k].iter().enumerate() {
                    dst[kk * NR + r] = value;
                }
            }
        });
        let mut padded_bias = vec![0f32; panel_count * NR];
        if let Some(bias) = bias {
            padded_bias[..shape.out_channels].copy_from_slice(bias);
        }
        Ok(Self {
            shape,
            panels,
            bias: padded_bias,
            has_bias: bias.is_some(),
            blocking: Blocking::default(),
            algorithm: Algorithm::Auto,
        })
    }

    /// The geometry.
    pub fn shape(&self) -> Conv2dShape {
        self.shape
    }

    /// Changes the cache blocking (benchmarks; results do not change beyond rounding).
    #[must_use]
    pub fn with_blocking(mut self, blocking: Blocking) -> Self {
        self.blocking = Blocking { mc: blocking.mc.max(1), kc: blocking.kc.max(1) };
        self
    }

    /// Changes the algorithm (benchmarks and tests; results do not change beyond rounding).
    #[must_use]
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Whether a forward pass over `batch` images of `height`×`width` runs as Winograd.
    pub fn uses_winograd(&self, batch: usize, height: usize, width: usize) -> bool {
        match (self.algorithm, override_algorithm()) {
            (Algorithm::Im2col, _) | (Algorithm::Auto, Some(Algorithm::Im2col)) => false,
            (Algorithm::Winograd, _) | (Algorithm::Auto, Some(Algorithm::Winograd)) => {
                winograd::applies(self.shape)
            }
            (Algorithm::Auto, _) => winograd_pays(self.shape, batch, height, width),
        }
    }

    /// The weights back in `[out][in][kh][kw]` layout.
    pub fn weight(&self) -> Vec<f32> {
        let k = self.shape.reduction();
        let mut weight = vec![0f32; self.shape.out_channels * k];
        for (co, row) in weight.chunks_exact_mut(k).enumerate() {
            let panel = &self.panels[(co / NR) * k * NR..][..k * NR];
            for (kk, value) in row.iter_mut().enumerate() {
                *value = panel[kk * NR + co % NR];
            }
        }
        weight
    }

    /// The bias, if the convolution has one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.has_bias.then(|| &self.bias[..self.shape.out_channels])
    }

    /// Convolves `batch` images (`[batch][in][height][width]`), returning
    /// `[batch][out][oh][ow]` and (oh, ow).
    ///
    /// # Errors
    /// An input length that does not match, or an input smaller than the kernel.
    pub fn forward(
        &self,
        input: &[f32],
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<(Vec<f32>, (usize, usize))> {
        let (oh, ow) = self.shape.output_size(height, width)?;
        let mut out = vec![0f32; batch * self.shape.out_channels * oh * ow];
        self.forward_into(input, batch, height, width, &mut out)?;
        Ok((out, (oh, ow)))
    }

    /// As [`PackedConv2d::forward`], into `out` (`[batch][out][oh][ow]`, overwritten).
    ///
    /// # Errors
    /// Lengths that do not match, or an input smaller than the kernel.
    pub fn forward_into(
        &self,
        input: &[f32],
        batch: usize,
        height: usize,
        width: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let shape = self.shape;
        let (oh, ow) = shape.output_size(height, width)?;
        let plane_in = shape.in_channels * height * width;
        if input.len() != batch * plane_in {
            return bail(format!(
                "conv2d: input has {} values, expected {batch}x{}x{height}x{width}",
                input.len(),
                shape.in_channels
            ));
        }
        let positions = oh * ow;
        if out.len() != batch * shape.out_channels * positions {
            return bail(format!(
                "conv2d: output has {} values, expected {batch}x{}x{oh}x{ow}",
                out.len(),
                shape.out_channels
            ));
        }
        if positions == 0 || batch == 0 {
            return Ok(());
        }
        let isa = isa::current();
        let mr = micro_width(isa);
        if self.uses_winograd(batch, height, width) {
            // A tile is 4 output positions; the blocking's positions per task become tiles.
            let tiles = winograd::tiles(batch, oh, ow);
            let block = (self.blocking.mc / 4).clamp(1, tiles).div_ceil(mr) * mr;
            let kc = self.blocking.kc.min(shape.in_channels);
            let plan = winograd::Plan {
                isa,
                shape,
                batch,
                height,
                width,
                out_h: oh,
                out_w: ow,
                mr,
                block,
                kc,
            };
            winograd::forward(&plan, &self.panels, &self.bias, input, out);
            return Ok(());
        }
        let k = shape.reduction();
        let mc = self.blocking.mc.min(positions).div_ceil(mr) * mr;
        let kc = self.blocking.kc.min(k);
        let position_blocks = positions.div_ceil(mc);
        let panel_count = shape.out_channels.div_ceil(NR);
        // Enough tasks for every thread (4 each, for balance), splitting the output channels
        // when the images are small; a task keeps at least 8 panels (48 channels).
        let wanted = 4 * rayon::current_num_threads();
        let base = batch * position_blocks;
        let chunks =
            if base >= wanted { 1 } else { wanted.div_ceil(base).min(panel_count.div_ceil(8)) };
        let per_chunk = panel_count.div_ceil(chunks.max(1));
        let chunks = panel_count.div_ceil(per_chunk);
        let tasks = batch * position_blocks * chunks;
        let geometry = Geometry { shape, height, width, out_w: ow, k, mr, kc };
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..tasks).into_par_iter().for_each_init(
            || AlignedVec::zeros(kc * mc),
            |buffers, task| {
                let chunk = task % chunks;
                let block = (task / chunks) % position_blocks;
                let image = task / (chunks * position_blocks);
                let p0 = block * mc;
                let panel_range = chunk * per_chunk..((chunk + 1) * per_chunk).min(panel_count);
                let out_image = out_ptr.offset(image * shape.out_channels * positions);
                self.run_task(
                    isa,
                    &geometry,
                    &input[image * plane_in..][..plane_in],
                    p0,
                    (positions - p0).min(mc),
                    panel_range,
                    out_image,
                    positions,
                    buffers,
                );
            },
        );
        Ok(())
    }

    /// One task: positions `p0..p0 + count` of one image, output-channel panels `panels`.
    fn run_task(
        &self,
        isa: Isa,
        geometry: &Geometry,
        image: &[f32],
        p0: usize,
        count: usize,
        panels: std::ops::Range<usize>,
        out: SendPtr,
        ldc: usize,
        buffers: &mut AlignedVec,
    ) {
        let Geometry { k, mr, kc, .. } = *geometry;
        let out_channels = self.shape.out_channels;
        let position_panels = count.div_ceil(mr);
        let mut k0 = 0;
        while k0 < k {
            let kcv = kc.min(k - k0);
            pack_block(geometry, image, p0, count, k0, kcv, buffers);
            let packed = buffers.as_slice();
            for panel in panels.clone() {
                let weights = &self.panels[(panel * k + k0) * NR..][..kcv * NR];
                let bias = &self.bias[panel * NR..][..NR];
                let rows = NR.min(out_channels - panel * NR);
                for ir in 0..position_panels {
                    let cols = mr.min(count - ir * mr);
                    let a = &packed[ir * kcv * mr..][..kcv * mr];
                    let c = out.offset(panel * NR * ldc + p0 + ir * mr);
                    let start = if k0 == 0 { Start::RowBias(bias.as_ptr()) } else { Start::Output };
                    let tile = Tile { rows, cols, ldc, start };
                    let vectors =
                        Vectors { ptr: a.as_ptr(), stride: LANES, step: mr, pieces: mr / LANES };
                    // SAFETY: `c` points into this task's rectangle of the output: rows
                    // `panel·NR..+rows` (< out_channels) at stride `ldc` (the plane size), columns
                    // `p0 + ir·mr..+cols` (≤ p0 + count ≤ the plane size); no other task writes
                    // there, and `out` outlives the parallel loop. `a` is a whole packed panel
                    // (kcv steps of mr), `weights` kcv·NR values, `bias` NR.
                    unsafe { tile_product(isa, kcv, vectors, weights.as_ptr(), c.0, tile) };
                }
            }
            k0 += kcv;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    shape: Conv2dShape,
    height: usize,
    width: usize,
    out_w: usize,
    k: usize,
    mr: usize,
    kc: usize,
}

/// One im2col row `kk` of a block, written straight into the panels `[panel][kcv][mr]`:
/// position `j` of the block goes to panel `j / mr`, lane `j % mr`.
struct PanelRow<'a> {
    panels: &'a mut [f32],
    kk: usize,
    kcv: usize,
    mr: usize,
}

impl PanelRow<'_> {
    fn index(&self, j: usize) -> usize {
        ((j / self.mr) * self.kcv + self.kk) * self.mr + j % self.mr
    }

    /// Positions `j..j + source.len()` take `source`.
    fn copy(&mut self, mut j: usize, mut source: &[f32]) {
        while !source.is_empty() {
            let take = (self.mr - j % self.mr).min(source.len());
            let at = self.index(j);
            self.panels[at..at + take].copy_from_slice(&source[..take]);
            j += take;
            source = &source[take..];
        }
    }

    /// Positions `j..j + len` are zero.
    fn zero(&mut self, mut j: usize, mut len: usize) {
        while len > 0 {
            let take = (self.mr - j % self.mr).min(len);
            let at = self.index(j);
            self.panels[at..at + take].fill(0.0);
            j += take;
            len -= take;
        }
    }

    fn set(&mut self, j: usize, value: f32) {
        let at = self.index(j);
        self.panels[at] = value;
    }
}

/// Packs `col[k0..k0+kcv][p0..p0+count]` into panels `[count/mr][kcv][mr]` (zeros past `count`).
fn pack_block(
    geometry: &Geometry,
    image: &[f32],
    p0: usize,
    count: usize,
    k0: usize,
    kcv: usize,
    buffers: &mut AlignedVec,
) {
    let Geometry { shape, height, width, out_w, mr, .. } = *geometry;
    let panel_count = count.div_ceil(mr);
    let panels = &mut buffers.as_mut_slice()[..panel_count * kcv * mr];
    let taps = shape.kernel_h * shape.kernel_w;
    let plane = height * width;
    let pointwise = taps == 1 && shape.stride == 1 && shape.padding == 0;
    for kk in 0..kcv {
        let k = k0 + kk;
        let ci = k / taps;
        let ky = (k % taps) / shape.kernel_w;
        let kx = k % shape.kernel_w;
        let source = &image[ci * plane..][..plane];
        let mut row = PanelRow { panels: &mut *panels, kk, kcv, mr };
        if pointwise {
            row.copy(0, &source[p0..p0 + count]);
        } else {
            fill_row(&mut row, count, source, shape, height, width, out_w, p0, ky, kx);
        }
        row.zero(count, panel_count * mr - count);
    }
}

/// One im2col row: the input tap (`ky`, `kx`) of channel plane `source` for output positions
/// `p0..p0 + count`.
fn fill_row(
    row: &mut PanelRow,
    count: usize,
    source: &[f32],
    shape: Conv2dShape,
    height: usize,
    width: usize,
    out_w: usize,
    p0: usize,
    ky: usize,
    kx: usize,
) {
    let stride = shape.stride;
    let pad = shape.padding;
    let mut j = 0;
    while j < count {
        let p = p0 + j;
        let oy = p / out_w;
        let ox0 = p % out_w;
        let run = (out_w - ox0).min(count - j);
        let start = j;
        j += run;
        // Input row iy = oy·stride + ky − pad, in range?
        let iy = oy * stride + ky;
        if iy < pad || iy - pad >= height {
            row.zero(start, run);
            continue;
        }
        let src = &source[(iy - pad) * width..][..width];
        if stride == 1 {
            // ix = ox + kx − pad is in range for ox in [lo, hi).
            let lo = pad.saturating_sub(kx);
            let hi = (width + pad).saturating_sub(kx).min(out_w);
            let a = lo.clamp(ox0, ox0 + run);
            let b = hi.clamp(a, ox0 + run);
            row.zero(start, a - ox0);
            if b > a {
                // a ≥ lo, so a + kx ≥ pad; b ≤ hi, so b + kx − pad ≤ width.
                row.copy(start + a - ox0, &src[a + kx - pad..b + kx - pad]);
            }
            row.zero(start + b - ox0, ox0 + run - b);
        } else {
            for i in 0..run {
                let ix = (ox0 + i) * stride + kx;
                let value = if ix < pad || ix - pad >= width { 0.0 } else { src[ix - pad] };
                row.set(start + i, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{on_each_isa, values};

    /// The definition, in f64.
    fn reference(
        shape: Conv2dShape,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Vec<f32> {
        let (oh, ow) = shape.output_size(height, width).unwrap();
        let (kh, kw, ci_n) = (shape.kernel_h, shape.kernel_w, shape.in_channels);
        let mut out = Vec::with_capacity(batch * shape.out_channels * oh * ow);
        for b in 0..batch {
            for co in 0..shape.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = bias.map_or(0.0, |bias| f64::from(bias[co]));
                        for ci in 0..ci_n {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * shape.stride + ky).checked_sub(shape.padding);
                                    let ix = (ox * shape.stride + kx).checked_sub(shape.padding);
                                    let (Some(iy), Some(ix)) = (iy, ix) else { continue };
                                    if iy >= height || ix >= width {
                                        continue;
                                    }
                                    let x = input[((b * ci_n + ci) * height + iy) * width + ix];
                                    let w = weight[((co * ci_n + ci) * kh + ky) * kw + kx];
                                    sum += f64::from(x) * f64::from(w);
                                }
                            }
                        }
                        #[allow(clippy::cast_possible_truncation, reason = "test reference")]
                        out.push(sum as f32);
                    }
                }
            }
        }
        out
    }

    fn check(shape: Conv2dShape, batch: usize, height: usize, width: usize, with_bias: bool) {
        let input = values(batch * shape.in_channels * height * width, 1);
        let weight = values(shape.out_channels * shape.reduction(), 2);
        let bias = with_bias.then(|| values(shape.out_channels, 3));
        let expected = reference(shape, &input, &weight, bias.as_deref(), batch, height, width);
        // Small blocks too, so that several kc slices, position blocks and edge tiles occur.
        let blockings = [Blocking::default(), Blocking { mc: 40, kc: 7 }];
        let algorithms = [Algorithm::Im2col, Algorithm::Winograd];
        for (blocking, algorithm) in blockings.into_iter().flat_map(|b| algorithms.map(|a| (b, a)))
        {
            let conv = PackedConv2d::new(shape, &weight, bias.as_deref())
                .unwrap()
                .with_blocking(blocking)
                .with_algorithm(algorithm);
            let (got, (oh, ow)) = conv.forward(&input, batch, height, width).unwrap();
            assert_eq!((oh, ow), shape.output_size(height, width).unwrap());
            assert_eq!(got.len(), expected.len());
            let tolerance = 1e-5 * (shape.reduction() as f32).sqrt();
            for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (g - e).abs() <= tolerance * (1.0 + e.abs()),
                    "{shape:?} b{batch} {height}x{width} {blocking:?} {algorithm:?} isa {}: out[{i}] = {g}, expected {e}",
                    isa::current().name()
                );
            }
        }
    }

    fn shape(cin: usize, cout: usize, kernel: usize, stride: usize, padding: usize) -> Conv2dShape {
        Conv2dShape {
            in_channels: cin,
            out_channels: cout,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding,
        }
    }

    #[test]
    fn three_by_three_same_padding_odd_sizes() {
        on_each_isa(|| {
            check(shape(3, 5, 3, 1, 1), 1, 7, 9, true);
            check(shape(13, 17, 3, 1, 1), 2, 11, 5, true);
            check(shape(4, 320, 3, 1, 1), 1, 9, 8, true);
            check(shape(20, 7, 3, 1, 1), 3, 1, 1, false);
        });
    }

    #[test]
    fn three_by_three_other_paddings_and_wide_rows() {
        on_each_isa(|| {
            // Padding 0 and 2, odd and even outputs, tile rows longer than one transform chunk
            // and than one vector panel, tiles of both images in one block.
            check(shape(5, 8, 3, 1, 0), 1, 7, 6, true);
            check(shape(4, 6, 3, 1, 2), 2, 5, 8, false);
            check(shape(8, 13, 3, 1, 1), 2, 9, 41, true);
            check(shape(3, 7, 3, 1, 1), 3, 2, 150, true);
        });
    }

    #[test]
    fn auto_takes_winograd_only_where_it_pays() {
        let big = shape(320, 320, 3, 1, 1);
        assert!(winograd_pays(big, 2, 64, 64));
        assert!(!winograd_pays(big, 1, 8, 8), "too few tiles");
        assert!(!winograd_pays(shape(4, 320, 3, 1, 1), 2, 64, 64), "too few input channels");
        assert!(!winograd_pays(shape(320, 320, 3, 2, 1), 2, 64, 64), "stride 2");
        assert!(!winograd_pays(shape(320, 320, 1, 1, 0), 2, 64, 64), "1x1");
        let conv = PackedConv2d::new(big, &vec![0.0; 320 * 320 * 9], None).unwrap();
        assert!(conv.uses_winograd(2, 64, 64));
        assert!(!conv.clone().with_algorithm(Algorithm::Im2col).uses_winograd(2, 64, 64));
        assert!(conv.with_algorithm(Algorithm::Winograd).uses_winograd(1, 2, 2));
    }

    #[test]
    fn algorithm_names_round_trip() {
        for algorithm in [Algorithm::Auto, Algorithm::Im2col, Algorithm::Winograd] {
            assert_eq!(Algorithm::parse(algorithm.name()), Some(algorithm));
        }
        assert_eq!(Algorithm::parse(" WinoGrad "), Some(Algorithm::Winograd));
        assert_eq!(Algorithm::parse("fft"), None);
        assert_eq!(Algorithm::parse(""), None);
    }

    #[test]
    fn stride_two() {
        on_each_isa(|| {
            check(shape(6, 10, 3, 2, 1), 2, 9, 7, true);
            check(shape(5, 8, 3, 2, 1), 1, 16, 16, true);
            // The VAE encoder's downsample: padding 0 (the caller pads right and bottom).
            check(shape(7, 7, 3, 2, 0), 1, 11, 12, true);
        });
    }

    #[test]
    fn pointwise_and_other_kernels() {
        on_each_isa(|| {
            check(shape(9, 13, 1, 1, 0), 2, 5, 7, true);
            check(shape(4, 3, 1, 1, 0), 1, 1, 67, false);
            check(shape(5, 6, 1, 2, 0), 1, 6, 5, true);
            check(shape(3, 4, 5, 1, 2), 1, 6, 9, true);
            check(shape(2, 3, 2, 1, 0), 1, 4, 4, false);
        });
    }

    #[test]
    fn sdxl_like_channels_batch_two() {
        on_each_isa(|| {
            check(shape(64, 70, 3, 1, 1), 2, 12, 12, true);
            check(shape(96, 48, 1, 1, 0), 2, 10, 10, true);
        });
    }

    #[test]
    fn weights_round_trip_and_errors() {
        let s = shape(3, 8, 3, 1, 1);
        let weight = values(8 * 27, 5);
        let bias = values(8, 6);
        let conv = PackedConv2d::new(s, &weight, Some(&bias)).unwrap();
        assert_eq!(conv.weight(), weight);
        assert_eq!(conv.bias(), Some(&bias[..]));
        assert!(PackedConv2d::new(s, &weight[1..], None).unwrap_err().0.contains("weight has"));
        assert!(
            PackedConv2d::new(s, &weight, Some(&bias[1..])).unwrap_err().0.contains("bias has")
        );
        let no_bias = PackedConv2d::new(s, &weight, None).unwrap();
        assert_eq!(no_bias.bias(), None);
        assert!(no_bias.forward(&[0.0; 10], 1, 3, 3).unwrap_err().0.contains("input has"));
        let big = shape(1, 1, 5, 1, 0);
        let err = PackedConv2d::new(big, &[0.0; 25], None).unwrap().forward(&[0.0; 9], 1, 3, 3);
        assert!(err.unwrap_err().0.contains("smaller than the 5x5 kernel"));
    }
}
