//! Element-wise additions (and GEGLU's product) written over a tensor that was just made (a GEMM's output, a layer's
//! result) instead of into a new one: on the CPU in f32, one parallel pass on rayon's pool
//! (where the GEMMs run) with no allocation. candle's `+` allocates the result and runs on its
//! own spinning thread pool; in an SDXL UNet step the bias and residual additions were a sixth of
//! the time. Other devices and dtypes, and shapes these do not cover, use candle's operators.
//!
//! The callers guarantee that the tensor written over is theirs alone (no clone of it is kept
//! anywhere): these are private to the layers that produce those tensors.

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor};
use rayon::prelude::*;

/// Rows per rayon task: enough work to amortise the split.
const MIN_ELEMENTS_PER_TASK: usize = 1 << 14;

/// `fresh + other` (same shape), over `fresh`.
///
/// # Errors
/// Shape mismatches.
pub fn add(fresh: Tensor, other: &Tensor) -> Result<Tensor> {
    if fast_path(&fresh, other) && fresh.shape() == other.shape() {
        fresh.inplace_op2(other, &AddAssign)?;
        Ok(fresh)
    } else {
        fresh + other
    }
}

/// `fresh + bias` with `bias` (N) added to every row of `fresh` (…, N), over `fresh`.
///
/// # Errors
/// Shape mismatches.
pub fn add_bias(fresh: Tensor, bias: &Tensor) -> Result<Tensor> {
    let width = fresh.dims().last().copied().unwrap_or(0);
    if fast_path(&fresh, bias) && bias.dims() == [width] && width > 0 {
        fresh.inplace_op2(bias, &AddRows)?;
        Ok(fresh)
    } else {
        fresh.broadcast_add(bias)
    }
}

/// `fresh · gelu(gate)` (GELU with erf, as diffusers' `GEGLU`), over `fresh`.
///
/// # Errors
/// Shape mismatches.
pub fn mul_gelu(fresh: Tensor, gate: &Tensor) -> Result<Tensor> {
    if fast_path(&fresh, gate) && fresh.shape() == gate.shape() {
        fresh.inplace_op2(gate, &MulGelu)?;
        Ok(fresh)
    } else {
        fresh * gate.gelu_erf()?
    }
}

fn fast_path(fresh: &Tensor, other: &Tensor) -> bool {
    fresh.device().is_cpu()
        && fresh.dtype() == DType::F32
        && other.dtype() == DType::F32
        && fresh.is_contiguous()
        && other.is_contiguous()
}

/// The two contiguous f32 slices of an in-place binary op.
fn slices<'a>(
    name: &str,
    dst: &'a mut CpuStorage,
    dst_layout: &Layout,
    src: &'a CpuStorage,
    src_layout: &Layout,
) -> Result<(&'a mut [f32], &'a [f32])> {
    let (CpuStorage::F32(dst), CpuStorage::F32(src)) = (dst, src) else {
        candle_core::bail!("{name}: f32 only");
    };
    let (Some((dst_start, dst_end)), Some((src_start, src_end))) =
        (dst_layout.contiguous_offsets(), src_layout.contiguous_offsets())
    else {
        candle_core::bail!("{name}: needs contiguous tensors");
    };
    Ok((&mut dst[dst_start..dst_end], &src[src_start..src_end]))
}

struct AddAssign;

impl InplaceOp2 for AddAssign {
    fn name(&self) -> &'static str {
        "imagelab-add-assign"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (dst, src) = slices(self.name(), s1, l1, s2, l2)?;
        if dst.len() != src.len() {
            candle_core::bail!("{}: {} and {} elements", self.name(), dst.len(), src.len());
        }
        dst.par_chunks_mut(MIN_ELEMENTS_PER_TASK)
            .zip(src.par_chunks(MIN_ELEMENTS_PER_TASK))
            .for_each(|(dst, src)| {
                for (value, other) in dst.iter_mut().zip(src) {
                    *value += *other;
                }
            });
        Ok(())
    }
}

struct MulGelu;

impl InplaceOp2 for MulGelu {
    fn name(&self) -> &'static str {
        "imagelab-mul-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (dst, gate) = slices(self.name(), s1, l1, s2, l2)?;
        imagelab_kernels::activation::mul_gelu(dst, gate)
            .map_err(|err| candle_core::Error::Msg(err.to_string()))
    }
}

struct AddRows;

impl InplaceOp2 for AddRows {
    fn name(&self) -> &'static str {
        "imagelab-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (dst, bias) = slices(self.name(), s1, l1, s2, l2)?;
        let width = bias.len();
        if width == 0 || dst.len() % width != 0 {
            candle_core::bail!("{}: rows of {} elements, bias of {width}", self.name(), dst.len());
        }
        let rows_per_task = (MIN_ELEMENTS_PER_TASK / width).max(1);
        dst.par_chunks_mut(width * rows_per_task).for_each(|rows| {
            for row in rows.chunks_exact_mut(width) {
                for (value, add) in row.iter_mut().zip(bias) {
                    *value += *add;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|index| ((index * 37) % 101) as f32 * scale - 3.0).collect()
    }

    #[test]
    fn in_place_additions_equal_candles() {
        for (rows, width) in [(1, 1), (3, 7), (257, 640), (2, 40_000)] {
            let a =
                Tensor::from_vec(ramp(rows * width, 0.25), (rows, width), &Device::Cpu).expect("a");
            let b =
                Tensor::from_vec(ramp(rows * width, -0.5), (rows, width), &Device::Cpu).expect("b");
            let bias = Tensor::from_vec(ramp(width, 0.125), width, &Device::Cpu).expect("bias");
            let want = (&a + &b).expect("sum").flatten_all().expect("flat");
            let got = add(a.copy().expect("copy"), &b).expect("add");
            assert_eq!(
                got.flatten_all().expect("flat").to_vec1::<f32>().expect("vec"),
                want.to_vec1::<f32>().expect("vec")
            );
            let want = a.broadcast_add(&bias).expect("bias").flatten_all().expect("flat");
            let got = add_bias(a.copy().expect("copy"), &bias).expect("add_bias");
            assert_eq!(
                got.flatten_all().expect("flat").to_vec1::<f32>().expect("vec"),
                want.to_vec1::<f32>().expect("vec")
            );
        }
    }

    /// The fused GEGLU product against candle's `gelu_erf` (libm's erf) computed in f64.
    #[test]
    fn mul_gelu_matches_candles_gelu_erf() {
        let hidden =
            Tensor::from_vec(ramp(3 * 20_000, 0.07), (3, 20_000), &Device::Cpu).expect("h");
        let gate = Tensor::from_vec(ramp(3 * 20_000, -0.09), (3, 20_000), &Device::Cpu).expect("g");
        let want = (hidden.to_dtype(DType::F64).expect("f64")
            * gate.to_dtype(DType::F64).expect("f64").gelu_erf().expect("gelu"))
        .expect("product");
        let got = mul_gelu(hidden.copy().expect("copy"), &gate).expect("mul_gelu");
        let difference = (got.to_dtype(DType::F64).expect("f64") - &want)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>())
            .expect("difference");
        assert!(difference < 2e-6, "max |ours − candle f64| = {difference}");
        // A shape the fast path does not take: candle's operators.
        let column = Tensor::from_vec(ramp(3, 1.0), (3, 1), &Device::Cpu).expect("column");
        assert!(mul_gelu(hidden, &column).is_err(), "shapes differ");
    }

    #[test]
    fn other_shapes_fall_back_to_candles_operators() {
        let a = Tensor::from_vec(ramp(12, 1.0), (3, 4), &Device::Cpu).expect("a");
        let column = Tensor::from_vec(ramp(3, 1.0), (3, 1), &Device::Cpu).expect("column");
        let got = add_bias(a.copy().expect("copy"), &column).expect("broadcast");
        let want = a.broadcast_add(&column).expect("want");
        assert_eq!(got.to_vec2::<f32>().expect("got"), want.to_vec2::<f32>().expect("want"));
        assert!(add(a.copy().expect("copy"), &column).is_err(), "shapes differ");
    }
}
