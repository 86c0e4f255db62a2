//! DPM++ SDE Karras (diffusers' `DPMSolverSDEScheduler` with `use_karras_sigmas`): a stochastic
//! second-order step through the log-sigma midpoint, two UNet calls per step.
//!
//! **No parity with diffusers' noise.** diffusers draws this sampler's noise from torchsde's
//! Brownian tree (`BrownianTreeNoiseSampler`, seeded independently of the pipeline's generator,
//! randomly unless `noise_sampler_seed` is set). This crate draws one standard normal of the
//! sample's shape from the image's own generator at each stochastic stage instead, so a seed
//! reproduces our images but not diffusers'. Everything else — sigmas, midpoint timesteps,
//! the update formulas — matches diffusers, and the tests check the step outputs against
//! diffusers fed the same noise.

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{PredictionType, SchedulerConfig, SchedulerError};
use super::heun::{repeat_after_first, two_stage_base_schedule};
use super::noise_schedule::{karras_init_noise_sigma, sigma_to_t, to_f32};
use super::step_math::{div, f32, karras_denoised, karras_scale_input, lincomb, mul, sigma_at};
use crate::diffusion::rng::TorchGenerator;

/// What the first stage leaves for the second.
#[derive(Debug, Clone)]
struct FirstStage {
    sample: Tensor,
    midpoint_sigma: f32,
}

/// `DPMSolverSDEScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct DpmSolverSde {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    first_stage: Option<FirstStage>,
}

impl DpmSolverSde {
    /// Builds the scheduler from the model's configuration for `steps` inference steps.
    ///
    /// # Errors
    /// A configuration value this class rejects (named).
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        let (timesteps, sigmas, logs, spacing) = two_stage_base_schedule(cfg, steps)?;
        // The second stage's timestep: the sigma halfway in −ln σ between consecutive sigmas.
        let midpoints: Vec<f64> = sigmas
            .windows(2)
            .map(|pair| {
                let (t, t_next) = (-pair[0].ln(), -pair[1].ln());
                let proposed = t + (t_next - t) * 0.5;
                sigma_to_t((-proposed).exp(), &logs)
            })
            .collect();
        let mut step_sigmas: Vec<f32> = sigmas.into_iter().map(to_f32).collect();
        step_sigmas.push(0.0);
        let last = step_sigmas.len() - 1;
        let mut sigmas = repeat_after_first(&step_sigmas[..last]);
        sigmas.push(0.0);
        let mut timesteps = repeat_after_first(&timesteps);
        for (slot, midpoint) in timesteps.iter_mut().skip(1).step_by(2).zip(midpoints) {
            *slot = midpoint;
        }
        let init_noise_sigma = karras_init_noise_sigma(spacing, &sigmas);
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: cfg.prediction_type(),
            first_stage: None,
        })
    }
}

impl Scheduler for DpmSolverSde {
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
        let sigma = match &self.first_stage {
            None => sigma_at(&self.sigmas, step_index)?,
            Some(stage) => stage.midpoint_sigma,
        };
        karras_scale_input(sample, sigma)
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
        let first_order = self.first_stage.is_none();
        let (sigma, sigma_next) = if first_order {
            (sigma_at(&self.sigmas, step_index)?, sigma_at(&self.sigmas, step_index + 1)?)
        } else {
            let previous = step_index.checked_sub(1).ok_or_else(|| {
                candle_core::Error::Msg("DPM++ SDE's second stage cannot be step 0".into())
            })?;
            (sigma_at(&self.sigmas, previous)?, sigma_at(&self.sigmas, step_index)?)
        };
        let (t, t_next) = (-sigma.ln(), -sigma_next.ln());
        let t_proposed = t + (t_next - t) * 0.5;
        let sigma_input = if first_order { sigma } else { (-t_proposed).exp() };
        let denoised = karras_denoised(self.prediction, &model_output, &sample, sigma_input)?;
        let prev = if sigma_next == 0.0 {
            let derivative = div(&(&sample - denoised)?, sigma)?;
            (&sample + mul(&derivative, sigma_next - sigma)?)?
        } else {
            let (t_next, base) = match self.first_stage.take() {
                None => (t_proposed, sample.clone()),
                Some(stage) => (t_next, stage.sample),
            };
            let (sigma_from, sigma_to) = ((-t).exp(), (-t_next).exp());
            let (from_sq, to_sq) = (sigma_from * sigma_from, sigma_to * sigma_to);
            let sigma_up = sigma_to.min((to_sq * (from_sq - to_sq) / from_sq).sqrt());
            let sigma_down = (to_sq - sigma_up * sigma_up).sqrt();
            let ancestral_t = -sigma_down.ln();
            let prev = lincomb(&[
                ((-ancestral_t).exp() / (-t).exp(), &base),
                (-(t - ancestral_t).exp_m1(), &denoised),
            ])?;
            // Our noise (see the module doc): one standard normal per stochastic stage.
            let noise = generator.randn_tensor(model_output.shape(), model_output.device())?;
            let prev = (prev + mul(&noise, sigma_up)?)?;
            if first_order {
                self.first_stage = Some(FirstStage { sample: base, midpoint_sigma: sigma_to });
            }
            prev
        };
        prev.to_dtype(out_dtype)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        original + mul(noise, sigma_at(&self.sigmas, step_index)?)?
    }

    fn order(&self) -> usize {
        2
    }
}
