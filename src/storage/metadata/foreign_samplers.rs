//! Other tools' sampler names, mapped to ours.
//!
//! AUTOMATIC1111 writes a display name plus (since 1.9) a schedule type, or an older name with
//! the schedule glued on (`DPM++ 2M Karras`); ComfyUI and Fooocus write k-diffusion function
//! names plus a scheduler (`dpmpp_2m` + `karras`); InvokeAI writes its own keys (`dpmpp_2m_k`).
//! Each maps to one of our samplers when there is one; a mapping that changes the noise schedule
//! says so, and a sampler we do not have is kept as text with a warning.

use crate::vocab::SamplerKind;

/// The result of mapping a foreign sampler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerMatch {
    /// Our sampler, when there is an equivalent (possibly approximate, see `warning`).
    pub kind: Option<SamplerKind>,
    /// What differs, when the mapping is not exact or there is none.
    pub warning: Option<String>,
}

impl SamplerMatch {
    fn exact(kind: SamplerKind) -> Self {
        Self { kind: Some(kind), warning: None }
    }

    fn approximate(kind: SamplerKind, why: String) -> Self {
        Self { kind: Some(kind), warning: Some(why) }
    }

    fn unknown(why: String) -> Self {
        Self { kind: None, warning: Some(why) }
    }
}

/// The noise schedule a foreign tool asked for, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schedule {
    /// The sampler's own default (A1111 "Automatic", nothing written).
    Default,
    /// Plain spacing of the model's discrete timesteps (A1111 Uniform, ComfyUI normal/simple…).
    Plain,
    /// Karras sigmas.
    Karras,
    /// Anything else (exponential, AYS, beta…).
    Other,
}

fn schedule_of(text: &str) -> Schedule {
    let norm: String =
        text.trim().chars().filter(|c| !matches!(c, ' ' | '_' | '-')).collect::<String>();
    match norm.to_ascii_lowercase().as_str() {
        "" | "automatic" | "default" => Schedule::Default,
        "uniform" | "normal" | "simple" | "sgmuniform" | "ddimuniform" => Schedule::Plain,
        "karras" => Schedule::Karras,
        _ => Schedule::Other,
    }
}

/// Combines a sampler family with a schedule into our sampler and a note on what differs.
///
/// `family` is our name of the sampler without schedule (`dpmpp_2m`, `dpmpp_sde`, `euler`…);
/// `default_schedule` is what the tool uses when it writes none.
fn combine(family: &str, schedule: Schedule, schedule_text: &str, tool: &str) -> SamplerMatch {
    let karras_default = matches!(family, "dpmpp_2m" | "dpmpp_sde") && tool == "A1111";
    let effective = match schedule {
        Schedule::Default if karras_default => Schedule::Karras,
        Schedule::Default => Schedule::Plain,
        other => other,
    };
    let plain = match family {
        "euler" => SamplerKind::Euler,
        "euler_a" => SamplerKind::EulerA,
        "heun" => SamplerKind::Heun,
        "lms" => SamplerKind::Lms,
        "ddim" => SamplerKind::Ddim,
        "unipc" => SamplerKind::UniPc,
        "dpmpp_2m" => {
            return match effective {
                Schedule::Karras => SamplerMatch::exact(SamplerKind::Dpmpp2mKarras),
                Schedule::Plain => SamplerMatch::exact(SamplerKind::Dpmpp2m),
                _ => SamplerMatch::approximate(
                    SamplerKind::Dpmpp2mKarras,
                    format!(
                        "{tool} schedule {schedule_text:?} is not available; DPM++ 2M runs with \
                         Karras sigmas instead"
                    ),
                ),
            };
        }
        "dpmpp_sde" => {
            return match effective {
                Schedule::Karras => SamplerMatch::exact(SamplerKind::DpmppSdeKarras),
                _ => SamplerMatch::approximate(
                    SamplerKind::DpmppSdeKarras,
                    format!(
                        "{tool} DPM++ SDE with schedule {schedule_text:?} runs here with Karras \
                         sigmas (the only DPM++ SDE variant)"
                    ),
                ),
            };
        }
        other => {
            return SamplerMatch::unknown(format!(
                "{tool} sampler {other:?} has no equivalent here"
            ));
        }
    };
    match effective {
        Schedule::Plain => SamplerMatch::exact(plain),
        _ => SamplerMatch::approximate(
            plain,
            format!(
                "{tool} schedule {schedule_text:?} is not available for {}; it runs with the \
                 model's default schedule",
                plain.gui_name()
            ),
        ),
    }
}

/// AUTOMATIC1111 (and Forge, Fooocus' A1111 scheme): `Sampler` and `Schedule type`.
///
/// Without a schedule type (before A1111 1.9, or other tools), a trailing ` Karras`,
/// ` Exponential` or ` SGM Uniform` in the name is the schedule; otherwise the plain one.
pub fn from_a1111(sampler: &str, schedule_type: Option<&str>) -> SamplerMatch {
    let name = sampler.trim();
    let (base, glued) = split_glued_schedule(name);
    let (schedule, schedule_text) = match (schedule_type, glued) {
        (Some(text), _) => (schedule_of(text), text.trim().to_owned()),
        (None, Some(text)) => (schedule_of(text), text.to_owned()),
        // Nothing written: before 1.9 a bare name meant the plain schedule.
        (None, None) => (Schedule::Plain, String::new()),
    };
    let family = match base.to_ascii_lowercase().as_str() {
        "euler" | "k_euler" => "euler",
        "euler a" | "k_euler_a" | "k_euler_ancestral" => "euler_a",
        "heun" | "k_heun" => "heun",
        "lms" | "k_lms" => "lms",
        "ddim" => "ddim",
        "unipc" => "unipc",
        "dpm++ 2m" | "k_dpmpp_2m" => "dpmpp_2m",
        "dpm++ sde" | "k_dpmpp_sde" => "dpmpp_sde",
        _ => {
            return SamplerMatch::unknown(format!(
                "A1111 sampler {name:?} has no equivalent here; kept as text"
            ));
        }
    };
    combine(family, schedule, &schedule_text, "A1111")
}

fn split_glued_schedule(name: &str) -> (&str, Option<&str>) {
    for suffix in [" Karras", " Exponential", " SGM Uniform", " Uniform"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return (base.trim_end(), Some(suffix.trim()));
        }
    }
    (name, None)
}

/// ComfyUI (KSampler `sampler_name` + `scheduler`) and Fooocus (same names).
pub fn from_comfy(sampler_name: &str, scheduler: &str) -> SamplerMatch {
    let name = sampler_name.trim();
    let family = match name {
        "euler" => "euler",
        "euler_ancestral" => "euler_a",
        "heun" => "heun",
        "lms" => "lms",
        "ddim" => "ddim",
        "uni_pc" | "uni_pc_bh2" => "unipc",
        "dpmpp_2m" => "dpmpp_2m",
        "dpmpp_sde" | "dpmpp_sde_gpu" => "dpmpp_sde",
        _ => {
            return SamplerMatch::unknown(format!(
                "ComfyUI sampler {name:?} (scheduler {scheduler:?}) has no equivalent here; kept \
                 as text"
            ));
        }
    };
    combine(family, schedule_of(scheduler), scheduler.trim(), "ComfyUI")
}

/// InvokeAI's scheduler keys (`euler_a`, `dpmpp_2m_k`, …; `_k` means Karras sigmas).
pub fn from_invoke(scheduler: &str) -> SamplerMatch {
    let name = scheduler.trim();
    let (base, karras) = match name.strip_suffix("_k") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let family = match base {
        "euler" => "euler",
        "euler_a" => "euler_a",
        "heun" => "heun",
        "lms" => "lms",
        "ddim" => "ddim",
        "unipc" => "unipc",
        "dpmpp_2m" => "dpmpp_2m",
        "dpmpp_sde" => "dpmpp_sde",
        _ => {
            return SamplerMatch::unknown(format!(
                "InvokeAI scheduler {name:?} has no equivalent here; kept as text"
            ));
        }
    };
    let (schedule, text) =
        if karras { (Schedule::Karras, "karras") } else { (Schedule::Plain, "") };
    combine(family, schedule, text, "InvokeAI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_names() {
        let cases = [
            ("Euler a", None, Some(SamplerKind::EulerA), false),
            ("Euler", Some("Automatic"), Some(SamplerKind::Euler), false),
            ("DPM++ 2M", Some("Karras"), Some(SamplerKind::Dpmpp2mKarras), false),
            ("DPM++ 2M Karras", None, Some(SamplerKind::Dpmpp2mKarras), false),
            ("DPM++ 2M", None, Some(SamplerKind::Dpmpp2m), false),
            ("DPM++ 2M", Some("Uniform"), Some(SamplerKind::Dpmpp2m), false),
            // 1.9+ automatic schedule of DPM++ 2M is Karras
            ("DPM++ 2M", Some("Automatic"), Some(SamplerKind::Dpmpp2mKarras), false),
            ("DPM++ SDE Karras", None, Some(SamplerKind::DpmppSdeKarras), false),
            ("DPM++ 2M", Some("Exponential"), Some(SamplerKind::Dpmpp2mKarras), true),
            ("Euler", Some("Karras"), Some(SamplerKind::Euler), true),
            ("UniPC", None, Some(SamplerKind::UniPc), false),
            ("DPM++ 2M SDE Karras", None, None, true),
            ("Restart", None, None, true),
        ];
        for (name, schedule, kind, warns) in cases {
            let got = from_a1111(name, schedule);
            assert_eq!(got.kind, kind, "{name} {schedule:?}");
            assert_eq!(got.warning.is_some(), warns, "{name} {schedule:?}: {:?}", got.warning);
        }
    }

    #[test]
    fn comfy_names() {
        let cases = [
            ("euler_ancestral", "normal", Some(SamplerKind::EulerA), false),
            ("euler", "simple", Some(SamplerKind::Euler), false),
            ("dpmpp_2m", "karras", Some(SamplerKind::Dpmpp2mKarras), false),
            ("dpmpp_2m", "normal", Some(SamplerKind::Dpmpp2m), false),
            ("dpmpp_sde_gpu", "karras", Some(SamplerKind::DpmppSdeKarras), false),
            ("dpmpp_sde", "normal", Some(SamplerKind::DpmppSdeKarras), true),
            ("uni_pc", "normal", Some(SamplerKind::UniPc), false),
            ("euler", "karras", Some(SamplerKind::Euler), true),
            ("dpmpp_2m_sde", "karras", None, true),
        ];
        for (name, scheduler, kind, warns) in cases {
            let got = from_comfy(name, scheduler);
            assert_eq!(got.kind, kind, "{name} {scheduler}");
            assert_eq!(got.warning.is_some(), warns, "{name} {scheduler}: {:?}", got.warning);
        }
    }

    #[test]
    fn invoke_names() {
        assert_eq!(from_invoke("dpmpp_2m_k").kind, Some(SamplerKind::Dpmpp2mKarras));
        assert_eq!(from_invoke("dpmpp_2m").kind, Some(SamplerKind::Dpmpp2m));
        assert_eq!(from_invoke("euler_a"), SamplerMatch::exact(SamplerKind::EulerA));
        assert_eq!(from_invoke("dpmpp_sde_k"), SamplerMatch::exact(SamplerKind::DpmppSdeKarras));
        assert!(from_invoke("euler_k").warning.is_some());
        assert_eq!(from_invoke("kdpm_2_a").kind, None);
    }
}
