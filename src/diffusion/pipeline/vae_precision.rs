//! The VAE's precision. SDXL's own VAE overflows in f16 (its activations exceed 65 504 and turn
//! into inf/NaN), which is why diffusers decodes it in f32 when its config says `force_upcast`;
//! fine-tuned VAEs such as madebyollin/sdxl-vae-fp16-fix run in f16 and say `force_upcast:
//! false`, and many single-file checkpoints bake such a VAE in while their converted config
//! still says `true`. So the VAE runs in the pipeline's dtype and, in f16, every result is
//! checked: a non-finite value makes this model's VAE switch to f32 for good (loaded once, on
//! that first failure), the failed call is redone in f32, and each image made from then on
//! carries a note saying so. bf16 has f32's exponent range and is never upcast (as diffusers).

use std::sync::OnceLock;

use candle_core::{DType, Tensor};

use super::DiffusionPipeline;
use crate::diffusion::error::Result;
use crate::diffusion::vae::{AutoencoderKl, LatentDistribution, is_encoder_tensor};
use crate::diffusion::weights::{component_weights, safetensors_bytes};

/// The note an image carries once its model's VAE fell back to f32.
pub const VAE_F32_FALLBACK_NOTE: &str = "VAE in f32: its f16 result had non-finite values (overflow) on this model, so it was redone \
     in f32 and stays in f32 while the model is loaded";

/// The dtype the VAE is loaded in for a pipeline in `dtype`, and whether its results are
/// checked (f16 only).
pub fn vae_dtype(dtype: DType) -> (DType, bool) {
    match dtype {
        DType::F16 => (DType::F16, true),
        DType::BF16 => (DType::BF16, false),
        _ => (DType::F32, false),
    }
}

/// Whether every value of `tensor` is finite (an f32 sum is non-finite iff a value is, or the
/// values are so large that the sum overflows, which is as bad).
///
/// # Errors
/// Tensor errors.
pub fn all_finite(tensor: &Tensor) -> Result<bool> {
    Ok(tensor.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?.is_finite())
}

/// The f32 VAE loaded after an f16 failure, with its weight bytes.
#[derive(Debug, Default)]
pub struct VaeFallback {
    slot: OnceLock<(AutoencoderKl, u64)>,
}

impl VaeFallback {
    /// Bytes of the fallback's weights (0 until it is loaded).
    pub fn byte_size(&self) -> u64 {
        self.slot.get().map_or(0, |(vae, bytes)| bytes + vae.encoder_byte_size())
    }

    /// The fallback VAE, when loaded.
    pub fn get(&self) -> Option<&AutoencoderKl> {
        self.slot.get().map(|(vae, _)| vae)
    }
}

impl DiffusionPipeline {
    /// The VAE in use: the f32 fallback once there is one, else the VAE as loaded.
    pub fn active_vae(&self) -> &AutoencoderKl {
        self.vae_fallback.get().unwrap_or(&self.vae)
    }

    /// [`VAE_F32_FALLBACK_NOTE`] when this model's VAE has fallen back to f32.
    pub fn vae_note(&self) -> Option<&'static str> {
        self.vae_fallback.get().map(|_| VAE_F32_FALLBACK_NOTE)
    }

    /// Loads the f32 VAE (once).
    fn vae_f32(&self) -> Result<&AutoencoderKl> {
        if let Some(vae) = self.vae_fallback.get() {
            return Ok(vae);
        }
        let folder = self.folder.join("vae");
        let vae = AutoencoderKl::load(&folder, DType::F32, &self.device, false)?;
        let bytes = safetensors_bytes(
            &component_weights(&folder, "diffusion_pytorch_model", false)?,
            DType::F32,
            &|name| !is_encoder_tensor(name),
        )?;
        tracing::warn!(model = %self.folder.display(), "{VAE_F32_FALLBACK_NOTE}");
        // A racing caller may have set it first; either value is the same f32 VAE.
        let _ = self.vae_fallback.slot.set((vae, bytes));
        Ok(self.vae_fallback.get().unwrap_or(&self.vae))
    }

    /// `vae.decode(scaled)` as f32, in f16 with the overflow check and f32 fallback when the VAE
    /// is checked. `scaled` is already divided by `scaling_factor`.
    ///
    /// # Errors
    /// Tensor errors; a fallback VAE that cannot be loaded.
    pub fn vae_decode(&self, scaled: &Tensor) -> Result<Tensor> {
        let decoded = self.active_vae().decode(scaled)?.to_dtype(DType::F32)?;
        if !self.vae_checked || self.vae_fallback.get().is_some() || all_finite(&decoded)? {
            return Ok(decoded);
        }
        Ok(self.vae_f32()?.decode(&scaled.to_dtype(DType::F32)?)?.to_dtype(DType::F32)?)
    }

    /// `vae.encode(images)` with the same check on the distribution's mean.
    ///
    /// # Errors
    /// Tensor errors; missing encoder weights.
    pub fn vae_encode(&self, images: &Tensor) -> Result<LatentDistribution> {
        let distribution = self.active_vae().encode(images)?;
        if !self.vae_checked
            || self.vae_fallback.get().is_some()
            || (all_finite(&distribution.mean)? && all_finite(&distribution.std)?)
        {
            return Ok(distribution);
        }
        self.vae_f32()?.encode(&images.to_dtype(DType::F32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_f16_is_checked_and_bf16_is_never_upcast() {
        assert_eq!(vae_dtype(DType::F16), (DType::F16, true));
        assert_eq!(vae_dtype(DType::BF16), (DType::BF16, false));
        assert_eq!(vae_dtype(DType::F32), (DType::F32, false));
    }

    #[test]
    fn non_finite_values_are_found() {
        let device = candle_core::Device::Cpu;
        let finite = Tensor::new(&[1.0f32, -2.0, 3.5], &device).expect("tensor");
        assert!(all_finite(&finite).expect("check"));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let tensor = Tensor::new(&[1.0f32, bad, 3.5], &device).expect("tensor");
            assert!(!all_finite(&tensor).expect("check"), "{bad}");
        }
        let overflowed = Tensor::new(&[60_000f32, 60_000.0], &device)
            .expect("tensor")
            .to_dtype(DType::F16)
            .expect("f16");
        let doubled = (&overflowed + &overflowed).expect("add");
        assert!(!all_finite(&doubled).expect("check"), "f16 overflow is inf");
    }
}
