//! A cheap RGB picture of the latents after every step (the window's live preview): a fixed
//! linear map per latent pixel, the factors ComfyUI and A1111 use.

use candle_core::{DType, Device, Tensor};

use super::{DiffusionPipeline, PipelineFamily};
use crate::diffusion::error::{DiffusionError, Result};

impl DiffusionPipeline {
    /// A cheap RGB preview of latents (1, 4, h, w): a fixed linear map per latent pixel.
    pub(super) fn preview(&self, latents: &Tensor) -> Result<image::RgbImage> {
        let (factors, bias): (&[[f32; 3]; 4], [f32; 3]) = match self.family {
            PipelineFamily::Sdxl => (&SDXL_LATENT_RGB, [0.1084, -0.0175, -0.0011]),
            PipelineFamily::StableDiffusion => (&SD_LATENT_RGB, [0.0, 0.0, 0.0]),
        };
        let latents = latents.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let (_, channels, height, width) = latents.dims4()?;
        let values: Vec<f32> = latents.flatten_all()?.to_vec1()?;
        let plane = height * width;
        let mut rgb = Vec::with_capacity(plane * 3);
        for pixel in 0..plane {
            for (color, offset) in bias.iter().enumerate() {
                let mut value = *offset;
                for (channel, row) in factors.iter().enumerate().take(channels) {
                    value += values[channel * plane + pixel] * row[color];
                }
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "clamped to [0, 255] first"
                )]
                rgb.push((((value + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        let (width_px, height_px) =
            (u32::try_from(width).unwrap_or(0), u32::try_from(height).unwrap_or(0));
        image::RgbImage::from_raw(width_px, height_px, rgb)
            .ok_or_else(|| DiffusionError::Unsupported("preview buffer size".to_owned()))
    }
}

/// SDXL latent → RGB factors (the ones ComfyUI and A1111 use for previews).
const SDXL_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];
/// SD 1.x latent → RGB factors.
const SD_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];
