//! Writer against reader: whatever the prompt, profile or model text, A1111's reading of our
//! infotext gives back every setting, and the prompts as A1111 normalises them (lines stripped).

use imagelab::storage::metadata::{GenerationInfo, infotext};
use imagelab::vocab::{Mode, SamplerKind};

fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}'))
}

/// What A1111 makes of a prompt: each line stripped, leading blank lines gone.
fn normalised(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').map(py_strip).collect();
    let first = lines.iter().position(|l| !l.is_empty()).unwrap_or(lines.len());
    lines[first..].join("\n")
}

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    let mut parts = text.split('\u{0}');
    let prompt = parts.next().unwrap_or_default().to_owned();
    let negative = parts.next().unwrap_or_default().to_owned();
    let profile = parts.next().unwrap_or_default().to_owned();
    let model = parts.next().unwrap_or_default().to_owned();
    let seed = text.len() as u64 * 7919;
    let sampler = SamplerKind::ALL[text.len() % SamplerKind::ALL.len()];
    let info = GenerationInfo {
        prompt,
        negative,
        profile,
        model,
        seed,
        sampler,
        cfg: (text.len() % 40) as f32 / 4.0,
        mode: if text.len().is_multiple_of(2) { Mode::Img2img } else { Mode::Txt2img },
        strength: Some(0.25),
        ..GenerationInfo::default()
    };
    let written = infotext::format(&info);
    let parsed = infotext::parse_generation_parameters(&written);
    // A1111 takes any line starting with `Negative prompt:` (prompt or negative) as that marker
    // and drops it: such prompts cannot survive infotext (our JSON chunk keeps them).
    let marker = |text: &str| text.split('\n').any(|l| py_strip(l).starts_with("Negative prompt:"));
    if !marker(&info.prompt) && !marker(&info.negative) {
        assert_eq!(parsed.prompt, normalised(&info.prompt), "{written:?}");
        assert_eq!(parsed.negative, normalised(&info.negative), "{written:?}");
    }
    let seed_text = seed.to_string();
    assert_eq!(parsed.get("Seed"), Some(seed_text.as_str()), "{written:?}");
    assert_eq!(parsed.get("Size-1"), Some("1024"));
    let is_size = |v: &str| {
        v.split_once('x').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        })
    };
    for (key, value) in [("Style profile", &info.profile), ("Model", &info.model)] {
        if !value.is_empty() && !is_size(value) {
            assert_eq!(parsed.get(key), Some(value.as_str()), "{key} in {written:?}");
        }
    }
}
