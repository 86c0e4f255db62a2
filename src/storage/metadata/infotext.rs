//! AUTOMATIC1111's "infotext": the `parameters` text Civitai and most readers understand.
//!
//! ```text
//! <prompt>
//! Negative prompt: <negative>
//! Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 1024x1024, …
//! ```

use super::GenerationInfo;
use crate::request::Mode;

/// Quotes a value the way A1111 does when it holds `,`, `:` or a quote: JSON string syntax.
pub fn quote_value(value: &str) -> String {
    if value.contains([',', ':', '"', '\n']) {
        serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""))
    } else {
        value.to_owned()
    }
}

/// Formats a float as A1111 does: `7` for 7.0, `7.5` for 7.5.
pub fn format_number(value: f32) -> String {
    format!("{value}")
}

/// The `parameters` text for an image.
pub fn format(info: &GenerationInfo) -> String {
    let mut text = info.prompt.clone();
    if !info.negative.is_empty() {
        text.push_str("\nNegative prompt: ");
        text.push_str(&info.negative);
    }
    let (sampler, schedule) = info.sampler.a1111_sampler_and_schedule();
    let mut fields: Vec<(&str, String)> =
        vec![("Steps", info.steps.to_string()), ("Sampler", sampler.to_owned())];
    if let Some(schedule) = schedule {
        fields.push(("Schedule type", schedule.to_owned()));
    }
    fields.push(("CFG scale", format_number(info.cfg)));
    fields.push(("Seed", info.seed.to_string()));
    fields.push(("Size", format!("{}x{}", info.width, info.height)));
    fields.push(("Model", info.model.clone()));
    if info.mode == Mode::Img2img
        && let Some(strength) = info.strength
    {
        fields.push(("Denoising strength", format_number(strength)));
    }
    if !info.profile.is_empty() {
        fields.push(("Style profile", info.profile.clone()));
    }
    if !info.loras.is_empty() {
        let loras: Vec<String> = info
            .loras
            .iter()
            .map(|l| format!("{}: {}", l.source, format_number(l.weight)))
            .collect();
        fields.push(("Lora weights", loras.join(", ")));
    }
    fields.push(("RNG", rng_label(&info.noise_source).to_owned()));
    fields.push(("Version", info.version.clone()));
    let line: Vec<String> =
        fields.into_iter().map(|(key, value)| format!("{key}: {}", quote_value(&value))).collect();
    text.push('\n');
    text.push_str(&line.join(", "));
    text
}

/// A1111's `RNG` value for our noise source: the torch CPU generator is A1111's `CPU`.
fn rng_label(noise_source: &str) -> &str {
    if noise_source == super::NOISE_SOURCE_TORCH_CPU { "CPU" } else { noise_source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::SamplerKind;

    #[test]
    fn formats_like_a1111() {
        let info = GenerationInfo {
            prompt: "a cat, cinematic".into(),
            negative: "blurry".into(),
            sampler: SamplerKind::Dpmpp2mKarras,
            steps: 30,
            cfg: 7.0,
            seed: 42,
            width: 1024,
            height: 1024,
            model: "SDXL Base 1.0".into(),
            profile: "Cinematic".into(),
            mode: Mode::Img2img,
            strength: Some(0.6),
            version: "imagelab 0.1.0".into(),
            ..GenerationInfo::default()
        };
        assert_eq!(
            format(&info),
            "a cat, cinematic\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, \
             CFG scale: 7, Seed: 42, Size: 1024x1024, Model: SDXL Base 1.0, Denoising strength: 0.6, \
             Style profile: Cinematic, RNG: CPU, Version: imagelab 0.1.0"
        );
    }

    #[test]
    fn quotes_values_with_separators() {
        assert_eq!(quote_value("Dark Fantasy / Grimdark"), "Dark Fantasy / Grimdark");
        assert_eq!(quote_value("a, b"), "\"a, b\"");
        assert_eq!(quote_value("x: \"y\""), "\"x: \\\"y\\\"\"");
    }
}
