//! AUTOMATIC1111's "infotext": the `parameters` text Civitai and most readers understand.
//!
//! ```text
//! <prompt>
//! Negative prompt: <negative>
//! Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 1024x1024, …
//! ```
//!
//! [`format`] writes it; [`parse_generation_parameters`] reads it with the semantics of A1111's
//! own reader (`modules/infotext_utils.py`), so what we read is what A1111 would paste, and what
//! we write reads back in A1111 as meant. `tools/reference/metadata/` holds an independent Python
//! mirror of A1111's reader; the recorded results are compared in `tests/it/metadata.rs`.

use std::fmt::Write as _;

use super::GenerationInfo;
use crate::vocab::{Mode, SamplerKind};

/// Quotes a value when it holds `,`, `:`, a quote or a line break: JSON string syntax, non-ASCII
/// kept as is (A1111's `quote` with `ensure_ascii=False`). We also quote values with a `"` (so a
/// value that happens to start and end with one is not unquoted by the reader) or with
/// whitespace at either end (which the reader would strip), so every value reads back exactly.
pub fn quote_value(value: &str) -> String {
    let padded = value.starts_with(is_py_space) || value.ends_with(is_py_space);
    if padded || value.contains([',', ':', '"', '\n']) {
        // A string always serialises; the fallback only keeps the function total.
        serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""))
    } else {
        value.to_owned()
    }
}

/// Formats a float as A1111 does: `7` for 7.0, `7.5` for 7.5.
pub fn format_number(value: f32) -> String {
    format!("{value}")
}

/// A1111's `Sampler` and `Schedule type` for one of our samplers.
///
/// A1111 ≥ 1.9 reads a `DPM++ 2M` without a schedule type as its automatic schedule, which is
/// Karras for that sampler; our plain `dpmpp_2m` therefore says `Uniform` explicitly.
pub fn a1111_sampler_fields(sampler: SamplerKind) -> (&'static str, Option<&'static str>) {
    match sampler {
        SamplerKind::Dpmpp2m => ("DPM++ 2M", Some("Uniform")),
        other => other.a1111_sampler_and_schedule(),
    }
}

/// The `parameters` text for an image.
pub fn format(info: &GenerationInfo) -> String {
    let mut text = info.prompt.clone();
    // A1111 keeps each LoRA as a `<lora:name:weight>` tag in the prompt (its name: the file
    // stem) and lists the hashes in `Lora hashes`.
    let names: Vec<String> = info
        .loras
        .iter()
        .enumerate()
        .map(|(i, lora)| match info.lora_hashes.get(i) {
            Some(known) if !known.name.is_empty() => known.name.clone(),
            _ => crate::models::lora::lora_name(std::path::Path::new(&lora.source)),
        })
        .collect();
    for (name, lora) in names.iter().zip(&info.loras) {
        if !text.is_empty() {
            text.push(' ');
        }
        let _ = write!(text, "<lora:{name}:{}>", format_number(lora.weight));
    }
    if !info.negative.is_empty() {
        text.push_str("\nNegative prompt: ");
        text.push_str(&info.negative);
    }
    let (sampler, mut schedule) = a1111_sampler_fields(info.sampler);
    // A schedule chosen on its own (A1111 ≥ 1.9's "Schedule type") is what ran.
    if info.schedule_type != crate::vocab::SigmaSchedule::Automatic {
        schedule = Some(info.schedule_type.a1111_name());
    }
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
        let hashes: Vec<String> = names
            .iter()
            .zip(&info.lora_hashes)
            .filter(|(_, known)| !known.hash.is_empty())
            .map(|(name, known)| format!("{name}: {}", known.hash))
            .collect();
        if !hashes.is_empty() {
            fields.push(("Lora hashes", hashes.join(", ")));
        }
    }
    fields.push(("RNG", rng_label(&info.noise_source).to_owned()));
    fields.push(("Version", info.version.clone()));
    // An empty value would be dropped by A1111's reader; leave such fields out.
    let line: Vec<String> = fields
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| format!("{key}: {}", quote_value(&value)))
        .collect();
    text.push('\n');
    text.push_str(&line.join(", "));
    text
}

/// A1111's `RNG` value for our noise source: the torch CPU generator is A1111's `CPU`.
fn rng_label(noise_source: &str) -> &str {
    if noise_source == super::NOISE_SOURCE_TORCH_CPU { "CPU" } else { noise_source }
}

/// Infotext split the way A1111's `parse_generation_parameters` splits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedInfotext {
    /// Every line before `Negative prompt:` (each stripped, joined with `\n`).
    pub prompt: String,
    /// `Negative prompt:` and every line after it, up to the parameter line.
    pub negative: String,
    /// The parameter line's `key: value` pairs in first-seen order, later duplicates replacing
    /// earlier values; quoted values unquoted; `WxH` values split into `key-1` and `key-2`.
    pub fields: Vec<(String, String)>,
}

impl ParsedInfotext {
    /// The value of a field, when present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: String, value: String) {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
    }
}

/// Python's `str.isspace`, which both `str.strip()` and the regex `\s` use.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// Python's regex `\w` on text (close: Rust's alphanumeric classes differ on a few marks).
fn is_py_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A character of A1111's key pattern `[\w \-/]`.
fn is_key_char(c: char) -> bool {
    is_py_word(c) || c == ' ' || c == '-' || c == '/'
}

/// `re.findall` of A1111's parameter pattern
/// `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)` over one line, in linear time.
///
/// A failed attempt at one start position fails at every start up to the end of the key-like run
/// it scanned, so the scan skips there; the closing quote of a quoted value is precomputed for
/// every position in one backward pass.
#[allow(clippy::cast_possible_truncation, reason = "indices are checked to fit in u32 first")]
pub fn find_param_pairs(line: &str) -> Vec<(String, String)> {
    // closing[i]: where a quoted body starting at i ends (index of its closing quote), or
    // NO_CLOSE; u32 keeps this table at 4 bytes a character for megabyte lines.
    const NO_CLOSE: u32 = u32::MAX;
    let chars: Vec<char> = line.chars().collect();
    let n = chars.len();
    if u32::try_from(n).is_err() {
        return Vec::new();
    }
    let mut closing: Vec<u32> = vec![NO_CLOSE; n + 2];
    for i in (0..n).rev() {
        closing[i] = match chars[i] {
            // n fits in u32 (checked above), so every index does.
            '"' => i as u32,
            '\\' if i + 1 < n && chars[i + 1] != '\n' => closing[i + 2],
            '\\' => NO_CLOSE,
            _ => closing[i + 1],
        };
    }
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < n {
        let mut key_start = pos;
        while key_start < n && is_py_space(chars[key_start]) {
            key_start += 1;
        }
        if key_start >= n || !is_py_word(chars[key_start]) {
            pos = key_start.max(pos + 1);
            continue;
        }
        let mut key_end = key_start + 1;
        while key_end < n && is_key_char(chars[key_end]) {
            key_end += 1;
        }
        if key_end - key_start < 2 || key_end >= n || chars[key_end] != ':' {
            pos = key_end.max(pos + 1);
            continue;
        }
        let mut value_start = key_end + 1;
        while value_start < n && is_py_space(chars[value_start]) {
            value_start += 1;
        }
        let quoted_end = (value_start < n && chars[value_start] == '"')
            .then(|| closing[value_start + 1])
            .filter(|&close| close != NO_CLOSE)
            .map(|close| close as usize)
            .filter(|&close| {
                close > value_start + 1 && (close + 1 == n || chars[close + 1] == ',')
            });
        let value_end = match quoted_end {
            Some(close) => close + 1,
            None => {
                chars[value_start..].iter().position(|&c| c == ',').map_or(n, |at| value_start + at)
            }
        };
        pairs.push((
            chars[key_start..key_end].iter().collect(),
            chars[value_start..value_end].iter().collect(),
        ));
        pos = if value_end < n { value_end + 1 } else { n };
    }
    pairs
}

/// A1111's `unquote`: a value in double quotes is read as a JSON string when it is one.
fn unquote(value: &str) -> String {
    if value.len() >= 2
        && value.starts_with('"')
        && value.ends_with('"')
        && let Ok(text) = serde_json::from_str::<String>(value)
    {
        return text;
    }
    value.to_owned()
}

/// `^(\d+)x(\d+)$` (ASCII digits).
fn split_size(value: &str) -> Option<(&str, &str)> {
    let (w, h) = value.split_once('x')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(w) && digits(h)).then_some((w, h))
}

/// Reads infotext as A1111's `parse_generation_parameters` does, without its UI defaults:
/// the last line is the parameter line only when it holds at least three `key: value` pairs;
/// lines before it are the prompt until one starts with `Negative prompt:`.
pub fn parse_generation_parameters(text: &str) -> ParsedInfotext {
    let mut parsed = ParsedInfotext::default();
    let mut lines: Vec<&str> = text.trim_matches(is_py_space).split('\n').collect();
    let mut pairs = Vec::new();
    if let Some(last) = lines.pop() {
        pairs = find_param_pairs(last);
        if pairs.len() < 3 {
            lines.push(last);
            pairs.clear();
        }
    }
    let mut in_negative = false;
    for line in lines {
        let mut line = line.trim_matches(is_py_space);
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            line = rest.trim_matches(is_py_space);
        }
        let target = if in_negative { &mut parsed.negative } else { &mut parsed.prompt };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    for (key, value) in pairs {
        // A1111 indexes v[0] and skips the pair when that fails: empty values are dropped.
        if value.is_empty() {
            continue;
        }
        let value = unquote(&value);
        match split_size(&value) {
            Some((w, h)) => {
                parsed.set(format!("{key}-1"), w.to_owned());
                parsed.set(format!("{key}-2"), h.to_owned());
            }
            None => parsed.set(key, value),
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_info() -> GenerationInfo {
        GenerationInfo {
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
        }
    }

    #[test]
    fn formats_like_a1111() {
        assert_eq!(
            format(&sample_info()),
            "a cat, cinematic\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M, Schedule \
             type: Karras, CFG scale: 7, Seed: 42, Size: 1024x1024, Model: SDXL Base 1.0, \
             Denoising strength: 0.6, Style profile: Cinematic, RNG: CPU, Version: imagelab 0.1.0"
        );
    }

    #[test]
    fn txt2img_has_no_denoising_strength_and_plain_dpmpp_2m_says_uniform() {
        let info = GenerationInfo {
            mode: Mode::Txt2img,
            strength: Some(0.6),
            sampler: SamplerKind::Dpmpp2m,
            ..sample_info()
        };
        let text = format(&info);
        assert!(!text.contains("Denoising strength"), "{text}");
        assert!(text.contains("Sampler: DPM++ 2M, Schedule type: Uniform,"), "{text}");
    }

    #[test]
    fn quotes_values_with_separators() {
        assert_eq!(quote_value("Dark Fantasy / Grimdark"), "Dark Fantasy / Grimdark");
        assert_eq!(quote_value("a, b"), "\"a, b\"");
        assert_eq!(quote_value("x: \"y\""), "\"x: \\\"y\\\"\"");
        assert_eq!(quote_value("Kätzchen, 猫"), "\"Kätzchen, 猫\"");
        assert_eq!(quote_value(" padded\t"), "\" padded\\t\"");
    }

    #[test]
    fn parses_what_it_writes() {
        let info = GenerationInfo {
            profile: "Odd, \"quoted\": profile".into(),
            model: "C:\\models\\x.safetensors".into(),
            version: " imagelab 0.1.0 ".into(),
            ..sample_info()
        };
        let parsed = parse_generation_parameters(&format(&info));
        assert_eq!(parsed.prompt, "a cat, cinematic");
        assert_eq!(parsed.negative, "blurry");
        assert_eq!(parsed.get("Style profile"), Some("Odd, \"quoted\": profile"));
        assert_eq!(parsed.get("Model"), Some("C:\\models\\x.safetensors"));
        assert_eq!(parsed.get("Version"), Some(" imagelab 0.1.0 "));
        assert_eq!(parsed.get("Size-1"), Some("1024"));
        assert_eq!(parsed.get("Size-2"), Some("1024"));
        assert_eq!(parsed.get("Schedule type"), Some("Karras"));
    }

    #[test]
    fn multi_line_prompts_and_short_last_lines() {
        let parsed = parse_generation_parameters(
            "  line one\nline two \nNegative prompt: bad\n  worse\nSteps: 20, Sampler: Euler a, \
             CFG scale: 7\n",
        );
        assert_eq!(parsed.prompt, "line one\nline two");
        assert_eq!(parsed.negative, "bad\nworse");
        // Fewer than three pairs: the last line belongs to the prompt.
        let parsed = parse_generation_parameters("a photo\nSteps: 20, Seed: 1");
        assert_eq!(parsed.prompt, "a photo\nSteps: 20, Seed: 1");
        assert!(parsed.fields.is_empty());
    }

    #[test]
    fn pair_scanner_follows_the_regex() {
        let pairs = find_param_pairs(
            "Steps: 20, Lora hashes: \"a: 1, b: 2\", x: 1, Hires upscale: 2,  Empty: , Bad \
             \"quote: \"q\" r, Last: \"end\"",
        );
        let expected = [
            ("Steps", "20"),
            ("Lora hashes", "\"a: 1, b: 2\""),
            // single-character keys never match: "x: 1" is skipped
            ("Hires upscale", "2"),
            ("Empty", ""),
            ("quote", "\"q\" r"),
            ("Last", "\"end\""),
        ];
        let got: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn pathological_lines_stay_linear() {
        let long_word = "a".repeat(200_000);
        assert!(find_param_pairs(&long_word).is_empty());
        let unclosed = "kk: \"aaaa, ".repeat(50_000);
        assert_eq!(find_param_pairs(&unclosed).len(), 50_000);
    }
}
