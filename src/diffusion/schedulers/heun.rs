//! Heun (diffusers' `HeunDiscreteScheduler`): Euler's step corrected by the slope at its end,
//! two UNet calls per step. `timesteps()` lists every timestep after the first twice, as
//! diffusers does; the stage is kept as state, as diffusers keeps it.

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{PredictionType, SchedulerConfig, SchedulerError, TimestepSpacing};
use super::noise_schedule::{
    BetaDefaults, SigmaConversion, ZeroSnr, alphas_cumprod, discrete_timesteps, interp_sigmas,
    karras_init_noise_sigma, log_sigmas, sigma_to_t, to_f32, train_sigmas,
};
use super::step_math::{div, f32, karras_denoised, karras_scale_input, mul, sigma_at};
use crate::diffusion::rng::TorchGenerator;

/// What the first stage leaves for the second.
#[derive(Debug, Clone)]
struct FirstStage {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

/// `HeunDiscreteScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct HeunDiscrete {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    clip_range: Option<f32>,
    first_stage: Option<FirstStage>,
}

/// Per-step timesteps, sigmas (float64, without the final zero), float32 log training sigmas
/// and the spacing.
pub(crate) type BaseSchedule = (Vec<f64>, Vec<f64>, Vec<f32>, TimestepSpacing);

/// The sigma-parameterised schedule Heun and DPM++ SDE share before their stage doubling:
/// per-step timesteps (float64) and sigmas (float64, without the final zero).
pub(crate) fn two_stage_base_schedule(
    cfg: &SchedulerConfig,
    steps: usize,
) -> std::result::Result<BaseSchedule, SchedulerError> {
    let cumprod = alphas_cumprod(cfg, BetaDefaults::STABLE_DIFFUSION, ZeroSnr::Ignored)?;
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
    Ok((timesteps, sigmas, logs, spacing))
}

/// `[x0, x1, x1, x2, x2, …]`: every entry after the first repeated, as diffusers'
/// `repeat_interleave(2)` lays out two-stage schedules.
pub(crate) fn repeat_after_first<T: Copy>(values: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(values.len() * 2);
    if let Some((first, rest)) = values.split_first() {
        out.push(*first);
        for value in rest {
            out.push(*value);
            out.push(*value);
        }
    }
    out
}

impl HeunDiscrete {
    /// Builds the scheduler from the model's configuration for `steps` inference steps.
    ///
    /// # Errors
    /// A configuration value this class rejects (named).
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        let (timesteps, sigmas, _, spacing) = two_stage_base_schedule(cfg, steps)?;
        let mut step_sigmas: Vec<f32> = sigmas.into_iter().map(to_f32).collect();
        step_sigmas.push(0.0);
        // [σ0, σ1, σ1, …, σn−1, σn−1, 0]
        let last = step_sigmas.len() - 1;
        let mut sigmas = repeat_after_first(&step_sigmas[..last]);
        sigmas.push(0.0);
        let timesteps: Vec<f64> =
            repeat_after_first(&timesteps).into_iter().map(|t| f64::from(to_f32(t))).collect();
        let init_noise_sigma = karras_init_noise_sigma(spacing, &sigmas);
        #[allow(clippy::cast_possible_truncation, reason = "configs are f64, samples f32")]
        let clip_range =
            cfg.clip_sample.unwrap_or(false).then(|| cfg.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: cfg.prediction_type(),
            clip_range,
            first_stage: None,
        })
    }
}

impl Scheduler for HeunDiscrete {
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
        let first_order = self.first_stage.is_none();
        let (sigma, sigma_next) = if first_order {
            (sigma_at(&self.sigmas, step_index)?, sigma_at(&self.sigmas, step_index + 1)?)
        } else {
            let previous = step_index.checked_sub(1).ok_or_else(|| {
                candle_core::Error::Msg("Heun's second stage cannot be step 0".into())
            })?;
            (sigma_at(&self.sigmas, previous)?, sigma_at(&self.sigmas, step_index)?)
        };
        let sigma_input = if first_order { sigma } else { sigma_next };
        let mut denoised = karras_denoised(self.prediction, &model_output, &sample, sigma_input)?;
        if let Some(range) = self.clip_range {
            denoised = denoised.clamp(-range, range)?;
        }
        let prev = match self.first_stage.take() {
            None => {
                let derivative = div(&(&sample - denoised)?, sigma)?;
                let dt = sigma_next - sigma;
                let prev = (&sample + mul(&derivative, dt)?)?;
                self.first_stage = Some(FirstStage { derivative, dt, sample });
                prev
            }
            Some(stage) => {
                let derivative = div(&(&sample - denoised)?, sigma_next)?;
                let derivative = div(&(stage.derivative + derivative)?, 2.0)?;
                (stage.sample + mul(&derivative, stage.dt)?)?
            }
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
