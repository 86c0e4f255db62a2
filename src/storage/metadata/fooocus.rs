//! Fooocus' metadata, read into a [`Recovered`] request.
//!
//! Fooocus writes a `parameters` chunk plus `fooocus_scheme` (`fooocus` or `a1111`):
//! - scheme `fooocus`: `parameters` is a JSON object with sorted keys (`prompt`,
//!   `negative_prompt`, `full_prompt` [list], `full_negative_prompt` [list], `steps`,
//!   `guidance_scale`, `seed` [string], `resolution` [`"(1152, 896)"`], `sampler` and `scheduler`
//!   [ComfyUI names], `base_model`, `refiner_model`, `loras` [[name, weight, hash]], `sharpness`,
//!   `adm_guidance`, `styles`, `performance`, `version` [`"Fooocus v2.5.5"`] …);
//! - scheme `a1111`: A1111 infotext with Fooocus keys (`Scheduler`, `Sharpness`, `Raw prompt`,
//!   `Version: Fooocus v…`), read by the A1111 reader.
//!
//! The prompt recovered is the one Fooocus encoded: the user's prompt with styles and its prompt
//! expansion applied (`full_prompt`), which is also what its A1111 scheme writes.

use serde_json::{Map, Value};

use super::foreign_samplers;
use super::infotext::ParsedInfotext;
use super::recover::{Recovered, Source};
use super::values::{as_f32, as_text, as_u32, as_u64, to_extra_text};
use crate::vocab::LoraSpec;

/// Keyword of the chunk naming Fooocus' metadata scheme.
pub const SCHEME_KEY: &str = "fooocus_scheme";

const MAPPED_KEYS: [&str; 12] = [
    "prompt",
    "negative_prompt",
    "full_prompt",
    "full_negative_prompt",
    "steps",
    "guidance_scale",
    "seed",
    "resolution",
    "sampler",
    "scheduler",
    "base_model",
    "loras",
];

/// Whether a `parameters` text is Fooocus' JSON scheme rather than infotext.
pub fn looks_like_json(parameters: &str) -> bool {
    let trimmed = parameters.trim();
    trimmed.starts_with('{') && trimmed.ends_with('}')
}

/// Whether A1111-form infotext was written by Fooocus (its `Version: Fooocus v…`).
pub fn is_fooocus_infotext(parsed: &ParsedInfotext) -> bool {
    parsed.get("Version").is_some_and(|v| v.trim_start().starts_with("Fooocus"))
}

/// Fooocus-only settings of its A1111 scheme, and what differs here.
pub fn note_a1111_scheme(found: &mut Recovered) {
    let sharpness = found.extra.get("Sharpness").cloned();
    note_fooocus_only(found, sharpness.as_deref(), found.extra.contains_key("Refiner"));
}

/// Reads Fooocus' JSON scheme.
///
/// # Errors
/// Not JSON, or not a JSON object.
pub fn recover_from_json(json: &str) -> Result<Recovered, String> {
    let value: Value = serde_json::from_str(json).map_err(|err| format!("not JSON: {err}"))?;
    let Value::Object(meta) = value else {
        return Err("not a JSON object".to_owned());
    };
    Ok(recover_from_object(&meta))
}

fn recover_from_object(meta: &Map<String, Value>) -> Recovered {
    let mut found = Recovered::new(Source::Fooocus);
    let text = |key: &str| meta.get(key).and_then(as_text).unwrap_or_default();
    found.prompt = joined_list(meta.get("full_prompt")).unwrap_or_else(|| text("prompt"));
    found.negative =
        joined_list(meta.get("full_negative_prompt")).unwrap_or_else(|| text("negative_prompt"));
    if meta.get("full_prompt").and_then(Value::as_array).is_some_and(|list| list.len() > 1) {
        found.warn(
            "Fooocus encodes the prompt and each style separately; here they are joined with \
             \", \" into one prompt",
        );
    }
    found.steps = meta.get("steps").and_then(as_u32);
    found.cfg = meta.get("guidance_scale").and_then(as_f32);
    found.seed = meta.get("seed").and_then(as_u64);
    if let Some(resolution) = meta.get("resolution") {
        match parse_resolution(resolution) {
            Some((w, h)) => (found.width, found.height) = (Some(w), Some(h)),
            None => found.warn(format!("resolution {resolution} is not (width, height)")),
        }
    }
    found.model = text("base_model");
    let sampler = text("sampler");
    let scheduler = text("scheduler");
    if !sampler.is_empty() {
        let matched = foreign_samplers::from_comfy(&sampler, &scheduler);
        found.sampler = matched.kind;
        if let Some(warning) = matched.warning {
            found.warn(warning);
        }
    }
    found.sampler_name = sampler;
    found.scheduler = scheduler;
    if let Some(Value::Array(loras)) = meta.get("loras") {
        for lora in loras.iter().take(64) {
            if let Some([name, weight, ..]) = lora.as_array().map(Vec::as_slice)
                && let (Some(source), Some(weight)) = (name.as_str(), as_f32(weight))
            {
                found.loras.push(LoraSpec { source: source.to_owned(), weight });
            }
        }
    }
    let sharpness = meta.get("sharpness").and_then(as_text);
    let refiner = meta
        .get("refiner_model")
        .and_then(Value::as_str)
        .is_some_and(|name| !name.is_empty() && name != "None");
    note_fooocus_only(&mut found, sharpness.as_deref(), refiner);
    for (key, value) in meta {
        if !MAPPED_KEYS.contains(&key.as_str()) && !value.is_null() {
            found.extra.insert(key.clone(), to_extra_text(value));
        }
    }
    found
}

fn note_fooocus_only(found: &mut Recovered, sharpness: Option<&str>, refiner: bool) {
    if sharpness.is_some_and(|s| s.trim().parse::<f32>().is_ok_and(|v| v != 0.0)) {
        found.warn("Fooocus sharpness and ADM guidance have no equivalent here; not applied");
    }
    if refiner {
        found.warn("the Fooocus refiner pass is not reproduced");
    }
}

/// A list of strings joined with `", "` (Fooocus' own join); `None` when absent or empty.
fn joined_list(value: Option<&Value>) -> Option<String> {
    let items: Vec<String> = value?.as_array()?.iter().filter_map(as_text).collect();
    (!items.is_empty()).then(|| items.join(", "))
}

/// `"(1152, 896)"`, `"1152x896"`, or `[1152, 896]`.
fn parse_resolution(value: &Value) -> Option<(u32, u32)> {
    match value {
        Value::Array(items) => match items.as_slice() {
            [w, h] => Some((as_u32(w)?, as_u32(h)?)),
            _ => None,
        },
        Value::String(text) => {
            let inner = text.trim().trim_start_matches(['(', '[']).trim_end_matches([')', ']']);
            let (w, h) = inner.split_once(',').or_else(|| inner.split_once('x'))?;
            let strip = |s: &str| s.trim().trim_matches(['\'', '"']).trim().parse::<u32>().ok();
            Some((strip(w)?, strip(h)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SamplerKind;

    #[test]
    fn reads_the_json_scheme() {
        let json = r#"{"adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion",
            "base_model_hash": "aeb7e9e689", "full_negative_prompt": ["unrealistic", "blurry"],
            "full_prompt": ["a fox in snow", "cinematic still, moody"], "guidance_scale": 4.0,
            "loras": [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]],
            "metadata_scheme": "fooocus", "negative_prompt": "", "performance": "Speed",
            "prompt": "a fox in snow", "prompt_expansion": "a fox in snow, intricate",
            "refiner_model": "None", "refiner_switch": 0.5, "resolution": "(1152, 896)",
            "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras", "seed": "1234567890",
            "sharpness": 2.0, "steps": 30, "styles": "['Fooocus V2', 'Fooocus Enhance']",
            "vae": "Default (model)", "version": "Fooocus v2.5.5"}"#;
        let found = recover_from_json(json).expect("reads");
        assert_eq!(found.source, Source::Fooocus);
        assert_eq!(found.prompt, "a fox in snow, cinematic still, moody");
        assert_eq!(found.negative, "unrealistic, blurry");
        assert_eq!((found.width, found.height), (Some(1152), Some(896)));
        assert_eq!(
            (found.steps, found.cfg, found.seed),
            (Some(30), Some(4.0), Some(1_234_567_890))
        );
        assert_eq!(found.model, "juggernautXL_v8Rundiffusion");
        assert_eq!(found.sampler, None);
        assert_eq!(found.sampler_name, "dpmpp_2m_sde_gpu");
        assert_eq!(found.scheduler, "karras");
        assert_eq!(found.loras[0].source, "sd_xl_offset_example-lora_1.0");
        assert_eq!(found.extra.get("version").map(String::as_str), Some("Fooocus v2.5.5"));
        let joined = found.warnings.join("\n");
        assert!(joined.contains("sharpness") && joined.contains("joined"), "{joined}");
        assert!(!joined.contains("refiner"), "{joined}");
    }

    #[test]
    fn resolution_forms() {
        assert_eq!(parse_resolution(&Value::from("(1152, 896)")), Some((1152, 896)));
        assert_eq!(parse_resolution(&Value::from("('1024', '1024')")), Some((1024, 1024)));
        assert_eq!(parse_resolution(&serde_json::json!([832, 1216])), Some((832, 1216)));
        assert_eq!(parse_resolution(&Value::from("huge")), None);
        assert_eq!(
            recover_from_json(r#"{"sampler": "euler_ancestral", "scheduler": "normal"}"#)
                .expect("reads")
                .sampler,
            Some(SamplerKind::EulerA)
        );
    }
}
