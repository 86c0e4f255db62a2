//! Expanding a request into an ordered list of work items.
//!
//! Plans are model-major (a sweep loads each model once), and every seed is fixed here, so the
//! same request always makes the same plan.

use chrono::{DateTime, Local};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::{Profiles, Request, RequestError, Sweep};
use crate::models::catalog::{Catalog, ModelRef};
use crate::storage::jobs_log::RunnerTag;
use crate::storage::metadata::GenerationInfo;
use crate::storage::metadata::encode::check_jpeg_metadata;
use crate::storage::naming::slug;
use crate::vocab::{OutputFormat, SamplerKind};

/// One (model, profile) combination of a plan, with its batch of seeds. Every finished item
/// gets exactly one jobs-log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// Position in the plan, from 0.
    pub index: usize,
    /// The model to load.
    pub model: ModelRef,
    /// Style profile name.
    pub profile: String,
    /// The prompt with the profile's suffix applied.
    pub prompt: String,
    /// The negative prompt with the profile's negative suffix applied.
    pub negative: String,
    /// Sampler from the user, else the profile; `None` = the model's default.
    pub scheduler: Option<SamplerKind>,
    /// Width from the user; `None` = the model's native width.
    pub width: Option<u32>,
    /// Height from the user; `None` = the model's native height.
    pub height: Option<u32>,
    /// Steps from the user, else the profile; `None` = the model's default.
    pub steps: Option<u32>,
    /// CFG from the user, else the profile; `None` = the model's default.
    pub cfg: Option<f32>,
    /// One seed per image: base + i.
    pub seeds: Vec<u64>,
    /// Folder for this item's images, relative to the output root (empty = the root).
    pub out_dir: PathBuf,
}

/// A validated request expanded into work items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The request as the user gave it (with the chosen seed filled in).
    pub request: Request,
    /// The seed of image 0 of every item.
    pub seed_base: u64,
    /// The sweep folder, relative to the output root, for sweeps.
    pub run_dir: Option<PathBuf>,
    /// Items in run order: model-major.
    pub items: Vec<WorkItem>,
    /// Set by the overnight runner: copied into every jobs-log line of the plan.
    #[serde(default)]
    pub runner: Option<RunnerTag>,
}

impl Plan {
    /// How many images the plan makes.
    pub fn image_count(&self) -> usize {
        self.items.iter().map(|item| item.seeds.len()).sum()
    }
}

/// How many images a request would make, for the window's sweep choice (no validation).
pub fn image_count(sweep: Sweep, batch: u32, profiles: &Profiles, catalog: &Catalog) -> usize {
    let per_item = batch as usize;
    match sweep {
        Sweep::None => per_item,
        Sweep::AllProfiles => profiles.all().len() * per_item,
        Sweep::AllModelsAllProfiles => {
            catalog.sweep_models().len() * profiles.all().len() * per_item
        }
    }
}

/// A random seed for a request that gave none (32-bit, as A1111 and ComfyUI show them).
pub fn random_seed() -> u64 {
    u64::from(fastrand::u32(..))
}

/// Validates `request` and expands it. `now` names sweep folders; `pick_seed` is called once
/// when the request has no seed.
///
/// # Errors
/// A bad field, named (see [`Request::validate`]).
pub fn build_plan(
    request: &Request,
    profiles: &Profiles,
    catalog: &Catalog,
    now: DateTime<Local>,
    pick_seed: impl FnOnce() -> u64,
) -> Result<Plan, RequestError> {
    request.validate(profiles, catalog)?;
    let seed_base = request.seed.unwrap_or_else(pick_seed);
    let seeds: Vec<u64> = (0..u64::from(request.batch))
        .map(|i| {
            seed_base.checked_add(i).ok_or_else(|| {
                RequestError::new("seed", format!("{seed_base} + batch overflows 64 bits"))
            })
        })
        .collect::<Result<_, _>>()?;

    let models: Vec<ModelRef> = match request.sweep {
        Sweep::AllModelsAllProfiles => catalog.sweep_models(),
        Sweep::None | Sweep::AllProfiles => vec![
            catalog
                .resolve(&request.model)
                .map_err(|err| RequestError::new("model", err.to_string()))?,
        ],
    };
    let chosen_profiles: Vec<&super::Profile> = match request.sweep {
        Sweep::None => {
            vec![profiles.get(&request.profile).ok_or_else(|| {
                RequestError::new("profile", format!("unknown profile {:?}", request.profile))
            })?]
        }
        Sweep::AllProfiles | Sweep::AllModelsAllProfiles => profiles.all().iter().collect(),
    };
    let run_dir = (request.sweep != Sweep::None).then(|| {
        PathBuf::from(format!("{}_{}", now.format("%Y%m%d-%H%M%S"), request.sweep.slug()))
    });

    let mut items = Vec::with_capacity(models.len() * chosen_profiles.len());
    for model in &models {
        let out_dir = run_dir
            .as_ref()
            .map_or_else(PathBuf::new, |dir| dir.join(slug(&model.display_name, 64, "model")));
        for profile in &chosen_profiles {
            items.push(WorkItem {
                index: items.len(),
                model: model.clone(),
                profile: profile.name.clone(),
                prompt: profile.apply_prompt(&request.prompt),
                negative: profile.apply_negative(&request.negative),
                scheduler: request.scheduler.or(profile.default_scheduler),
                width: request.width,
                height: request.height,
                steps: request.steps.or(profile.default_steps),
                cfg: request.cfg.or(profile.default_cfg),
                seeds: seeds.clone(),
                out_dir: out_dir.clone(),
            });
        }
    }
    if request.output.format == OutputFormat::Jpeg {
        for item in &items {
            check_jpeg_fits(request, item)?;
        }
    }
    let mut request = request.clone();
    request.seed = Some(seed_base);
    Ok(Plan { request, seed_base, run_dir, items, runner: None })
}

/// A JPEG's settings live in two 64 KiB segments: refuse, before any work, an item whose
/// settings cannot fit (a very long prompt, or one in a script that takes three UTF-8 bytes
/// a character). The record is built as the worker builds it, with the widest values the run
/// can fill in (seed, revision, device); run-time notes are the only thing left out, and the
/// worker saves a PNG (with a note) in that unlikely case.
fn check_jpeg_fits(request: &Request, item: &WorkItem) -> Result<(), RequestError> {
    let widest = GenerationInfo {
        prompt: item.prompt.clone(),
        negative: item.negative.clone(),
        user_prompt: request.prompt.clone(),
        user_negative: request.negative.clone(),
        profile: item.profile.clone(),
        model: item.model.display_name.clone(),
        model_id: item.model.model_id(),
        model_revision: Some("0".repeat(40)),
        seed: u64::MAX,
        steps: item.steps.unwrap_or(500),
        width: item.width.unwrap_or(4096),
        height: item.height.unwrap_or(4096),
        mode: request.mode(),
        strength: request.init_image.as_ref().map(|_| request.strength),
        init_image: request.init_image.as_ref().map(|p| p.display().to_string()),
        loras: request.loras.clone(),
        truncate_prompt: request.truncate_prompt,
        device: "cuda:0 (a long GPU name for the margin)".to_owned(),
        ..GenerationInfo::default()
    };
    check_jpeg_metadata(&widest).map_err(|err| {
        RequestError::new(
            "format",
            format!(
                "the settings of {} / {} do not fit a JPEG ({err}); shorten the prompt or use \
                 --format png or webp",
                item.model.display_name, item.profile
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Local> {
        Local.with_ymd_and_hms(2026, 11, 23, 9, 30, 5).single().expect("valid time")
    }

    fn plan(request: &Request) -> Plan {
        build_plan(request, &Profiles::builtin(), &Catalog::builtin(), now(), || 1234)
            .expect("plan")
    }

    #[test]
    fn single_run_uses_seed_base_plus_i() {
        let plan =
            plan(&Request { prompt: "cat".into(), batch: 3, seed: Some(40), ..Request::default() });
        assert_eq!(plan.items.len(), 1);
        assert_eq!(plan.items[0].seeds, vec![40, 41, 42]);
        assert_eq!(plan.items[0].out_dir, PathBuf::new());
        assert_eq!(plan.run_dir, None);
    }

    #[test]
    fn missing_seed_is_picked_once_and_recorded() {
        let plan = plan(&Request { prompt: "cat".into(), batch: 2, ..Request::default() });
        assert_eq!(plan.seed_base, 1234);
        assert_eq!(plan.request.seed, Some(1234));
        assert_eq!(plan.items[0].seeds, vec![1234, 1235]);
    }

    #[test]
    fn sweep_counts_and_order_are_model_major() {
        let profiles = Profiles::builtin();
        let catalog = Catalog::builtin();
        let all_profiles =
            plan(&Request { sweep: Sweep::AllProfiles, batch: 2, ..Request::default() });
        assert_eq!(all_profiles.items.len(), profiles.all().len());
        assert_eq!(all_profiles.image_count(), 2 * profiles.all().len());
        assert!(all_profiles.items.iter().any(|i| i.profile == crate::vocab::RAW_PROFILE));
        assert_eq!(
            image_count(Sweep::AllProfiles, 2, &profiles, &catalog),
            all_profiles.image_count()
        );

        let all = plan(&Request { sweep: Sweep::AllModelsAllProfiles, ..Request::default() });
        let models = catalog.sweep_models().len();
        assert_eq!(all.items.len(), models * profiles.all().len());
        // Model-major: each model's items are contiguous.
        let mut seen = Vec::new();
        for item in &all.items {
            if seen.last() != Some(&item.model.display_name) {
                assert!(!seen.contains(&item.model.display_name), "model loaded twice");
                seen.push(item.model.display_name.clone());
            }
        }
        assert_eq!(seen.len(), models);
        let run_dir = all.run_dir.expect("sweep folder");
        assert_eq!(run_dir, PathBuf::from("20261123-093005_all-models-all-profiles"));
        assert_eq!(all.items[0].out_dir, run_dir.join("sdxl-base-1-0"));
    }

    #[test]
    fn prompts_too_long_for_jpeg_are_refused_before_work() {
        use crate::vocab::SaveOptions;
        let jpeg = SaveOptions { format: OutputFormat::Jpeg, ..SaveOptions::default() };
        // 12 000 CJK characters: UTF-16 infotext 24 KB fits, but the JSON holds the prompt
        // twice at 3 bytes a character (72 KB) and does not.
        let long = "猫".repeat(12_000);
        let request = Request { prompt: long.clone(), output: jpeg, ..Request::default() };
        let err = build_plan(&request, &Profiles::builtin(), &Catalog::builtin(), now(), || 1)
            .expect_err("too long for JPEG");
        assert_eq!(err.field, "format");
        assert!(err.message.contains("JPEG") && err.message.contains("webp"), "{err}");
        // The same prompt is fine as PNG or WebP, and a normal prompt is fine as JPEG.
        for format in [OutputFormat::Png, OutputFormat::Webp] {
            let output = SaveOptions { format, ..jpeg };
            plan(&Request { prompt: long.clone(), output, ..Request::default() });
        }
        plan(&Request { prompt: "a cat".into(), output: jpeg, ..Request::default() });
    }

    #[test]
    fn user_settings_beat_profile_defaults() {
        let profiles = Profiles::builtin();
        let photoreal = profiles.get("Photoreal").expect("profile");
        let base =
            Request { prompt: "cat".into(), profile: "Photoreal".into(), ..Request::default() };
        let from_profile = plan(&base);
        assert_eq!(from_profile.items[0].scheduler, photoreal.default_scheduler);
        assert!(from_profile.items[0].prompt.starts_with("cat, photorealistic"));
        let user = plan(&Request { scheduler: Some(SamplerKind::Ddim), ..base });
        assert_eq!(user.items[0].scheduler, Some(SamplerKind::Ddim));
    }
}
