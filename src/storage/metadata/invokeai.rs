//! InvokeAI's `invokeai_metadata` chunk (its `core_metadata` node, 3.x to 6.x), read into a
//! [`Recovered`] request.
//!
//! Shape (abridged): `{"generation_mode": "sdxl_txt2img", "positive_prompt": "…",
//! "negative_prompt": "…", "width": 1024, "height": 1024, "seed": 1, "rand_device": "cpu",
//! "cfg_scale": 7.5, "steps": 30, "scheduler": "dpmpp_2m_k", "model": {"name": "…", …},
//! "loras": [{"model": {"name": "…"}, "weight": 0.75}], "strength": 0.7, "app_version": "…"}`.
//! 3.x wrote `model: {"model_name": …}` and `loras: [{"lora": {"model_name": …}, …}]`.

use serde_json::{Map, Value};

use super::foreign_samplers;
use super::recover::{Recovered, Source};
use super::values::{as_f32, as_text, as_u32, as_u64, to_extra_text};
use crate::vocab::LoraSpec;

/// Keyword of InvokeAI's metadata chunk.
pub const METADATA_KEY: &str = "invokeai_metadata";

const MAPPED_KEYS: [&str; 12] = [
    "positive_prompt",
    "negative_prompt",
    "seed",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "scheduler",
    "model",
    "strength",
    "loras",
    "rand_device",
];

/// Reads the `invokeai_metadata` JSON.
///
/// # Errors
/// Not JSON, or not a JSON object.
pub fn recover_from_metadata(json: &str) -> Result<Recovered, String> {
    let value: Value = serde_json::from_str(json).map_err(|err| format!("not JSON: {err}"))?;
    let Value::Object(meta) = value else {
        return Err("not a JSON object".to_owned());
    };
    Ok(recover_from_object(&meta))
}

fn recover_from_object(meta: &Map<String, Value>) -> Recovered {
    let mut found = Recovered::new(Source::Invokeai);
    let text = |key: &str| meta.get(key).and_then(as_text).unwrap_or_default();
    found.prompt = text("positive_prompt");
    found.negative = text("negative_prompt");
    found.seed = meta.get("seed").and_then(as_u64);
    found.steps = meta.get("steps").and_then(as_u32);
    found.cfg = meta.get("cfg_scale").and_then(as_f32);
    found.width = meta.get("width").and_then(as_u32);
    found.height = meta.get("height").and_then(as_u32);
    for key in ["seed", "steps", "cfg_scale", "width", "height"] {
        if let Some(value) = meta.get(key)
            && !value.is_null()
            && as_f32(value).is_none()
        {
            found.warn(format!("{key} {value} is not a number; ignored"));
        }
    }
    found.model = meta.get("model").map(model_name).unwrap_or_default();
    let mode = text("generation_mode");
    if mode.contains("img2img") || mode.contains("inpaint") || mode.contains("outpaint") {
        found.strength = meta.get("strength").and_then(as_f32);
        found.warn(format!(
            "InvokeAI {mode}: the source image is not stored in the metadata; give it again"
        ));
    }
    let scheduler = text("scheduler");
    if !scheduler.is_empty() {
        let matched = foreign_samplers::from_invoke(&scheduler);
        found.sampler = matched.kind;
        if let Some(warning) = matched.warning {
            found.warn(warning);
        }
        found.sampler_name = scheduler;
    }
    if let Some(Value::Array(loras)) = meta.get("loras") {
        for lora in loras.iter().take(64) {
            let Some(entry) = lora.as_object() else { continue };
            let name = entry.get("model").or_else(|| entry.get("lora")).map(model_name);
            let weight = entry.get("weight").and_then(as_f32).unwrap_or(1.0);
            if let Some(source) = name.filter(|n| !n.is_empty()) {
                found.loras.push(LoraSpec { source, weight });
            }
        }
    }
    match meta.get("rand_device").and_then(Value::as_str) {
        Some("cpu") | None => {}
        Some(device) => found.warn(format!(
            "InvokeAI drew the noise on {device:?}; this lab's torch-CPU noise differs"
        )),
    }
    let style = text("positive_style_prompt");
    if !style.is_empty() && style != found.prompt {
        found.warn("SDXL style prompt differs from the prompt; this lab encodes one prompt");
    }
    if meta.get("refiner_model").is_some_and(|v| !v.is_null()) {
        found.warn("the SDXL refiner pass is not reproduced");
    }
    for (key, value) in meta {
        if !MAPPED_KEYS.contains(&key.as_str()) && !value.is_null() {
            found.extra.insert(key.clone(), to_extra_text(value));
        }
    }
    found
}

/// A model field: a name string, or an object with `name` (4.x+) or `model_name` (3.x).
fn model_name(value: &Value) -> String {
    match value {
        Value::String(name) => name.clone(),
        Value::Object(fields) => ["name", "model_name", "key"]
            .iter()
            .find_map(|key| fields.get(*key).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SamplerKind;

    #[test]
    fn reads_v5_sdxl_img2img() {
        let json = r#"{"generation_mode": "sdxl_img2img", "positive_prompt": "a lighthouse",
            "negative_prompt": "fog", "width": 1024, "height": 768, "seed": 4242,
            "rand_device": "cpu", "cfg_scale": 6.0, "cfg_rescale_multiplier": 0, "steps": 25,
            "scheduler": "dpmpp_2m_k", "model": {"key": "k1", "hash": "blake3:ab", "name":
            "Juggernaut XL", "base": "sdxl", "type": "main"}, "strength": 0.55,
            "init_image": "abc.png", "loras": [{"model": {"key": "k2", "name": "pixel-art-xl"},
            "weight": 0.8}], "app_version": "5.6.0"}"#;
        let found = recover_from_metadata(json).expect("reads");
        assert_eq!(found.source, Source::Invokeai);
        assert_eq!(found.prompt, "a lighthouse");
        assert_eq!(found.negative, "fog");
        assert_eq!((found.width, found.height, found.seed), (Some(1024), Some(768), Some(4242)));
        assert_eq!((found.steps, found.cfg), (Some(25), Some(6.0)));
        assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2mKarras));
        assert_eq!(found.model, "Juggernaut XL");
        assert_eq!(found.strength, Some(0.55));
        assert_eq!(found.loras, vec![LoraSpec { source: "pixel-art-xl".into(), weight: 0.8 }]);
        assert_eq!(found.extra.get("app_version").map(String::as_str), Some("5.6.0"));
        assert_eq!(found.extra.get("init_image").map(String::as_str), Some("abc.png"));
    }

    #[test]
    fn reads_v3_model_fields_and_rejects_non_objects() {
        let json = r#"{"app_version": "3.3.0post3", "generation_mode": "txt2img",
            "positive_prompt": "landscape", "seed": "356120443", "steps": 50,
            "scheduler": "dpmpp_2m_sde_k", "rand_device": "cuda",
            "model": {"model_name": "amixx", "base_model": "sd-1", "model_type": "main"}}"#;
        let found = recover_from_metadata(json).expect("reads");
        assert_eq!(found.model, "amixx");
        assert_eq!(found.seed, Some(356_120_443));
        assert_eq!(found.sampler, None);
        assert_eq!(found.sampler_name, "dpmpp_2m_sde_k");
        assert_eq!(found.strength, None);
        assert!(found.warnings.iter().any(|w| w.contains("cuda")), "{:?}", found.warnings);
        assert!(recover_from_metadata("[1, 2]").is_err());
        assert!(recover_from_metadata("{\"positive_prompt\": ").is_err());
    }
}
