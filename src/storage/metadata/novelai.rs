//! NovelAI's metadata, read into a [`Recovered`] request.
//!
//! NovelAI writes PNG text chunks `Title` ("AI generated image"), `Description` (the prompt),
//! `Software` ("NovelAI"), `Source` (the model and its hash, e.g. "Stable Diffusion XL
//! C1E1DE52"), `Generation time`, and `Comment`: a JSON object with `prompt`, `uc` (the
//! negative prompt), `steps`, `scale`, `seed`, `width`, `height`, `sampler` (`k_euler_ancestral`,
//! `k_dpmpp_2m`, …), `noise_schedule` (`native`, `karras`, `exponential`, `polyexponential`),
//! `cfg_rescale`, `uncond_scale`, `sm`/`sm_dyn`, `strength`/`noise` for img2img, and from V4 on
//! `v4_prompt`/`v4_negative_prompt` (`{"caption": {"base_caption": …, "char_captions": […]}}`).
//! The same object is also hidden in the alpha channel (`stealth_pngcomp`, see `stealth`).
//!
//! AUTOMATIC1111 reads these images as `Description` + `Negative prompt: uc` + steps, sampler,
//! scale, seed and the image's own size; this reader keeps every other field in `extra`.

use serde_json::{Map, Value};

use super::foreign_samplers;
use super::recover::{Recovered, Source};
use super::values::{as_f32, as_text, as_u32, as_u64, to_extra_text};

/// Keyword of the JSON settings chunk.
pub const COMMENT_KEY: &str = "Comment";
/// Keyword of the prompt chunk.
pub const DESCRIPTION_KEY: &str = "Description";
/// Keyword naming the tool (`NovelAI`).
pub const SOFTWARE_KEY: &str = "Software";
/// Keyword naming the model.
pub const SOURCE_KEY: &str = "Source";

const MAPPED_KEYS: [&str; 13] = [
    "prompt",
    "uc",
    "steps",
    "scale",
    "seed",
    "width",
    "height",
    "sampler",
    "noise_schedule",
    "strength",
    "v4_prompt",
    "v4_negative_prompt",
    "n_samples",
];

/// Whether chunks look like NovelAI's: `Software` says so, or a `Comment` object with NovelAI's
/// own keys (`uc` and `scale`) sits next to a `Source`.
pub fn is_novelai(software: Option<&str>, comment: Option<&str>, source: Option<&str>) -> bool {
    if software.is_some_and(|s| s.trim() == "NovelAI") {
        return true;
    }
    source.is_some()
        && comment.is_some_and(|c| {
            serde_json::from_str::<Value>(c)
                .is_ok_and(|v| v.get("uc").is_some() && v.get("scale").is_some())
        })
}

/// Reads NovelAI's `Comment` JSON, with `Description` as the prompt when the JSON has none,
/// `Source` as the model, and the image's size when the JSON has none.
///
/// # Errors
/// `Comment` is not a JSON object.
pub fn recover(
    comment: &str,
    description: Option<&str>,
    source: Option<&str>,
    image_size: Option<(u32, u32)>,
) -> Result<Recovered, String> {
    let value: Value = serde_json::from_str(comment).map_err(|err| format!("not JSON: {err}"))?;
    let Value::Object(meta) = value else {
        return Err("not a JSON object".to_owned());
    };
    Ok(recover_from_object(&meta, description, source, image_size))
}

fn base_caption(value: Option<&Value>) -> Option<(String, usize)> {
    let caption = value?.get("caption")?;
    let base = caption.get("base_caption").and_then(as_text)?;
    let characters = caption.get("char_captions").and_then(Value::as_array).map_or(0, |c| {
        c.iter()
            .filter(|item| {
                item.get("char_caption").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
            })
            .count()
    });
    Some((base, characters))
}

fn recover_from_object(
    meta: &Map<String, Value>,
    description: Option<&str>,
    source: Option<&str>,
    image_size: Option<(u32, u32)>,
) -> Recovered {
    let mut found = Recovered::new(Source::Novelai);
    let v4 = base_caption(meta.get("v4_prompt"));
    found.prompt = meta
        .get("prompt")
        .and_then(as_text)
        .or_else(|| v4.as_ref().map(|(base, _)| base.clone()))
        .or_else(|| description.map(str::to_owned))
        .unwrap_or_default();
    found.negative = meta
        .get("uc")
        .and_then(as_text)
        .or_else(|| base_caption(meta.get("v4_negative_prompt")).map(|(base, _)| base))
        .unwrap_or_default();
    if v4.as_ref().is_some_and(|(_, characters)| *characters > 0) {
        found.warn(
            "NovelAI V4 character prompts (placed regions) are not reproduced; only the base \
             prompt is used",
        );
    }
    found.steps = meta.get("steps").and_then(as_u32);
    found.cfg = meta.get("scale").and_then(as_f32);
    found.seed = meta.get("seed").and_then(as_u64);
    found.width = meta.get("width").and_then(as_u32).or(image_size.map(|(w, _)| w));
    found.height = meta.get("height").and_then(as_u32).or(image_size.map(|(_, h)| h));
    if let Some(source) = source {
        // "Stable Diffusion XL C1E1DE52": the name, then the model hash.
        let (name, hash) = match source.trim().rsplit_once(' ') {
            Some((name, hash))
                if hash.len() >= 6
                    && hash.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)) =>
            {
                (name.to_owned(), Some(hash.to_owned()))
            }
            _ => (source.trim().to_owned(), None),
        };
        found.model = name;
        if let Some(hash) = hash {
            found.extra.insert("Model hash".to_owned(), hash);
        }
        found.warn(format!(
            "NovelAI's own model ({}) is not available outside NovelAI; pick an SDXL model",
            source.trim()
        ));
    }
    let sampler = meta.get("sampler").and_then(Value::as_str).unwrap_or_default().to_owned();
    let schedule = meta.get("noise_schedule").and_then(Value::as_str).unwrap_or("native");
    if !sampler.is_empty() {
        let comfy_name = match sampler.strip_prefix("k_").unwrap_or(&sampler) {
            "ddim_v3" | "ddim" => "ddim".to_owned(),
            other => other.to_owned(),
        };
        let scheduler = if schedule == "native" { "normal" } else { schedule };
        let matched = foreign_samplers::from_comfy(&comfy_name, scheduler);
        found.sampler = matched.kind;
        if let Some(warning) = matched.warning {
            found.warn(warning.replace("ComfyUI", "NovelAI"));
        }
        found.sampler_name = sampler;
        schedule.clone_into(&mut found.scheduler);
    }
    if meta.get("strength").is_some_and(|v| !v.is_null()) && meta.get("noise").is_some() {
        found.strength = meta.get("strength").and_then(as_f32);
        found
            .warn("NovelAI img2img: the source image is not stored in the metadata; give it again");
    }
    let nonzero = |key: &str, neutral: f64| {
        meta.get(key).and_then(Value::as_f64).is_some_and(|v| (v - neutral).abs() > 1e-9)
    };
    if nonzero("cfg_rescale", 0.0) {
        found.warn("NovelAI CFG rescale is not reproduced");
    }
    if nonzero("uncond_scale", 1.0) {
        found.warn("NovelAI's negative-prompt strength (uncond_scale) is not reproduced");
    }
    if meta.get("sm").and_then(Value::as_bool) == Some(true) {
        found.warn("NovelAI SMEA is not reproduced");
    }
    found.warn(
        "NovelAI draws its noise with its own generator; the same seed gives different noise here",
    );
    for (key, value) in meta {
        if !MAPPED_KEYS.contains(&key.as_str()) && !value.is_null() && key != "signed_hash" {
            found.extra.insert(key.clone(), to_extra_text(value));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SamplerKind;

    const V3_COMMENT: &str = r#"{"prompt": "1girl, cherry blossoms, best quality, amazing quality",
        "steps": 28, "height": 1216, "width": 832, "scale": 5.0, "uncond_scale": 1.0,
        "cfg_rescale": 0.0, "seed": 2940596, "n_samples": 1, "hide_debug_overlay": false,
        "noise_schedule": "native", "legacy_v3_extend": false, "reference_information_extracted_multiple": [],
        "reference_strength_multiple": [], "sampler": "k_euler_ancestral", "controlnet_strength": 1.0,
        "controlnet_model": null, "dynamic_thresholding": false, "dynamic_thresholding_percentile": 0.999,
        "dynamic_thresholding_mimic_scale": 10.0, "sm": false, "sm_dyn": false, "skip_cfg_below_sigma": 0.0,
        "lora_unet_weights": null, "lora_clip_weights": null,
        "uc": "lowres, bad anatomy, {bad}", "request_type": "PromptGenerateRequest",
        "signed_hash": "abc"}"#;

    #[test]
    fn reads_a_v3_image() {
        let found = recover(
            V3_COMMENT,
            Some("1girl, cherry blossoms"),
            Some("Stable Diffusion XL C1E1DE52"),
            Some((832, 1216)),
        )
        .expect("reads");
        assert_eq!(found.source, Source::Novelai);
        assert_eq!(found.prompt, "1girl, cherry blossoms, best quality, amazing quality");
        assert_eq!(found.negative, "lowres, bad anatomy, {bad}");
        assert_eq!((found.steps, found.cfg, found.seed), (Some(28), Some(5.0), Some(2_940_596)));
        assert_eq!((found.width, found.height), (Some(832), Some(1216)));
        assert_eq!(found.sampler, Some(SamplerKind::EulerA));
        assert_eq!(found.sampler_name, "k_euler_ancestral");
        assert_eq!(found.model, "Stable Diffusion XL");
        assert_eq!(found.extra.get("Model hash").map(String::as_str), Some("C1E1DE52"));
        assert_eq!(
            found.extra.get("request_type").map(String::as_str),
            Some("PromptGenerateRequest")
        );
        assert!(!found.extra.contains_key("signed_hash"));
        assert!(found.warnings.iter().all(|w| !w.contains("rescale")), "{:?}", found.warnings);
    }

    #[test]
    fn v4_captions_img2img_and_karras() {
        let comment = r#"{"v4_prompt": {"caption": {"base_caption": "a forest", "char_captions":
            [{"char_caption": "girl", "centers": [{"x": 0.5, "y": 0.5}]}]}, "use_coords": false},
            "v4_negative_prompt": {"caption": {"base_caption": "blurry", "char_captions": []}},
            "steps": 23, "scale": 6, "seed": 1, "sampler": "k_dpmpp_2m", "noise_schedule":
            "karras", "strength": 0.7, "noise": 0.1, "cfg_rescale": 0.2}"#;
        let found = recover(comment, None, None, Some((1024, 1024))).expect("reads");
        assert_eq!(found.prompt, "a forest");
        assert_eq!(found.negative, "blurry");
        assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2mKarras));
        assert_eq!(found.strength, Some(0.7));
        assert_eq!((found.width, found.height), (Some(1024), Some(1024)));
        let joined = found.warnings.join("\n");
        assert!(joined.contains("character") && joined.contains("rescale"), "{joined}");
        assert!(recover("[1]", None, None, None).is_err());
        let plain = recover("{}", Some("p"), Some("Stable Diffusion XL"), None).expect("reads");
        assert_eq!(plain.model, "Stable Diffusion XL");
        assert_eq!(plain.prompt, "p");
    }

    #[test]
    fn detection() {
        assert!(is_novelai(Some("NovelAI"), None, None));
        assert!(is_novelai(None, Some(r#"{"uc": "", "scale": 5}"#), Some("NovelAI Diffusion V4")));
        assert!(!is_novelai(None, Some(r#"{"uc": ""}"#), Some("x")));
        assert!(!is_novelai(Some("GIMP"), Some("a comment"), None));
    }
}
