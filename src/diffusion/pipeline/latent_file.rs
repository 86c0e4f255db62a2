//! The `.latent` file: the tensor handed to the VAE decoder as safetensors (key
//! `latent_tensor`, f32), as ComfyUI saves latents.

use candle_core::{DType, Device};

use super::GenerationOutput;
use crate::diffusion::error::{DiffusionError, Result};

impl GenerationOutput {
    /// The tensor handed to the VAE decoder (`latents / scaling_factor`) as safetensors bytes
    /// with the key `latent_tensor`, as ComfyUI saves latents.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn latent_safetensors(&self, scaling_factor: f64) -> Result<Vec<u8>> {
        let vae_input =
            (&self.latents / scaling_factor)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let shape = vae_input.dims().to_vec();
        let values: Vec<f32> = vae_input.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
            .map_err(|err| DiffusionError::Unsupported(format!("latent safetensors: {err}")))?;
        safetensors::tensor::serialize([("latent_tensor", view)], None)
            .map_err(|err| DiffusionError::Unsupported(format!("latent safetensors: {err}")))
    }
}
