//! AUTOMATIC1111's `parameters` infotext, read into a [`Recovered`] request.
//!
//! The text is split exactly as A1111 splits it ([`infotext::parse_generation_parameters`]);
//! this module maps the common keys to our settings and keeps every other key in `extra`.

use super::foreign_samplers;
use super::infotext::{self, ParsedInfotext};
use super::recover::{Recovered, Source};
use super::values::{parse_f32, parse_u32, parse_u64};

/// Keys this module turns into settings (all others land in `extra`).
const MAPPED_KEYS: [&str; 12] = [
    "Steps",
    "Sampler",
    "Schedule type",
    "Scheduler",
    "CFG scale",
    "Seed",
    "Size-1",
    "Size-2",
    "Model",
    "Denoising strength",
    "Style profile",
    "Lora weights",
];

/// Reads A1111 infotext. Never fails: missing or unreadable values become warnings.
pub fn recover_from_parameters(text: &str) -> Recovered {
    let parsed = infotext::parse_generation_parameters(text);
    recover_from_parsed(&parsed, Source::Automatic1111)
}

/// Maps already split infotext to a request; `source` is A1111 or a tool that writes its form
/// (Fooocus' A1111 scheme adds `Scheduler` with ComfyUI scheduler names and needs no RNG note).
pub fn recover_from_parsed(parsed: &ParsedInfotext, source: Source) -> Recovered {
    let mut found = Recovered::new(source);
    found.prompt.clone_from(&parsed.prompt);
    found.negative.clone_from(&parsed.negative);
    if parsed.fields.is_empty() {
        found.warn("no parameter line (Steps, Sampler, Seed …) found: only the prompt is known");
    }
    found.steps = number(&mut found, parsed, "Steps", parse_u32);
    found.cfg = number(&mut found, parsed, "CFG scale", parse_f32);
    found.seed = number(&mut found, parsed, "Seed", parse_u64);
    found.width = number(&mut found, parsed, "Size-1", parse_u32);
    found.height = number(&mut found, parsed, "Size-2", parse_u32);
    if parsed.get("Size-1").is_none()
        && let Some(size) = parsed.get("Size")
    {
        found.warn(format!("Size {size:?} is not WIDTHxHEIGHT"));
    }
    if let Some(model) = parsed.get("Model") {
        model.clone_into(&mut found.model);
    }
    if let Some(sampler) = parsed.get("Sampler") {
        sampler.clone_into(&mut found.sampler_name);
        let schedule = parsed.get("Schedule type").or_else(|| parsed.get("Scheduler"));
        if let Some(schedule) = schedule {
            schedule.clone_into(&mut found.scheduler);
        }
        let matched = foreign_samplers::from_a1111(sampler, schedule);
        found.sampler = matched.kind;
        if let Some(warning) = matched.warning {
            found.warn(warning);
        }
    }
    let hires = parsed.fields.iter().any(|(key, _)| key.starts_with("Hires"));
    if let Some(strength) = number(&mut found, parsed, "Denoising strength", parse_f32) {
        if hires {
            found.warn(format!(
                "hires fix (second pass, denoising strength {strength}) is not reproduced: the \
                 first pass runs at the recorded size"
            ));
            found.extra.insert("Denoising strength".to_owned(), strength.to_string());
        } else {
            found.strength = Some(strength);
            found.warn("img2img: the source image is not stored in the metadata; give it again");
        }
    }
    if let Some(profile) = parsed.get("Style profile") {
        found.profile = Some(profile.to_owned());
    }
    if let Some(weights) = parsed.get("Lora weights") {
        found.loras = parse_lora_weights(weights);
    }
    // `<lora:name:weight>` tags: the LoRAs A1111 applied (by name, looked up in the LoRA
    // folders on a re-run), taken out of the prompt; our own `Lora weights` say where each
    // came from, when present.
    if found.prompt.contains('<') {
        match crate::vocab::split_lora_tags(&found.prompt) {
            Ok((_, tagged)) if tagged.is_empty() => {}
            Ok((prompt, tagged)) => {
                found.prompt = prompt;
                if found.loras.is_empty() {
                    found.loras = tagged;
                }
            }
            Err(err) => found.warn(format!("a LoRA tag of the prompt is not read: {err}")),
        }
    }
    match parsed.get("RNG") {
        // Fooocus draws its noise with torch's CPU generator, as this lab does.
        _ if source == Source::Fooocus => {}
        Some("CPU") => {}
        Some(other) => found.warn(format!(
            "A1111 RNG {other:?}: the initial noise differs from this lab's torch-CPU noise"
        )),
        None => found.warn(
            "no RNG recorded: A1111's default draws noise on the GPU, so the same seed gives \
             different noise here",
        ),
    }
    if let Some(clip_skip) = parsed.get("Clip skip")
        && clip_skip.trim() != "1"
    {
        found.warn(format!(
            "Clip skip {clip_skip} is not supported; the prompt is encoded as usual"
        ));
    }
    for (key, value) in &parsed.fields {
        if !MAPPED_KEYS.contains(&key.as_str()) {
            found.extra.insert(key.clone(), value.clone());
        }
    }
    found
}

/// A numeric field; a present but unreadable value is a warning and kept in `extra`.
fn number<T>(
    found: &mut Recovered,
    parsed: &ParsedInfotext,
    key: &str,
    parse: fn(&str) -> Option<T>,
) -> Option<T> {
    let text = parsed.get(key)?;
    let value = parse(text);
    if value.is_none() {
        found.warn(format!("{key} {text:?} is not a valid number; ignored"));
        found.extra.insert(key.to_owned(), text.to_owned());
    }
    value
}

/// `name: 0.8, other: 1` (our `Lora weights`, Fooocus' too).
pub(crate) fn parse_lora_weights(text: &str) -> Vec<crate::vocab::LoraSpec> {
    text.split(", ")
        .filter_map(|item| {
            let (source, weight) = item.rsplit_once(':')?;
            Some(crate::vocab::LoraSpec {
                source: source.trim().to_owned(),
                weight: parse_f32(weight)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SamplerKind;

    const A1111_SDXL: &str = "masterpiece, a castle on a hill,\n(golden hour:1.2), \
        <lora:detail:0.5>\nNegative prompt: lowres, bad anatomy\nSteps: 28, Sampler: DPM++ 2M, \
        Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 832x1216, Model hash: \
        31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, \
        Clip skip: 2, Lora hashes: \"detail: 7bd2ab4e3f1c\", TI hashes: \"easyneg: \
        c74b4e810b03\", Hashes: \"{\\\"vae\\\": \\\"235745af8d\\\", \\\"model\\\": \
        \\\"31e35c80fc\\\"}\", Version: v1.10.1";

    #[test]
    fn reads_a_typical_a1111_sdxl_infotext() {
        let found = recover_from_parameters(A1111_SDXL);
        // The `<lora:…>` tag is the LoRA A1111 applied, taken out of the prompt.
        assert_eq!(found.prompt, "masterpiece, a castle on a hill,\n(golden hour:1.2)");
        assert_eq!(found.loras, [crate::vocab::LoraSpec { source: "detail".into(), weight: 0.5 }]);
        assert_eq!(found.negative, "lowres, bad anatomy");
        assert_eq!(found.steps, Some(28));
        assert_eq!(found.cfg, Some(6.5));
        assert_eq!(found.seed, Some(3_141_592_653));
        assert_eq!((found.width, found.height), (Some(832), Some(1216)));
        assert_eq!(found.model, "sd_xl_base_1.0");
        assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2mKarras));
        assert_eq!(found.scheduler, "Karras");
        assert_eq!(found.strength, None);
        assert_eq!(
            found.extra.get("Lora hashes").map(String::as_str),
            Some("detail: 7bd2ab4e3f1c")
        );
        assert_eq!(found.extra.get("TI hashes").map(String::as_str), Some("easyneg: c74b4e810b03"));
        assert_eq!(found.extra.get("Version").map(String::as_str), Some("v1.10.1"));
        assert_eq!(found.extra.get("Model hash").map(String::as_str), Some("31e35c80fc"));
        assert_eq!(
            found.extra.get("Hashes").map(String::as_str),
            Some("{\"vae\": \"235745af8d\", \"model\": \"31e35c80fc\"}")
        );
        let joined = found.warnings.join("\n");
        assert!(joined.contains("Clip skip 2"), "{joined}");
        assert!(joined.contains("RNG"), "{joined}");
    }

    #[test]
    fn hires_denoising_is_not_img2img() {
        let found = recover_from_parameters(
            "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, \
             Denoising strength: 0.45, Hires upscale: 2, Hires steps: 10, Hires upscaler: \
             Latent, RNG: CPU",
        );
        assert_eq!(found.strength, None);
        assert_eq!(found.extra.get("Hires upscale").map(String::as_str), Some("2"));
        assert!(found.warnings.iter().any(|w| w.contains("hires fix")), "{:?}", found.warnings);
        let img2img = recover_from_parameters(
            "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising \
             strength: 0.6",
        );
        assert_eq!(img2img.strength, Some(0.6));
    }

    #[test]
    fn bad_numbers_are_warnings() {
        let found = recover_from_parameters("x\nSteps: many, Sampler: Foo, Seed: -5, Size: big");
        assert_eq!(found.steps, None);
        assert_eq!(found.seed, None);
        assert_eq!(found.sampler, None);
        assert_eq!(found.sampler_name, "Foo");
        assert_eq!(found.extra.get("Steps").map(String::as_str), Some("many"));
        let joined = found.warnings.join("\n");
        assert!(joined.contains("Steps \"many\"") && joined.contains("Seed \"-5\""), "{joined}");
        assert!(joined.contains("\"Foo\"") && joined.contains("Size \"big\""), "{joined}");
    }
}
