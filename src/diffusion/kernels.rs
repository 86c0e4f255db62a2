//! Glue between candle tensors and our CPU kernels (`imagelab-kernels`): a convolution whose
//! weights are packed once at load, and GroupNorm with SiLU fused, both for contiguous `f32`
//! tensors on the CPU. Everything else (CUDA, Metal, f16/bf16) stays on candle's own ops; the
//! layers in `layers.rs` choose.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use imagelab_kernels::conv::{Conv2dShape, PackedConv2d};
use imagelab_kernels::gemm::PackedMatrix;
use imagelab_kernels::norm::{GroupNormSpec, group_norm};

fn kernel_error(error: imagelab_kernels::KernelError) -> candle_core::Error {
    candle_core::Error::Msg(error.to_string())
}

/// Runs `pack` on a weight's `f32` values borrowed from its storage (a contiguous CPU `f32`
/// tensor, which a weight just read is) instead of a copy: copying SDXL's 9.6 GiB of weights
/// before packing them was a third of the pages a UNet load touches for the first time.
/// Anything else is made a contiguous CPU `f32` tensor first.
fn with_values<R>(
    tensor: &Tensor,
    what: &str,
    pack: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let tensor = tensor.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else {
        candle_core::bail!("{what}: expected a CPU tensor")
    };
    pack(contiguous_f32(storage, layout, what)?)
}

/// Whether a tensor of this dtype on this device runs on our kernels.
pub fn runs_on_kernels(tensor: &Tensor) -> bool {
    tensor.device().is_cpu() && tensor.dtype() == DType::F32
}

/// The contiguous `f32` values of a CPU tensor's storage.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{what}: expected an f32 tensor")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what}: expected a contiguous tensor")
    };
    Ok(&data[start..end])
}

/// A convolution packed for the CPU kernel (weights `[out][in][kh][kw]`, optional bias).
#[derive(Debug, Clone)]
pub struct CpuConv {
    packed: Arc<PackedConv2d>,
}

impl CpuConv {
    /// Packs a candle convolution's weights (CPU, f32); `stride` and `padding` as candle's.
    ///
    /// # Errors
    /// A weight that is not 4-D, or sizes the kernel refuses.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (out_channels, in_channels, kernel_h, kernel_w) = weight.dims4()?;
        let shape = Conv2dShape { in_channels, out_channels, kernel_h, kernel_w, stride, padding };
        let bias = bias.map(|bias| bias.flatten_all()?.to_vec1::<f32>()).transpose()?;
        let packed = with_values(weight, "conv weight", |weights| {
            PackedConv2d::new(shape, weights, bias.as_deref()).map_err(kernel_error)
        })?;
        Ok(Self { packed: Arc::new(packed) })
    }

    /// The packed convolution.
    pub fn packed(&self) -> &PackedConv2d {
        &self.packed
    }

    /// Convolves `x` (B, C, H, W), f32 on the CPU (made contiguous if it is not).
    ///
    /// # Errors
    /// Shape mismatches, a tensor not f32 on the CPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for CpuConv {
    fn name(&self) -> &'static str {
        "imagelab-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (batch, channels, height, width) = layout.shape().dims4()?;
        let shape = self.packed.shape();
        if channels != shape.in_channels {
            candle_core::bail!(
                "conv2d: input has {channels} channels, the weights expect {}",
                shape.in_channels
            )
        }
        let input = contiguous_f32(storage, layout, "conv2d")?;
        let (out, (oh, ow)) =
            self.packed.forward(input, batch, height, width).map_err(kernel_error)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, shape.out_channels, oh, ow))))
    }
}

/// A linear layer packed for the CPU GEMM (weight `[out][in]`, optional bias).
#[derive(Debug, Clone)]
pub struct CpuLinear {
    packed: Arc<PackedMatrix>,
}

impl CpuLinear {
    /// Packs a linear layer's (out, in) weight and optional bias (CPU, f32).
    ///
    /// # Errors
    /// A weight that is not a matrix, a bias of another length.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (out_features, in_features) = weight.dims2()?;
        let bias = bias.map(|bias| bias.flatten_all()?.to_vec1::<f32>()).transpose()?;
        let packed = with_values(weight, "linear weight", |weights| {
            PackedMatrix::from_linear(weights, out_features, in_features, bias.as_deref())
                .map_err(kernel_error)
        })?;
        Ok(Self { packed: Arc::new(packed) })
    }

    /// The packed matrix.
    pub fn packed(&self) -> &PackedMatrix {
        &self.packed
    }

    /// `x·Wᵀ + b` over the last dimension of `x` (f32 on the CPU, made contiguous if it is not).
    ///
    /// # Errors
    /// A last dimension other than the layer's input features.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for CpuLinear {
    fn name(&self) -> &'static str {
        "imagelab-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let Some((&inner, outer)) = dims.split_last() else {
            candle_core::bail!("linear layer: a scalar input")
        };
        if inner != self.packed.k() {
            candle_core::bail!(
                "linear layer: input has {inner} features, the weights expect {}",
                self.packed.k()
            )
        }
        let rows = outer.iter().product();
        let input = contiguous_f32(storage, layout, "linear layer")?;
        let out = self.packed.matmul(input, rows).map_err(kernel_error)?;
        let mut shape = outer.to_vec();
        shape.push(self.packed.n());
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// GroupNorm (optionally followed by SiLU) on the CPU kernel.
#[derive(Debug, Clone)]
pub struct CpuGroupNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    groups: usize,
    eps: f64,
}

impl CpuGroupNorm {
    /// From the per-channel weight and bias (f32 vectors).
    ///
    /// # Errors
    /// Tensors that are not 1-D f32.
    pub fn new(weight: &Tensor, bias: &Tensor, groups: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?.to_vec1()?,
            bias: bias.to_dtype(DType::F32)?.to_vec1()?,
            groups,
            eps,
        })
    }

    /// Normalises `x` (B, C, …), then applies SiLU when `silu`.
    ///
    /// # Errors
    /// Shape mismatches, a tensor not f32 on the CPU.
    pub fn forward(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&GroupNormOp { norm: self, silu })
    }
}

struct GroupNormOp<'a> {
    norm: &'a CpuGroupNorm,
    silu: bool,
}

impl CustomOp1 for GroupNormOp<'_> {
    fn name(&self) -> &'static str {
        "imagelab-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        if dims.len() < 3 || dims[1] != self.norm.weight.len() {
            candle_core::bail!(
                "group_norm: input shape {dims:?}, expected (B, {}, …)",
                self.norm.weight.len()
            )
        }
        let spatial = dims[2..].iter().product();
        let input = contiguous_f32(storage, layout, "group_norm")?;
        let mut out = vec![0f32; input.len()];
        let spec = GroupNormSpec {
            groups: self.norm.groups,
            eps: self.norm.eps,
            weight: &self.norm.weight,
            bias: &self.norm.bias,
            silu: self.silu,
        };
        group_norm(input, &mut out, spatial, spec).map_err(kernel_error)?;
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::{Conv2dConfig, VarBuilder};

    use super::super::layers::{Conv, conv2d, group_norm};

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        let difference = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap();
        difference.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Our layers against candle-nn's on the same weights: the kernel for f32, candle's op (on
    /// the unpacked weights) for an f16 input.
    #[test]
    fn conv_and_group_norm_match_candle() {
        let device = Device::Cpu;
        let weight = (Tensor::randn(0f32, 1.0, (12, 10, 3, 3), &device).unwrap() * 0.1).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 12, &device).unwrap();
        let gamma = Tensor::randn(0f32, 1.0, 10, &device).unwrap();
        let beta = Tensor::randn(0f32, 1.0, 10, &device).unwrap();
        let tensors: HashMap<String, Tensor> = [
            ("conv.weight", weight.clone()),
            ("conv.bias", bias.clone()),
            ("norm.weight", gamma.clone()),
            ("norm.bias", beta.clone()),
        ]
        .into_iter()
        .map(|(name, tensor)| (name.to_owned(), tensor))
        .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let x = (Tensor::randn(0f32, 1.0, (2, 10, 9, 7), &device).unwrap() + 0.5).unwrap();
        for stride in [1, 2] {
            let config = Conv2dConfig { padding: 1, stride, ..Conv2dConfig::default() };
            let ours = conv2d(10, 12, 3, config, vb.pp("conv")).unwrap();
            assert!(matches!(ours, Conv::Cpu(_)), "f32 CPU weights are packed");
            let theirs = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), config);
            let expected = theirs.forward(&x).unwrap();
            assert!(max_difference(&ours.forward(&x).unwrap(), &expected) < 1e-5);
            let half = x.to_dtype(DType::F16).unwrap();
            let got = ours.forward(&half).unwrap();
            assert_eq!(got.dtype(), DType::F16);
            assert!(max_difference(&got, &expected) < 2e-2);
        }
        let norm = group_norm(5, 10, 1e-5, vb.pp("norm")).unwrap();
        let theirs = candle_nn::GroupNorm::new(gamma, beta, 10, 5, 1e-5).unwrap();
        let expected = theirs.forward(&x).unwrap();
        assert!(max_difference(&norm.forward(&x).unwrap(), &expected) < 1e-5);
        let expected_silu = candle_nn::ops::silu(&expected).unwrap();
        assert!(max_difference(&norm.forward_silu(&x).unwrap(), &expected_silu) < 1e-5);
        // A non-contiguous input is made contiguous first.
        let transposed = x.transpose(2, 3).unwrap();
        let expected = theirs.forward(&transposed.contiguous().unwrap()).unwrap();
        assert!(max_difference(&norm.forward(&transposed).unwrap(), &expected) < 1e-5);
    }
}
