//! Building blocks the UNet and the VAE share, as diffusers defines them (`ResnetBlock2D`,
//! `Downsample2D`, `Upsample2D`, `Attention`), on top of candle-nn's linear layers and our
//! [`Conv`] and [`GroupNorm`] (our CPU kernels for f32 on the CPU, candle's ops elsewhere).
//! Weight names are diffusers' own.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{D, Module, Result, Tensor, TensorId};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::kernels::{CpuConv, CpuGroupNorm, CpuLinear, runs_on_kernels};

/// A linear layer, `x·Wᵀ + b`, loaded from diffusers' `weight` (out, in) and `bias`: on the CPU
/// in f32 our GEMM with the weight packed once at load (`imagelab_kernels::gemm`; candle's copy
/// is dropped), elsewhere candle's `Linear`.
#[derive(Debug, Clone)]
pub enum Dense {
    /// Packed for the CPU GEMM.
    Cpu(CpuLinear),
    /// candle's linear layer (GPU, f16/bf16).
    Candle(Linear),
}

impl Dense {
    /// A layer from its (out, in) weight and optional bias.
    ///
    /// # Errors
    /// A weight that is not a matrix.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if runs_on_kernels(&weight) {
            Ok(Self::Cpu(CpuLinear::new(&weight, bias.as_ref())?))
        } else {
            Ok(Self::Candle(Linear::new(weight, bias)))
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
        match self {
            Self::Cpu(linear) if runs_on_kernels(x) => linear.forward(x),
            Self::Cpu(linear) => {
                // A tensor elsewhere than the weights: candle's op on unpacked weights.
                let packed = linear.packed();
                let weight =
                    Tensor::from_vec(packed.linear_weight(), (packed.n(), packed.k()), x.device())?
                        .to_dtype(x.dtype())?;
                let bias = packed
                    .bias()
                    .map(|bias| Tensor::new(bias, x.device())?.to_dtype(x.dtype()))
                    .transpose()?;
                Linear::new(weight, bias).forward(x)
            }
            Self::Candle(linear) => linear.forward(x),
        }
    }
}

/// A 2-D convolution (`weight`, `bias`): on the CPU in f32 our blocked-im2col kernel with the
/// weights packed at load (candle's copy is dropped, so the memory is not doubled), elsewhere
/// candle's `Conv2d`.
#[derive(Debug, Clone)]
pub enum Conv {
    /// Packed for the CPU kernel.
    Cpu(CpuConv),
    /// candle's convolution (GPU, f16/bf16, dilation or groups).
    Candle(Conv2d),
}

impl Conv {
    /// Wraps a candle convolution, packing it for the CPU kernel when it runs there.
    ///
    /// # Errors
    /// Weights the kernel cannot take.
    pub fn from_candle(conv: Conv2d) -> Result<Self> {
        let config = conv.config();
        if runs_on_kernels(conv.weight()) && config.dilation == 1 && config.groups == 1 {
            let cpu = CpuConv::new(conv.weight(), conv.bias(), config.stride, config.padding)?;
            Ok(Self::Cpu(cpu))
        } else {
            Ok(Self::Candle(conv))
        }
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Cpu(conv) if runs_on_kernels(x) => conv.forward(x),
            Self::Cpu(conv) => {
                // A tensor elsewhere than the weights: candle's op on unpacked weights.
                let packed = conv.packed();
                let shape = packed.shape();
                let weight = Tensor::from_vec(
                    packed.weight(),
                    (shape.out_channels, shape.in_channels, shape.kernel_h, shape.kernel_w),
                    x.device(),
                )?
                .to_dtype(x.dtype())?;
                let bias = packed
                    .bias()
                    .map(|bias| Tensor::new(bias, x.device())?.to_dtype(x.dtype()))
                    .transpose()?;
                let config = Conv2dConfig {
                    padding: shape.padding,
                    stride: shape.stride,
                    ..Conv2dConfig::default()
                };
                Conv2d::new(weight, bias, config).forward(x)
            }
            Self::Candle(conv) => conv.forward(x),
        }
    }
}

/// candle-nn's `conv2d` (same weight names and shapes), as a [`Conv`].
///
/// # Errors
/// Missing weights.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    config: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv> {
    Conv::from_candle(candle_nn::conv2d(in_channels, out_channels, kernel, config, vb)?)
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
) -> Result<Conv> {
    let config = Conv2dConfig { padding: (kernel - 1) / 2, ..Conv2dConfig::default() };
    conv2d(in_channels, out_channels, kernel, config, vb)
}

/// GroupNorm (`weight`, `bias`), with [`GroupNorm::forward_silu`] fusing the SiLU that follows
/// it in resnets and before the output convolutions: our CPU kernel for f32 on the CPU (one
/// pass writing the output, statistics in f64), candle's `GroupNorm` then SiLU elsewhere.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    candle: candle_nn::GroupNorm,
    cpu: Option<CpuGroupNorm>,
}

impl GroupNorm {
    /// `x` normalised, then SiLU.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(cpu) if runs_on_kernels(x) => cpu.forward(x, true),
            _ => candle_nn::ops::silu(&self.candle.forward(x)?),
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(cpu) if runs_on_kernels(x) => cpu.forward(x, false),
            _ => self.candle.forward(x),
        }
    }
}

/// candle-nn's `group_norm` (same weight names), as a [`GroupNorm`].
///
/// # Errors
/// Missing weights; groups that do not divide the channels.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    let cpu = if runs_on_kernels(&weight) {
        Some(CpuGroupNorm::new(&weight, &bias, groups, eps)?)
    } else {
        None
    };
    Ok(GroupNorm { candle: candle_nn::GroupNorm::new(weight, bias, channels, groups, eps)?, cpu })
}

/// diffusers' `ResnetBlock2D` with `time_embedding_norm="default"` and SiLU.
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv,
    conv_shortcut: Option<Conv>,
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
            Some(conv2d(
                in_channels,
                out_channels,
                1,
                Conv2dConfig::default(),
                vb.pp("conv_shortcut"),
            )?)
        };
        Ok(Self {
            norm1: group_norm(groups, in_channels, eps, vb.pp("norm1"))?,
            conv1: conv_same(in_channels, out_channels, 3, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: group_norm(groups, out_channels, eps, vb.pp("norm2"))?,
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
        let mut hidden = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let temb = proj.forward(&candle_nn::ops::silu(temb)?)?.unsqueeze(2)?.unsqueeze(3)?;
            hidden = hidden.broadcast_add(&temb)?;
        }
        let hidden = self.conv2.forward(&self.norm2.forward_silu(&hidden)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        // Over the second convolution's output (a fresh tensor).
        let out = super::inplace::add(hidden, &shortcut)?;
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
    conv: Conv,
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
            conv: conv2d(channels, channels, 3, config, vb.pp("conv"))?,
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
    conv: Conv,
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
    /// Cross-attention's keys and values of the last context, by tensor id: a sampler passes
    /// the same text embeddings to every step, so after the first step the two projections of
    /// the 77 text tokens (an eighth of an SDXL step's multiply-adds at 256²) are read back
    /// instead of recomputed. Tensor ids are never reused, so a new context always misses.
    context_kv: Arc<Mutex<Option<(TensorId, Tensor, Tensor)>>>,
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
            context_kv: Arc::new(Mutex::new(None)),
        })
    }

    /// The keys and values of `context`: from the cache when it holds this very tensor.
    fn context_key_value(&self, context: &Tensor) -> Result<(Tensor, Tensor)> {
        let cached = self.context_kv.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some((id, key, value)) = cached
            && id == context.id()
        {
            return Ok((key, value));
        }
        let key = self.to_k.forward(context)?;
        let value = self.to_v.forward(context)?;
        *self.context_kv.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((context.id(), key.clone(), value.clone()));
        Ok((key, value))
    }

    /// Attends from `x` (B, L, C) to `context` (B, S, C′) or to itself.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let query = self.to_q.forward(x)?;
        let (key, value) = match context {
            Some(context) => self.context_key_value(context)?,
            None => (self.to_k.forward(x)?, self.to_v.forward(x)?),
        };
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use super::Attention;

    fn attention(seed: f64) -> Attention {
        let device = Device::Cpu;
        let (dim, context_dim, inner) = (8, 8, 8);
        let weight = |rows: usize, cols: usize, offset: f64| {
            Tensor::arange(0f32, (rows * cols) as f32, &device)
                .and_then(|t| ((t * 0.37)? + (offset + seed))?.sin()? * 0.3)
                .and_then(|t| t.reshape((rows, cols)))
                .expect("weights")
        };
        let tensors: HashMap<String, Tensor> = [
            ("to_q.weight", weight(inner, dim, 0.0)),
            ("to_k.weight", weight(inner, context_dim, 1.0)),
            ("to_v.weight", weight(inner, context_dim, 2.0)),
            ("to_out.0.weight", weight(dim, inner, 3.0)),
            ("to_out.0.bias", weight(1, dim, 4.0).flatten_all().expect("bias")),
        ]
        .into_iter()
        .map(|(name, tensor)| (name.to_owned(), tensor))
        .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        Attention::new(dim, context_dim, 2, 4, false, vb).expect("attention")
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()).expect("diff")
    }

    /// Cross-attention's keys and values of a context are reused for that very tensor only: the
    /// same context gives the same result as a fresh layer, a new context (even with the same
    /// shape) is projected again.
    #[test]
    fn cached_context_projections_are_reused_only_for_the_same_tensor() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 8), &device).expect("x");
        let first = Tensor::randn(0f32, 1.0, (2, 7, 8), &device).expect("context");
        let second = (&first * -0.5).and_then(|t| t + 0.25).expect("context");
        let cached = attention(0.0);
        let out_first = cached.forward(&x, Some(&first)).expect("first");
        let again = cached.forward(&x, Some(&first)).expect("again");
        assert!(max_difference(&out_first, &again) <= 0.0, "the same tensor: the cached K/V");
        let out_second = cached.forward(&x, Some(&second)).expect("second");
        let fresh_second = attention(0.0).forward(&x, Some(&second)).expect("fresh");
        assert!(max_difference(&out_second, &fresh_second) < 1e-6);
        assert!(max_difference(&out_second, &out_first) > 1e-3, "a new context is projected");
        // Self-attention never touches the cache.
        let fresh_self = attention(0.0).forward(&x, None).expect("self");
        assert!(max_difference(&cached.forward(&x, None).expect("self"), &fresh_self) < 1e-6);
    }
}
