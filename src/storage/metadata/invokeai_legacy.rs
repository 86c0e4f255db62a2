//! InvokeAI 2.x (and its `lstein/stable-diffusion` predecessor): the `Dream` command line and
//! the `sd-metadata` JSON (its "RFC 266" record), read into a [`Recovered`] request.
//!
//! `ldm/invoke/pngwriter.py` writes both as PNG text chunks:
//! - `Dream`: `"a castle [blurry, lowres]" -s 50 -S 42 -W 512 -H 512 -C 7.5 -A k_lms` (2.0–2.2
//!   quote the prompt; 2.3's `dream_prompt_str` writes it bare), parsed as `Args.parse_cmd` does
//!   (shell-like split, `#` starts a comment such as a grid's seed list);
//! - `sd-metadata`: `{"model": "stable diffusion", "model_weights": …, "model_hash": …,
//!   "app_id": "invoke-ai/InvokeAI", "app_version": "2.3.5", "image": {"prompt": [{"prompt": …,
//!   "weight": 1.0}], "steps": 50, "cfg_scale": 7.5, "threshold": 0, "perlin": 0, "width": 512,
//!   "height": 512, "seed": 42, "seamless": false, "hires_fix": false, "type": "txt2img",
//!   "postprocessing": null, "sampler": "k_lms", "variations": []}}` (`images` for grids).
//!
//! Words in square brackets are InvokeAI 2.x's negative prompt. Its k-diffusion samplers used
//! Karras sigmas below `--karras_max` steps (30 by default) and the model's own above.

use serde_json::{Map, Value};

use super::foreign_samplers::{self, SamplerMatch};
use super::recover::{Recovered, Source};
use super::values::{as_f32, as_u32, as_u64, parse_f32, parse_u32, parse_u64, to_extra_text};

/// Keyword of the command-line chunk.
pub const DREAM_KEY: &str = "Dream";
/// Keyword of the JSON chunk.
pub const SD_METADATA_KEY: &str = "sd-metadata";

/// InvokeAI 2.x's `STEP_THRESHOLD`: k-samplers use Karras sigmas below this many steps.
const KARRAS_MAX_DEFAULT: u32 = 30;

const MAPPED_IMAGE_KEYS: [&str; 10] = [
    "prompt",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "seed",
    "sampler",
    "strength",
    "strength_steps",
    "type",
];

/// Splits InvokeAI 2.x's prompt into (prompt, negative): every `[…]` group is negative.
pub fn split_negative(combined: &str) -> (String, String) {
    let mut positive = Vec::new();
    let mut negative = Vec::new();
    let mut rest = combined;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open + 1..].find(']').map(|at| open + 1 + at) else { break };
        // A nested `[` restarts the group, as the regex `\[([^\[]*)\]` does.
        let inner_open = rest[open + 1..close].rfind('[').map_or(open, |at| open + 1 + at);
        positive.push(&rest[..inner_open]);
        negative.push(&rest[inner_open + 1..close]);
        rest = &rest[close + 1..];
    }
    positive.push(rest);
    let clean = |parts: Vec<&str>| -> String {
        parts
            .into_iter()
            .map(|p| p.trim_matches([' ', ',']))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    };
    (clean(positive), clean(negative))
}

/// InvokeAI 2.x sampler names (`k_lms`, `k_euler_a`, `k_dpmpp_2`, `ddim`, `plms`, and 2.3's
/// diffusers names) mapped to ours; `steps` and `karras_max` decide the k-samplers' sigmas.
fn map_sampler(name: &str, steps: Option<u32>, karras_max: u32) -> SamplerMatch {
    let trimmed = name.trim();
    let (family, k_sampler) = match trimmed {
        "k_lms" => ("lms", true),
        "k_euler" => ("euler", true),
        "k_euler_a" => ("euler_a", true),
        "k_heun" => ("heun", true),
        "k_dpmpp_2" => ("dpmpp_2m", true),
        other => (other, false),
    };
    if !k_sampler {
        // 2.3's diffusers schedulers use InvokeAI's current names (`lms_k`, `euler_a`, `ddim`…).
        let matched = foreign_samplers::from_invoke(trimmed);
        return match matched.kind {
            Some(_) => matched,
            None => SamplerMatch {
                kind: None,
                warning: Some(format!(
                    "InvokeAI 2.x sampler {trimmed:?} has no equivalent here; kept as text"
                )),
            },
        };
    }
    let karras = steps.is_some_and(|s| s < karras_max);
    let invoke_key = if karras { format!("{family}_k") } else { family.to_owned() };
    let mut matched = foreign_samplers::from_invoke(&invoke_key);
    if karras && matched.warning.is_none() {
        return matched;
    }
    if karras {
        matched.warning = Some(format!(
            "InvokeAI 2.x ran {trimmed} with Karras sigmas (fewer than {karras_max} steps); \
             {}",
            matched.warning.unwrap_or_default()
        ));
    }
    matched
}

/// Reads the `sd-metadata` JSON.
///
/// # Errors
/// Not JSON, not an object, or without an `image` (or `images`) object.
pub fn recover_from_sd_metadata(json: &str) -> Result<Recovered, String> {
    let value: Value = serde_json::from_str(json).map_err(|err| format!("not JSON: {err}"))?;
    let Value::Object(meta) = value else {
        return Err("not a JSON object".to_owned());
    };
    let image = match (meta.get("image"), meta.get("images")) {
        (Some(Value::Object(image)), _) => image,
        (_, Some(Value::Array(images))) => match images.first() {
            Some(Value::Object(image)) => image,
            _ => return Err("`images` holds no image record".to_owned()),
        },
        _ => return Err("no `image` record".to_owned()),
    };
    let mut found = Recovered::new(Source::Invokeai);
    if meta.get("images").is_some_and(Value::is_array) && meta.get("image").is_none() {
        found.warn("an InvokeAI 2.x grid: the settings of its first image are used");
    }
    let prompt_text = match image.get("prompt") {
        Some(Value::Array(parts)) => {
            let parts: Vec<(String, Option<f32>)> = parts
                .iter()
                .filter_map(|p| {
                    let text = p.get("prompt")?.as_str()?.to_owned();
                    Some((text, p.get("weight").and_then(as_f32)))
                })
                .collect();
            if parts.len() > 1 {
                found.warn(
                    "InvokeAI 2.x weighted sub-prompts (prompt:weight) are joined; weights are \
                     not applied here",
                );
                parts
                    .iter()
                    .map(|(p, w)| format!("{p}:{}", w.unwrap_or(1.0)))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                parts.into_iter().next().map(|(p, _)| p).unwrap_or_default()
            }
        }
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    };
    (found.prompt, found.negative) = split_negative(&prompt_text);
    found.steps = image.get("steps").and_then(as_u32);
    found.cfg = image.get("cfg_scale").and_then(as_f32);
    found.width = image.get("width").and_then(as_u32);
    found.height = image.get("height").and_then(as_u32);
    found.seed = image.get("seed").and_then(as_u64);
    ["model_weights", "model_id", "model"]
        .iter()
        .find_map(|key| meta.get(*key).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or_default()
        .clone_into(&mut found.model);
    if let Some(sampler) = image.get("sampler").and_then(Value::as_str) {
        apply_sampler(&mut found, sampler, KARRAS_MAX_DEFAULT);
    }
    let kind = image.get("type").and_then(Value::as_str).unwrap_or("txt2img");
    if kind != "txt2img" {
        found.strength =
            image.get("strength").or_else(|| image.get("strength_steps")).and_then(as_f32);
        found.warn(format!(
            "InvokeAI 2.x {kind}: the source image is not stored in the metadata; give it again"
        ));
    }
    note_unreproduced(&mut found, image);
    for (key, value) in image {
        if !MAPPED_IMAGE_KEYS.contains(&key.as_str()) && !value.is_null() {
            found.extra.insert(key.clone(), to_extra_text(value));
        }
    }
    for (key, value) in &meta {
        if !matches!(key.as_str(), "image" | "images") && !value.is_null() {
            found.extra.insert(key.clone(), to_extra_text(value));
        }
    }
    note_noise(&mut found);
    Ok(found)
}

fn apply_sampler(found: &mut Recovered, sampler: &str, karras_max: u32) {
    let matched = map_sampler(sampler, found.steps, karras_max);
    found.sampler = matched.kind;
    if let Some(warning) = matched.warning {
        found.warn(warning);
    }
    sampler.clone_into(&mut found.sampler_name);
}

fn note_unreproduced(found: &mut Recovered, image: &Map<String, Value>) {
    let truthy = |key: &str| match image.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|v| v != 0.0),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(_)) => true,
        _ => false,
    };
    for (key, what) in [
        ("variations", "seed variations"),
        ("hires_fix", "the hires fix"),
        ("seamless", "seamless tiling"),
        ("perlin", "Perlin noise"),
        ("threshold", "CFG thresholding"),
        ("postprocessing", "post-processing (upscaling, face restoration)"),
    ] {
        if truthy(key) {
            found.warn(format!("InvokeAI 2.x {what} is not reproduced"));
        }
    }
}

fn note_noise(found: &mut Recovered) {
    found.warn(
        "InvokeAI 2.x drew its noise on the generating device (usually CUDA); the same seed gives \
         different noise here",
    );
}

/// Splits a command line as Python's `shlex.split(text, comments=True)` does (POSIX rules).
pub fn shell_split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                for inner in chars.by_ref() {
                    if inner == '\'' {
                        break;
                    }
                    word.push(inner);
                }
            }
            '"' => {
                in_word = true;
                while let Some(inner) = chars.next() {
                    match inner {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&next @ ('"' | '\\' | '$' | '`')) => {
                                word.push(next);
                                chars.next();
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => word.push('\\'),
                        },
                        other => word.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(next) => word.push(next),
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Reads the `Dream` command line.
///
/// # Errors
/// The text has neither a prompt nor any switch.
pub fn recover_from_dream(text: &str) -> Result<Recovered, String> {
    let mut found = Recovered::new(Source::Invokeai);
    let mut command = text.trim();
    if let Some(rest) = command.strip_prefix("!fix ") {
        found.warn("a post-processed InvokeAI 2.x image: the original generation is not recorded");
        command = rest.trim_start();
    } else if let Some(rest) = command.strip_prefix("!dream ") {
        command = rest.trim_start();
    }
    let (prompt, switches): (String, Vec<String>) = if command.starts_with('-') {
        (String::new(), shell_split(command))
    } else if command.starts_with('"') {
        let mut words = shell_split(command);
        if words.is_empty() { (String::new(), words) } else { (words.remove(0), words) }
    } else {
        // No opening quote (2.3): everything up to the first word that looks like a switch.
        match find_first_switch(command) {
            Some(at) => (command[..at].trim_end().to_owned(), shell_split(&command[at..])),
            None => (command.to_owned(), Vec::new()),
        }
    };
    if prompt.is_empty() && switches.is_empty() {
        return Err("empty Dream command".to_owned());
    }
    (found.prompt, found.negative) = split_negative(&prompt);
    let mut karras_max = KARRAS_MAX_DEFAULT;
    let mut sampler = None;
    let mut words = switches.into_iter().peekable();
    while let Some(switch) = words.next() {
        let (name, inline) = split_switch(&switch);
        let takes_value = !matches!(
            name.as_str(),
            "--hires_fix" | "--seamless" | "-g" | "--grid" | "-T" | "--fit" | "--inpaint_replace"
        );
        let value = if takes_value {
            inline.or_else(|| words.next_if(|w| !looks_like_switch(w)))
        } else {
            None
        };
        let text = value.clone().unwrap_or_default();
        match name.as_str() {
            "-s" | "--steps" => found.steps = number(&mut found, &name, &text, parse_u32),
            "-S" | "--seed" => found.seed = number(&mut found, &name, &text, parse_u64),
            "-W" | "--width" => found.width = number(&mut found, &name, &text, parse_u32),
            "-H" | "--height" => found.height = number(&mut found, &name, &text, parse_u32),
            "-C" | "--cfg_scale" => found.cfg = number(&mut found, &name, &text, parse_f32),
            "-A" | "-m" | "--sampler" => sampler = value,
            "-f" | "--strength" => found.strength = number(&mut found, &name, &text, parse_f32),
            "--karras_max" => {
                if let Some(max) = parse_u32(&text) {
                    karras_max = max;
                }
            }
            "-I" | "--init_img" => {
                found.extra.insert("init_img".to_owned(), text);
            }
            "-V" | "--with_variations" | "-v" | "--variation_amount" => {
                found.warn("InvokeAI 2.x seed variations are not reproduced");
                found.extra.insert(name.trim_start_matches('-').to_owned(), text);
            }
            "--hires_fix" => found.warn("InvokeAI 2.x hires fix is not reproduced"),
            "--seamless" => found.warn("InvokeAI 2.x seamless tiling is not reproduced"),
            "--perlin" | "--threshold" if parse_f32(&text).is_some_and(|v| v != 0.0) => {
                found.warn(format!("InvokeAI 2.x {name} {text} is not reproduced"));
                found.extra.insert(name.trim_start_matches('-').to_owned(), text);
            }
            _ => {
                found.extra.insert(name.trim_start_matches('-').to_owned(), text);
            }
        }
    }
    if found.extra.contains_key("init_img") {
        found.warn("InvokeAI 2.x img2img: give the source image again");
    } else {
        // -f without an init image does nothing in InvokeAI.
        found.strength = None;
    }
    if let Some(sampler) = sampler {
        apply_sampler(&mut found, &sampler, karras_max);
    }
    note_noise(&mut found);
    Ok(found)
}

fn number<T>(
    found: &mut Recovered,
    name: &str,
    text: &str,
    parse: fn(&str) -> Option<T>,
) -> Option<T> {
    let value = parse(text);
    if value.is_none() {
        found.warn(format!("Dream switch {name} {text:?} is not a valid number; ignored"));
    }
    value
}

/// `-s50` → (`-s`, `50`); `--steps=50` → (`--steps`, `50`); `-s` → (`-s`, none).
fn split_switch(word: &str) -> (String, Option<String>) {
    if let Some(long) = word.strip_prefix("--") {
        return match long.split_once('=') {
            Some((name, value)) => (format!("--{name}"), Some(value.to_owned())),
            None => (word.to_owned(), None),
        };
    }
    let mut chars = word.char_indices().skip(1);
    match (chars.next(), chars.next()) {
        (Some((_, _)), Some((at, _))) => {
            // Two-letter switches of InvokeAI (-tm, -ft, -cf) are not split.
            let name = &word[..at];
            if matches!(word, "-tm" | "-ft" | "-cf") {
                (word.to_owned(), None)
            } else {
                (name.to_owned(), Some(word[at..].to_owned()))
            }
        }
        _ => (word.to_owned(), None),
    }
}

fn looks_like_switch(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next() == Some('-') && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
}

/// Where the switches start in an unquoted command: `^(.+?)\s(--?[a-zA-Z].+)`.
fn find_first_switch(command: &str) -> Option<usize> {
    let bytes = command.as_bytes();
    (1..bytes.len()).find(|&at| {
        bytes[at - 1].is_ascii_whitespace()
            && bytes[at] == b'-'
            && (bytes.get(at + 1).is_some_and(u8::is_ascii_alphabetic)
                || (bytes.get(at + 1) == Some(&b'-')
                    && bytes.get(at + 2).is_some_and(u8::is_ascii_alphabetic)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SamplerKind;

    #[test]
    fn negative_words_in_brackets() {
        assert_eq!(
            split_negative("a castle on a hill [blurry, lowres] at dusk [people]"),
            ("a castle on a hill, at dusk".to_owned(), "blurry, lowres, people".to_owned())
        );
        assert_eq!(split_negative("plain"), ("plain".to_owned(), String::new()));
        assert_eq!(split_negative("a [b [c] d"), ("a [b, d".to_owned(), "c".to_owned()));
        assert_eq!(split_negative("unclosed [x"), ("unclosed [x".to_owned(), String::new()));
    }

    #[test]
    fn dream_lines_of_each_version() {
        // 2.0-2.2: quoted prompt.
        let found = recover_from_dream(
            "\"a castle, \\\"old\\\" [blurry]\" -s 50 -S 3627384 -W 512 -H 768 -C 7.5 -A k_lms",
        )
        .expect("reads");
        assert_eq!(found.prompt, "a castle, \"old\"");
        assert_eq!(found.negative, "blurry");
        assert_eq!((found.steps, found.seed), (Some(50), Some(3_627_384)));
        assert_eq!((found.width, found.height, found.cfg), (Some(512), Some(768), Some(7.5)));
        assert_eq!(found.sampler, Some(SamplerKind::Lms));
        assert_eq!(found.sampler_name, "k_lms");
        // 2.3: bare prompt, img2img, grid comment, fewer steps than karras_max.
        let found = recover_from_dream(
            "a fox in snow -s 20 -S 7 -W 512 -H 512 -C 7.0 -I outputs/init.png -A k_euler_a -f \
             0.6 # [7, 8]",
        )
        .expect("reads");
        assert_eq!(found.prompt, "a fox in snow");
        assert_eq!(found.strength, Some(0.6));
        assert_eq!(found.extra.get("init_img").map(String::as_str), Some("outputs/init.png"));
        // Euler a has no Karras variant here: mapped with a note.
        assert_eq!(found.sampler, Some(SamplerKind::EulerA));
        assert!(found.warnings.iter().any(|w| w.contains("Karras")), "{:?}", found.warnings);
        // Glued switches and DPM++ 2 below karras_max → DPM++ 2M Karras.
        let found =
            recover_from_dream("\"x\" -s25 -S1 -Ak_dpmpp_2 --karras_max=30").expect("reads");
        assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2mKarras));
        assert_eq!(found.steps, Some(25));
        let found = recover_from_dream("\"x\" -s 50 -A k_dpmpp_2").expect("reads");
        assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2m));
        assert!(recover_from_dream("   ").is_err());
        let odd = recover_from_dream("\"x\" -s many -A plms").expect("reads");
        assert_eq!(odd.steps, None);
        assert_eq!(odd.sampler, None);
        assert!(odd.warnings.iter().any(|w| w.contains("many")), "{:?}", odd.warnings);
    }

    #[test]
    fn sd_metadata_record() {
        let json = r#"{"model": "stable diffusion", "model_id": "stable-diffusion-1.5",
            "model_hash": "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516",
            "app_id": "invoke-ai/InvokeAI", "app_version": "2.3.5", "model_weights":
            "stable-diffusion-1.5", "image": {"prompt": [{"prompt": "a cabin [people]", "weight":
            1.0}], "steps": "40", "cfg_scale": 7.5, "threshold": 0, "perlin": 0, "height": 512,
            "width": 768, "seed": 1234, "seamless": false, "hires_fix": true, "type": "txt2img",
            "postprocessing": null, "sampler": "k_heun", "variations": []}}"#;
        let found = recover_from_sd_metadata(json).expect("reads");
        assert_eq!(found.source, Source::Invokeai);
        assert_eq!((found.prompt.as_str(), found.negative.as_str()), ("a cabin", "people"));
        assert_eq!((found.steps, found.cfg, found.seed), (Some(40), Some(7.5), Some(1234)));
        assert_eq!((found.width, found.height), (Some(768), Some(512)));
        assert_eq!(found.model, "stable-diffusion-1.5");
        assert_eq!(found.sampler, Some(SamplerKind::Heun));
        assert!(found.warnings.iter().any(|w| w.contains("hires fix")), "{:?}", found.warnings);
        assert_eq!(found.extra.get("app_version").map(String::as_str), Some("2.3.5"));
        assert!(recover_from_sd_metadata("{}").is_err());
        assert!(recover_from_sd_metadata("[]").is_err());
        let grid = r#"{"images": [{"prompt": [{"prompt": "a", "weight": 1}, {"prompt": "b",
            "weight": 0.5}], "seed": 5, "type": "img2img", "strength": 0.4}]}"#;
        let found = recover_from_sd_metadata(grid).expect("reads");
        assert_eq!(found.prompt, "a:1,b:0.5");
        assert_eq!(found.strength, Some(0.4));
        assert!(found.warnings.iter().any(|w| w.contains("grid")), "{:?}", found.warnings);
    }

    #[test]
    fn shell_split_matches_python_shlex() {
        assert_eq!(
            shell_split("\"a \\\"b\\\" c\" -s 5 'x y' z\\ w # comment"),
            vec!["a \"b\" c", "-s", "5", "x y", "z w"]
        );
        assert_eq!(shell_split("a#b c"), vec!["a#b", "c"]);
        assert_eq!(shell_split("\"unclosed"), vec!["unclosed"]);
    }
}
