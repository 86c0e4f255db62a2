//! Samplers, one algorithm per file, each built from the model's own `scheduler_config.json`
//! and numerically equal to the diffusers class it is named after (REFERENCE §4).
//!
//! [`build`] reproduces what a diffusers pipeline does when a user picks a sampler: it builds
//! the chosen class `from_config(model's scheduler_config.json)` with the few overrides the
//! sampler's name implies (DPM++ 2M ⇒ `algorithm_type = dpmsolver++, solver_order = 2`; a
//! Karras variant ⇒ `use_karras_sigmas = true`) and calls `set_timesteps(steps)`.
//!
//! img2img: diffusers' pipeline starts at index `t_start * order` with
//! `t_start = steps − min(⌊steps · strength⌋, steps)` ([`img2img_start_index`]), calls
//! `add_noise(image latents, noise, that index)` and steps from there; every scheduler here
//! behaves as diffusers does after `set_begin_index(that index)` (multistep history starts
//! empty, so the first step is first order).

pub mod config;
pub mod ddim;
pub mod dpm_solver_multistep;
pub mod dpm_solver_sde;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod lms;
mod noise_schedule;
mod step_math;
pub mod unipc;

use candle_core::{Result, Tensor};

pub use self::config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, InterpolationType, PredictionType,
    SchedulerConfig, SchedulerError, TimestepSpacing, TimestepType,
};
use super::rng::TorchGenerator;
use crate::vocab::SamplerKind;

/// The contract the pipeline drives. It mirrors diffusers' scheduler API so the denoising loop
/// reads like diffusers' own:
///
/// ```text
/// latents = noise * init_noise_sigma()                    (txt2img)
/// for (i, t) in timesteps().iter().enumerate() {
///     x_in = scale_model_input(&latents, i)
///     eps  = unet(x_in, t, …)  (+ CFG)
///     latents = step(&eps, i, &latents, generator)
/// }
/// ```
///
/// Multi-stage samplers (Heun) list each timestep as many times as the UNet is called, exactly
/// as diffusers' `scheduler.timesteps` does; `step` is called once per entry.
pub trait Scheduler: Send {
    /// Timesteps the UNet is called with, in call order (diffusers' `scheduler.timesteps`).
    fn timesteps(&self) -> &[f64];

    /// The sigma schedule (diffusers' `scheduler.sigmas`, float32, one more than the
    /// timesteps for single-stage samplers); empty for schedulers without one (DDIM).
    fn sigmas(&self) -> &[f32] {
        &[]
    }

    /// Standard deviation of the initial noise (diffusers' `init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;

    /// diffusers' `scale_model_input` for the call at `step_index`.
    ///
    /// # Errors
    /// Tensor errors.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor>;

    /// diffusers' `step`: the sample after the call at `step_index`. Ancestral and SDE samplers
    /// draw their noise from `generator` in diffusers' order. Computed in float32 (as diffusers
    /// upcasts), returned in `model_output`'s dtype. Stateful samplers (multistep history,
    /// Heun's and DPM++ SDE's stages) expect the calls in order from the start index.
    ///
    /// # Errors
    /// Tensor errors.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor>;

    /// diffusers' `add_noise` at the timestep of call `step_index` (img2img's start).
    ///
    /// # Errors
    /// Tensor errors.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor>;

    /// How many UNet calls make one "step" (2 for Heun, else 1): diffusers' `order`.
    fn order(&self) -> usize {
        1
    }
}

/// A diffusers scheduler class this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerClass {
    /// `EulerDiscreteScheduler`.
    EulerDiscrete,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestralDiscrete,
    /// `HeunDiscreteScheduler`.
    HeunDiscrete,
    /// `DPMSolverMultistepScheduler`.
    DpmSolverMultistep,
    /// `DPMSolverSDEScheduler`.
    DpmSolverSde,
    /// `LMSDiscreteScheduler`.
    LmsDiscrete,
    /// `DDIMScheduler`.
    Ddim,
    /// `UniPCMultistepScheduler`.
    UniPcMultistep,
}

impl SchedulerClass {
    /// The class for a diffusers `_class_name`, if implemented.
    pub fn from_class_name(name: &str) -> Option<Self> {
        Some(match name {
            "EulerDiscreteScheduler" => Self::EulerDiscrete,
            "EulerAncestralDiscreteScheduler" => Self::EulerAncestralDiscrete,
            "HeunDiscreteScheduler" => Self::HeunDiscrete,
            "DPMSolverMultistepScheduler" => Self::DpmSolverMultistep,
            "DPMSolverSDEScheduler" => Self::DpmSolverSde,
            "LMSDiscreteScheduler" => Self::LmsDiscrete,
            "DDIMScheduler" => Self::Ddim,
            "UniPCMultistepScheduler" => Self::UniPcMultistep,
            _ => return None,
        })
    }

    /// The diffusers class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::EulerDiscrete => "EulerDiscreteScheduler",
            Self::EulerAncestralDiscrete => "EulerAncestralDiscreteScheduler",
            Self::HeunDiscrete => "HeunDiscreteScheduler",
            Self::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            Self::DpmSolverSde => "DPMSolverSDEScheduler",
            Self::LmsDiscrete => "LMSDiscreteScheduler",
            Self::Ddim => "DDIMScheduler",
            Self::UniPcMultistep => "UniPCMultistepScheduler",
        }
    }
}

/// What `Default` means for a model: the sampler its config names, and a warning for the user
/// when the config names a class this crate does not implement (then Euler, SDXL's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSampler {
    /// The sampler that runs.
    pub kind: SamplerKind,
    /// Why it is not the class the config names, when it is not.
    pub warning: Option<String>,
}

/// Resolves `Default` to the sampler the config's `_class_name` names (any other kind is
/// returned unchanged); an unknown or missing class gives Euler with a warning.
pub fn resolve_default_with_warning(kind: SamplerKind, cfg: &SchedulerConfig) -> ResolvedSampler {
    if kind != SamplerKind::Default {
        return ResolvedSampler { kind, warning: None };
    }
    let Some(name) = cfg.class_name.as_deref() else {
        return ResolvedSampler {
            kind: SamplerKind::Euler,
            warning: Some("scheduler config names no `_class_name`; using Euler".into()),
        };
    };
    let Some(class) = SchedulerClass::from_class_name(name) else {
        return ResolvedSampler {
            kind: SamplerKind::Euler,
            warning: Some(format!(
                "scheduler class {name:?} is not implemented; using Euler (EulerDiscreteScheduler)"
            )),
        };
    };
    let karras = cfg.use_karras_sigmas.unwrap_or(false);
    let kind = match class {
        SchedulerClass::EulerDiscrete => SamplerKind::Euler,
        SchedulerClass::EulerAncestralDiscrete => SamplerKind::EulerA,
        SchedulerClass::HeunDiscrete => SamplerKind::Heun,
        SchedulerClass::DpmSolverMultistep if karras => SamplerKind::Dpmpp2mKarras,
        SchedulerClass::DpmSolverMultistep => SamplerKind::Dpmpp2m,
        SchedulerClass::DpmSolverSde => SamplerKind::DpmppSdeKarras,
        SchedulerClass::LmsDiscrete => SamplerKind::Lms,
        SchedulerClass::Ddim => SamplerKind::Ddim,
        SchedulerClass::UniPcMultistep => SamplerKind::UniPc,
    };
    ResolvedSampler { kind, warning: None }
}

/// [`resolve_default_with_warning`] without the warning: `Default` ⇒ the class named in
/// `_class_name` (Euler when unknown); other kinds unchanged.
pub fn resolve_default(kind: SamplerKind, cfg: &SchedulerConfig) -> SamplerKind {
    resolve_default_with_warning(kind, cfg).kind
}

/// The class a sampler runs and the config diffusers would build it from: the model's config
/// with the overrides the sampler's name implies. `Default` keeps the config untouched.
pub fn class_and_config(
    kind: SamplerKind,
    cfg: &SchedulerConfig,
) -> (SchedulerClass, SchedulerConfig) {
    let mut cfg = cfg.clone();
    let class = match kind {
        SamplerKind::Default => {
            return (
                cfg.class_name
                    .as_deref()
                    .and_then(SchedulerClass::from_class_name)
                    .unwrap_or(SchedulerClass::EulerDiscrete),
                cfg,
            );
        }
        SamplerKind::Euler => SchedulerClass::EulerDiscrete,
        SamplerKind::EulerA => SchedulerClass::EulerAncestralDiscrete,
        SamplerKind::Heun => SchedulerClass::HeunDiscrete,
        SamplerKind::Dpmpp2m | SamplerKind::Dpmpp2mKarras => {
            cfg.algorithm_type = Some(AlgorithmType::DpmSolverPlusPlus);
            cfg.solver_order = Some(2);
            cfg.use_karras_sigmas = Some(kind == SamplerKind::Dpmpp2mKarras);
            if kind == SamplerKind::Dpmpp2mKarras {
                cfg.use_exponential_sigmas = Some(false);
            }
            SchedulerClass::DpmSolverMultistep
        }
        SamplerKind::DpmppSdeKarras => {
            cfg.use_karras_sigmas = Some(true);
            cfg.use_exponential_sigmas = Some(false);
            SchedulerClass::DpmSolverSde
        }
        SamplerKind::Lms => SchedulerClass::LmsDiscrete,
        SamplerKind::Ddim => SchedulerClass::Ddim,
        SamplerKind::UniPc => SchedulerClass::UniPcMultistep,
    };
    (class, cfg)
}

/// Builds the sampler `kind` for a model with scheduler config `cfg`, set to `steps` inference
/// steps, as diffusers' `Class.from_config(cfg, **overrides).set_timesteps(steps)` does.
///
/// # Errors
/// `steps == 0`, or a configuration value the class rejects (the message names the field).
pub fn build(kind: SamplerKind, cfg: &SchedulerConfig, steps: usize) -> Result<Box<dyn Scheduler>> {
    if steps == 0 {
        candle_core::bail!("the number of inference steps must be at least 1");
    }
    let (class, cfg) = class_and_config(kind, cfg);
    build_class(class, &cfg, steps)
}

/// Builds a diffusers class from `cfg` (no overrides) for `steps` inference steps.
///
/// # Errors
/// `steps == 0`, or a configuration value the class rejects (the message names the field).
pub fn build_class(
    class: SchedulerClass,
    cfg: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    if steps == 0 {
        candle_core::bail!("the number of inference steps must be at least 1");
    }
    cfg.validate()?;
    if steps > cfg.num_train_timesteps() {
        candle_core::bail!(
            "{steps} inference steps exceed the {} training timesteps of the scheduler config",
            cfg.num_train_timesteps()
        );
    }
    Ok(match class {
        SchedulerClass::EulerDiscrete => Box::new(euler::EulerDiscrete::new(cfg, steps)?),
        SchedulerClass::EulerAncestralDiscrete => {
            Box::new(euler_ancestral::EulerAncestralDiscrete::new(cfg, steps)?)
        }
        SchedulerClass::HeunDiscrete => Box::new(heun::HeunDiscrete::new(cfg, steps)?),
        SchedulerClass::DpmSolverMultistep => {
            Box::new(dpm_solver_multistep::DpmSolverMultistep::new(cfg, steps)?)
        }
        SchedulerClass::DpmSolverSde => Box::new(dpm_solver_sde::DpmSolverSde::new(cfg, steps)?),
        SchedulerClass::LmsDiscrete => Box::new(lms::LmsDiscrete::new(cfg, steps)?),
        SchedulerClass::Ddim => Box::new(ddim::Ddim::new(cfg, steps)?),
        SchedulerClass::UniPcMultistep => Box::new(unipc::UniPcMultistep::new(cfg, steps)?),
    })
}

use crate::vocab::SigmaSchedule;

/// [`build`] with a sigma schedule chosen independently of the sampler.
///
/// # Errors
/// As [`build`]; a Karras or exponential schedule on a class diffusers gives no such option
/// (Euler a, DDIM) is an error naming the class.
pub fn build_with_schedule(
    kind: SamplerKind,
    schedule: SigmaSchedule,
    cfg: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    let (class, mut cfg) = class_and_config(kind, cfg);
    if schedule == SigmaSchedule::SgmUniform {
        cfg.timestep_spacing = Some(TimestepSpacing::Trailing);
        cfg.use_karras_sigmas = Some(false);
        cfg.use_exponential_sigmas = Some(false);
    } else if schedule != SigmaSchedule::Automatic {
        if matches!(class, SchedulerClass::EulerAncestralDiscrete | SchedulerClass::Ddim) {
            candle_core::bail!(
                "schedule type {} is not available for {} (diffusers has no such option)",
                schedule.a1111_name(),
                class.class_name()
            );
        }
        cfg.use_karras_sigmas = Some(schedule == SigmaSchedule::Karras);
        cfg.use_exponential_sigmas = Some(schedule == SigmaSchedule::Exponential);
    }
    build_class(class, &cfg, steps)
}

/// The index img2img starts at, as diffusers' SDXL img2img pipeline computes it:
/// `t_start · order` with `t_start = steps − min(⌊steps · strength⌋, steps)`. The pipeline
/// calls `add_noise(…, index)` and then steps from `index` to the end of `timesteps()`.
pub fn img2img_start_index(steps: usize, strength: f64, order: usize) -> usize {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "strength in [0, 1] gives a count of at most `steps`"
    )]
    let init_timestep = ((steps as f64 * strength.clamp(0.0, 1.0)).floor() as usize).min(steps);
    (steps - init_timestep) * order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(class: &str, karras: bool) -> SchedulerConfig {
        SchedulerConfig {
            class_name: Some(class.into()),
            use_karras_sigmas: Some(karras),
            ..SchedulerConfig::default()
        }
    }

    #[test]
    fn default_resolves_to_the_configured_class() {
        let cases = [
            ("EulerDiscreteScheduler", false, SamplerKind::Euler),
            ("EulerAncestralDiscreteScheduler", false, SamplerKind::EulerA),
            ("DPMSolverMultistepScheduler", false, SamplerKind::Dpmpp2m),
            ("DPMSolverMultistepScheduler", true, SamplerKind::Dpmpp2mKarras),
            ("DPMSolverSDEScheduler", true, SamplerKind::DpmppSdeKarras),
            ("UniPCMultistepScheduler", false, SamplerKind::UniPc),
            ("DDIMScheduler", false, SamplerKind::Ddim),
            ("LMSDiscreteScheduler", false, SamplerKind::Lms),
            ("HeunDiscreteScheduler", false, SamplerKind::Heun),
        ];
        for (class, karras, kind) in cases {
            let resolved =
                resolve_default_with_warning(SamplerKind::Default, &config(class, karras));
            assert_eq!(resolved, ResolvedSampler { kind, warning: None }, "{class}");
        }
        // Explicit kinds are never overridden by the config.
        let cfg = config("DDIMScheduler", false);
        assert_eq!(resolve_default(SamplerKind::Heun, &cfg), SamplerKind::Heun);
    }

    #[test]
    fn unknown_class_falls_back_to_euler_with_a_warning() {
        let resolved =
            resolve_default_with_warning(SamplerKind::Default, &config("PNDMScheduler", false));
        assert_eq!(resolved.kind, SamplerKind::Euler);
        assert!(resolved.warning.as_deref().is_some_and(|w| w.contains("PNDMScheduler")));
        let built = build(SamplerKind::Default, &config("PNDMScheduler", false), 4).expect("euler");
        assert_eq!(built.timesteps().len(), 4);
    }

    #[test]
    fn sampler_names_set_diffusers_overrides() {
        let cfg = config("EulerDiscreteScheduler", true);
        let (class, built) = class_and_config(SamplerKind::Dpmpp2m, &cfg);
        assert_eq!(class, SchedulerClass::DpmSolverMultistep);
        assert_eq!(built.algorithm_type, Some(AlgorithmType::DpmSolverPlusPlus));
        assert_eq!((built.solver_order, built.use_karras_sigmas), (Some(2), Some(false)));
        let (_, built) = class_and_config(SamplerKind::Dpmpp2mKarras, &cfg);
        assert_eq!(built.use_karras_sigmas, Some(true));
        let (class, built) = class_and_config(SamplerKind::Default, &cfg);
        assert_eq!((class, built), (SchedulerClass::EulerDiscrete, cfg));
    }

    #[test]
    fn img2img_start_index_matches_diffusers_get_timesteps() {
        // steps 30, strength 0.6: ⌊18⌋ steps remain, start at 12 (×2 for two-stage samplers).
        assert_eq!(img2img_start_index(30, 0.6, 1), 12);
        assert_eq!(img2img_start_index(30, 0.6, 2), 24);
        assert_eq!(img2img_start_index(4, 1.0, 1), 0);
        assert_eq!(img2img_start_index(4, 0.1, 1), 4);
    }

    #[test]
    fn schedule_type_switches_sigmas_like_diffusers_flags() {
        let cfg = config("EulerDiscreteScheduler", false);
        let karras = build_with_schedule(SamplerKind::Euler, SigmaSchedule::Karras, &cfg, 12)
            .expect("karras euler");
        let mut flagged = cfg.clone();
        flagged.use_karras_sigmas = Some(true);
        let reference = build(SamplerKind::Euler, &flagged, 12).expect("flagged");
        assert_eq!(karras.sigmas(), reference.sigmas());
        let plain = build(SamplerKind::Euler, &cfg, 12).expect("plain");
        assert_ne!(karras.sigmas(), plain.sigmas());
        assert!(
            build_with_schedule(SamplerKind::Ddim, SigmaSchedule::Exponential, &cfg, 12).is_err()
        );
        let sgm = build_with_schedule(SamplerKind::Euler, SigmaSchedule::SgmUniform, &cfg, 4)
            .expect("sgm uniform");
        assert_eq!(sgm.timesteps(), [999.0, 749.0, 499.0, 249.0]);
        for schedule in SigmaSchedule::ALL {
            assert_eq!(SigmaSchedule::parse(schedule.a1111_name()), Ok(schedule));
            assert_eq!(SigmaSchedule::parse(schedule.cli_name()), Ok(schedule));
        }
        assert!(SigmaSchedule::parse("polyexponential").is_err());
    }

    #[test]
    fn zero_steps_and_bad_configs_are_errors() {
        let cfg = SchedulerConfig::default();
        assert!(build(SamplerKind::Euler, &cfg, 0).is_err());
        let cfg = SchedulerConfig { use_beta_sigmas: Some(true), ..SchedulerConfig::default() };
        let err = build(SamplerKind::Euler, &cfg, 10).err().expect("unsupported");
        assert!(err.to_string().contains("use_beta_sigmas"), "{err}");
    }
}
