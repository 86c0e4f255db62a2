//! Euler a (diffusers' `EulerAncestralDiscreteScheduler`): Euler to a lower sigma, then fresh
//! noise back up to the next sigma. SDXL-Turbo's scheduler. The noise is drawn from the image's
//! generator, one `randn` of the sample's shape per step, as diffusers draws it.

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{PredictionType, SchedulerConfig, SchedulerError, TimestepSpacing};
use super::noise_schedule::{
    BetaDefaults, ZeroSnr, alphas_cumprod, discrete_timesteps, interp_sigmas,
    karras_init_noise_sigma, to_f32, train_sigmas,
};
use super::step_math::{div, f32, karras_denoised, karras_scale_input, mul, sigma_at};
use crate::diffusion::rng::TorchGenerator;

/// `EulerAncestralDiscreteScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscrete {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl EulerAncestralDiscrete {
    /// Builds the scheduler from the model's configuration for `steps` inference steps.
    /// (diffusers' class has no Karras option: `use_karras_sigmas` is ignored, as there.)
    ///
    /// # Errors
    /// A configuration value this class rejects (named).
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        let cumprod = alphas_cumprod(cfg, BetaDefaults::DDPM, ZeroSnr::RescaleAndPin)?;
        let train = train_sigmas(&cumprod);
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let timesteps =
            discrete_timesteps(spacing, cfg.num_train_timesteps(), steps, cfg.steps_offset());
        let mut sigmas: Vec<f32> =
            interp_sigmas(&timesteps, &train).into_iter().map(to_f32).collect();
        sigmas.push(0.0);
        let init_noise_sigma = karras_init_noise_sigma(spacing, &sigmas);
        Ok(Self { timesteps, sigmas, init_noise_sigma, prediction: cfg.prediction_type() })
    }
}

impl Scheduler for EulerAncestralDiscrete {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        karras_scale_input(sample, sigma_at(&self.sigmas, step_index)?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let out_dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output)?, f32(sample)?);
        let sigma = sigma_at(&self.sigmas, step_index)?;
        let sigma_to = sigma_at(&self.sigmas, step_index + 1)?;
        let denoised = karras_denoised(self.prediction, &model_output, &sample, sigma)?;
        let (from_sq, to_sq) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (to_sq * (from_sq - to_sq) / from_sq).sqrt();
        let sigma_down = (to_sq - sigma_up * sigma_up).sqrt();
        let derivative = div(&(&sample - denoised)?, sigma)?;
        let prev = (&sample + mul(&derivative, sigma_down - sigma)?)?;
        let noise = generator.randn_tensor(model_output.shape(), model_output.device())?;
        let prev = (prev + mul(&noise, sigma_up)?)?;
        prev.to_dtype(out_dtype)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        original + mul(noise, sigma_at(&self.sigmas, step_index)?)?
    }
}
