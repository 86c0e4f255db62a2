//! Building blocks the UNet and the VAE share, as diffusers defines them (`ResnetBlock2D`,
//! `Downsample2D`, `Upsample2D`, `Attention`), on top of candle-nn's convolutions, norms and
//! linear layers. Weight names are diffusers' own.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Linear, VarBuilder};
use rayon::prelude::*;

/// A linear layer, `x·Wᵀ + b`, loaded from diffusers' `weight` (out, in) and `bias`. On the CPU
/// the weight is kept transposed, (in, out) contiguous, from load on: the CPU GEMM (`gemm`)
/// then reads it as a column-major operand as it is, where candle's (out, in) layout made it
/// pack the whole weight again on every call (a third of an SDXL UNet step went to that
/// packing). Elsewhere it is candle's `Linear` (cuBLAS takes either layout at no cost).
#[derive(Debug, Clone)]
pub struct Dense {
    /// (in, out) contiguous on the CPU; (out, in) elsewhere.
    weight: Tensor,
    bias: Option<Tensor>,
    transposed: bool,
}

impl Dense {
    /// A layer from its (out, in) weight and optional bias.
    ///
    /// # Errors
    /// A weight that is not a matrix.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if weight.device().is_cpu() {
            Ok(Self { weight: transpose(&weight)?, bias, transposed: true })
        } else {
            Ok(Self { weight, bias, transposed: false })
        }
    }

    /// Loads `weight` (and `bias` when `with_bias`) from `vb`.
    ///
    /// # Errors
    /// Missing weights or wrong shapes.
    pub fn load(in_dim: usize, out_dim: usize, with_bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if with_bias { Some(vb.get(out_dim, "bias")?) } else { None };
        Self::new(weight, bias)
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.transposed {
            return Linear::new(self.weight.clone(), self.bias.clone()).forward(x);
        }
        let Some((&inner, outer)) = x.dims().split_last() else {
            candle_core::bail!("linear layer: a scalar input");
        };
        let rows: usize = outer.iter().product();
        let out = x.reshape((rows, inner))?.matmul(&self.weight)?;
        let mut shape = outer.to_vec();
        shape.push(self.weight.dim(1)?);
        let out = out.reshape(shape)?;
        match &self.bias {
            Some(bias) => super::inplace::add_bias(out, bias),
            None => Ok(out),
        }
    }
}

/// A matrix transposed into a new contiguous tensor: blocked and parallel in f32 (an SDXL UNet
/// has 2 G weights to turn at load), candle's strided copy otherwise.
fn transpose(matrix: &Tensor) -> Result<Tensor> {
    const BLOCK: usize = 64;
    let (rows, cols) = matrix.dims2()?;
    if matrix.dtype() != DType::F32 || rows == 0 || cols == 0 {
        return matrix.t()?.contiguous();
    }
    let data: Vec<f32> = matrix.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; rows * cols];
    // Each chunk: BLOCK rows of the result (= BLOCK columns of the input), filled tile by tile.
    out.par_chunks_mut(BLOCK * rows).enumerate().for_each(|(chunk_index, chunk)| {
        let first_col = chunk_index * BLOCK;
        let chunk_cols = chunk.len() / rows;
        for row_start in (0..rows).step_by(BLOCK) {
            let row_end = (row_start + BLOCK).min(rows);
            for col in 0..chunk_cols {
                let target = &mut chunk[col * rows + row_start..col * rows + row_end];
                for (offset, value) in target.iter_mut().enumerate() {
                    *value = data[(row_start + offset) * cols + first_col + col];
                }
            }
        }
    });
    Tensor::from_vec(out, (cols, rows), matrix.device())
}

/// A `kernel`×`kernel` convolution with "same" padding and stride 1.
///
/// # Errors
/// Missing weights.
pub fn conv_same(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let config = Conv2dConfig { padding: (kernel - 1) / 2, ..Conv2dConfig::default() };
    candle_nn::conv2d(in_channels, out_channels, kernel, config, vb)
}

/// diffusers' `ResnetBlock2D` with `time_embedding_norm="default"` and SiLU.
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

/// Shape of one [`ResnetBlock`].
#[derive(Debug, Clone, Copy)]
pub struct ResnetShape {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Time-embedding width (`None` in the VAE).
    pub temb_channels: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// Output divided by this (`output_scale_factor`).
    pub output_scale_factor: f64,
}

impl ResnetBlock {
    /// Loads a block from `vb` (`norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`,
    /// `conv_shortcut`).
    ///
    /// # Errors
    /// Missing weights.
    pub fn new(shape: ResnetShape, vb: VarBuilder) -> Result<Self> {
        let ResnetShape { in_channels, out_channels, groups, eps, .. } = shape;
        let time_emb_proj = match shape.temb_channels {
            Some(temb) => Some(candle_nn::linear(temb, out_channels, vb.pp("time_emb_proj"))?),
            None => None,
        };
        let conv_shortcut = if in_channels == out_channels {
            None
        } else {
            Some(candle_nn::conv2d(
                in_channels,
                out_channels,
                1,
                Conv2dConfig::default(),
                vb.pp("conv_shortcut"),
            )?)
        };
        Ok(Self {
            norm1: candle_nn::group_norm(groups, in_channels, eps, vb.pp("norm1"))?,
            conv1: conv_same(in_channels, out_channels, 3, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: candle_nn::group_norm(groups, out_channels, eps, vb.pp("norm2"))?,
            conv2: conv_same(out_channels, out_channels, 3, vb.pp("conv2"))?,
            conv_shortcut,
            output_scale_factor: shape.output_scale_factor,
        })
    }

    /// `x` (B, C, H, W), `temb` (B, T) or `None`.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut hidden = self.conv1.forward(&candle_nn::ops::silu(&self.norm1.forward(x)?)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let temb = proj.forward(&candle_nn::ops::silu(temb)?)?.unsqueeze(2)?.unsqueeze(3)?;
            hidden = hidden.broadcast_add(&temb)?;
        }
        let hidden = self.conv2.forward(&candle_nn::ops::silu(&self.norm2.forward(&hidden)?)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let out = (shortcut + hidden)?;
        if (self.output_scale_factor - 1.0).abs() > f64::EPSILON {
            out / self.output_scale_factor
        } else {
            Ok(out)
        }
    }
}

/// diffusers' `Downsample2D` with a convolution (`downsamplers.0.conv`). With padding 0 (the
/// VAE encoder) it pads one pixel right and bottom first, as diffusers does.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample {
    /// Loads `downsamplers.0` (`vb` points at it).
    ///
    /// # Errors
    /// Missing weights.
    pub fn new(channels: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        let config = Conv2dConfig { padding, stride: 2, ..Conv2dConfig::default() };
        Ok(Self {
            conv: candle_nn::conv2d(channels, channels, 3, config, vb.pp("conv"))?,
            pad_right_bottom: padding == 0,
        })
    }

    /// Halves height and width.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let padded = x.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(D::Minus2, 0, 1)?;
            self.conv.forward(&padded)
        } else {
            self.conv.forward(x)
        }
    }
}

/// diffusers' `Upsample2D` with a convolution (`upsamplers.0.conv`): nearest ×2 (or to an
/// explicit size), then a 3×3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// Loads `upsamplers.0` (`vb` points at it).
    ///
    /// # Errors
    /// Missing weights.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { conv: conv_same(channels, channels, 3, vb.pp("conv"))? })
    }

    /// Doubles height and width, or resizes to `size` (height, width) when given.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, height, width) = x.dims4()?;
        let (target_h, target_w) = size.unwrap_or((height * 2, width * 2));
        self.conv.forward(&x.upsample_nearest2d(target_h, target_w)?)
    }
}

/// diffusers' `Attention` as the UNet's transformer blocks and the VAE mid-block use it:
/// `to_q`, `to_k`, `to_v`, `to_out.0`.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Dense,
    to_k: Dense,
    to_v: Dense,
    to_out: Dense,
    heads: usize,
}

impl Attention {
    /// Loads an attention layer: `query_dim` → `heads`·`head_dim`, keys from `context_dim`.
    /// `qkv_bias` is false in the UNet, true in the VAE. Old VAE checkpoints name the layers
    /// `query`/`key`/`value`/`proj_attn`; both spellings load.
    ///
    /// # Errors
    /// Missing weights.
    pub fn new(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let legacy = !vb.contains_tensor("to_q.weight") && vb.contains_tensor("query.weight");
        let names = if legacy {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        let make = |input: usize, name: &str| Dense::load(input, inner, qkv_bias, vb.pp(name));
        Ok(Self {
            to_q: make(query_dim, names[0])?,
            to_k: make(context_dim, names[1])?,
            to_v: make(context_dim, names[2])?,
            to_out: Dense::load(inner, query_dim, true, vb.pp(names[3]))?,
            heads,
        })
    }

    /// Attends from `x` (B, L, C) to `context` (B, S, C′) or to itself.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let query = self.to_q.forward(x)?;
        let key = self.to_k.forward(context)?;
        let value = self.to_v.forward(context)?;
        // Flash attention where built, else query blocks under a score budget (attention.rs).
        self.to_out.forward(&super::attention::attention(&query, &key, &value, self.heads)?)
    }
}

/// diffusers' `get_timestep_embedding` (the `Timesteps` module): sinusoidal features of
/// `timesteps` with `dim` channels, computed in f32 in torch's operation order.
///
/// # Errors
/// Tensor errors.
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let half = dim / 2;
    #[allow(clippy::cast_possible_truncation, reason = "diffusers computes the exponent in f32")]
    let log_period = -(10_000f64.ln()) as f32;
    let frequencies: Vec<f32> =
        (0..half).map(|k| ((log_period * k as f32) / (half as f32 - freq_shift)).exp()).collect();
    let mut data = Vec::with_capacity(timesteps.len() * dim);
    for &timestep in timesteps {
        let args: Vec<f32> = frequencies.iter().map(|&freq| timestep * freq).collect();
        let sin = args.iter().map(|arg| arg.sin());
        let cos = args.iter().map(|arg| arg.cos());
        if flip_sin_to_cos {
            data.extend(cos.chain(sin));
        } else {
            data.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            data.push(0.0);
        }
    }
    Tensor::from_vec(data, (timesteps.len(), dim), device)
}
