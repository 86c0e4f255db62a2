//! Sampler (scheduler) names as users know them.
//!
//! One enum serves every front end: the CLI takes [`SamplerKind::cli_name`], the window shows
//! [`SamplerKind::gui_name`] (AUTOMATIC1111's names), and PNG metadata writes A1111's `Sampler` +
//! `Schedule type` pair. The numerics live in `diffusion::schedulers`.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::VocabError;

/// A sampler the lab can run (REFERENCE §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SamplerKind {
    /// The scheduler class named in the model's `scheduler_config.json`.
    #[serde(rename = "default")]
    Default,
    /// diffusers `EulerDiscreteScheduler`.
    #[serde(rename = "euler")]
    Euler,
    /// diffusers `EulerAncestralDiscreteScheduler`.
    #[serde(rename = "euler_a")]
    EulerA,
    /// diffusers `HeunDiscreteScheduler`.
    #[serde(rename = "heun")]
    Heun,
    /// diffusers `DPMSolverMultistepScheduler` (dpmsolver++, order 2).
    #[serde(rename = "dpmpp_2m")]
    Dpmpp2m,
    /// Same with Karras sigmas.
    #[serde(rename = "dpmpp_2m_karras")]
    Dpmpp2mKarras,
    /// diffusers `DPMSolverSDEScheduler` with Karras sigmas (own Brownian noise: no parity).
    #[serde(rename = "dpmpp_sde_karras")]
    DpmppSdeKarras,
    /// diffusers `LMSDiscreteScheduler`.
    #[serde(rename = "lms")]
    Lms,
    /// diffusers `DDIMScheduler`.
    #[serde(rename = "ddim")]
    Ddim,
    /// diffusers `UniPCMultistepScheduler`.
    #[serde(rename = "unipc")]
    UniPc,
}

impl SamplerKind {
    /// Every sampler, in the order menus show them.
    pub const ALL: [Self; 10] = [
        Self::Default,
        Self::Euler,
        Self::EulerA,
        Self::Heun,
        Self::Dpmpp2m,
        Self::Dpmpp2mKarras,
        Self::DpmppSdeKarras,
        Self::Lms,
        Self::Ddim,
        Self::UniPc,
    ];

    /// The name the CLI and the env-var mode take (`--scheduler dpmpp_2m_karras`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Euler => "euler",
            Self::EulerA => "euler_a",
            Self::Heun => "heun",
            Self::Dpmpp2m => "dpmpp_2m",
            Self::Dpmpp2mKarras => "dpmpp_2m_karras",
            Self::DpmppSdeKarras => "dpmpp_sde_karras",
            Self::Lms => "lms",
            Self::Ddim => "ddim",
            Self::UniPc => "unipc",
        }
    }

    /// The name the window shows (AUTOMATIC1111's).
    pub fn gui_name(self) -> &'static str {
        match self {
            Self::Default => "Default",
            Self::Euler => "Euler",
            Self::EulerA => "Euler a",
            Self::Heun => "Heun",
            Self::Dpmpp2m => "DPM++ 2M",
            Self::Dpmpp2mKarras => "DPM++ 2M Karras",
            Self::DpmppSdeKarras => "DPM++ SDE Karras",
            Self::Lms => "LMS",
            Self::Ddim => "DDIM",
            Self::UniPc => "UniPC",
        }
    }

    /// A1111 ≥ 1.9 infotext: `Sampler: <name>` and, when not the default, `Schedule type: <type>`.
    pub fn a1111_sampler_and_schedule(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Dpmpp2mKarras => ("DPM++ 2M", Some("Karras")),
            Self::DpmppSdeKarras => ("DPM++ SDE", Some("Karras")),
            other => (other.gui_name(), None),
        }
    }

    /// Parses a CLI name or a GUI name, case-insensitively.
    ///
    /// # Errors
    /// [`VocabError::Unknown`] listing every valid CLI name.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        let wanted = text.trim();
        Self::ALL
            .into_iter()
            .find(|kind| {
                kind.cli_name().eq_ignore_ascii_case(wanted)
                    || kind.gui_name().eq_ignore_ascii_case(wanted)
            })
            .ok_or_else(|| VocabError::unknown("scheduler", wanted, &Self::ALL.map(Self::cli_name)))
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// A sigma schedule chosen independently of the sampler, as A1111 ≥ 1.9's "Schedule type" does.
/// Applied the way diffusers would: `from_config(…, use_karras_sigmas=True)` or
/// `use_exponential_sigmas=True` on the sampler's class.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SigmaSchedule {
    /// Whatever the sampler and the model's config give (A1111's "Automatic").
    #[default]
    Automatic,
    /// Karras et al.'s ρ = 7 spacing.
    Karras,
    /// Even spacing in log-sigma.
    Exponential,
    /// Timesteps counted down evenly from the last training step (A1111's "SGM Uniform"); built
    /// as diffusers' equivalent, `timestep_spacing = "trailing"` (A1111 spaces over [0, 999] with
    /// `linspace`, which differs by under one training step).
    SgmUniform,
}

impl SigmaSchedule {
    /// Every schedule, in the order menus show them.
    pub const ALL: [Self; 4] = [Self::Automatic, Self::Karras, Self::Exponential, Self::SgmUniform];

    /// A1111's `Schedule type` name.
    pub fn a1111_name(self) -> &'static str {
        match self {
            Self::Automatic => "Automatic",
            Self::Karras => "Karras",
            Self::Exponential => "Exponential",
            Self::SgmUniform => "SGM Uniform",
        }
    }

    /// The CLI name (`karras`, `sgm_uniform`, …).
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Karras => "karras",
            Self::Exponential => "exponential",
            Self::SgmUniform => "sgm_uniform",
        }
    }

    /// Parses a CLI or A1111 name, case-insensitively.
    ///
    /// # Errors
    /// [`VocabError::Unknown`] listing the valid CLI names.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        let wanted = text.trim();
        Self::ALL
            .into_iter()
            .find(|schedule| {
                schedule.cli_name().eq_ignore_ascii_case(wanted)
                    || schedule.a1111_name().eq_ignore_ascii_case(wanted)
            })
            .ok_or_else(|| {
                VocabError::unknown("schedule type", wanted, &Self::ALL.map(Self::cli_name))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for kind in SamplerKind::ALL {
            assert_eq!(SamplerKind::parse(kind.cli_name()), Ok(kind));
            assert_eq!(SamplerKind::parse(kind.gui_name()), Ok(kind));
            let json = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(json, format!("\"{}\"", kind.cli_name()));
        }
    }

    #[test]
    fn unknown_lists_valid_names() {
        let err = SamplerKind::parse("plms").expect_err("unknown").to_string();
        assert!(err.contains("dpmpp_2m_karras") && err.contains("\"plms\""), "{err}");
    }
}
