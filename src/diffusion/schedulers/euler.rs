//! Euler (diffusers' `EulerDiscreteScheduler`, A1111's "Euler"): SDXL's own scheduler. One
//! first-order step along the probability-flow ODE per UNet call, deterministic.

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{
    FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, SchedulerError,
    TimestepSpacing, TimestepType,
};
use super::noise_schedule::{
    BetaDefaults, SigmaConversion, ZeroSnr, alphas_cumprod, discrete_timesteps, interp_sigmas,
    karras_init_noise_sigma, log_sigmas, sigma_to_t, to_f32, torch_linspace_f32, train_sigmas,
};
use super::step_math::{div, f32, karras_denoised, karras_scale_input, mul, sigma_at};
use crate::diffusion::rng::TorchGenerator;

/// `EulerDiscreteScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl EulerDiscrete {
    /// Builds the scheduler from the model's configuration for `steps` inference steps.
    ///
    /// # Errors
    /// A configuration value this class rejects (named).
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        let cumprod = alphas_cumprod(cfg, BetaDefaults::DDPM, ZeroSnr::RescaleAndPin)?;
        let train = train_sigmas(&cumprod);
        let logs = log_sigmas(&train);
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let mut timesteps =
            discrete_timesteps(spacing, cfg.num_train_timesteps(), steps, cfg.steps_offset());
        let interpolated: Vec<f64> =
            match cfg.interpolation_type.unwrap_or(InterpolationType::Linear) {
                InterpolationType::Linear => interp_sigmas(&timesteps, &train),
                InterpolationType::LogLinear => {
                    // torch.linspace(log σ_max, log σ_min, steps + 1).exp() in float32.
                    let (low, high) = (train[0].ln(), train[train.len() - 1].ln());
                    torch_linspace_f32(f64::from(high), f64::from(low), steps + 1)
                        .into_iter()
                        .map(|log| f64::from(log.exp()))
                        .collect()
                }
            };
        let conversion = SigmaConversion::from_config(cfg)?;
        let sigmas = conversion.convert(&interpolated, (cfg.sigma_min, cfg.sigma_max), steps);
        if conversion != SigmaConversion::None {
            timesteps = sigmas.iter().map(|&sigma| sigma_to_t(sigma, &logs)).collect();
        }
        let last = match cfg.final_sigmas_type.unwrap_or(FinalSigmasType::Zero) {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => ((1.0 - cumprod[0]) / cumprod[0]).sqrt(),
        };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(to_f32).collect();
        sigmas.push(last);
        let prediction = cfg.prediction_type();
        let continuous = cfg.timestep_type == Some(TimestepType::Continuous)
            && prediction == PredictionType::VPrediction;
        let timesteps: Vec<f64> = if continuous {
            sigmas[..sigmas.len() - 1].iter().map(|sigma| f64::from(0.25 * sigma.ln())).collect()
        } else {
            timesteps.into_iter().map(|t| f64::from(to_f32(t))).collect()
        };
        let init_noise_sigma = karras_init_noise_sigma(spacing, &sigmas);
        Ok(Self { timesteps, sigmas, init_noise_sigma, prediction })
    }
}

impl Scheduler for EulerDiscrete {
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
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let out_dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output)?, f32(sample)?);
        let sigma = sigma_at(&self.sigmas, step_index)?;
        let sigma_next = sigma_at(&self.sigmas, step_index + 1)?;
        let denoised = karras_denoised(self.prediction, &model_output, &sample, sigma)?;
        let derivative = div(&(&sample - denoised)?, sigma)?;
        let prev = (&sample + mul(&derivative, sigma_next - sigma)?)?;
        prev.to_dtype(out_dtype)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        let sigma = sigma_at(&self.sigmas, step_index)?;
        original + mul(noise, sigma)?
    }
}
