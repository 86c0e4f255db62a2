//! `scheduler_config.json`, as diffusers reads it.
//!
//! Every field is optional: diffusers fills a missing key with the default of the class being
//! built (the defaults differ between classes, e.g. DDIM's spacing is `leading`, Euler's
//! `linspace`), so the schedulers resolve them, not this struct. Keys diffusers does not know
//! (`skip_prk_steps`, `_diffusers_version`, …) are ignored, as `from_config` ignores them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a scheduler configuration cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// The text is not a JSON object.
    #[error("scheduler config is not valid JSON: {0}")]
    Json(String),
    /// A field has a value of the wrong type or outside its range.
    #[error("scheduler config field `{field}` {message}")]
    Field {
        /// The JSON key.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A field asks for a diffusers option this crate does not implement.
    #[error("scheduler config field `{field}` = {value} is not supported")]
    Unsupported {
        /// The JSON key.
        field: &'static str,
        /// The value it has.
        value: String,
    },
}

impl From<SchedulerError> for candle_core::Error {
    fn from(err: SchedulerError) -> Self {
        candle_core::Error::Msg(err.to_string())
    }
}

/// `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Betas evenly spaced from `beta_start` to `beta_end`.
    Linear,
    /// Square roots evenly spaced, then squared (Stable Diffusion's schedule).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal, capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// `prediction_type`: what the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise ε.
    Epsilon,
    /// The velocity v = α·ε − σ·x₀.
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

/// `timestep_spacing`: how inference timesteps are picked from the training ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// Evenly spaced over [0, T − 1], both ends included.
    Linspace,
    /// Multiples of T / steps from 0, plus `steps_offset` (SDXL).
    Leading,
    /// Multiples of T / steps counted down from T, minus one (SDXL-Turbo).
    Trailing,
}

/// `interpolation_type` (Euler): how inference sigmas are read off the training sigmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationType {
    /// Linear in the timestep.
    Linear,
    /// Evenly spaced in log-sigma between the extreme training sigmas.
    LogLinear,
}

/// `final_sigmas_type`: the sigma after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    /// Zero: the last step denoises completely.
    Zero,
    /// The smallest training sigma.
    SigmaMin,
}

/// `algorithm_type` (DPM-Solver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlgorithmType {
    /// DPM-Solver on the noise prediction.
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// DPM-Solver++ on the data prediction (A1111's DPM++).
    #[serde(rename = "dpmsolver++")]
    DpmSolverPlusPlus,
    /// Stochastic DPM-Solver.
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
    /// Stochastic DPM-Solver++ (A1111's DPM++ 2M SDE).
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
    /// DEIS, which diffusers' DPM-Solver replaces by `dpmsolver++`.
    #[serde(rename = "deis")]
    Deis,
}

/// `timestep_type` (Euler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    /// Timesteps are training-step indices.
    Discrete,
    /// With v-prediction: timesteps are ¼·ln σ (EDM-style models).
    Continuous,
}

/// The model's `scheduler_config.json`. Every field is optional; `None` means "the default of
/// the class being built", exactly as diffusers' `from_config` behaves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// `_class_name`: the scheduler class the model ships with.
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// `num_train_timesteps` (1000).
    pub num_train_timesteps: Option<usize>,
    /// `beta_start` (0.0001; 0.00085 for Heun and DPM++ SDE).
    pub beta_start: Option<f64>,
    /// `beta_end` (0.02; 0.012 for Heun and DPM++ SDE).
    pub beta_end: Option<f64>,
    /// `beta_schedule` (linear).
    pub beta_schedule: Option<BetaSchedule>,
    /// `trained_betas`: explicit betas, overriding the schedule.
    pub trained_betas: Option<Vec<f64>>,
    /// `prediction_type` (epsilon).
    pub prediction_type: Option<PredictionType>,
    /// `timestep_spacing` (linspace; leading for DDIM).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// `steps_offset` (0).
    pub steps_offset: Option<usize>,
    /// `set_alpha_to_one` (DDIM, true).
    pub set_alpha_to_one: Option<bool>,
    /// `clip_sample` (DDIM true, Heun false).
    pub clip_sample: Option<bool>,
    /// `clip_sample_range` (1.0).
    pub clip_sample_range: Option<f64>,
    /// `thresholding` (false; dynamic thresholding is for pixel-space models and unsupported).
    pub thresholding: Option<bool>,
    /// `use_karras_sigmas` (false).
    pub use_karras_sigmas: Option<bool>,
    /// `use_exponential_sigmas` (false).
    pub use_exponential_sigmas: Option<bool>,
    /// `use_beta_sigmas` (false; unsupported when true).
    pub use_beta_sigmas: Option<bool>,
    /// `sigma_min`: lower end of Karras/exponential sigmas (the smallest training sigma).
    pub sigma_min: Option<f64>,
    /// `sigma_max`: upper end of Karras/exponential sigmas (the largest training sigma).
    pub sigma_max: Option<f64>,
    /// `interpolation_type` (Euler, linear).
    pub interpolation_type: Option<InterpolationType>,
    /// `final_sigmas_type` (zero).
    pub final_sigmas_type: Option<FinalSigmasType>,
    /// `timestep_type` (Euler, discrete).
    pub timestep_type: Option<TimestepType>,
    /// `rescale_betas_zero_snr` (false).
    pub rescale_betas_zero_snr: Option<bool>,
    /// `algorithm_type` (DPM-Solver, dpmsolver++).
    pub algorithm_type: Option<AlgorithmType>,
    /// `solver_order` (DPM-Solver and UniPC, 2).
    pub solver_order: Option<usize>,
    /// `solver_type` (DPM-Solver midpoint/heun; UniPC bh1/bh2).
    pub solver_type: Option<String>,
    /// `lower_order_final` (true).
    pub lower_order_final: Option<bool>,
    /// `euler_at_final` (DPM-Solver, false).
    pub euler_at_final: Option<bool>,
    /// `lambda_min_clipped` (DPM-Solver, −∞).
    pub lambda_min_clipped: Option<f64>,
    /// `use_lu_lambdas` (DPM-Solver, false; unsupported when true).
    pub use_lu_lambdas: Option<bool>,
    /// `predict_x0` (UniPC, true).
    pub predict_x0: Option<bool>,
    /// `disable_corrector` (UniPC, none): step indices where the corrector is skipped.
    pub disable_corrector: Option<Vec<usize>>,
}

impl SchedulerConfig {
    /// Parses `scheduler_config.json`. A field with the wrong type or an unknown value is an
    /// error naming the field; unknown keys are ignored.
    ///
    /// # Errors
    /// [`SchedulerError::Json`] for text that is not a JSON object, [`SchedulerError::Field`]
    /// naming the first bad field.
    pub fn from_json(text: &str) -> Result<Self, SchedulerError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| SchedulerError::Json(err.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(SchedulerError::Json("expected a JSON object".into()));
        };
        let config = Self {
            class_name: field(&map, "_class_name")?,
            num_train_timesteps: field(&map, "num_train_timesteps")?,
            beta_start: field(&map, "beta_start")?,
            beta_end: field(&map, "beta_end")?,
            beta_schedule: field(&map, "beta_schedule")?,
            trained_betas: field(&map, "trained_betas")?,
            prediction_type: field(&map, "prediction_type")?,
            timestep_spacing: field(&map, "timestep_spacing")?,
            steps_offset: field(&map, "steps_offset")?,
            set_alpha_to_one: field(&map, "set_alpha_to_one")?,
            clip_sample: field(&map, "clip_sample")?,
            clip_sample_range: field(&map, "clip_sample_range")?,
            thresholding: field(&map, "thresholding")?,
            use_karras_sigmas: field(&map, "use_karras_sigmas")?,
            use_exponential_sigmas: field(&map, "use_exponential_sigmas")?,
            use_beta_sigmas: field(&map, "use_beta_sigmas")?,
            sigma_min: field(&map, "sigma_min")?,
            sigma_max: field(&map, "sigma_max")?,
            interpolation_type: field(&map, "interpolation_type")?,
            final_sigmas_type: field(&map, "final_sigmas_type")?,
            timestep_type: field(&map, "timestep_type")?,
            rescale_betas_zero_snr: field(&map, "rescale_betas_zero_snr")?,
            algorithm_type: field(&map, "algorithm_type")?,
            solver_order: field(&map, "solver_order")?,
            solver_type: field(&map, "solver_type")?,
            lower_order_final: field(&map, "lower_order_final")?,
            euler_at_final: field(&map, "euler_at_final")?,
            lambda_min_clipped: field(&map, "lambda_min_clipped")?,
            use_lu_lambdas: field(&map, "use_lu_lambdas")?,
            predict_x0: field(&map, "predict_x0")?,
            disable_corrector: field(&map, "disable_corrector")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values no scheduler can work with.
    ///
    /// # Errors
    /// [`SchedulerError::Field`] naming the field.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        if self.num_train_timesteps.is_some_and(|steps| steps < 2) {
            return Err(SchedulerError::Field {
                field: "num_train_timesteps",
                message: "must be at least 2".into(),
            });
        }
        for (name, value) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if value.is_some_and(|beta| !(beta > 0.0 && beta < 1.0)) {
                return Err(SchedulerError::Field {
                    field: name,
                    message: "must lie in (0, 1)".into(),
                });
            }
        }
        if self.solver_order.is_some_and(|order| !(1..=3).contains(&order)) {
            return Err(SchedulerError::Field {
                field: "solver_order",
                message: "must be 1, 2 or 3".into(),
            });
        }
        Ok(())
    }

    /// `num_train_timesteps` or 1000.
    pub fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps.unwrap_or(1000)
    }

    /// `prediction_type` or epsilon.
    pub fn prediction_type(&self) -> PredictionType {
        self.prediction_type.unwrap_or(PredictionType::Epsilon)
    }

    /// `steps_offset` or 0.
    pub fn steps_offset(&self) -> usize {
        self.steps_offset.unwrap_or(0)
    }
}

/// One field of the JSON object: absent or `null` ⇒ `None`; a wrong type or value ⇒ an error
/// naming the field.
fn field<T: DeserializeOwned>(
    map: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<T>, SchedulerError> {
    match map.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone()).map(Some).map_err(|err| {
            SchedulerError::Field { field: name, message: format!("is invalid: {err}") }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sdxl_config_and_ignores_unknown_keys() {
        let cfg = SchedulerConfig::from_json(
            r#"{"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear",
                "skip_prk_steps": true, "trained_betas": null, "steps_offset": 1,
                "timestep_spacing": "leading"}"#,
        )
        .expect("valid config");
        assert_eq!(cfg.class_name.as_deref(), Some("EulerDiscreteScheduler"));
        assert_eq!(cfg.beta_schedule, Some(BetaSchedule::ScaledLinear));
        assert_eq!(cfg.timestep_spacing, Some(TimestepSpacing::Leading));
        assert_eq!(cfg.steps_offset(), 1);
        assert_eq!(cfg.trained_betas, None);
    }

    #[test]
    fn bad_values_name_their_field() {
        let err = SchedulerConfig::from_json(r#"{"timestep_spacing": "sideways"}"#)
            .expect_err("unknown spacing");
        assert!(matches!(err, SchedulerError::Field { field: "timestep_spacing", .. }), "{err}");
        assert!(err.to_string().contains("timestep_spacing"), "{err}");
        let err = SchedulerConfig::from_json(r#"{"steps_offset": "one"}"#).expect_err("string");
        assert!(err.to_string().contains("steps_offset"), "{err}");
        let err = SchedulerConfig::from_json(r#"{"solver_order": 5}"#).expect_err("order 5");
        assert!(err.to_string().contains("solver_order"), "{err}");
        assert!(matches!(SchedulerConfig::from_json("[1]"), Err(SchedulerError::Json(_))));
    }
}
