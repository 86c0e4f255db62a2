//! DDIM (diffusers' `DDIMScheduler`), deterministic (η = 0, as diffusers' pipelines call it):
//! predict x₀ and the noise, then move both to the previous timestep's noise level.

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{PredictionType, SchedulerConfig, SchedulerError, TimestepSpacing};
use super::noise_schedule::{BetaDefaults, ZeroSnr, alphas_cumprod, ddim_timesteps};
use super::step_math::{div, f32, mul};
use crate::diffusion::rng::TorchGenerator;

/// `DDIMScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct Ddim {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    step_ratio: usize,
    prediction: PredictionType,
    clip_range: Option<f32>,
}

impl Ddim {
    /// Builds the scheduler from the model's configuration for `steps` inference steps.
    ///
    /// # Errors
    /// A configuration value this class rejects (named): `thresholding` is unsupported.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        if cfg.thresholding.unwrap_or(false) {
            return Err(SchedulerError::Unsupported {
                field: "thresholding",
                value: "true".into(),
            });
        }
        let cumprod = alphas_cumprod(cfg, BetaDefaults::DDPM, ZeroSnr::RescaleOnly)?;
        let final_alpha_cumprod =
            if cfg.set_alpha_to_one.unwrap_or(true) { 1.0 } else { cumprod[0] };
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let train_steps = cfg.num_train_timesteps();
        let timesteps = ddim_timesteps(spacing, train_steps, steps, cfg.steps_offset());
        #[allow(clippy::cast_possible_truncation, reason = "configs are f64, samples f32")]
        let clip_range =
            cfg.clip_sample.unwrap_or(true).then(|| cfg.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(Self {
            timesteps,
            alphas_cumprod: cumprod,
            final_alpha_cumprod,
            step_ratio: train_steps / steps,
            prediction: cfg.prediction_type(),
            clip_range,
        })
    }

    fn timestep_at(&self, step_index: usize) -> Result<usize> {
        let timestep = self.timesteps.get(step_index).copied().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "step index {step_index} is past the end of the schedule ({} timesteps)",
                self.timesteps.len()
            ))
        })?;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "timesteps are whole, non-negative training steps"
        )]
        let timestep = timestep as usize;
        if timestep >= self.alphas_cumprod.len() {
            candle_core::bail!(
                "timestep {timestep} is outside the {} training timesteps (check steps_offset)",
                self.alphas_cumprod.len()
            );
        }
        Ok(timestep)
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _step_index: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let out_dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output)?, f32(sample)?);
        let timestep = self.timestep_at(step_index)?;
        let alpha_prod = self.alphas_cumprod[timestep];
        let alpha_prod_prev = timestep
            .checked_sub(self.step_ratio)
            .map_or(self.final_alpha_cumprod, |prev| self.alphas_cumprod[prev]);
        let beta_prod = 1.0 - alpha_prod;
        let (alpha_root, beta_root) = (alpha_prod.sqrt(), beta_prod.sqrt());
        let (mut denoised, noise_pred) = match self.prediction {
            PredictionType::Epsilon => (
                div(&(&sample - mul(&model_output, beta_root)?)?, alpha_root)?,
                model_output.clone(),
            ),
            PredictionType::Sample => {
                let noise_pred = div(&(&sample - mul(&model_output, alpha_root)?)?, beta_root)?;
                (model_output.clone(), noise_pred)
            }
            PredictionType::VPrediction => (
                (mul(&sample, alpha_root)? - mul(&model_output, beta_root)?)?,
                (mul(&model_output, alpha_root)? + mul(&sample, beta_root)?)?,
            ),
        };
        if let Some(range) = self.clip_range {
            denoised = denoised.clamp(-range, range)?;
        }
        // η = 0: no variance term, std_dev_t = 0.
        let direction = mul(&noise_pred, (1.0 - alpha_prod_prev).sqrt())?;
        let prev = (mul(&denoised, alpha_prod_prev.sqrt())? + direction)?;
        prev.to_dtype(out_dtype)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        let alpha_prod = self.alphas_cumprod[self.timestep_at(step_index)?];
        mul(original, alpha_prod.sqrt())? + mul(noise, (1.0 - alpha_prod).sqrt())?
    }
}
