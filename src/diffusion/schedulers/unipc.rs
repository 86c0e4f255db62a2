//! UniPC (diffusers' `UniPCMultistepScheduler`, default `bh2`, data prediction): a multistep
//! predictor, then at the next call a corrector that reuses the new model output (no extra UNet
//! call).

use candle_core::{Result, Tensor};

use super::Scheduler;
use super::config::{
    FinalSigmasType, PredictionType, SchedulerConfig, SchedulerError, TimestepSpacing,
};
use super::noise_schedule::{
    BetaDefaults, SigmaConversion, ZeroSnr, alphas_cumprod, interp_sigmas, log_sigmas,
    multistep_timesteps, round_half_even, sigma_to_t, to_f32, train_sigmas,
};
use super::step_math::{alpha_sigma, div, f32, lambda, lincomb, sigma_at};
use crate::diffusion::rng::TorchGenerator;

/// UniPC's `B(h)` variants (`solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `B(h) = h`.
    Bh1,
    /// `B(h) = eʰ − 1` (diffusers' default).
    Bh2,
}

/// `UniPCMultistepScheduler` after `set_timesteps(steps)`.
#[derive(Debug, Clone)]
pub struct UniPcMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    predict_x0: bool,
    variant: Variant,
    solver_order: usize,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    /// Converted model outputs, oldest first (at most `solver_order`).
    model_outputs: Vec<Tensor>,
    lower_order_nums: usize,
    /// The sample the last predictor started from, and that predictor's order.
    last: Option<(Tensor, usize)>,
}

impl UniPcMultistep {
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
        let variant = match cfg.solver_type.as_deref().unwrap_or("bh2") {
            "bh1" => Variant::Bh1,
            "bh2" | "midpoint" | "heun" | "logrho" => Variant::Bh2,
            other => {
                return Err(SchedulerError::Field {
                    field: "solver_type",
                    message: format!("{other:?} is not bh1 or bh2"),
                });
            }
        };
        let cumprod = alphas_cumprod(cfg, BetaDefaults::DDPM, ZeroSnr::RescaleAndPin)?;
        let train = train_sigmas(&cumprod);
        let logs = log_sigmas(&train);
        let train_steps = cfg.num_train_timesteps();
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let mut timesteps =
            multistep_timesteps(spacing, train_steps, train_steps, steps, cfg.steps_offset());
        let final_sigmas_type = cfg.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        let conversion = SigmaConversion::from_config(cfg)?;
        let (sigmas, last) = if conversion == SigmaConversion::None {
            let last = match final_sigmas_type {
                FinalSigmasType::Zero => 0.0,
                FinalSigmasType::SigmaMin => ((1.0 - cumprod[0]) / cumprod[0]).sqrt(),
            };
            (interp_sigmas(&timesteps, &train), last)
        } else {
            let descending: Vec<f64> = train.iter().rev().map(|&sigma| f64::from(sigma)).collect();
            let sigmas = conversion.convert(&descending, (cfg.sigma_min, cfg.sigma_max), steps);
            let round = conversion == SigmaConversion::Karras;
            timesteps = sigmas
                .iter()
                .map(|&sigma| {
                    let t = sigma_to_t(sigma, &logs);
                    if round { round_half_even(t) } else { t.trunc() }
                })
                .collect();
            let last = match final_sigmas_type {
                FinalSigmasType::Zero => 0.0,
                FinalSigmasType::SigmaMin => sigmas.last().copied().map_or(0.0, to_f32),
            };
            (sigmas, last)
        };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(to_f32).collect();
        sigmas.push(last);
        Ok(Self {
            timesteps,
            sigmas,
            prediction: cfg.prediction_type(),
            predict_x0: cfg.predict_x0.unwrap_or(true),
            variant,
            solver_order: cfg.solver_order.unwrap_or(2),
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            disable_corrector: cfg.disable_corrector.clone().unwrap_or_default(),
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            last: None,
        })
    }

    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f32,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        match (self.predict_x0, self.prediction) {
            (true, PredictionType::Epsilon) => {
                div(&lincomb(&[(1.0, sample), (-sigma_t, model_output)])?, alpha_t)
            }
            (true, PredictionType::Sample) | (false, PredictionType::Epsilon) => {
                Ok(model_output.clone())
            }
            (true, PredictionType::VPrediction) => {
                lincomb(&[(alpha_t, sample), (-sigma_t, model_output)])
            }
            (false, PredictionType::Sample) => {
                div(&lincomb(&[(1.0, sample), (-alpha_t, model_output)])?, sigma_t)
            }
            (false, PredictionType::VPrediction) => {
                lincomb(&[(alpha_t, model_output), (sigma_t, sample)])
            }
        }
    }

    /// The converted output `back` entries before the newest one in the history.
    fn history(&self, back: usize) -> Result<&Tensor> {
        self.model_outputs
            .len()
            .checked_sub(back + 1)
            .and_then(|index| self.model_outputs.get(index))
            .ok_or_else(|| candle_core::Error::Msg("UniPC history is too short".into()))
    }

    /// The shared coefficient set of the predictor and the corrector: `h`, `h·φ₁`, `B(h)`,
    /// the `rk` ratios (last is 1) and the right-hand side `b`.
    fn coefficients(
        &self,
        h: f32,
        rks: &[f32],
        order: usize,
    ) -> (f32, f32, Vec<Vec<f32>>, Vec<f32>) {
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1u64;
        let b_h = match self.variant {
            Variant::Bh1 => hh,
            Variant::Bh2 => hh.exp_m1(),
        };
        let mut r_matrix = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            #[allow(
                clippy::cast_possible_wrap,
                clippy::cast_possible_truncation,
                reason = "i runs over 1..=order (at most 3)"
            )]
            r_matrix.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i as u64 + 1;
            let inverse = to_f32(1.0 / factorial as f64);
            h_phi_k = h_phi_k / hh - inverse;
        }
        (h_phi_1, b_h, r_matrix, b)
    }

    /// The update `(σ_t/σ_s)·x − α_t·hφ₁·m₀` (data prediction) or its noise-prediction twin.
    fn base_update(
        &self,
        x: &Tensor,
        m0: &Tensor,
        sigma_t: f32,
        sigma_s0: f32,
        h_phi_1: f32,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t_scaled) = alpha_sigma(sigma_t);
        let (alpha_s0, sigma_s0_scaled) = alpha_sigma(sigma_s0);
        if self.predict_x0 {
            lincomb(&[(sigma_t_scaled / sigma_s0_scaled, x), (-(alpha_t * h_phi_1), m0)])
        } else {
            lincomb(&[(alpha_t / alpha_s0, x), (-(sigma_t_scaled * h_phi_1), m0)])
        }
    }

    /// `α_t` (data prediction) or `σ_t` (noise prediction) of the target sigma.
    fn output_scale(&self, sigma: f32) -> f32 {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        if self.predict_x0 { alpha_t } else { sigma_t }
    }

    /// diffusers' `multistep_uni_p_bh_update`.
    fn predictor(&self, index: usize, x: &Tensor, order: usize) -> Result<Tensor> {
        let m0 = self.history(0)?;
        let (sigma_t, sigma_s0) =
            (sigma_at(&self.sigmas, index + 1)?, sigma_at(&self.sigmas, index)?);
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let si = index.checked_sub(i).ok_or_else(|| {
                candle_core::Error::Msg("UniPC predictor without enough history".into())
            })?;
            let rk = (lambda(sigma_at(&self.sigmas, si)?) - lambda_s0) / h;
            rks.push(rk);
            d1s.push(div(&(self.history(i)? - m0)?, rk)?);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, r_matrix, b) = self.coefficients(h, &rks, order);
        let x_t = self.base_update(x, m0, sigma_t, sigma_s0, h_phi_1)?;
        if d1s.is_empty() {
            return Ok(x_t);
        }
        let rhos = if order == 2 {
            vec![0.5]
        } else {
            let reduced: Vec<Vec<f32>> =
                r_matrix[..order - 1].iter().map(|row| row[..order - 1].to_vec()).collect();
            solve(reduced, b[..order - 1].to_vec())?
        };
        let terms: Vec<(f32, &Tensor)> = rhos.iter().copied().zip(d1s.iter()).collect();
        let residual = lincomb(&terms)?;
        lincomb(&[(1.0, &x_t), (-(self.output_scale(sigma_t) * b_h), &residual)])
    }

    /// diffusers' `multistep_uni_c_bh_update`: corrects `this_sample` (the last predictor's
    /// result) with this call's converted output.
    fn corrector(
        &self,
        index: usize,
        this_output: &Tensor,
        last_sample: &Tensor,
        order: usize,
    ) -> Result<Tensor> {
        let m0 = self.history(0)?;
        let previous = index
            .checked_sub(1)
            .ok_or_else(|| candle_core::Error::Msg("UniPC corrector at step 0".into()))?;
        let (sigma_t, sigma_s0) =
            (sigma_at(&self.sigmas, index)?, sigma_at(&self.sigmas, previous)?);
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let si = index.checked_sub(i + 1).ok_or_else(|| {
                candle_core::Error::Msg("UniPC corrector without enough history".into())
            })?;
            let rk = (lambda(sigma_at(&self.sigmas, si)?) - lambda_s0) / h;
            rks.push(rk);
            d1s.push(div(&(self.history(i)? - m0)?, rk)?);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, r_matrix, b) = self.coefficients(h, &rks, order);
        let rhos = if order == 1 { vec![0.5] } else { solve(r_matrix, b)? };
        let x_t = self.base_update(last_sample, m0, sigma_t, sigma_s0, h_phi_1)?;
        let d1_t = (this_output - m0)?;
        let last_rho = rhos.last().copied().unwrap_or(0.5);
        let correction = if d1s.is_empty() {
            lincomb(&[(last_rho, &d1_t)])?
        } else {
            let terms: Vec<(f32, &Tensor)> = rhos.iter().copied().zip(d1s.iter()).collect();
            let residual = lincomb(&terms)?;
            lincomb(&[(1.0, &residual), (last_rho, &d1_t)])?
        };
        lincomb(&[(1.0, &x_t), (-(self.output_scale(sigma_t) * b_h), &correction)])
    }
}

/// Solves the small linear system `matrix · x = rhs` in float32 by Gaussian elimination with
/// partial pivoting (what LAPACK's `sgesv` does for these 2×2 / 3×3 systems).
fn solve(mut matrix: Vec<Vec<f32>>, mut rhs: Vec<f32>) -> Result<Vec<f32>> {
    let size = rhs.len();
    for column in 0..size {
        let pivot = (column..size)
            .max_by(|&a, &b| matrix[a][column].abs().total_cmp(&matrix[b][column].abs()))
            .unwrap_or(column);
        if matrix[pivot][column] == 0.0 {
            candle_core::bail!("UniPC coefficient matrix is singular");
        }
        matrix.swap(column, pivot);
        rhs.swap(column, pivot);
        let pivot_row = matrix[column].clone();
        for row in column + 1..size {
            let factor = matrix[row][column] / pivot_row[column];
            for (entry, pivot_entry) in matrix[row][column..].iter_mut().zip(&pivot_row[column..]) {
                *entry -= factor * pivot_entry;
            }
            rhs[row] -= factor * rhs[column];
        }
    }
    let mut solution = vec![0.0f32; size];
    for row in (0..size).rev() {
        let mut value = rhs[row];
        for k in row + 1..size {
            value -= matrix[row][k] * solution[k];
        }
        solution[row] = value / matrix[row][row];
    }
    Ok(solution)
}

impl Scheduler for UniPcMultistep {
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
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let out_dtype = model_output.dtype();
        let (model_output, mut sample) = (f32(model_output)?, f32(sample)?);
        let converted =
            self.convert_model_output(&model_output, &sample, sigma_at(&self.sigmas, step_index)?)?;
        if step_index > 0
            && !self.disable_corrector.contains(&(step_index - 1))
            && let Some((last_sample, last_order)) = &self.last
        {
            sample = self.corrector(step_index, &converted, last_sample, *last_order)?;
        }
        self.model_outputs.push(converted);
        if self.model_outputs.len() > self.solver_order {
            self.model_outputs.remove(0);
        }
        let count = self.timesteps.len();
        let this_order = if self.lower_order_final {
            self.solver_order.min(count.saturating_sub(step_index))
        } else {
            self.solver_order
        };
        let this_order = this_order.min(self.lower_order_nums + 1).max(1);
        let prev = self.predictor(step_index, &sample, this_order)?;
        self.last = Some((sample, this_order));
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
