//! DPM++ 2M and DPM++ 2M Karras (diffusers' `DPMSolverMultistepScheduler`): exponential
//! integrators in log-SNR time reusing the previous step's prediction (second order), first
//! order on the first step and at the end as diffusers' `lower_order_final` /
//! `final_sigmas_type = zero` ask. Also the other algorithm types and orders the class has
//! (`dpmsolver`, `sde-dpmsolver`, `sde-dpmsolver++`; order 1–3) for models whose config
//! names them.

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, SchedulerError,
    TimestepSpacing,
};
use super::noise_schedule::{
    BetaDefaults, SigmaConversion, ZeroSnr, alphas_cumprod, interp_sigmas, log_sigmas,
    multistep_timesteps, round_half_even, sigma_to_t, to_f32, train_sigmas,
};
use super::step_math::{alpha_sigma, div, f32, lambda, lincomb, sigma_at};
use crate::diffusion::rng::TorchGenerator;

/// The two ways diffusers' DPM-Solver combines the history (`solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    /// The midpoint rule on the second-order difference (diffusers' default).
    Midpoint,
    /// Heun's rule on the second-order difference.
    Heun,
}

/// `DPMSolverMultistepScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    algorithm: AlgorithmType,
    solver_type: SolverType,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    /// Converted model outputs, oldest first (at most `solver_order`).
    model_outputs: Vec<Tensor>,
    lower_order_nums: usize,
}

impl DpmSolverMultistep {
    /// Builds the scheduler from the model's configuration for `steps` inference steps.
    ///
    /// # Errors
    /// A configuration value this class rejects (named): `thresholding`, `use_lu_lambdas`,
    /// `variance_type`-style learned variances are unsupported, as is a non-`++` algorithm
    /// with `final_sigmas_type = zero` (diffusers rejects it too).
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        for (field, on) in
            [("thresholding", cfg.thresholding), ("use_lu_lambdas", cfg.use_lu_lambdas)]
        {
            if on.unwrap_or(false) {
                return Err(SchedulerError::Unsupported { field, value: "true".into() });
            }
        }
        let algorithm = match cfg.algorithm_type.unwrap_or(AlgorithmType::DpmSolverPlusPlus) {
            AlgorithmType::Deis => AlgorithmType::DpmSolverPlusPlus,
            other => other,
        };
        let solver_type = match cfg.solver_type.as_deref().unwrap_or("midpoint") {
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => {
                return Err(SchedulerError::Field {
                    field: "solver_type",
                    message: format!("{other:?} is not midpoint or heun"),
                });
            }
        };
        let final_sigmas_type = cfg.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        let plus_plus = matches!(
            algorithm,
            AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus
        );
        if !plus_plus && final_sigmas_type == FinalSigmasType::Zero {
            return Err(SchedulerError::Field {
                field: "final_sigmas_type",
                message: "zero needs algorithm_type dpmsolver++ or sde-dpmsolver++".into(),
            });
        }
        let solver_order = cfg.solver_order.unwrap_or(2);
        if algorithm == AlgorithmType::SdeDpmSolver && solver_order == 3 {
            return Err(SchedulerError::Unsupported {
                field: "solver_order",
                value: "3 with algorithm_type sde-dpmsolver".into(),
            });
        }
        let cumprod = alphas_cumprod(cfg, BetaDefaults::DDPM, ZeroSnr::RescaleAndPin)?;
        let train = train_sigmas(&cumprod);
        let logs = log_sigmas(&train);
        let train_steps = cfg.num_train_timesteps();
        let last_timestep = train_steps - clipped_index(&cumprod, cfg.lambda_min_clipped);
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let mut timesteps =
            multistep_timesteps(spacing, train_steps, last_timestep, steps, cfg.steps_offset());
        let conversion = SigmaConversion::from_config(cfg)?;
        let sigmas = if conversion == SigmaConversion::None {
            interp_sigmas(&timesteps, &train)
        } else {
            let descending: Vec<f64> = train.iter().rev().map(|&sigma| f64::from(sigma)).collect();
            let sigmas = conversion.convert(&descending, (None, None), steps);
            let round = conversion == SigmaConversion::Karras
                && cfg.beta_schedule != Some(BetaSchedule::SquaredcosCapV2);
            timesteps = sigmas
                .iter()
                .map(|&sigma| {
                    let t = sigma_to_t(sigma, &logs);
                    // `.astype(np.int64)` truncates what was not rounded.
                    if round { round_half_even(t) } else { t.trunc() }
                })
                .collect();
            sigmas
        };
        let last = match final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => ((1.0 - cumprod[0]) / cumprod[0]).sqrt(),
        };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(to_f32).collect();
        sigmas.push(last);
        Ok(Self {
            timesteps,
            sigmas,
            prediction: cfg.prediction_type(),
            algorithm,
            solver_type,
            solver_order,
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            euler_at_final: cfg.euler_at_final.unwrap_or(false),
            final_sigma_zero: final_sigmas_type == FinalSigmasType::Zero,
            model_outputs: Vec::new(),
            lower_order_nums: 0,
        })
    }

    fn plus_plus(&self) -> bool {
        matches!(
            self.algorithm,
            AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus
        )
    }

    fn stochastic(&self) -> bool {
        matches!(self.algorithm, AlgorithmType::SdeDpmSolver | AlgorithmType::SdeDpmSolverPlusPlus)
    }

    /// diffusers' `convert_model_output`: x₀ for the `++` algorithms, ε otherwise.
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f32,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        if self.plus_plus() {
            match self.prediction {
                PredictionType::Epsilon => {
                    div(&lincomb(&[(1.0, sample), (-sigma_t, model_output)])?, alpha_t)
                }
                PredictionType::Sample => Ok(model_output.clone()),
                PredictionType::VPrediction => {
                    lincomb(&[(alpha_t, sample), (-sigma_t, model_output)])
                }
            }
        } else {
            match self.prediction {
                PredictionType::Epsilon => Ok(model_output.clone()),
                PredictionType::Sample => {
                    div(&lincomb(&[(1.0, sample), (-alpha_t, model_output)])?, sigma_t)
                }
                PredictionType::VPrediction => {
                    lincomb(&[(alpha_t, model_output), (sigma_t, sample)])
                }
            }
        }
    }

    fn first_order(&self, index: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let m0 = self.history(0)?;
        let (alpha_t, sigma_t) = alpha_sigma(sigma_at(&self.sigmas, index + 1)?);
        let (alpha_s, sigma_s) = alpha_sigma(sigma_at(&self.sigmas, index)?);
        let h = (alpha_t.ln() - sigma_t.ln()) - (alpha_s.ln() - sigma_s.ln());
        match (self.algorithm, noise) {
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(noise)) => lincomb(&[
                (sigma_t / sigma_s * (-h).exp(), sample),
                (alpha_t * (1.0 - (-2.0 * h).exp()), m0),
                (sigma_t * (1.0 - (-2.0 * h).exp()).sqrt(), noise),
            ]),
            (AlgorithmType::SdeDpmSolver, Some(noise)) => lincomb(&[
                (alpha_t / alpha_s, sample),
                (-(2.0 * (sigma_t * (h.exp() - 1.0))), m0),
                (sigma_t * ((2.0 * h).exp() - 1.0).sqrt(), noise),
            ]),
            (AlgorithmType::DpmSolver, _) => {
                lincomb(&[(alpha_t / alpha_s, sample), (-(sigma_t * (h.exp() - 1.0)), m0)])
            }
            _ => lincomb(&[(sigma_t / sigma_s, sample), (-(alpha_t * ((-h).exp() - 1.0)), m0)]),
        }
    }

    fn second_order(
        &self,
        index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let previous = index.checked_sub(1).ok_or_else(|| {
            candle_core::Error::Msg("second-order DPM-Solver step without history".into())
        })?;
        let (m0, m1) = (self.history(0)?, self.history(1)?);
        let (alpha_t, sigma_t) = alpha_sigma(sigma_at(&self.sigmas, index + 1)?);
        let (alpha_s0, sigma_s0) = alpha_sigma(sigma_at(&self.sigmas, index)?);
        let lambda_t = lambda(sigma_at(&self.sigmas, index + 1)?);
        let lambda_s0 = lambda(sigma_at(&self.sigmas, index)?);
        let lambda_s1 = lambda(sigma_at(&self.sigmas, previous)?);
        let (h, h_0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h_0 / h;
        let d1 = lincomb(&[(1.0 / r0, &(m0 - m1)?)])?;
        let d0 = m0;
        let midpoint = self.solver_type == SolverType::Midpoint;
        match (self.algorithm, noise) {
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(noise)) => {
                let decay = 1.0 - (-2.0 * h).exp();
                let d1_coefficient = if midpoint {
                    0.5 * (alpha_t * decay)
                } else {
                    alpha_t * (decay / (-2.0 * h) + 1.0)
                };
                lincomb(&[
                    (sigma_t / sigma_s0 * (-h).exp(), sample),
                    (alpha_t * decay, d0),
                    (d1_coefficient, &d1),
                    (sigma_t * decay.sqrt(), noise),
                ])
            }
            (AlgorithmType::SdeDpmSolver, Some(noise)) => {
                let d1_coefficient = if midpoint {
                    -(sigma_t * (h.exp() - 1.0))
                } else {
                    -(2.0 * (sigma_t * ((h.exp() - 1.0) / h - 1.0)))
                };
                lincomb(&[
                    (alpha_t / alpha_s0, sample),
                    (-(2.0 * (sigma_t * (h.exp() - 1.0))), d0),
                    (d1_coefficient, &d1),
                    (sigma_t * ((2.0 * h).exp() - 1.0).sqrt(), noise),
                ])
            }
            (AlgorithmType::DpmSolver, _) => {
                let d1_coefficient = if midpoint {
                    -(0.5 * (sigma_t * (h.exp() - 1.0)))
                } else {
                    -(sigma_t * ((h.exp() - 1.0) / h - 1.0))
                };
                lincomb(&[
                    (alpha_t / alpha_s0, sample),
                    (-(sigma_t * (h.exp() - 1.0)), d0),
                    (d1_coefficient, &d1),
                ])
            }
            _ => {
                let d1_coefficient = if midpoint {
                    -(0.5 * (alpha_t * ((-h).exp() - 1.0)))
                } else {
                    alpha_t * (((-h).exp() - 1.0) / h + 1.0)
                };
                lincomb(&[
                    (sigma_t / sigma_s0, sample),
                    (-(alpha_t * ((-h).exp() - 1.0)), d0),
                    (d1_coefficient, &d1),
                ])
            }
        }
    }

    fn third_order(&self, index: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        if index < 2 {
            candle_core::bail!("third-order DPM-Solver step without enough history");
        }
        let (m0, m1, m2) = (self.history(0)?, self.history(1)?, self.history(2)?);
        let (alpha_t, sigma_t) = alpha_sigma(sigma_at(&self.sigmas, index + 1)?);
        let (alpha_s0, sigma_s0) = alpha_sigma(sigma_at(&self.sigmas, index)?);
        let lambda_t = lambda(sigma_at(&self.sigmas, index + 1)?);
        let lambda_s0 = lambda(sigma_at(&self.sigmas, index)?);
        let lambda_s1 = lambda(sigma_at(&self.sigmas, index - 1)?);
        let lambda_s2 = lambda(sigma_at(&self.sigmas, index - 2)?);
        let (h, h_0, h_1) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1, lambda_s1 - lambda_s2);
        let (r0, r1) = (h_0 / h, h_1 / h);
        let d1_0 = lincomb(&[(1.0 / r0, &(m0 - m1)?)])?;
        let d1_1 = lincomb(&[(1.0 / r1, &(m1 - m2)?)])?;
        let difference = (&d1_0 - &d1_1)?;
        let d1 = lincomb(&[(1.0, &d1_0), (r0 / (r0 + r1), &difference)])?;
        let d2 = lincomb(&[(1.0 / (r0 + r1), &difference)])?;
        match (self.algorithm, noise) {
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(noise)) => {
                let decay = 1.0 - (-2.0 * h).exp();
                lincomb(&[
                    (sigma_t / sigma_s0 * (-h).exp(), sample),
                    (alpha_t * decay, m0),
                    (alpha_t * (decay / (-2.0 * h) + 1.0), &d1),
                    (alpha_t * ((1.0 - (-2.0 * h).exp() - 2.0 * h) / (2.0 * h).powi(2) - 0.5), &d2),
                    (sigma_t * decay.sqrt(), noise),
                ])
            }
            (AlgorithmType::DpmSolver, _) => lincomb(&[
                (alpha_t / alpha_s0, sample),
                (-(sigma_t * (h.exp() - 1.0)), m0),
                (-(sigma_t * ((h.exp() - 1.0) / h - 1.0)), &d1),
                (-(sigma_t * ((h.exp() - 1.0 - h) / (h * h) - 0.5)), &d2),
            ]),
            _ => lincomb(&[
                (sigma_t / sigma_s0, sample),
                (-(alpha_t * ((-h).exp() - 1.0)), m0),
                (alpha_t * (((-h).exp() - 1.0) / h + 1.0), &d1),
                (-(alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5)), &d2),
            ]),
        }
    }

    /// The converted output `back` steps ago (0 = this step's).
    fn history(&self, back: usize) -> Result<&Tensor> {
        self.model_outputs
            .len()
            .checked_sub(back + 1)
            .and_then(|index| self.model_outputs.get(index))
            .ok_or_else(|| candle_core::Error::Msg("DPM-Solver history is too short".into()))
    }
}

/// diffusers' `searchsorted(flip(λ_t), lambda_min_clipped)`: how many training steps have a
/// log-SNR below the clip (0 for the default −∞).
fn clipped_index(alphas_cumprod: &[f32], lambda_min_clipped: Option<f64>) -> usize {
    let Some(clip) = lambda_min_clipped else { return 0 };
    alphas_cumprod
        .iter()
        .filter(|&&alpha| {
            let lambda = alpha.sqrt().ln() - (1.0 - alpha).sqrt().ln();
            f64::from(lambda) < clip
        })
        .count()
}

impl Scheduler for DpmSolverMultistep {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f32] {
        &self.sigmas
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
        generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let out_dtype = model_output.dtype();
        let (model_output, sample) = (f32(model_output)?, f32(sample)?);
        let count = self.timesteps.len();
        let lower_order_final = step_index + 1 == count
            && (self.euler_at_final
                || (self.lower_order_final && count < 15)
                || self.final_sigma_zero);
        let lower_order_second = step_index + 2 == count && self.lower_order_final && count < 15;
        let converted =
            self.convert_model_output(&model_output, &sample, sigma_at(&self.sigmas, step_index)?)?;
        self.model_outputs.push(converted);
        if self.model_outputs.len() > self.solver_order {
            self.model_outputs.remove(0);
        }
        let noise = if self.stochastic() {
            Some(generator.randn_tensor(model_output.shape(), model_output.device())?)
        } else {
            None
        };
        let prev = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(step_index, &sample, noise.as_ref())?
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(step_index, &sample, noise.as_ref())?
        } else {
            self.third_order(step_index, &sample, noise.as_ref())?
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        prev.to_dtype(out_dtype)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma_at(&self.sigmas, step_index)?);
        lincomb(&[(alpha_t, original), (sigma_t, noise)])
    }
}
