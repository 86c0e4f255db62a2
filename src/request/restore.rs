//! One way back from an image: the settings recovered from a PNG (ours exactly; AUTOMATIC1111,
//! ComfyUI, InvokeAI, Fooocus as closely as they map) as an overlay on a [`Request`], plus notes
//! saying what a re-run will do differently.
//!
//! Every front end uses it: `generate --from` lays the overlay under the flags the user typed,
//! the window lays it over its form (drop a PNG, "use these settings"), a server over a request
//! body.

use std::path::PathBuf;

use super::{Profiles, Request, Sweep};
use crate::models::catalog::Catalog;
use crate::storage::metadata::{GenerationInfo, Recovered, Source};
use crate::storage::styles::{StyleSemantics, a1111_extract_styles};
use crate::vocab::{LoraSpec, RAW_PROFILE, SamplerKind, SigmaSchedule};

/// A field of [`Request`] an image can set, so a front end can say which ones the user chose
/// and keep them (the CLI's typed flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestField {
    /// [`Request::model`].
    Model,
    /// [`Request::prompt`].
    Prompt,
    /// [`Request::negative`].
    Negative,
    /// [`Request::profile`].
    Profile,
    /// [`Request::scheduler`].
    Scheduler,
    /// [`Request::schedule_type`].
    ScheduleType,
    /// [`Request::width`].
    Width,
    /// [`Request::height`].
    Height,
    /// [`Request::steps`].
    Steps,
    /// [`Request::cfg`].
    Cfg,
    /// [`Request::seed`].
    Seed,
    /// [`Request::init_image`].
    InitImage,
    /// [`Request::strength`].
    Strength,
    /// [`Request::sweep`].
    Sweep,
    /// [`Request::loras`].
    Loras,
    /// [`Request::truncate_prompt`].
    TruncatePrompt,
}

/// What an image says about a request: `Some` for each field it sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOverlay {
    /// Model key (catalog name, hub id or path).
    pub model: Option<String>,
    /// The prompt as typed (before a profile suffix).
    pub prompt: Option<String>,
    /// The negative prompt as typed.
    pub negative: Option<String>,
    /// Style profile.
    pub profile: Option<String>,
    /// Sampler (`Some(None)`: the model's default).
    pub scheduler: Option<Option<SamplerKind>>,
    /// Sigma schedule.
    pub schedule_type: Option<SigmaSchedule>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Steps.
    pub steps: Option<u32>,
    /// CFG scale.
    pub cfg: Option<f32>,
    /// Seed of the image.
    pub seed: Option<u64>,
    /// img2img source (`Some(None)`: txt2img).
    pub init_image: Option<Option<PathBuf>>,
    /// img2img strength.
    pub strength: Option<f32>,
    /// Sweep (an image is one run: always `Some(Sweep::None)`).
    pub sweep: Option<Sweep>,
    /// LoRA adapters.
    pub loras: Option<Vec<LoraSpec>>,
    /// Truncate prompts at 77 tokens.
    pub truncate_prompt: Option<bool>,
}

/// The settings an image restores, and what a re-run will do differently (for stderr or the
/// log).
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredSettings {
    /// The fields the image sets.
    pub overlay: RequestOverlay,
    /// Warnings from reading the metadata, and what could not be taken.
    pub notes: Vec<String>,
}

/// Turns a recovered image into a request overlay plus notes.
///
/// Our own images restore every setting exactly, with the sampler that ran (never `Default`),
/// so a re-run gives the same pixels. Another tool's image gives its prompts (no profile), the
/// numbers it wrote, its sampler when there is an equivalent here, and its model only when the
/// catalog knows it. An A1111 prompt that carries an imported A1111 style is split as A1111's
/// paste button splits it ("Styles array"): the style becomes the profile, its text leaves
/// the prompts.
pub fn restore_settings(
    recovered: &Recovered,
    catalog: &Catalog,
    profiles: &Profiles,
) -> RestoredSettings {
    let mut notes = recovered.warnings.clone();
    let mut overlay = if let Some(info) = &recovered.generation {
        ours(info, catalog)
    } else {
        let mut overlay = foreign(recovered, catalog, &mut notes);
        if recovered.source == Source::Automatic1111 {
            extract_a1111_style(&mut overlay, recovered, profiles, &mut notes);
        }
        overlay
    };
    overlay.sweep = Some(Sweep::None);
    RestoredSettings { overlay, notes }
}

fn ours(info: &GenerationInfo, catalog: &Catalog) -> RequestOverlay {
    // Images of old versions may lack the typed prompt: then the prompt as sent is it.
    let typed = |user: &str, sent: &str| {
        if user.is_empty() && info.profile.is_empty() { sent.to_owned() } else { user.to_owned() }
    };
    // A hub id or path finds the model again; a catalog entry shows under its menu name.
    let model = if info.model_id.is_empty() {
        info.model.clone()
    } else {
        catalog
            .find(&info.model_id)
            .map_or_else(|| info.model_id.clone(), |entry| entry.display_name.clone())
    };
    let size_known = info.width > 0 && info.height > 0;
    RequestOverlay {
        model: (!model.is_empty()).then_some(model),
        prompt: Some(typed(&info.user_prompt, &info.prompt)),
        negative: Some(typed(&info.user_negative, &info.negative)),
        profile: (!info.profile.is_empty()).then(|| info.profile.clone()),
        scheduler: Some(Some(info.sampler)),
        schedule_type: Some(info.schedule_type),
        width: size_known.then_some(info.width),
        height: size_known.then_some(info.height),
        steps: (info.steps > 0).then_some(info.steps),
        cfg: Some(info.cfg),
        seed: Some(info.seed),
        init_image: Some(info.init_image.as_ref().map(PathBuf::from)),
        strength: info.strength,
        sweep: None,
        loras: Some(info.loras.clone()),
        truncate_prompt: Some(info.truncate_prompt),
    }
}

fn foreign(recovered: &Recovered, catalog: &Catalog, notes: &mut Vec<String>) -> RequestOverlay {
    let source = recovered.source.display_name();
    notes.push(format!(
        "{source} image: running the closest equivalent; the tool's own noise and model files may differ"
    ));
    let mut overlay = RequestOverlay {
        prompt: Some(recovered.prompt.clone()),
        negative: Some(recovered.negative.clone()),
        profile: Some(RAW_PROFILE.to_owned()),
        steps: recovered.steps,
        cfg: recovered.cfg,
        seed: recovered.seed,
        loras: (!recovered.loras.is_empty()).then(|| recovered.loras.clone()),
        ..RequestOverlay::default()
    };
    if let (Some(width), Some(height)) = (recovered.width, recovered.height) {
        overlay.width = Some(width);
        overlay.height = Some(height);
    }
    overlay.scheduler = Some(recovered.sampler);
    if recovered.sampler.is_none() && !recovered.sampler_name.is_empty() {
        notes.push(format!(
            "sampler {:?} has no equivalent here; using the model's default",
            recovered.sampler_name
        ));
    }
    if !recovered.model.is_empty() {
        match catalog.resolve(&recovered.model) {
            Ok(_) => {
                let entry = catalog.find(&recovered.model);
                overlay.model =
                    Some(entry.map_or_else(
                        || recovered.model.clone(),
                        |entry| entry.display_name.clone(),
                    ));
            }
            Err(_) => notes.push(format!(
                "model {:?} from the image is not known here; keeping the model chosen here",
                recovered.model
            )),
        }
    }
    if recovered.strength.is_some() {
        notes.push(
            "the image was img2img from a source image it does not record; give that image \
             (--init-image, or drop it on the window) to re-run it as img2img"
                .to_owned(),
        );
    }
    overlay
}

/// A1111's `extract_styles_from_prompt` over the imported A1111 styles: one style found
/// becomes the profile (and leaves the prompts); several cannot be one profile here, so the
/// prompts stay whole and a note names them.
fn extract_a1111_style(
    overlay: &mut RequestOverlay,
    recovered: &Recovered,
    profiles: &Profiles,
    notes: &mut Vec<String>,
) {
    let styles: Vec<(&str, &str, &str)> = profiles
        .all()
        .iter()
        .filter(|p| p.is_imported() && p.rules == StyleSemantics::A1111)
        .map(|p| (p.name.as_str(), p.prompt_suffix.as_str(), p.negative_suffix.as_str()))
        .collect();
    if styles.is_empty() {
        return;
    }
    let (found, prompt, negative) =
        a1111_extract_styles(&styles, &recovered.prompt, &recovered.negative);
    match found.as_slice() {
        [] => {}
        [style] => {
            notes.push(format!(
                "A1111 style {style:?} found in the prompt (its Styles array): restored as the \
                 profile"
            ));
            overlay.profile = Some(style.clone());
            overlay.prompt = Some(prompt);
            overlay.negative = Some(negative);
        }
        several => notes.push(format!(
            "A1111 styles {} found in the prompt; one profile applies here, so the prompt is \
             kept whole",
            several.join(", ")
        )),
    }
}

impl RequestOverlay {
    /// Lays the overlay on `request`, except the fields `keep` names (the ones the user chose).
    pub fn apply(&self, request: &mut Request, keep: impl Fn(RequestField) -> bool) {
        fn set<T: Clone>(
            field: RequestField,
            value: Option<&T>,
            target: &mut T,
            keep: &dyn Fn(RequestField) -> bool,
        ) {
            if let Some(value) = value
                && !keep(field)
            {
                target.clone_from(value);
            }
        }
        let keep: &dyn Fn(RequestField) -> bool = &keep;
        set(RequestField::Model, self.model.as_ref(), &mut request.model, keep);
        set(RequestField::Prompt, self.prompt.as_ref(), &mut request.prompt, keep);
        set(RequestField::Negative, self.negative.as_ref(), &mut request.negative, keep);
        set(RequestField::Profile, self.profile.as_ref(), &mut request.profile, keep);
        set(RequestField::Scheduler, self.scheduler.as_ref(), &mut request.scheduler, keep);
        set(
            RequestField::ScheduleType,
            self.schedule_type.as_ref(),
            &mut request.schedule_type,
            keep,
        );
        set(RequestField::Width, self.width.map(Some).as_ref(), &mut request.width, keep);
        set(RequestField::Height, self.height.map(Some).as_ref(), &mut request.height, keep);
        set(RequestField::Steps, self.steps.map(Some).as_ref(), &mut request.steps, keep);
        set(RequestField::Cfg, self.cfg.map(Some).as_ref(), &mut request.cfg, keep);
        set(RequestField::Seed, self.seed.map(Some).as_ref(), &mut request.seed, keep);
        set(RequestField::InitImage, self.init_image.as_ref(), &mut request.init_image, keep);
        set(RequestField::Strength, self.strength.as_ref(), &mut request.strength, keep);
        set(RequestField::Sweep, self.sweep.as_ref(), &mut request.sweep, keep);
        set(RequestField::Loras, self.loras.as_ref(), &mut request.loras, keep);
        set(
            RequestField::TruncatePrompt,
            self.truncate_prompt.as_ref(),
            &mut request.truncate_prompt,
            keep,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_image_restores_every_setting_and_typed_fields_are_kept() {
        let info = GenerationInfo {
            prompt: "a cat, cinematic".into(),
            user_prompt: "a cat".into(),
            profile: "Cinematic".into(),
            model: "SDXL Turbo".into(),
            model_id: "stabilityai/sdxl-turbo".into(),
            sampler: SamplerKind::EulerA,
            requested_sampler: SamplerKind::Default,
            seed: 77,
            steps: 4,
            cfg: 0.0,
            width: 512,
            height: 768,
            loras: vec![LoraSpec { source: "a.safetensors".into(), weight: 0.5 }],
            truncate_prompt: true,
            ..GenerationInfo::default()
        };
        let restored = restore_settings(
            &Recovered::from_generation_info(info),
            &Catalog::builtin(),
            &Profiles::builtin(),
        );
        assert!(restored.notes.is_empty(), "{:?}", restored.notes);
        let mut request = Request { seed: Some(1), steps: Some(9), ..Request::default() };
        restored.overlay.apply(&mut request, |field| field == RequestField::Steps);
        assert_eq!(request.model, "SDXL Turbo");
        assert_eq!((request.prompt.as_str(), request.profile.as_str()), ("a cat", "Cinematic"));
        assert_eq!(request.scheduler, Some(SamplerKind::EulerA), "the sampler that ran");
        assert_eq!((request.width, request.height, request.seed), (Some(512), Some(768), Some(77)));
        assert_eq!(request.steps, Some(9), "kept: the user chose it");
        assert_eq!(request.loras.len(), 1);
        assert!(request.truncate_prompt);
    }

    #[test]
    fn foreign_image_takes_what_maps_and_says_what_does_not() {
        let mut found = Recovered::new(Source::Automatic1111);
        found.prompt = "a lighthouse".into();
        found.seed = Some(5);
        found.width = Some(832);
        found.height = Some(1216);
        found.sampler_name = "DPM++ 3M SDE".into();
        found.model = "sd_xl_base_1.0".into();
        found.strength = Some(0.4);
        let restored = restore_settings(&found, &Catalog::builtin(), &Profiles::builtin());
        let overlay = &restored.overlay;
        assert_eq!(overlay.profile.as_deref(), Some(RAW_PROFILE));
        assert_eq!((overlay.width, overlay.height, overlay.seed), (Some(832), Some(1216), Some(5)));
        assert_eq!(overlay.scheduler, Some(None), "no equivalent: the model's default");
        assert_eq!(overlay.model, None, "an unknown model is not taken");
        assert_eq!(restored.notes.len(), 4, "{:?}", restored.notes);
        assert!(restored.notes[0].contains("closest equivalent"));

        found.model = "stabilityai/sdxl-turbo".into();
        let known = restore_settings(&found, &Catalog::builtin(), &Profiles::builtin());
        assert_eq!(known.overlay.model.as_deref(), Some("SDXL Turbo"));
    }

    #[test]
    fn an_imported_a1111_style_in_the_prompt_becomes_the_profile() {
        let mut profiles = Profiles::builtin();
        let imported = |name: &str, prompt: &str, negative: &str| super::super::Profile {
            imported_from: Some("A1111 styles.csv: styles.csv".into()),
            ..super::super::Profile::new(name, prompt, negative)
        };
        profiles
            .merge_user(
                vec![
                    imported("Noir", "film noir, {prompt}, high contrast", "color"),
                    imported("Sharp", "sharp focus", ""),
                ],
                "test",
            )
            .expect("merge");
        let mut found = Recovered::new(Source::Automatic1111);
        found.prompt = "film noir, a detective, high contrast".into();
        found.negative = "blurry, color".into();
        let restored = restore_settings(&found, &Catalog::builtin(), &profiles);
        assert_eq!(restored.overlay.profile.as_deref(), Some("Noir"));
        assert_eq!(restored.overlay.prompt.as_deref(), Some("a detective"));
        assert_eq!(restored.overlay.negative.as_deref(), Some("blurry"));
        // Applying the profile again gives back what A1111 encoded.
        let noir = profiles.get("Noir").expect("noir");
        assert_eq!(noir.apply_prompt("a detective"), found.prompt);
        assert_eq!(noir.apply_negative("blurry"), found.negative);
        // Two styles cannot be one profile: the prompt stays whole, with a note.
        found.prompt = "film noir, a detective, high contrast, sharp focus".into();
        let restored = restore_settings(&found, &Catalog::builtin(), &profiles);
        assert_eq!(restored.overlay.profile.as_deref(), Some(RAW_PROFILE));
        assert!(restored.notes.iter().any(|n| n.contains("Noir, Sharp")), "{:?}", restored.notes);
    }
}
