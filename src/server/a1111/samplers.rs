//! AUTOMATIC1111's sampler and schedule-type names (≥ 1.9, where the schedule is chosen apart
//! from the sampler) mapped onto ours, and the lists `/sdapi/v1/samplers` and `/schedulers`
//! answer with, in A1111's shapes.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::vocab::{SamplerKind, SigmaSchedule};

/// One sampler as `/sdapi/v1/samplers` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SamplerItem {
    /// A1111's name.
    pub name: String,
    /// Other names A1111 accepts.
    pub aliases: Vec<String>,
    /// A1111's options (`scheduler`: the schedule "Automatic" means for it).
    pub options: Map<String, Value>,
}

/// One schedule type as `/sdapi/v1/schedulers` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SchedulerItem {
    /// A1111's name (`karras`).
    pub name: String,
    /// A1111's label (`Karras`).
    pub label: String,
    /// Other names.
    pub aliases: Option<Vec<String>>,
    /// Karras' ρ where it applies (A1111 writes -1 otherwise).
    pub default_rho: f64,
    /// Whether A1111 needs the model's own sigmas for it.
    pub need_inner_model: bool,
}

/// A sampler family as A1111 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Euler,
    EulerA,
    Heun,
    Lms,
    Dpmpp2m,
    DpmppSde,
    Ddim,
    UniPc,
}

/// (A1111 name, aliases, family) in A1111's menu order.
const SAMPLERS: [(&str, &[&str], Family); 8] = [
    ("DPM++ 2M", &["k_dpmpp_2m"], Family::Dpmpp2m),
    ("DPM++ SDE", &["k_dpmpp_sde"], Family::DpmppSde),
    ("Euler a", &["k_euler_a", "k_euler_ancestral"], Family::EulerA),
    ("Euler", &["k_euler"], Family::Euler),
    ("LMS", &["k_lms"], Family::Lms),
    ("Heun", &["k_heun"], Family::Heun),
    ("DDIM", &["ddim"], Family::Ddim),
    ("UniPC", &["unipc"], Family::UniPc),
];

/// A1111's schedule types that exist here: (name, label, aliases).
const SCHEDULES: [(&str, &str, &[&str]); 5] = [
    ("automatic", "Automatic", &[]),
    ("uniform", "Uniform", &[]),
    ("karras", "Karras", &[]),
    ("exponential", "Exponential", &[]),
    ("sgm_uniform", "SGM Uniform", &["SGMUniform"]),
];

/// Our sampler and schedule for an A1111 request, and the names a response reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerChoice {
    /// Our sampler.
    pub kind: SamplerKind,
    /// Our schedule.
    pub schedule: SigmaSchedule,
    /// A1111's sampler name (`DPM++ 2M`).
    pub name: &'static str,
    /// A1111's schedule label when it is not `Automatic` (`Karras`).
    pub schedule_label: Option<&'static str>,
}

/// Every sampler, as `/sdapi/v1/samplers` answers.
pub fn sampler_items() -> Vec<SamplerItem> {
    SAMPLERS
        .iter()
        .map(|(name, aliases, family)| {
            let options = match family {
                Family::Dpmpp2m => json!({"scheduler": "karras"}),
                Family::DpmppSde => {
                    json!({"scheduler": "karras", "second_order": true, "brownian_noise": true})
                }
                Family::EulerA => json!({"uses_ensd": true}),
                Family::Heun => json!({"second_order": true}),
                _ => json!({}),
            };
            SamplerItem {
                name: (*name).to_owned(),
                aliases: aliases.iter().map(|alias| (*alias).to_owned()).collect(),
                options: options.as_object().cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Every schedule type, as `/sdapi/v1/schedulers` answers.
pub fn scheduler_items() -> Vec<SchedulerItem> {
    SCHEDULES
        .iter()
        .map(|(name, label, aliases)| SchedulerItem {
            name: (*name).to_owned(),
            label: (*label).to_owned(),
            aliases: (!aliases.is_empty())
                .then(|| aliases.iter().map(|alias| (*alias).to_owned()).collect()),
            default_rho: if *name == "karras" { 7.0 } else { -1.0 },
            need_inner_model: matches!(*name, "uniform" | "sgm_uniform"),
        })
        .collect()
}

fn schedule_names() -> String {
    SCHEDULES.iter().map(|(_, label, _)| *label).collect::<Vec<_>>().join(", ")
}

fn sampler_names() -> String {
    SAMPLERS.iter().map(|(name, _, _)| *name).collect::<Vec<_>>().join(", ")
}

/// A schedule name or label (case-insensitive) → its name.
fn find_schedule(text: &str) -> Option<&'static str> {
    let text = text.trim();
    SCHEDULES.iter().find_map(|(name, label, aliases)| {
        (name.eq_ignore_ascii_case(text)
            || label.eq_ignore_ascii_case(text)
            || aliases.iter().any(|alias| alias.eq_ignore_ascii_case(text)))
        .then_some(*name)
    })
}

/// A name with a schedule glued on (`DPM++ 2M Karras`), split; the longest label first so
/// `SGM Uniform` is not read as `Uniform`.
fn split_glued(name: &str) -> (&str, Option<&'static str>) {
    let mut labels: Vec<(&str, &'static str)> = SCHEDULES
        .iter()
        .filter(|(schedule, _, _)| *schedule != "automatic")
        .flat_map(|(schedule, label, aliases)| {
            std::iter::once((*label, *schedule))
                .chain(aliases.iter().map(|alias| (*alias, *schedule)))
        })
        .collect();
    labels.sort_by_key(|(label, _)| std::cmp::Reverse(label.len()));
    for (label, schedule) in labels {
        if let Some(base) = name.strip_suffix(label)
            && let Some(base) = base.strip_suffix(' ')
            && base.len() + 1 + label.len() == name.len()
        {
            return (base.trim_end(), Some(schedule));
        }
    }
    (name, None)
}

/// Our sampler and schedule for A1111's `sampler_name` and `scheduler`.
///
/// # Errors
/// `("sampler", why)` or `("scheduler", why)`, with the valid names.
pub fn choose(
    sampler: &str,
    scheduler: Option<&str>,
) -> Result<SamplerChoice, (&'static str, String)> {
    let sampler = sampler.trim();
    let (base, glued) = split_glued(sampler);
    let requested = match scheduler.map(str::trim).filter(|text| !text.is_empty()) {
        None => "automatic",
        Some(text) => find_schedule(text).ok_or_else(|| {
            (
                "scheduler",
                format!("{text:?} is not a schedule type here; valid: {}", schedule_names()),
            )
        })?,
    };
    let schedule = glued.unwrap_or(requested);
    let family = SAMPLERS.iter().find(|(name, aliases, _)| {
        name.eq_ignore_ascii_case(base)
            || aliases.iter().any(|alias| alias.eq_ignore_ascii_case(base))
    });
    let Some(&(name, _, family)) = family else {
        // Our own names (`default`, `dpmpp_2m_karras`, …) are accepted as they are.
        return SamplerKind::parse(sampler)
            .map(|kind| SamplerChoice {
                kind,
                schedule: SigmaSchedule::Automatic,
                name: kind.a1111_sampler_and_schedule().0,
                schedule_label: kind.a1111_sampler_and_schedule().1,
            })
            .map_err(|_| {
                (
                    "sampler",
                    format!("{sampler:?} is not a sampler here; valid: {}", sampler_names()),
                )
            });
    };
    let plain = |kind: SamplerKind| {
        let (sigma, label) = match schedule {
            "karras" => (SigmaSchedule::Karras, Some("Karras")),
            "exponential" => (SigmaSchedule::Exponential, Some("Exponential")),
            "sgm_uniform" => (SigmaSchedule::SgmUniform, Some("SGM Uniform")),
            "uniform" => (SigmaSchedule::Automatic, Some("Uniform")),
            _ => (SigmaSchedule::Automatic, None),
        };
        SamplerChoice { kind, schedule: sigma, name, schedule_label: label }
    };
    Ok(match family {
        Family::Euler => plain(SamplerKind::Euler),
        Family::EulerA => plain(SamplerKind::EulerA),
        Family::Heun => plain(SamplerKind::Heun),
        Family::Lms => plain(SamplerKind::Lms),
        Family::Ddim => plain(SamplerKind::Ddim),
        Family::UniPc => plain(SamplerKind::UniPc),
        // Automatic means Karras for DPM++ 2M (its A1111 option); Uniform is the plain one.
        Family::Dpmpp2m => match schedule {
            "automatic" | "karras" => SamplerChoice {
                kind: SamplerKind::Dpmpp2mKarras,
                schedule: SigmaSchedule::Automatic,
                name,
                schedule_label: (schedule == "karras").then_some("Karras"),
            },
            _ => plain(SamplerKind::Dpmpp2m),
        },
        Family::DpmppSde => match schedule {
            "automatic" | "karras" => SamplerChoice {
                kind: SamplerKind::DpmppSdeKarras,
                schedule: SigmaSchedule::Automatic,
                name,
                schedule_label: (schedule == "karras").then_some("Karras"),
            },
            other => {
                return Err((
                    "scheduler",
                    format!("DPM++ SDE runs with Karras sigmas only here, not {other:?}"),
                ));
            }
        },
    })
}

/// A checkpoint title without A1111's ` [hash]` suffix.
pub fn strip_checkpoint_hash(title: &str) -> &str {
    let title = title.trim();
    if let Some(open) = title.rfind(" [")
        && title.ends_with(']')
        && title[open + 2..title.len() - 1].chars().all(|c| c.is_ascii_hexdigit())
    {
        return &title[..open];
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(sampler: &str, scheduler: Option<&str>) -> (SamplerKind, SigmaSchedule) {
        let choice = choose(sampler, scheduler).expect(sampler);
        (choice.kind, choice.schedule)
    }

    #[test]
    fn a1111_names_and_schedules_map_to_ours() {
        use SamplerKind as K;
        use SigmaSchedule as S;
        assert_eq!(chosen("Euler a", Some("automatic")), (K::EulerA, S::Automatic));
        assert_eq!(chosen("Euler", Some("Karras")), (K::Euler, S::Karras));
        assert_eq!(chosen("k_euler", Some("sgm_uniform")), (K::Euler, S::SgmUniform));
        assert_eq!(chosen("DPM++ 2M", None), (K::Dpmpp2mKarras, S::Automatic));
        assert_eq!(chosen("DPM++ 2M", Some("Uniform")), (K::Dpmpp2m, S::Automatic));
        assert_eq!(chosen("DPM++ 2M Karras", Some("automatic")), (K::Dpmpp2mKarras, S::Automatic));
        assert_eq!(chosen("DPM++ 2M SGM Uniform", None), (K::Dpmpp2m, S::SgmUniform));
        assert_eq!(chosen("DPM++ SDE Karras", None), (K::DpmppSdeKarras, S::Automatic));
        assert_eq!(chosen("UniPC", Some("Exponential")), (K::UniPc, S::Exponential));
        assert_eq!(chosen("dpmpp_2m_karras", None), (K::Dpmpp2mKarras, S::Automatic));
        assert_eq!(choose("DPM++ 2M", Some("karras")).expect("ok").schedule_label, Some("Karras"));
    }

    #[test]
    fn unknown_names_are_refused_with_the_valid_ones() {
        let (field, message) = choose("DPM++ 2M SDE", None).expect_err("no such sampler");
        assert_eq!(field, "sampler");
        assert!(message.contains("Euler a"), "{message}");
        let (field, message) = choose("Euler", Some("Align Your Steps")).expect_err("schedule");
        assert_eq!(field, "scheduler");
        assert!(message.contains("SGM Uniform"), "{message}");
        assert_eq!(choose("DPM++ SDE", Some("Exponential")).expect_err("sde").0, "scheduler");
    }

    #[test]
    fn checkpoint_titles_lose_their_hash() {
        assert_eq!(strip_checkpoint_hash("SDXL Turbo [31e35c80fc]"), "SDXL Turbo");
        assert_eq!(strip_checkpoint_hash("my [model]"), "my [model]");
        assert_eq!(strip_checkpoint_hash(" SDXL Base 1.0 "), "SDXL Base 1.0");
    }
}
