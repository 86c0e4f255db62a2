//! The form's persisted state and how it becomes a [`Request`]: kept apart from drawing so the
//! request the window builds can be tested without a window, and restored from eframe storage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::models::catalog::{Catalog, DEFAULT_MODEL, ModelDefaults};
use crate::request::{DeviceChoice, RAW_PROFILE, Request, SamplerKind, SigmaSchedule, Sweep};
use crate::storage::metadata::{GenerationInfo, Recovered};

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

    /// Takes the settings an image was made with ("use these settings", a dropped PNG).
    /// The prompts are the ones the user typed, so the profile is not applied twice.
    pub fn restore_from(&mut self, info: &GenerationInfo) {
        self.prompt = if info.user_prompt.is_empty() && info.profile.is_empty() {
            info.prompt.clone()
        } else {
            info.user_prompt.clone()
        };
        self.negative = if info.user_negative.is_empty() && info.profile.is_empty() {
            info.negative.clone()
        } else {
            info.user_negative.clone()
        };
        if !info.profile.is_empty() {
            self.profile = info.profile.clone();
        }
        // A local folder is found again by its path; hub models by their catalog name or id.
        if !info.model_id.is_empty() && std::path::Path::new(&info.model_id).exists() {
            self.model = info.model_id.clone();
        } else if !info.model.is_empty() {
            self.model = info.model.clone();
        }
        self.scheduler = Some(info.requested_sampler);
        self.schedule_type = info.schedule_type;
        if info.steps > 0 {
            self.steps = info.steps;
        }
        self.cfg = info.cfg;
        if info.width > 0 && info.height > 0 {
            self.width_px = info.width;
            self.height_px = info.height;
        }
        self.seed = info.seed;
        self.random_seed = false;
        if let Some(strength) = info.strength {
            self.strength = strength;
        }
        self.init_image = info.init_image.as_ref().map(PathBuf::from);
        self.sweep = Sweep::None;
    }
}

impl FormSettings {
    /// Takes what another tool's image says (A1111, ComfyUI, InvokeAI, Fooocus): the fields that
    /// map; the model only when the catalog knows it. Returns what could not be taken, for the log.
    pub fn restore_from_foreign(&mut self, found: &Recovered, catalog: &Catalog) -> Vec<String> {
        let mut notes = found.warnings.clone();
        self.prompt.clone_from(&found.prompt);
        self.negative.clone_from(&found.negative);
        self.profile = crate::request::RAW_PROFILE.to_owned();
        if let Some(seed) = found.seed {
            self.seed = seed;
            self.random_seed = false;
        }
        if let Some(steps) = found.steps {
            self.steps = steps;
        }
        if let Some(cfg) = found.cfg {
            self.cfg = cfg;
        }
        if let (Some(width), Some(height)) = (found.width, found.height) {
            self.width_px = width;
            self.height_px = height;
        }
        match found.sampler {
            Some(kind) => self.scheduler = Some(kind),
            None if !found.sampler_name.is_empty() => {
                notes.push(format!("sampler {:?} has no equivalent here", found.sampler_name));
            }
            None => {}
        }
        if !found.model.is_empty() {
            match catalog.resolve(&found.model) {
                Ok(model) => self.model = model.display_name,
                Err(_) => notes.push(format!(
                    "model {:?} is not known here; kept {:?}",
                    found.model, self.model
                )),
            }
        }
        self.sweep = Sweep::None;
        notes
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

    #[test]
    fn schedule_type_travels_to_the_request_and_back_from_an_image() {
        let form =
            FormSettings { schedule_type: SigmaSchedule::Exponential, ..FormSettings::default() };
        let request = form.to_request(5);
        assert_eq!(request.schedule_type, SigmaSchedule::Exponential);
        let info =
            GenerationInfo { schedule_type: SigmaSchedule::Karras, ..GenerationInfo::default() };
        let mut restored = FormSettings::default();
        restored.restore_from(&info);
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
        form.restore_from(&info);
        assert_eq!(form.prompt, "a cat");
        assert_eq!((form.seed, form.random_seed, form.steps), (77, false, 4));
        assert_eq!(form.model, "SDXL Turbo");
    }
}
