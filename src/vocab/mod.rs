//! The lab's shared vocabulary: the small value types every layer names — samplers and
//! schedules, txt2img/img2img, devices, precisions, LoRA specs — and their user-facing names.
//!
//! This module is the leaf of the crate: it imports nothing of ours, so the catalog, the
//! metadata readers, the numerics and the front ends can all use it without depending on each
//! other (see the dependency order in `ARCHITECTURE.md`).

pub mod output;
pub mod sampler;

use serde::{Deserialize, Serialize};
use std::fmt;

pub use output::{DEFAULT_QUALITY, OutputFormat, SaveOptions};
pub use sampler::{SamplerKind, SigmaSchedule};

/// The profile that leaves the prompt untouched; the baseline of every sweep.
pub const RAW_PROFILE: &str = "None (raw)";

/// A name or value that is not part of the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabError {
    /// A name that is none of the accepted ones.
    #[error("unknown {what} {given:?}; valid: {valid}")]
    Unknown {
        /// What was being named (`device`, `scheduler`, ...).
        what: &'static str,
        /// The text as given.
        given: String,
        /// The accepted names, comma-separated.
        valid: String,
    },
    /// A `--lora` weight that is not a number.
    #[error("--lora {spec:?}: weight {weight:?} is not a number")]
    LoraWeight {
        /// The whole `FILE_OR_HUB_ID[:WEIGHT]` text.
        spec: String,
        /// The weight part.
        weight: String,
    },
    /// A `--lora` weight that is infinite or NaN.
    #[error("--lora {spec:?}: weight must be finite")]
    LoraWeightNotFinite {
        /// The whole `FILE_OR_HUB_ID[:WEIGHT]` text.
        spec: String,
    },
}

impl VocabError {
    /// An unknown name of `what`, listing the accepted ones.
    pub fn unknown(what: &'static str, given: &str, valid: &[&str]) -> Self {
        Self::Unknown { what, given: given.to_owned(), valid: valid.join(", ") }
    }
}

/// txt2img or img2img; derived from whether an init image is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Text to image.
    Txt2img,
    /// Image to image.
    Img2img,
}

impl Mode {
    /// `txt2img` / `img2img`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Txt2img => "txt2img",
            Self::Img2img => "img2img",
        }
    }
}

/// Where the numerics run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA, then Metal, then CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// Apple Metal.
    Metal,
}

impl DeviceChoice {
    /// Parses `auto|cpu|cuda|cuda:N|metal`.
    ///
    /// # Errors
    /// [`VocabError::Unknown`] naming the accepted forms.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "metal" => Ok(Self::Metal),
            "cuda" => Ok(Self::Cuda(0)),
            other => {
                other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Self::Cuda).ok_or_else(
                    || VocabError::unknown("device", text, &["auto", "cpu", "cuda:N", "metal"]),
                )
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

/// Floating-point precision of the UNet and text encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float (the CPU default).
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl Precision {
    /// Parses `f32|f16|bf16`.
    ///
    /// # Errors
    /// [`VocabError::Unknown`] naming the accepted values.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(VocabError::unknown("dtype", text, &["f32", "f16", "bf16"])),
        }
    }
}

/// A LoRA adapter to apply: a file or hub id, and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoraSpec {
    /// A `.safetensors` file or a hub repo id.
    pub source: String,
    /// Scale of the adapter (default 1.0).
    pub weight: f32,
}

impl LoraSpec {
    /// Parses `FILE_OR_HUB_ID[:WEIGHT]`.
    ///
    /// # Errors
    /// A weight that is not a finite number.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        if let Some((source, weight)) = text.rsplit_once(':')
            && !weight.contains(['/', '\\'])
            && !source.is_empty()
        {
            let weight_value: f32 = weight.parse().map_err(|_| VocabError::LoraWeight {
                spec: text.to_owned(),
                weight: weight.to_owned(),
            })?;
            if !weight_value.is_finite() {
                return Err(VocabError::LoraWeightNotFinite { spec: text.to_owned() });
            }
            return Ok(Self { source: source.to_owned(), weight: weight_value });
        }
        Ok(Self { source: text.to_owned(), weight: 1.0 })
    }
}

/// A merged LoRA as A1111 records it: its name (the file stem, as in `<lora:name:w>`) and the
/// short "addnet" hash written in `Lora hashes` (empty when the backend does not read files).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoraHash {
    /// The file stem.
    pub name: String,
    /// The first 12 hex digits of the hash, or empty.
    pub hash: String,
}

/// A1111's extra-network tags in a prompt: `<lora:name>`, `<lora:name:weight>` (and the
/// older LyCORIS extension's `<lyco:…>`, read the same way). Returns the prompt without them —
/// A1111 removes them before encoding; here the space before a removed tag and a separator left
/// dangling at either end go too — and the LoRAs in order.
///
/// # Errors
/// A tag whose weight is not a finite number, or with separate text-encoder/UNet weights
/// (`<lora:name:0.8:0.5>`, which this lab does not split), named with the tag.
pub fn split_lora_tags(prompt: &str) -> Result<(String, Vec<LoraSpec>), String> {
    let mut clean = String::with_capacity(prompt.len());
    let mut loras = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let tag = after.find('>').map(|end| &after[..end]);
        let Some((kind, args)) = tag.and_then(|tag| tag.split_once(':')) else {
            clean.push_str(&rest[..=start]);
            rest = after;
            continue;
        };
        if !(kind.eq_ignore_ascii_case("lora") || kind.eq_ignore_ascii_case("lyco")) {
            clean.push_str(&rest[..=start]);
            rest = after;
            continue;
        }
        let whole = format!("<{kind}:{args}>");
        let mut parts = args.split(':');
        let name = parts.next().unwrap_or_default().trim();
        let weight = match (parts.next(), parts.next()) {
            (None, _) => 1.0,
            (Some(weight), None) => match weight.trim().parse::<f32>() {
                Ok(value) if value.is_finite() => value,
                _ => return Err(format!("{whole}: weight {weight:?} is not a finite number")),
            },
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{whole}: separate text-encoder and UNet weights are not supported; give \
                     one weight"
                ));
            }
        };
        if name.is_empty() {
            return Err(format!("{whole}: no LoRA name"));
        }
        loras.push(LoraSpec { source: name.to_owned(), weight });
        clean.push_str(&rest[..start]);
        rest = &after[args.len() + kind.len() + 2..];
        if clean.ends_with(' ') && rest.chars().next().is_none_or(|c| c.is_whitespace() || c == ',')
        {
            clean.pop();
        }
    }
    clean.push_str(rest);
    if loras.is_empty() {
        return Ok((prompt.to_owned(), loras));
    }
    let trimmed = clean.trim().trim_end_matches(',').trim_start_matches(',').trim();
    Ok((trimmed.to_owned(), loras))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::float_cmp, reason = "weights parsed from text compare exactly")]
    fn lora_tags_are_taken_out_of_the_prompt() {
        let (prompt, loras) =
            split_lora_tags("pixel art, a fox <lora:pixel-art-xl:0.8>, <LoRA:detail>\nsnow")
                .expect("parses");
        assert_eq!(prompt, "pixel art, a fox,\nsnow");
        assert_eq!(
            loras,
            [
                LoraSpec { source: "pixel-art-xl".into(), weight: 0.8 },
                LoraSpec { source: "detail".into(), weight: 1.0 }
            ]
        );
        let (same, none) = split_lora_tags("a <b> c, (d:1.2) <hypernet:x:1>").expect("parses");
        assert_eq!((same.as_str(), none.len()), ("a <b> c, (d:1.2) <hypernet:x:1>", 0));
        assert_eq!(split_lora_tags("<lora:a:-0.5>").expect("negative").1[0].weight, -0.5);
        assert!(split_lora_tags("<lora:a:x>").expect_err("weight").contains("<lora:a:x>"));
        assert!(split_lora_tags("<lora:a:1:0.5>").expect_err("split").contains("separate"));
    }

    #[test]
    fn lora_spec_parses_weight() {
        assert_eq!(
            LoraSpec::parse("nerijs/pixel-art-xl:0.8"),
            Ok(LoraSpec { source: "nerijs/pixel-art-xl".into(), weight: 0.8 })
        );
        assert_eq!(LoraSpec::parse("a.safetensors").map(|l| l.weight), Ok(1.0));
        assert!(LoraSpec::parse("a.safetensors:x").is_err());
    }

    #[test]
    fn device_parses() {
        assert_eq!(DeviceChoice::parse("cuda:1"), Ok(DeviceChoice::Cuda(1)));
        assert_eq!(DeviceChoice::parse("CPU"), Ok(DeviceChoice::Cpu));
        assert!(DeviceChoice::parse("tpu").is_err());
    }
}
