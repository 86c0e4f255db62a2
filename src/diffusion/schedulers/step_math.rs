//! Tensor arithmetic the samplers share, written to round as diffusers does: scalars are the
//! float32 0-dim tensors diffusers indexes out of `sigmas`, combined in float32 and applied to
//! float32 samples, in diffusers' operation order.

use candle_core::{DType, Result, Tensor};

use super::config::PredictionType;

/// `tensor * scalar` with a float32 scalar (exact: the scalar is representable in the tensor).
pub(crate) fn mul(tensor: &Tensor, scalar: f32) -> Result<Tensor> {
    tensor.affine(f64::from(scalar), 0.0)
}

/// `tensor / scalar` as a true division (not a multiplication by the reciprocal), as torch does.
pub(crate) fn div(tensor: &Tensor, scalar: f32) -> Result<Tensor> {
    let divisor = Tensor::new(scalar, tensor.device())?.to_dtype(tensor.dtype())?;
    tensor.broadcast_div(&divisor)
}

/// The tensor in float32 (diffusers' samplers compute in float32).
pub(crate) fn f32(tensor: &Tensor) -> Result<Tensor> {
    tensor.to_dtype(DType::F32)
}

/// The denoised sample x₀ of a sigma-parameterised (Karras-style) sampler at `sigma`:
/// `sample − σ·ε` for epsilon, `model·(−σ/√(σ²+1)) + sample/(σ²+1)` for v-prediction, the model
/// output itself for sample prediction.
pub(crate) fn karras_denoised(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    match prediction {
        PredictionType::Epsilon => sample - mul(model_output, sigma)?,
        PredictionType::VPrediction => {
            let sigma_sq_plus_one = sigma * sigma + 1.0;
            let model_scale = -sigma / sigma_sq_plus_one.sqrt();
            mul(model_output, model_scale)? + div(sample, sigma_sq_plus_one)?
        }
        PredictionType::Sample => Ok(model_output.clone()),
    }
}

/// `sample / (σ² + 1)^½`: the input scaling of the sigma-parameterised samplers.
pub(crate) fn karras_scale_input(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    div(sample, (sigma * sigma + 1.0).sqrt())
}

/// The sigma at `index` or an error naming the index (a pipeline stepping past the schedule).
pub(crate) fn sigma_at(sigmas: &[f32], index: usize) -> Result<f32> {
    sigmas.get(index).copied().ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "step index {index} is past the end of the schedule ({} sigmas)",
            sigmas.len()
        ))
    })
}

/// diffusers' `_sigma_to_alpha_sigma_t`: `α = 1/(σ²+1)^½`, `σ_t = σ·α` (float32).
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// The half log-SNR `λ = ln α − ln σ_t` of a sigma (float32; +∞ at σ = 0).
pub(crate) fn lambda(sigma: f32) -> f32 {
    let (alpha, sigma_t) = alpha_sigma(sigma);
    alpha.ln() - sigma_t.ln()
}

/// `c₀·t₀ + c₁·t₁ + …`, summed left to right as diffusers' expressions are evaluated
/// (`a - b` and `a + (-b)` round identically, so signs go into the coefficients).
pub(crate) fn lincomb(terms: &[(f32, &Tensor)]) -> Result<Tensor> {
    let mut iter = terms.iter();
    let Some((first_coefficient, first)) = iter.next() else {
        candle_core::bail!("lincomb of no terms");
    };
    let mut sum = mul(first, *first_coefficient)?;
    for (coefficient, tensor) in iter {
        sum = (sum + mul(tensor, *coefficient)?)?;
    }
    Ok(sum)
}
