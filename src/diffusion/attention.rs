//! Scaled dot-product attention without a full score matrix in memory.
//!
//! Three implementations of the same function, softmax(Q·Kᵀ/√d)·V over heads:
//! - **flash** (feature `flash-attn`, CUDA, f16/bf16): candle-flash-attn's fused kernel; scores
//!   never leave registers, and Q/K/V are read in their (B, L, H, D) projection layout, so there
//!   is no copy at all.
//! - **chunked** (everywhere else): queries are processed in row blocks sized so that one
//!   block's scores stay under [`SCORE_BUDGET`] elements; each block's softmax is exact (it
//!   spans all keys) and accumulates in f32 — candle's CUDA softmax kernel sums in f32 for f16
//!   and bf16 inputs, and on the CPU a half-precision block is widened to f32 for the softmax —
//!   while scores stay in the input dtype in memory. At SDXL 1024², CFG, the 4096-token
//!   self-attention (10 heads) needs 0.67 GB of f16 scores at once (1.3 GB more for the f32
//!   copy the old path made); the VAE's 16384-token mid-block attention 0.54 GB f16 per image.
//!   Chunked, each stays under 128 MiB.
//! - **naive**: the whole score matrix at once (the reference the others are tested against).
//!
//! `IMAGELAB_ATTENTION=flash|chunked|naive` forces one (for benchmarks; the front end's wiring
//! calls [`set_override`]); by default flash is used where it applies and chunked otherwise.
//!
//! Copies: on a GPU, splitting heads needs one contiguous copy of each of Q, K, V ((B, L, H·D) →
//! (B, H, L, D); cuBLAS needs one batch stride). On the CPU in f32, our GEMM packs each batch
//! item's and head's keys and values once, straight out of the projections (row stride H·D), and
//! the tasks are blocks of one head's query rows, each on one thread (read in place; the scores,
//! under [`CPU_SCORE_BUDGET`], in cache; the softmax, `imagelab_kernels::softmax`, scale folded
//! in, in place over them), with the heads-first result copied once into the (B, L, H·D) layout. Small heads (SDXL's 64 wide)
//! would leave a GEMM split across threads mostly waiting. In half precision on the CPU,
//! candle's matmul reads (1, H, L, D) views of the projections one batch item at a time.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Result, Tensor};
use imagelab_kernels::gemm::{PackedMatrix, Threads};
use imagelab_kernels::softmax::scaled_softmax_row;
use rayon::prelude::*;

/// Largest number of score elements (batch × heads × query rows × keys) one block may hold:
/// 2²⁶, 128 MiB in f16.
pub const SCORE_BUDGET: usize = 1 << 26;

/// The CPU's score budget per block of one head's query rows (f32): 2²⁰, 4 MiB, so that a
/// block's scores stay in cache between the GEMM that writes them, the softmax and the GEMM that
/// reads them (2¹⁸ to 2²² measured within noise of each other at 512², docs/PERFORMANCE.md).
pub const CPU_SCORE_BUDGET: usize = 1 << 20;

/// Which attention implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// The fused flash-attention kernel (CUDA, f16/bf16, feature `flash-attn`).
    Flash,
    /// Query blocks under a score budget (any device and dtype).
    Chunked,
    /// The whole score matrix at once.
    Naive,
}

impl AttentionKind {
    /// Parses `flash`, `chunked` or `naive`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "flash" => Some(Self::Flash),
            "chunked" => Some(Self::Chunked),
            "naive" => Some(Self::Naive),
            _ => None,
        }
    }

    /// The name [`AttentionKind::parse`] accepts.
    pub fn label(self) -> &'static str {
        match self {
            Self::Flash => "flash",
            Self::Chunked => "chunked",
            Self::Naive => "naive",
        }
    }
}

/// The process-wide override (0: none, else `1 + kind as u8`), set by the front end's wiring
/// from `IMAGELAB_ATTENTION` (benchmarks compare implementations with it).
static OVERRIDE: AtomicU8 = AtomicU8::new(0);

/// Forces one implementation for every attention from now on (`None`: the default choice).
pub fn set_override(kind: Option<AttentionKind>) {
    let code = match kind {
        None => 0,
        Some(AttentionKind::Flash) => 1,
        Some(AttentionKind::Chunked) => 2,
        Some(AttentionKind::Naive) => 3,
    };
    OVERRIDE.store(code, Ordering::Relaxed);
}

fn forced_kind() -> Option<AttentionKind> {
    match OVERRIDE.load(Ordering::Relaxed) {
        1 => Some(AttentionKind::Flash),
        2 => Some(AttentionKind::Chunked),
        3 => Some(AttentionKind::Naive),
        _ => None,
    }
}

/// Whether this build can run flash attention on `device` for `dtype`.
pub fn flash_available(device: &Device, dtype: DType) -> bool {
    cfg!(feature = "flash-attn") && device.is_cuda() && matches!(dtype, DType::F16 | DType::BF16)
}

/// candle-flash-attn takes head widths that are multiples of 8 up to 512 (SDXL's UNet: 64; its
/// VAE: one head of 512); other widths run chunked.
pub fn flash_head_dim_ok(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(8) && head_dim <= 512
}

/// The implementation [`attention`] uses for these inputs: the override when it applies (flash falls back to chunked where it cannot run), else flash where
/// available, else chunked.
pub fn choose(device: &Device, dtype: DType) -> AttentionKind {
    let flash = flash_available(device, dtype);
    match forced_kind() {
        Some(AttentionKind::Flash) | None if flash => AttentionKind::Flash,
        Some(AttentionKind::Naive) => AttentionKind::Naive,
        _ => AttentionKind::Chunked,
    }
}

/// Multi-head attention on (B, L, H·D) queries and (B, S, H·D) keys/values; returns (B, L, H·D).
///
/// # Errors
/// Shape mismatches.
pub fn attention(query: &Tensor, key: &Tensor, value: &Tensor, heads: usize) -> Result<Tensor> {
    match choose(query.device(), query.dtype()) {
        AttentionKind::Flash if flash_head_dim_ok(query.dim(2)? / heads.max(1)) => {
            flash(query, key, value, heads)
        }
        AttentionKind::Flash | AttentionKind::Chunked => {
            let budget = if query.device().is_cpu() { CPU_SCORE_BUDGET } else { SCORE_BUDGET };
            chunked(query, key, value, heads, budget)
        }
        AttentionKind::Naive => naive(query, key, value, heads),
    }
}

struct Split {
    batch: usize,
    query_len: usize,
    key_len: usize,
    head_dim: usize,
    scale: f64,
}

fn split_shapes(query: &Tensor, key: &Tensor, value: &Tensor, heads: usize) -> Result<Split> {
    split_dims(query.shape(), key.shape(), value.shape(), heads)
}

/// The attention's sizes from (B, L, H·D) queries and (B, S, H·D) keys and values.
fn split_dims(
    query: &candle_core::Shape,
    key: &candle_core::Shape,
    value: &candle_core::Shape,
    heads: usize,
) -> Result<Split> {
    let (batch, query_len, inner) = query.dims3()?;
    let (key_batch, key_len, key_inner) = key.dims3()?;
    if heads == 0 || inner % heads != 0 || key_inner != inner || key_batch != batch {
        candle_core::bail!(
            "attention: query {query:?}, key {key:?} do not split into {heads} heads"
        );
    }
    if value != key {
        candle_core::bail!("attention: value {value:?} differs from key {key:?}");
    }
    let head_dim = inner / heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    Ok(Split { batch, query_len, key_len, head_dim, scale })
}

/// (B, L, H·D) → (B, H, L, D), contiguous (the one copy the GEMMs need).
fn heads_first(
    t: &Tensor,
    batch: usize,
    len: usize,
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    t.reshape((batch, len, heads, head_dim))?.transpose(1, 2)?.contiguous()
}

/// Softmax over the last dimension, accumulated in f32: candle's CUDA kernel already sums half
/// precision in f32; elsewhere a half-precision block is widened for the softmax.
fn softmax_f32_accumulate(scores: &Tensor) -> Result<Tensor> {
    let dtype = scores.dtype();
    if matches!(dtype, DType::F16 | DType::BF16) && !scores.device().is_cuda() {
        candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)
    } else {
        candle_nn::ops::softmax_last_dim(scores)
    }
}

/// `softmax(scale · scores)` over the last dimension, written over `scores` (a tensor nobody
/// else holds: a GEMM's fresh output). On the CPU in f32 this is one parallel pass per row (max,
/// exponentials, sum, normalisation) with the scale folded in and a vectorisable exponential;
/// elsewhere the scale and [`softmax_f32_accumulate`].
fn scaled_softmax(scores: Tensor, scale: f64) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 && scores.is_contiguous() {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "1/√d of a head width is an ordinary f32"
        )]
        scores.inplace_op1(&CpuScaledSoftmax { scale: scale as f32 })?;
        Ok(scores)
    } else {
        softmax_f32_accumulate(&(scores * scale)?)
    }
}

/// The in-place CPU softmax of [`scaled_softmax`].
struct CpuScaledSoftmax {
    scale: f32,
}

impl InplaceOp1 for CpuScaledSoftmax {
    fn name(&self) -> &'static str {
        "imagelab-scaled-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: f32 only", self.name());
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: needs a contiguous tensor", self.name());
        };
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        let scale = self.scale;
        data[start..end].par_chunks_mut(width).for_each(|row| scaled_softmax_row(row, scale));
        Ok(())
    }
}

/// The query rows per block so that `batch·heads·rows·key_len ≤ budget` (at least one row).
pub fn chunk_rows(
    batch: usize,
    heads: usize,
    query_len: usize,
    key_len: usize,
    budget: usize,
) -> usize {
    let per_row = (batch * heads * key_len).max(1);
    (budget / per_row).clamp(1, query_len.max(1))
}

/// Query-blocked attention with at most `budget` score elements per block.
///
/// # Errors
/// Shape mismatches.
pub fn chunked(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    heads: usize,
    budget: usize,
) -> Result<Tensor> {
    if query.device().is_cpu() {
        if [query, key, value].iter().all(|t| t.dtype() == DType::F32) {
            let op = CpuAttention { heads, budget };
            return query.contiguous()?.apply_op3_no_bwd(
                &key.contiguous()?,
                &value.contiguous()?,
                &op,
            );
        }
        return chunked_cpu(query, key, value, heads, budget);
    }
    let Split { batch, query_len, key_len, head_dim, scale } =
        split_shapes(query, key, value, heads)?;
    let query = heads_first(query, batch, query_len, heads, head_dim)?;
    let key_t = heads_first(key, batch, key_len, heads, head_dim)?.t()?;
    let value = heads_first(value, batch, key_len, heads, head_dim)?;
    let rows = chunk_rows(batch, heads, query_len, key_len, budget);
    let mut blocks = Vec::with_capacity(query_len.div_ceil(rows));
    let mut start = 0;
    while start < query_len {
        let len = rows.min(query_len - start);
        let block = query.narrow(2, start, len)?;
        let probs = scaled_softmax(block.matmul(&key_t)?, scale)?;
        // (B, H, len, D) → (B, len, H, D): a view; the concatenation below is the one copy.
        blocks.push(probs.matmul(&value)?.transpose(1, 2)?);
        start += len;
    }
    let out = if blocks.len() == 1 {
        blocks.swap_remove(0).contiguous()?
    } else {
        Tensor::cat(&blocks, 1)?
    };
    out.reshape((batch, query_len, heads * head_dim))
}

/// [`chunked`] on the CPU in f32, on our GEMM (`imagelab_kernels::gemm`), which then follows
/// `IMAGELAB_CPU_ISA` like the rest of the step: per batch item and head, that head's keys and
/// values are packed once straight out of the (B, S, H·D) projections (a row stride of H·D, no
/// head copies); then one task per block of one head's query rows, on one thread: the scores
/// (≤ `budget`, in cache) are one GEMM, the softmax runs over them in place with the scale
/// folded in, and the second GEMM writes the block into a heads-first (B, H, L, D) buffer, copied
/// once into the (B, L, H·D) result.
struct CpuAttention {
    heads: usize,
    budget: usize,
}

impl candle_core::CustomOp3 for CpuAttention {
    fn name(&self) -> &'static str {
        "imagelab-attention"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        k_storage: &CpuStorage,
        k_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, candle_core::Shape)> {
        let kernel_error =
            |err: imagelab_kernels::KernelError| candle_core::Error::Msg(err.to_string());
        let heads = self.heads;
        let Split { batch, query_len, key_len, head_dim, scale } =
            split_dims(q_layout.shape(), k_layout.shape(), v_layout.shape(), heads)?;
        let inner = heads * head_dim;
        let (q, k, v) = (
            f32_slice(q_storage, q_layout)?,
            f32_slice(k_storage, k_layout)?,
            f32_slice(v_storage, v_layout)?,
        );
        #[allow(
            clippy::cast_possible_truncation,
            reason = "1/√d of a head width is an ordinary f32"
        )]
        let scale = scale as f32;
        let rows = chunk_rows(1, 1, query_len, key_len, self.budget);
        // Every (item, head)'s keys and values packed once, straight out of the projections.
        let packed = (0..batch * heads)
            .into_par_iter()
            .map(|pair| {
                let (item, head) = (pair / heads, pair % heads);
                let at = item * key_len * inner + head * head_dim;
                let keys =
                    PackedMatrix::from_linear_strided(&k[at..], key_len, head_dim, inner, None)?;
                let values =
                    PackedMatrix::from_row_major_strided(&v[at..], key_len, head_dim, inner, None)?;
                Ok((keys, values))
            })
            .collect::<std::result::Result<Vec<_>, imagelab_kernels::KernelError>>()
            .map_err(kernel_error)?;
        // Heads first, (B, H, L, D): one task per block of one head's query rows, each on one
        // thread with its scores in cache.
        let mut by_head = vec![0f32; batch * heads * query_len * head_dim];
        by_head
            .par_chunks_mut(query_len * head_dim)
            .zip(packed.par_iter())
            .enumerate()
            .try_for_each(|(pair, (out, (keys, values)))| {
                let (item, head) = (pair / heads, pair % heads);
                let q = &q[item * query_len * inner + head * head_dim..];
                out.par_chunks_mut(rows * head_dim).enumerate().try_for_each(|(block, out)| {
                    let (start, len) = (block * rows, out.len() / head_dim);
                    let mut scores = vec![0f32; len * key_len];
                    keys.matmul_strided_into(
                        &q[start * inner..],
                        inner,
                        len,
                        &mut scores,
                        key_len,
                        Threads::Caller,
                    )?;
                    for row in scores.chunks_exact_mut(key_len) {
                        scaled_softmax_row(row, scale);
                    }
                    values.matmul_strided_into(
                        &scores,
                        key_len,
                        len,
                        out,
                        head_dim,
                        Threads::Caller,
                    )
                })
            })
            .map_err(kernel_error)?;
        // (B, H, L, D) → (B, L, H·D).
        let mut out = vec![0f32; batch * query_len * inner];
        out.par_chunks_mut(inner).enumerate().for_each(|(position, row)| {
            let (item, token) = (position / query_len, position % query_len);
            for (head, dst) in row.chunks_exact_mut(head_dim).enumerate() {
                let at = ((item * heads + head) * query_len + token) * head_dim;
                dst.copy_from_slice(&by_head[at..][..head_dim]);
            }
        });
        Ok((CpuStorage::F32(out), candle_core::Shape::from((batch, query_len, inner))))
    }
}

/// The contiguous f32 values of a CPU tensor.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("attention: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("attention: needs contiguous tensors");
    };
    Ok(&data[start..end])
}

/// [`chunked`] on the CPU in half precision: one batch item at a time, so that Q, K and V are read through
/// (1, H, L, D) views of the projections (a head stride of D, a row stride of H·D, which the
/// CPU GEMM takes as they are) instead of being copied heads-first; blocks of query rows under
/// `budget` scores per item.
fn chunked_cpu(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    heads: usize,
    budget: usize,
) -> Result<Tensor> {
    let Split { batch, query_len, key_len, head_dim, scale } =
        split_shapes(query, key, value, heads)?;
    let view = |t: &Tensor, len: usize| t.reshape((batch, len, heads, head_dim))?.transpose(1, 2);
    let (query, key, value) = (view(query, query_len)?, view(key, key_len)?, view(value, key_len)?);
    let rows = chunk_rows(1, heads, query_len, key_len, budget);
    let mut items = Vec::with_capacity(batch);
    for item in 0..batch {
        let query = query.narrow(0, item, 1)?;
        // Kᵀ contiguous, (1, H, D, S): the CPU GEMM then reads K column-major without packing
        // it again for every block of query rows.
        let key_t = key.narrow(0, item, 1)?.t()?.contiguous()?;
        let value = value.narrow(0, item, 1)?;
        let mut blocks = Vec::with_capacity(query_len.div_ceil(rows));
        let mut start = 0;
        while start < query_len {
            let len = rows.min(query_len - start);
            let probs = scaled_softmax(query.narrow(2, start, len)?.matmul(&key_t)?, scale)?;
            // (1, H, len, D), contiguous: the blocks concatenate along the rows with plain copies.
            blocks.push(probs.matmul(&value)?);
            start += len;
        }
        items.push(Tensor::cat(&blocks, 2)?);
    }
    // (B, H, L, D) → (B, L, H·D): the one copy of the output into the projections' layout.
    Tensor::cat(&items, 0)?.transpose(1, 2)?.reshape((batch, query_len, heads * head_dim))
}

/// The whole score matrix at once, the softmax in f32 (the reference implementation).
///
/// # Errors
/// Shape mismatches.
pub fn naive(query: &Tensor, key: &Tensor, value: &Tensor, heads: usize) -> Result<Tensor> {
    let Split { batch, query_len, key_len, head_dim, scale } =
        split_shapes(query, key, value, heads)?;
    let query = heads_first(query, batch, query_len, heads, head_dim)?;
    let key = heads_first(key, batch, key_len, heads, head_dim)?;
    let value = heads_first(value, batch, key_len, heads, head_dim)?;
    let scores = (query.matmul(&key.t()?)? * scale)?;
    let dtype = scores.dtype();
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
    probs.matmul(&value)?.transpose(1, 2)?.reshape((batch, query_len, heads * head_dim))
}

/// candle-flash-attn's kernel on the (B, L, H, D) views of the projections.
#[cfg(feature = "flash-attn")]
fn flash(query: &Tensor, key: &Tensor, value: &Tensor, heads: usize) -> Result<Tensor> {
    let Split { batch, query_len, key_len, head_dim, scale } =
        split_shapes(query, key, value, heads)?;
    let view = |t: &Tensor, len: usize| t.reshape((batch, len, heads, head_dim));
    #[allow(clippy::cast_possible_truncation, reason = "1/√d of a head width is an ordinary f32")]
    let out = candle_flash_attn::flash_attn(
        &view(query, query_len)?,
        &view(key, key_len)?,
        &view(value, key_len)?,
        scale as f32,
        false,
    )?;
    out.reshape((batch, query_len, heads * head_dim))
}

#[cfg(not(feature = "flash-attn"))]
fn flash(query: &Tensor, key: &Tensor, value: &Tensor, heads: usize) -> Result<Tensor> {
    chunked(query, key, value, heads, SCORE_BUDGET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelab_kernels::norm::exp;

    fn inputs(
        batch: usize,
        query_len: usize,
        key_len: usize,
        inner: usize,
        seed: u64,
    ) -> (Tensor, Tensor, Tensor) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut make = |len: usize, spread: f32| {
            let data: Vec<f32> =
                (0..batch * len * inner).map(|_| (rng.f32() * 2.0 - 1.0) * spread).collect();
            Tensor::from_vec(data, (batch, len, inner), &Device::Cpu).expect("tensor")
        };
        // Scores spread over several units so the softmax is far from uniform.
        (make(query_len, 2.0), make(key_len, 2.0), make(key_len, 1.0))
    }

    fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.to_dtype(DType::F32).expect("f32");
        let b = b.to_dtype(DType::F32).expect("f32");
        let diff = (&a - &b).expect("diff").sqr().expect("sqr").sum_all().expect("sum");
        let norm = b.sqr().expect("sqr").sum_all().expect("sum");
        (diff.to_scalar::<f32>().expect("scalar") / norm.to_scalar::<f32>().expect("scalar")).sqrt()
    }

    /// Straightforward softmax(QKᵀ/√d)V in f64 on plain vectors: an independent reference.
    fn reference(query: &Tensor, key: &Tensor, value: &Tensor, heads: usize) -> Vec<f64> {
        let (batch, query_len, inner) = query.dims3().expect("dims");
        let key_len = key.dim(1).expect("dim");
        let head_dim = inner / heads;
        let flat = |t: &Tensor| -> Vec<f32> {
            t.to_dtype(DType::F32)
                .expect("f32")
                .flatten_all()
                .expect("flat")
                .to_vec1()
                .expect("vec")
        };
        let (q, k, v) = (flat(query), flat(key), flat(value));
        let mut out = vec![0.0f64; batch * query_len * inner];
        let scale = 1.0 / (head_dim as f64).sqrt();
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..query_len {
                    let qi =
                        |d: usize| f64::from(q[(b * query_len + i) * inner + h * head_dim + d]);
                    let scores: Vec<f64> = (0..key_len)
                        .map(|j| {
                            (0..head_dim)
                                .map(|d| {
                                    qi(d)
                                        * f64::from(k[(b * key_len + j) * inner + h * head_dim + d])
                                })
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for d in 0..head_dim {
                        out[(b * query_len + i) * inner + h * head_dim + d] = (0..key_len)
                            .map(|j| {
                                exps[j] / sum
                                    * f64::from(v[(b * key_len + j) * inner + h * head_dim + d])
                            })
                            .sum();
                    }
                }
            }
        }
        out
    }

    fn rel_l2_to(result: &Tensor, reference: &[f64]) -> f64 {
        let got: Vec<f32> = result
            .to_dtype(DType::F32)
            .expect("f32")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec");
        assert_eq!(got.len(), reference.len());
        let diff: f64 = got.iter().zip(reference).map(|(g, r)| (f64::from(*g) - r).powi(2)).sum();
        let norm: f64 = reference.iter().map(|r| r * r).sum();
        (diff / norm).sqrt()
    }

    #[test]
    fn chunked_matches_the_reference_at_odd_sizes_and_uneven_blocks() {
        // (batch, query_len, key_len, heads, head_dim, budget): budgets force 1-row blocks,
        // uneven last blocks, a single block, and cross-attention with few keys.
        let cases = [
            (1, 37, 37, 3, 5, 1),
            (2, 37, 23, 3, 8, 2 * 3 * 23 * 4),
            (2, 50, 50, 2, 16, 2 * 2 * 50 * 7),
            (1, 13, 77, 4, 6, usize::MAX),
            (3, 9, 4, 1, 12, 3 * 4 * 2),
        ];
        for (index, &(batch, query_len, key_len, heads, head_dim, budget)) in
            cases.iter().enumerate()
        {
            let (q, k, v) = inputs(batch, query_len, key_len, heads * head_dim, index as u64);
            let want = reference(&q, &k, &v, heads);
            let got = chunked(&q, &k, &v, heads, budget).expect("chunked");
            assert_eq!(got.dims(), &[batch, query_len, heads * head_dim]);
            let err = rel_l2_to(&got, &want);
            assert!(err < 1e-6, "case {index}: chunked vs f64 reference rel L2 {err}");
            let naive_err = rel_l2_to(&naive(&q, &k, &v, heads).expect("naive"), &want);
            assert!(naive_err < 1e-6, "case {index}: naive vs f64 reference rel L2 {naive_err}");
        }
    }

    #[test]
    fn half_precision_blocks_stay_close_to_f32() {
        let (q, k, v) = inputs(2, 41, 29, 4 * 8, 7);
        let want = reference(&q, &k, &v, 4);
        for dtype in [DType::F16, DType::BF16] {
            let (qh, kh, vh) = (
                q.to_dtype(dtype).expect("cast"),
                k.to_dtype(dtype).expect("cast"),
                v.to_dtype(dtype).expect("cast"),
            );
            let got = chunked(&qh, &kh, &vh, 4, 2 * 4 * 29 * 6).expect("chunked");
            assert_eq!(got.dtype(), dtype);
            let err = rel_l2_to(&got, &want);
            // Rounding the inputs alone costs ~5e-4 (f16) and ~4e-3 (bf16).
            let tolerance = if dtype == DType::F16 { 3e-3 } else { 2e-2 };
            assert!(err < tolerance, "{dtype:?}: rel L2 {err}");
            let naive_half = naive(&qh, &kh, &vh, 4).expect("naive");
            let versus_naive = f64::from(rel_l2(&got, &naive_half));
            assert!(versus_naive < tolerance, "{dtype:?} chunked vs naive: {versus_naive}");
        }
    }

    #[test]
    fn the_vectorisable_exponential_is_within_two_ulp() {
        // The kernels' `exp` on the softmax's arguments (x ≤ 0): every 1/4096 from −90 to 0,
        // plus the ends of the reduction range.
        let mut worst_ulp = 0f64;
        for step in 0..=(90 * 4096) {
            let x = -(step as f32) / 4096.0;
            let got = exp(x);
            let want = f64::from(x).exp();
            if want < f64::from(f32::MIN_POSITIVE) * 4.0 {
                assert!(got >= 0.0 && f64::from(got) < 1e-37, "e^{x}: {got}");
                continue;
            }
            let ulp = f64::from(f32::EPSILON) * want;
            worst_ulp = worst_ulp.max((f64::from(got) - want).abs() / ulp);
        }
        assert!(worst_ulp <= 2.0, "worst error {worst_ulp} ulp");
        assert!((exp(0.0) - 1.0).abs() < f32::EPSILON);
    }

    #[test]
    fn the_cpu_softmax_matches_candles_on_wide_and_narrow_rows() {
        for (rows, width, scale) in [(7, 4096, 0.125), (33, 77, 0.08), (5, 15, 1.0), (3, 1, 0.5)] {
            let data: Vec<f32> = (0..rows * width)
                .map(|index| ((index * 7919) % 1000) as f32 / 50.0 - 10.0)
                .collect();
            let scores = Tensor::from_vec(data, (rows, width), &Device::Cpu).expect("tensor");
            let want = candle_nn::ops::softmax_last_dim(&(&scores * scale).expect("scale"))
                .expect("softmax");
            let got = scaled_softmax(scores.copy().expect("copy"), scale).expect("ours");
            let err = rel_l2(&got, &want);
            assert!(err < 1e-6, "{rows}×{width}: rel L2 {err}");
        }
    }

    #[test]
    fn chunk_rows_respects_the_budget() {
        assert_eq!(chunk_rows(2, 10, 4096, 4096, SCORE_BUDGET), 819);
        assert_eq!(chunk_rows(1, 1, 16384, 16384, SCORE_BUDGET), 4096);
        assert_eq!(chunk_rows(2, 10, 4096, 77, SCORE_BUDGET), 4096);
        assert_eq!(chunk_rows(8, 20, 1024, 1024, 1), 1);
        let rows = chunk_rows(8, 10, 4096, 4096, SCORE_BUDGET);
        assert!(8 * 10 * rows * 4096 <= SCORE_BUDGET && rows >= 1);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let (q, k, v) = inputs(1, 5, 5, 6, 1);
        assert!(chunked(&q, &k, &v, 4, SCORE_BUDGET).is_err(), "6 channels into 4 heads");
        let (_, k2, _) = inputs(1, 5, 5, 8, 1);
        assert!(chunked(&q, &k2, &v, 2, SCORE_BUDGET).is_err(), "key width differs");
        assert!(chunked(&q, &k, &v, 0, SCORE_BUDGET).is_err(), "zero heads");
    }

    #[test]
    fn kinds_parse_and_the_cpu_never_picks_flash() {
        for kind in [AttentionKind::Flash, AttentionKind::Chunked, AttentionKind::Naive] {
            assert_eq!(AttentionKind::parse(kind.label()), Some(kind));
        }
        assert_eq!(AttentionKind::parse("xformers"), None);
        assert!(!flash_available(&Device::Cpu, DType::F16));
        assert!(flash_head_dim_ok(64) && flash_head_dim_ok(512));
        assert!(!flash_head_dim_ok(5) && !flash_head_dim_ok(520) && !flash_head_dim_ok(0));
        assert_ne!(choose(&Device::Cpu, DType::F16), AttentionKind::Flash);
    }
}
