//! LMS (diffusers' `LMSDiscreteScheduler`): linear multistep on the last four derivatives,
//! coefficients integrated over each sigma interval.
//!
//! diffusers integrates the Lagrange basis numerically (scipy `quad`); the integrand is a
//! polynomial of degree ≤ 3, so two-point Gauss–Legendre here is exact, and the two agree to
//! float32 rounding. diffusers picks the order from the step index, not from the history it
//! has (an img2img run starting mid-schedule uses a higher-order coefficient on its single
//! derivative); that is reproduced.

use std::collections::VecDeque;

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{PredictionType, SchedulerConfig, SchedulerError, TimestepSpacing};
use super::noise_schedule::{
    BetaDefaults, SigmaConversion, ZeroSnr, alphas_cumprod, discrete_timesteps, interp_sigmas,
    karras_init_noise_sigma, log_sigmas, sigma_to_t, to_f32, train_sigmas,
};
use super::step_math::{div, f32, karras_denoised, karras_scale_input, mul, sigma_at};
use crate::diffusion::rng::TorchGenerator;

/// The highest order diffusers' pipelines use (`step(order=4)`).
const MAX_ORDER: usize = 4;

/// `LMSDiscreteScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct LmsDiscrete {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    derivatives: VecDeque<Tensor>,
}

impl LmsDiscrete {
    /// Builds the scheduler from the model's configuration for `steps` inference steps.
    ///
    /// # Errors
    /// A configuration value this class rejects (named).
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        let cumprod = alphas_cumprod(cfg, BetaDefaults::DDPM, ZeroSnr::Ignored)?;
        let train = train_sigmas(&cumprod);
        let logs = log_sigmas(&train);
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let mut timesteps =
            discrete_timesteps(spacing, cfg.num_train_timesteps(), steps, cfg.steps_offset());
        let conversion = SigmaConversion::from_config(cfg)?;
        let sigmas = conversion.convert(&interp_sigmas(&timesteps, &train), (None, None), steps);
        if conversion != SigmaConversion::None {
            timesteps = sigmas.iter().map(|&sigma| sigma_to_t(sigma, &logs)).collect();
        }
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(to_f32).collect();
        sigmas.push(0.0);
        let timesteps = timesteps.into_iter().map(|t| f64::from(to_f32(t))).collect();
        let init_noise_sigma = karras_init_noise_sigma(spacing, &sigmas);
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: cfg.prediction_type(),
            derivatives: VecDeque::new(),
        })
    }

    /// ∫ over [`σ_t`, `σ_t+1`] of the Lagrange basis polynomial `current` through
    /// `σ_t`, `σ_t−1`, …, `σ_t−order+1`.
    fn coefficient(&self, order: usize, step_index: usize, current: usize) -> f64 {
        let sigma = |offset: usize| f64::from(self.sigmas[step_index - offset]);
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - sigma(k)) / (sigma(current) - sigma(k)))
                .product::<f64>()
        };
        let (low, high) =
            (f64::from(self.sigmas[step_index]), f64::from(self.sigmas[step_index + 1]));
        let (mid, half) = ((low + high) / 2.0, (high - low) / 2.0);
        let node = half / 3f64.sqrt();
        half * (basis(mid - node) + basis(mid + node))
    }
}

impl Scheduler for LmsDiscrete {
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
        sigma_at(&self.sigmas, step_index + 1)?;
        let denoised = karras_denoised(self.prediction, &model_output, &sample, sigma)?;
        self.derivatives.push_back(div(&(&sample - denoised)?, sigma)?);
        if self.derivatives.len() > MAX_ORDER {
            self.derivatives.pop_front();
        }
        let order = (step_index + 1).min(MAX_ORDER);
        // diffusers: sample + sum(coefficient · derivative), the sum taken first.
        let mut update: Option<Tensor> = None;
        for (current, derivative) in (0..order).zip(self.derivatives.iter().rev()) {
            let coefficient = to_f32(self.coefficient(order, step_index, current));
            let term = mul(derivative, coefficient)?;
            update = Some(match update {
                None => term,
                Some(sum) => (sum + term)?,
            });
        }
        let prev = match update {
            Some(update) => (sample + update)?,
            None => sample,
        };
        prev.to_dtype(out_dtype)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        original + mul(noise, sigma_at(&self.sigmas, step_index)?)?
    }
}
