//! The form's persisted state and how it becomes a [`Request`]: kept apart from drawing so the
//! request the window builds can be tested without a window, and restored from eframe storage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::models::catalog::{Catalog, DEFAULT_MODEL, ModelDefaults};
use crate::request::restore::RequestOverlay;
use crate::request::{Request, Sweep};
use crate::vocab::{DeviceChoice, LoraSpec, RAW_PROFILE, SamplerKind, SaveOptions, SigmaSchedule};

/// The key under which the form is stored in eframe's storage.
pub const STORAGE_KEY: &str = "imagelab.form";

/// Every control of the left panel, as the user left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FormSettings {
    /// Model key (catalog display name).
    pub model: String,
    /// Style profile name.
    pub profile: String,
    /// Sampler; `None` = the profile's, then the model's default.
    pub scheduler: Option<SamplerKind>,
    /// Sigma schedule apart from the sampler (A1111's "Schedule type").
    pub schedule_type: SigmaSchedule,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative: String,
    /// Width in pixels.
    pub width_px: u32,
    /// Height in pixels.
    pub height_px: u32,
    /// Denoising steps.
    pub steps: u32,
    /// CFG scale.
    pub cfg: f32,
    /// Images per item.
    pub batch: u32,
    /// The seed used when `random_seed` is off.
    pub seed: u64,
    /// Draw a new seed for every Generate.
    pub random_seed: bool,
    /// img2img source.
    pub init_image: Option<PathBuf>,
    /// img2img strength.
    pub strength: f32,
    /// Which sweep.
    pub sweep: Sweep,
    /// Where to run.
    pub device: DeviceChoice,
    /// LoRA adapters (restored from an image; there is no LoRA picker yet).
    pub loras: Vec<LoraSpec>,
    /// Truncate prompts at 77 tokens (restored from an image).
    pub truncate_prompt: bool,
    /// Image format and quality of saved images.
    pub output: SaveOptions,
}

impl Default for FormSettings {
    fn default() -> Self {
        let defaults = ModelDefaults::SDXL;
        Self {
            model: DEFAULT_MODEL.to_owned(),
            profile: RAW_PROFILE.to_owned(),
            scheduler: None,
            schedule_type: SigmaSchedule::Automatic,
            prompt: String::new(),
            negative: String::new(),
            width_px: defaults.width,
            height_px: defaults.height,
            steps: defaults.steps,
            cfg: defaults.cfg,
            batch: 1,
            seed: 0,
            random_seed: true,
            init_image: None,
            strength: 0.75,
            sweep: Sweep::None,
            device: DeviceChoice::Auto,
            loras: Vec::new(),
            truncate_prompt: false,
            output: SaveOptions::default(),
        }
    }
}

impl FormSettings {
    /// The request Generate submits. `seed` is the seed chosen for this run.
    pub fn to_request(&self, seed: u64) -> Request {
        Request {
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            profile: self.profile.clone(),
            scheduler: self.scheduler,
            schedule_type: self.schedule_type,
            width: Some(self.width_px),
            height: Some(self.height_px),
            steps: Some(self.steps),
            cfg: Some(self.cfg),
            batch: self.batch,
            seed: Some(seed),
            init_image: self.init_image.clone(),
            strength: self.strength,
            sweep: self.sweep,
            device: self.device,
            loras: self.loras.clone(),
            truncate_prompt: self.truncate_prompt,
            output: self.output,
            ..Request::default()
        }
    }

    /// Sets size, steps, CFG and sampler to what `model` is made for.
    pub fn apply_model_defaults(&mut self, catalog: &Catalog) {
        if let Some(entry) = catalog.find(&self.model) {
            let defaults = entry.defaults;
            self.width_px = defaults.width;
            self.height_px = defaults.height;
            self.steps = defaults.steps;
            self.cfg = defaults.cfg;
            self.scheduler = None;
        }
    }

    /// Takes the settings an image restores ("use these settings", a dropped PNG; see
    /// [`crate::request::restore`]). A restored seed is fixed, not random.
    pub fn apply_overlay(&mut self, overlay: &RequestOverlay) {
        let mut request = self.to_request(self.seed);
        overlay.apply(&mut request, |_| false);
        self.model = request.model;
        self.prompt = request.prompt;
        self.negative = request.negative;
        self.profile = request.profile;
        self.scheduler = request.scheduler;
        self.schedule_type = request.schedule_type;
        self.width_px = request.width.unwrap_or(self.width_px);
        self.height_px = request.height.unwrap_or(self.height_px);
        self.steps = request.steps.unwrap_or(self.steps);
        self.cfg = request.cfg.unwrap_or(self.cfg);
        if let Some(seed) = overlay.seed {
            self.seed = seed;
            self.random_seed = false;
        }
        self.init_image = request.init_image;
        self.strength = request.strength;
        self.sweep = request.sweep;
        self.loras = request.loras;
        self.truncate_prompt = request.truncate_prompt;
    }
}

/// Width × height presets for a model's native size: SDXL's training buckets for 1024-class
/// models, the native square otherwise (SDXL Turbo and SD 1.5: 512²).
pub fn aspect_presets(native: ModelDefaults) -> Vec<(u32, u32)> {
    if native.width >= 1024 {
        vec![
            (1024, 1024),
            (1152, 896),
            (896, 1152),
            (1216, 832),
            (832, 1216),
            (1344, 768),
            (768, 1344),
            (1536, 640),
            (640, 1536),
        ]
    } else {
        vec![(native.width, native.height)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Profiles;
    use crate::request::restore::restore_settings;
    use crate::storage::metadata::{GenerationInfo, Recovered};

    fn restore(form: &mut FormSettings, info: GenerationInfo) {
        let recovered = Recovered::from_generation_info(info);
        let profiles = crate::request::Profiles::builtin();
        form.apply_overlay(&restore_settings(&recovered, &Catalog::builtin(), &profiles).overlay);
    }

    #[test]
    fn schedule_type_travels_to_the_request_and_back_from_an_image() {
        let form =
            FormSettings { schedule_type: SigmaSchedule::Exponential, ..FormSettings::default() };
        let request = form.to_request(5);
        assert_eq!(request.schedule_type, SigmaSchedule::Exponential);
        let info =
            GenerationInfo { schedule_type: SigmaSchedule::Karras, ..GenerationInfo::default() };
        let mut restored = FormSettings::default();
        restore(&mut restored, info);
        assert_eq!(restored.schedule_type, SigmaSchedule::Karras);
    }

    #[test]
    fn default_form_makes_a_valid_request() {
        let form = FormSettings { prompt: "a cat".into(), ..FormSettings::default() };
        let request = form.to_request(42);
        request.validate(&Profiles::builtin(), &Catalog::builtin()).expect("valid");
        assert_eq!(request.seed, Some(42));
        assert_eq!((request.width, request.height), (Some(1024), Some(1024)));
    }

    #[test]
    fn turbo_presets_are_its_native_square() {
        assert_eq!(aspect_presets(ModelDefaults::TURBO), vec![(512, 512)]);
        assert_eq!(aspect_presets(ModelDefaults::SDXL).len(), 9);
    }

    #[test]
    fn restore_takes_the_typed_prompt_and_fixes_the_seed() {
        let info = GenerationInfo {
            prompt: "a cat, cinematic".into(),
            user_prompt: "a cat".into(),
            profile: "Cinematic".into(),
            model: "SDXL Turbo".into(),
            seed: 77,
            steps: 4,
            cfg: 0.0,
            width: 512,
            height: 512,
            ..GenerationInfo::default()
        };
        let mut form = FormSettings::default();
        restore(&mut form, info);
        assert_eq!(form.prompt, "a cat");
        assert_eq!((form.seed, form.random_seed, form.steps), (77, false, 4));
        assert_eq!(form.model, "SDXL Turbo");
    }
}
