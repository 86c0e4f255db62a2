//! The body of `POST /sdapi/v1/txt2img` and `/img2img`: AUTOMATIC1111's processing fields
//! (`StableDiffusionProcessingTxt2Img`/`Img2Img` as its API exposes them), parsed as FastAPI
//! does, and mapped onto our [`Request`].
//!
//! Every field A1111 declares is accepted. The ones that steer generation map to ours; the
//! ones for features this lab does not have (hires fix, face restoration, tiling, variation
//! seeds, sampler knobs) are ignored with a note when set to anything but their neutral
//! value; inpainting masks and scripts are refused (A1111 itself refuses unknown scripts).
//! Fields A1111 does not declare are ignored with a note.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::samplers::{self, SamplerChoice};
use crate::request::{Request, RequestError};
use crate::server::errors::ValidationError;
use crate::server::lenient;

/// A1111's txt2img / img2img request. Every field is optional; defaults are A1111's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default)]
#[allow(clippy::struct_excessive_bools, reason = "none: every field is an Option")]
pub struct GenerationRequest {
    /// The prompt.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub prompt: Option<String>,
    /// The negative prompt.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub negative_prompt: Option<String>,
    /// Style names: here, one of our style profiles (`/sdapi/v1/prompt-styles`).
    #[serde(deserialize_with = "lenient::opt_string_list")]
    pub styles: Option<Vec<String>>,
    /// Seed of the first image; -1 (default) picks a random one.
    #[serde(deserialize_with = "lenient::opt_int")]
    pub seed: Option<i64>,
    /// Variation seed (not supported: noted when `subseed_strength` is not 0).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub subseed: Option<i64>,
    /// Variation strength (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub subseed_strength: Option<f64>,
    /// Seed resize height (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub seed_resize_from_h: Option<i64>,
    /// Seed resize width (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub seed_resize_from_w: Option<i64>,
    /// Sampler name (`/sdapi/v1/samplers`); an older name may carry its schedule
    /// (`DPM++ 2M Karras`).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub sampler_name: Option<String>,
    /// Deprecated sampler name, used when `sampler_name` is unset (default `Euler`).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub sampler_index: Option<String>,
    /// Schedule type (`/sdapi/v1/schedulers`), default `Automatic`.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub scheduler: Option<String>,
    /// Images per batch (default 1); `batch_size` × `n_iter` images in all.
    #[serde(deserialize_with = "lenient::opt_int")]
    pub batch_size: Option<i64>,
    /// Batches (default 1).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub n_iter: Option<i64>,
    /// Denoising steps (default 50).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub steps: Option<i64>,
    /// CFG scale (default 7).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub cfg_scale: Option<f64>,
    /// Width in pixels (default 512; a multiple of 8 here).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub width: Option<i64>,
    /// Height in pixels (default 512; a multiple of 8 here).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub height: Option<i64>,
    /// Face restoration (not supported).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub restore_faces: Option<bool>,
    /// Tiling (not supported).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub tiling: Option<bool>,
    /// Images are always saved here (with their metadata and a jobs-log line).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub do_not_save_samples: Option<bool>,
    /// No grids are made here.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub do_not_save_grid: Option<bool>,
    /// Ancestral eta (the samplers here use their diffusers default).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub eta: Option<f64>,
    /// Negative guidance minimum sigma (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub s_min_uncond: Option<f64>,
    /// Sampler churn (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub s_churn: Option<f64>,
    /// Sampler sigma max (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub s_tmax: Option<f64>,
    /// Sampler sigma min (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub s_tmin: Option<f64>,
    /// Sampler noise (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub s_noise: Option<f64>,
    /// img2img strength (default 0.75); for txt2img only used by hires fix.
    #[serde(deserialize_with = "lenient::opt_float")]
    pub denoising_strength: Option<f64>,
    /// Settings for this request; `sd_model_checkpoint` picks the model.
    #[serde(deserialize_with = "lenient::opt_object")]
    pub override_settings: Option<Map<String, Value>>,
    /// Restore the settings afterwards (always: overrides here are per request).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub override_settings_restore_afterwards: Option<bool>,
    /// Refiner model (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub refiner_checkpoint: Option<String>,
    /// Refiner switch point (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub refiner_switch_at: Option<f64>,
    /// Extra networks in the prompt (none are parsed here).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub disable_extra_networks: Option<bool>,
    /// Comments (ignored).
    #[serde(deserialize_with = "lenient::opt_object")]
    pub comments: Option<Map<String, Value>>,
    /// A first-pass image for hires fix (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub firstpass_image: Option<String>,
    /// Hires fix (not supported).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub enable_hr: Option<bool>,
    /// Hires fix first pass width (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub firstphase_width: Option<i64>,
    /// Hires fix first pass height (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub firstphase_height: Option<i64>,
    /// Hires fix scale (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub hr_scale: Option<f64>,
    /// Hires fix upscaler (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub hr_upscaler: Option<String>,
    /// Hires fix steps (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub hr_second_pass_steps: Option<i64>,
    /// Hires fix width (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub hr_resize_x: Option<i64>,
    /// Hires fix height (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub hr_resize_y: Option<i64>,
    /// Hires fix model (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub hr_checkpoint_name: Option<String>,
    /// Hires fix sampler (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub hr_sampler_name: Option<String>,
    /// Hires fix schedule (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub hr_scheduler: Option<String>,
    /// Hires fix prompt (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub hr_prompt: Option<String>,
    /// Hires fix negative prompt (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub hr_negative_prompt: Option<String>,
    /// A task id for `/progress` (accepted; the job number is the id here).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub force_task_id: Option<String>,
    /// A selectable script: there are none here (refused unless empty).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub script_name: Option<String>,
    /// The script's arguments.
    #[serde(deserialize_with = "lenient::opt_list")]
    pub script_args: Option<Vec<Value>>,
    /// Return the images in the response (default true).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub send_images: Option<bool>,
    /// Save the images (they are always saved here).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub save_images: Option<bool>,
    /// Always-on scripts: there are none here (refused unless every entry is empty).
    #[serde(deserialize_with = "lenient::opt_object")]
    pub alwayson_scripts: Option<Map<String, Value>>,
    /// Infotext to fill unset fields from (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub infotext: Option<String>,
    /// img2img: the source image(s), base64 (a `data:image/…;base64,` prefix is allowed); one
    /// is supported.
    #[serde(deserialize_with = "lenient::opt_string_list")]
    pub init_images: Option<Vec<String>>,
    /// img2img resize mode (0 = just resize, the only one here).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub resize_mode: Option<i64>,
    /// img2img image CFG (instruct-pix2pix only; not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub image_cfg_scale: Option<f64>,
    /// img2img inpainting mask (not supported: refused).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub mask: Option<String>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub mask_blur_x: Option<i64>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub mask_blur_y: Option<i64>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub mask_blur: Option<i64>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub mask_round: Option<bool>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub inpainting_fill: Option<i64>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub inpaint_full_res: Option<bool>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub inpaint_full_res_padding: Option<i64>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_int")]
    pub inpainting_mask_invert: Option<i64>,
    /// img2img noise multiplier (not supported).
    #[serde(deserialize_with = "lenient::opt_float")]
    pub initial_noise_multiplier: Option<f64>,
    /// Inpainting (not supported).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub latent_mask: Option<String>,
    /// Echo the init images in `parameters` (default false).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub include_init_images: Option<bool>,
}

/// txt2img or img2img.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/sdapi/v1/txt2img`.
    Txt2img,
    /// `/sdapi/v1/img2img`.
    Img2img,
}

/// A parsed body: the fields, and what was ignored (unknown fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The fields.
    pub fields: GenerationRequest,
    /// The body as sent (for `parameters`).
    pub body: Map<String, Value>,
    /// Notes on what is ignored.
    pub notes: Vec<String>,
}

/// Parses a body as FastAPI would: JSON, an object, each field of its declared type.
///
/// # Errors
/// FastAPI's 422 naming the field (or the offset of a JSON syntax error).
pub fn parse(bytes: &[u8]) -> Result<Parsed, ValidationError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        let offset = byte_offset(bytes, err.line(), err.column());
        ValidationError::json_decode(offset, err.to_string())
    })?;
    let Value::Object(body) = value else {
        return Err(ValidationError::at(&[], "type_error.dict", "value is not a valid dict"));
    };
    let mut unknown = Vec::new();
    let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let deserializer =
        serde_ignored::Deserializer::new(Value::Object(body.clone()), &mut note_unknown);
    let fields: GenerationRequest =
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let (kind, msg) = lenient::split_error(&err.inner().to_string());
            let loc: Vec<&str> =
                path.split('.').filter(|part| !part.is_empty() && *part != "?").collect();
            ValidationError::at(&loc, kind, msg)
        })?;
    let notes = unknown
        .into_iter()
        .map(|field| format!("{field}: not an AUTOMATIC1111 field; ignored"))
        .collect();
    Ok(Parsed { fields, body, notes })
}

/// `serde_json`'s (line, column) as a byte offset, as Python's `JSONDecodeError.pos`.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (index, text) in bytes.split(|byte| *byte == b'\n').enumerate() {
        if index + 1 == line {
            return offset + column.saturating_sub(1);
        }
        offset += text.len() + 1;
    }
    bytes.len()
}

/// Our request for a parsed A1111 request, with notes on what was ignored; the init image is
/// filled in by the caller (it is written to disk first).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Our request (no init image yet).
    pub request: Request,
    /// The sampler the response names.
    pub sampler: SamplerChoice,
    /// `batch_size` as given (A1111 reports it apart from `n_iter`).
    pub batch_size: u32,
    /// What was ignored.
    pub notes: Vec<String>,
    /// The decoded init image (img2img).
    pub init_image: Option<Vec<u8>>,
}

impl GenerationRequest {
    /// Maps onto our request: `model` is the one to use when `override_settings` names none.
    ///
    /// # Errors
    /// A field that cannot be honoured, as FastAPI's 422 naming it.
    pub fn to_request(&self, endpoint: Endpoint, model: &str) -> Result<Mapped, ValidationError> {
        let mut notes = Vec::new();
        self.refuse_unsupported(endpoint)?;
        self.note_ignored(endpoint, &mut notes);
        let sampler_text = self
            .sampler_name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .or_else(|| self.sampler_index.clone().filter(|name| !name.trim().is_empty()))
            .unwrap_or_else(|| "Euler".to_owned());
        let sampler_field = if self.sampler_name.as_deref().is_some_and(|s| !s.trim().is_empty()) {
            "sampler_name"
        } else {
            "sampler_index"
        };
        let sampler = samplers::choose(&sampler_text, self.scheduler.as_deref()).map_err(
            |(field, message)| {
                ValidationError::value(
                    &[if field == "sampler" { sampler_field } else { "scheduler" }],
                    message,
                )
            },
        )?;
        let batch_size = positive("batch_size", self.batch_size.unwrap_or(1))?;
        let n_iter = positive("n_iter", self.n_iter.unwrap_or(1))?;
        let batch = batch_size.checked_mul(n_iter).ok_or_else(|| {
            ValidationError::value(&["n_iter"], "batch_size × n_iter is too large")
        })?;
        let seed = match self.seed.unwrap_or(-1) {
            -1 => None,
            seed => Some(u64::try_from(seed).map_err(|_| {
                ValidationError::value(
                    &["seed"],
                    format!("{seed} is negative (-1 picks a random seed)"),
                )
            })?),
        };
        let model = match self.override_settings.as_ref().and_then(|o| o.get("sd_model_checkpoint"))
        {
            None | Some(Value::Null) => model.to_owned(),
            Some(Value::String(name)) => samplers::strip_checkpoint_hash(name).to_owned(),
            Some(_) => {
                return Err(ValidationError::at(
                    &["override_settings", "sd_model_checkpoint"],
                    "type_error.str",
                    "str type expected",
                ));
            }
        };
        if let Some(overrides) = &self.override_settings {
            for key in overrides.keys().filter(|key| *key != "sd_model_checkpoint") {
                notes.push(format!("override_settings.{key}: not a setting here; ignored"));
            }
        }
        let profile = match self.styles.as_deref().unwrap_or_default() {
            [] => crate::vocab::RAW_PROFILE.to_owned(),
            [one] => one.clone(),
            _ => {
                return Err(ValidationError::value(
                    &["styles"],
                    "one style at a time here (each style is one of our profiles)",
                ));
            }
        };
        let strength = match endpoint {
            Endpoint::Img2img => self.denoising_strength.unwrap_or(0.75),
            Endpoint::Txt2img => 0.75,
        };
        let init_image = match endpoint {
            Endpoint::Txt2img => None,
            Endpoint::Img2img => Some(self.decode_init_image()?),
        };
        let request = Request {
            model,
            prompt: self.prompt.clone().unwrap_or_default(),
            negative: self.negative_prompt.clone().unwrap_or_default(),
            profile,
            scheduler: Some(sampler.kind),
            schedule_type: sampler.schedule,
            width: Some(u32_field("width", self.width.unwrap_or(512))?),
            height: Some(u32_field("height", self.height.unwrap_or(512))?),
            steps: Some(u32_field("steps", self.steps.unwrap_or(50))?),
            #[allow(
                clippy::cast_possible_truncation,
                reason = "CFG is checked against 0..=50 later; f32 is its type"
            )]
            cfg: Some(self.cfg_scale.unwrap_or(7.0) as f32),
            batch,
            seed,
            init_image: None,
            #[allow(
                clippy::cast_possible_truncation,
                reason = "a strength in [0, 1] is checked later"
            )]
            strength: strength as f32,
            ..Request::default()
        };
        Ok(Mapped { request, sampler, batch_size, notes, init_image })
    }

    fn refuse_unsupported(&self, endpoint: Endpoint) -> Result<(), ValidationError> {
        if let Some(name) = self.script_name.as_deref().filter(|name| !name.trim().is_empty()) {
            return Err(ValidationError::value(
                &["script_name"],
                format!("Script '{name}' not found (no scripts here)"),
            ));
        }
        if let Some(scripts) = &self.alwayson_scripts {
            for (name, settings) in scripts {
                let has_args = settings
                    .get("args")
                    .and_then(Value::as_array)
                    .is_some_and(|args| args.iter().any(|arg| arg != &Value::Bool(false)));
                if has_args {
                    return Err(ValidationError::value(
                        &["alwayson_scripts", name],
                        format!("always on script {name} not found (no scripts here)"),
                    ));
                }
            }
        }
        if endpoint == Endpoint::Img2img && self.mask.as_deref().is_some_and(|m| !m.is_empty()) {
            return Err(ValidationError::value(&["mask"], "inpainting is not supported here"));
        }
        Ok(())
    }

    /// Notes on fields set to something this lab does not do.
    fn note_ignored(&self, endpoint: Endpoint, notes: &mut Vec<String>) {
        let mut note = |field: &str, what: &str| notes.push(format!("{field}: {what}; ignored"));
        if self.enable_hr == Some(true) {
            note("enable_hr", "hires fix is not supported");
        }
        if self.restore_faces == Some(true) {
            note("restore_faces", "face restoration is not supported");
        }
        if self.tiling == Some(true) {
            note("tiling", "tiling is not supported");
        }
        if self.subseed_strength.is_some_and(|strength| strength != 0.0) {
            note("subseed", "variation seeds are not supported");
        }
        if self.seed_resize_from_h.is_some_and(|h| h > 0)
            || self.seed_resize_from_w.is_some_and(|w| w > 0)
        {
            note("seed_resize_from_w/h", "seed resizing is not supported");
        }
        if self.refiner_checkpoint.as_deref().is_some_and(|r| !r.is_empty() && r != "None") {
            note("refiner_checkpoint", "refiners are not supported");
        }
        if self.do_not_save_samples == Some(true) {
            note("do_not_save_samples", "images are always saved here");
        }
        let knobs = [
            ("eta", self.eta, &[1.0][..]),
            ("s_churn", self.s_churn, &[0.0][..]),
            ("s_tmin", self.s_tmin, &[0.0][..]),
            ("s_tmax", self.s_tmax, &[0.0, f64::INFINITY][..]),
            ("s_noise", self.s_noise, &[1.0][..]),
            ("s_min_uncond", self.s_min_uncond, &[0.0][..]),
        ];
        for (field, value, neutral) in knobs {
            if value.is_some_and(|value| !neutral.contains(&value)) {
                note(field, "sampler settings are the diffusers defaults here");
            }
        }
        if endpoint == Endpoint::Img2img {
            if self.resize_mode.is_some_and(|mode| mode != 0) {
                note("resize_mode", "only 0 (just resize) is supported");
            }
            if self.initial_noise_multiplier.is_some_and(|m| !same(m, 1.0)) {
                note("initial_noise_multiplier", "not supported");
            }
            if self.image_cfg_scale.is_some_and(|s| !same(s, 1.5) && !same(s, 1.0)) {
                note("image_cfg_scale", "instruct-pix2pix models are not supported");
            }
        }
        if self.infotext.as_deref().is_some_and(|text| !text.is_empty()) {
            note("infotext", "filling fields from infotext is not supported");
        }
    }

    /// The single init image, decoded from base64 (PNG, JPEG or WebP).
    fn decode_init_image(&self) -> Result<Vec<u8>, ValidationError> {
        let images = self.init_images.as_deref().unwrap_or_default();
        let encoded = match images {
            [] => {
                return Err(ValidationError::value(
                    &["init_images"],
                    "img2img needs one init image",
                ));
            }
            [one] => one,
            _ => {
                return Err(ValidationError::value(
                    &["init_images"],
                    format!("{} images given; one init image per request here", images.len()),
                ));
            }
        };
        if encoded.starts_with("http://") || encoded.starts_with("https://") {
            return Err(ValidationError::value(
                &["init_images", "0"],
                "image URLs are not fetched here; send the image as base64",
            ));
        }
        decode_base64_image(encoded)
            .map_err(|message| ValidationError::value(&["init_images", "0"], message))
    }
}

/// Decodes a base64 image (with or without a `data:image/…;base64,` prefix) and checks it is
/// a PNG, JPEG or WebP.
///
/// # Errors
/// Not base64, or not an image we read.
pub fn decode_base64_image(encoded: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let data = match encoded.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map_or(rest, |(_, data)| data),
        None => encoded,
    };
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.as_bytes()))
        .map_err(|err| format!("not valid base64 ({err})"))?;
    match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP) => {
            Ok(bytes)
        }
        _ => Err("not a PNG, JPEG or WebP image".to_owned()),
    }
}

fn positive(field: &str, value: i64) -> Result<u32, ValidationError> {
    match u32::try_from(value) {
        Ok(value) if value >= 1 => Ok(value),
        _ => Err(ValidationError::at(
            &[field],
            "value_error.number.not_ge",
            "ensure this value is greater than or equal to 1",
        )),
    }
}

fn u32_field(field: &str, value: i64) -> Result<u32, ValidationError> {
    u32::try_from(value)
        .map_err(|_| ValidationError::value(&[field], format!("{value} is out of range")))
}

/// The A1111 field a request error of ours is about.
pub fn a1111_field(error: &RequestError) -> Vec<&'static str> {
    match error.field.as_str() {
        "prompt" => vec!["prompt"],
        "negative" => vec!["negative_prompt"],
        "width" => vec!["width"],
        "height" => vec!["height"],
        "steps" => vec!["steps"],
        "cfg" => vec!["cfg_scale"],
        "batch" => vec!["batch_size"],
        "seed" => vec!["seed"],
        "strength" => vec!["denoising_strength"],
        "init_image" => vec!["init_images"],
        "profile" => vec!["styles"],
        "model" => vec!["override_settings", "sd_model_checkpoint"],
        "scheduler" => vec!["sampler_name"],
        "schedule_type" => vec!["scheduler"],
        _ => vec![],
    }
}

/// Whether a client's number is A1111's neutral value (sent back as JSON, so exact up to
/// rounding).
fn same(value: f64, neutral: f64) -> bool {
    (value - neutral).abs() <= f64::EPSILON * neutral.abs().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse(br#"{"steps": "many"}"#).expect_err("bad steps");
        assert_eq!(err.detail[0].loc, vec![Value::from("body"), Value::from("steps")]);
        assert_eq!(err.detail[0].kind, "type_error.integer");
        let err = parse(br#"{"override_settings": []}"#).expect_err("bad dict");
        assert_eq!(err.detail[0].loc, vec![Value::from("body"), Value::from("override_settings")]);
        let err = parse(b"{\"prompt\": \n  \"x\",,}").expect_err("syntax");
        assert_eq!(err.detail[0].kind, "value_error.jsondecode");
        // Python's json.loads: "Expecting property name …: line 2 column 7 (char 18)".
        assert_eq!(err.detail[0].loc[1], Value::from(18));
        let err = parse(b"[1]").expect_err("not an object");
        assert_eq!(err.detail[0].msg, "value is not a valid dict");
    }

    #[test]
    fn unknown_fields_are_noted_and_defaults_are_a1111s() {
        let parsed = parse(br#"{"prompt": "a cat", "frobnicate": 1}"#).expect("parse");
        assert_eq!(parsed.notes, vec!["frobnicate: not an AUTOMATIC1111 field; ignored"]);
        let mapped = parsed.fields.to_request(Endpoint::Txt2img, "SDXL Turbo").expect("map");
        let request = mapped.request;
        assert_eq!(
            (request.width, request.height, request.steps),
            (Some(512), Some(512), Some(50))
        );
        assert_eq!((request.cfg, request.batch, request.seed), (Some(7.0), 1, None));
        assert_eq!(request.scheduler, Some(crate::vocab::SamplerKind::Euler));
        assert_eq!(request.model, "SDXL Turbo");
    }

    #[test]
    fn batches_multiply_and_overrides_pick_the_model() {
        let parsed = parse(
            br#"{"batch_size": 2, "n_iter": 3, "seed": 5, "override_settings": {"sd_model_checkpoint": "SDXL Turbo [abc123]", "CLIP_stop_at_last_layers": 2}}"#,
        )
        .expect("parse");
        let mapped = parsed.fields.to_request(Endpoint::Txt2img, "SDXL Base 1.0").expect("map");
        assert_eq!((mapped.request.batch, mapped.batch_size, mapped.request.seed), (6, 2, Some(5)));
        assert_eq!(mapped.request.model, "SDXL Turbo");
        assert_eq!(
            mapped.notes,
            vec!["override_settings.CLIP_stop_at_last_layers: not a setting here; ignored"]
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_naming_the_field() {
        let cases: [(&[u8], Endpoint, &str); 6] = [
            (br#"{"seed": -5}"#, Endpoint::Txt2img, "seed"),
            (br#"{"batch_size": 0}"#, Endpoint::Txt2img, "batch_size"),
            (br#"{"script_name": "X/Y plot"}"#, Endpoint::Txt2img, "script_name"),
            (br#"{"init_images": []}"#, Endpoint::Img2img, "init_images"),
            (br#"{"init_images": ["bm90IGFuIGltYWdl"]}"#, Endpoint::Img2img, "init_images"),
            (br#"{"sampler_name": "DPM++ 3M SDE"}"#, Endpoint::Txt2img, "sampler_name"),
        ];
        for (body, endpoint, field) in cases {
            let parsed = parse(body).expect("parse");
            let err = parsed.fields.to_request(endpoint, "SDXL Base 1.0").expect_err(field);
            assert_eq!(err.detail[0].loc[1], Value::from(field), "{err:?}");
        }
    }
}
