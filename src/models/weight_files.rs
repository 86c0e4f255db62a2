//! Which weight files of a diffusers component folder are loaded: one decision, shared by the
//! hub planner (what to download) and the loader (what to map).
//!
//! The names are the ones `save_pretrained` writes (diffusers 0.42 and transformers 5):
//! - one file: `<stem>.safetensors`, or `<stem>.fp16.safetensors` for the `fp16` variant;
//! - shards: `<stem>-00001-of-00002.safetensors` listed by `<stem>.safetensors.index.json`, and
//!   for the variant `<stem>.fp16-00001-of-00002.safetensors` listed by
//!   `<stem>.safetensors.index.fp16.json`;
//! - the variant shards of older diffusers, which it still reads:
//!   `<stem>-00001-of-00002.fp16.safetensors` listed by `<stem>.safetensors.fp16.index.json`.
//!
//! The preferred precision is tried first, then the other one; pickles are never chosen.

use serde::{Deserialize, Serialize};

use super::layout::is_pickle_file;

/// The variant diffusers calls `fp16`.
pub const FP16_VARIANT: &str = "fp16";

/// Which weight files to prefer when a folder has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightVariant {
    /// Full-precision files (`*.safetensors`); the CPU choice.
    Full,
    /// `*.fp16.safetensors` when present (per component), else full precision; the GPU choice.
    Fp16,
}

/// The chosen weight files of one component folder (names within the folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightFiles {
    /// The weights in load order: one file, or every shard present.
    pub files: Vec<String>,
    /// The shard index, for sharded weights: it lists the shards that must be there.
    pub index: Option<String>,
    /// `Some("fp16")` when the variant was chosen.
    pub variant: Option<String>,
}

/// Why no weight files could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightChoiceError {
    /// No `.safetensors` weights at all; the file that was looked for first is named.
    #[error("no {expected} (only .safetensors are loaded)")]
    Missing {
        /// `<stem>.safetensors` of the first stem.
        expected: String,
    },
    /// Only pickled weights (`.bin`, `.ckpt`, `.pt`), which are never loaded.
    #[error("only pickle weights ({}); only .safetensors are loaded", files.join(", "))]
    PickleOnly {
        /// The pickle files, within the folder.
        files: Vec<String>,
    },
}

/// Chooses the weights among `names` (the files of one component folder), trying each of
/// `stems` (`diffusion_pytorch_model`, `model`) in the preferred precision, then in the other.
///
/// # Errors
/// No safetensors weights: [`WeightChoiceError::PickleOnly`] when there are pickles, else
/// [`WeightChoiceError::Missing`].
pub fn choose_weight_files<'a>(
    names: impl IntoIterator<Item = &'a str>,
    stems: &[&str],
    prefer: WeightVariant,
) -> Result<WeightFiles, WeightChoiceError> {
    let names: Vec<&str> = names.into_iter().collect();
    let order = match prefer {
        WeightVariant::Fp16 => [Some(FP16_VARIANT), None],
        WeightVariant::Full => [None, Some(FP16_VARIANT)],
    };
    for variant in order {
        for stem in stems {
            if let Some(chosen) = choose_in(&names, stem, variant) {
                return Ok(chosen);
            }
        }
    }
    let pickles: Vec<String> =
        names.iter().filter(|name| is_pickle_file(name)).map(|name| (*name).to_owned()).collect();
    if pickles.is_empty() {
        let stem = stems.first().copied().unwrap_or("diffusion_pytorch_model");
        Err(WeightChoiceError::Missing { expected: format!("{stem}.safetensors") })
    } else {
        Err(WeightChoiceError::PickleOnly { files: pickles })
    }
}

/// One stem in one precision: the single file, else the shards (with their index).
fn choose_in(names: &[&str], stem: &str, variant: Option<&str>) -> Option<WeightFiles> {
    let dot_variant = variant.map(|v| format!(".{v}")).unwrap_or_default();
    let owned_variant = variant.map(str::to_owned);
    let single = format!("{stem}{dot_variant}.safetensors");
    if names.contains(&single.as_str()) {
        return Some(WeightFiles { files: vec![single], index: None, variant: owned_variant });
    }
    let mut indexes = vec![format!("{stem}.safetensors.index{dot_variant}.json")];
    if let Some(variant) = variant {
        indexes.push(format!("{stem}.safetensors.{variant}.index.json"));
    }
    let index = indexes.into_iter().find(|index| names.contains(&index.as_str()));
    let mut shards: Vec<String> = names
        .iter()
        .filter(|name| is_shard(name, stem, variant))
        .map(|name| (*name).to_owned())
        .collect();
    if shards.is_empty() && index.is_none() {
        return None;
    }
    shards.sort();
    Some(WeightFiles { files: shards, index, variant: owned_variant })
}

/// `<stem>[.<variant>]-NNNNN-of-NNNNN.safetensors`, or the older
/// `<stem>-NNNNN-of-NNNNN.<variant>.safetensors`.
fn is_shard(name: &str, stem: &str, variant: Option<&str>) -> bool {
    let numbered = |middle: &str| {
        middle.split_once("-of-").is_some_and(|(index, count)| {
            [index, count].iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    let Some(rest) = name.strip_prefix(stem) else { return false };
    match variant {
        None => rest
            .strip_prefix('-')
            .and_then(|rest| rest.strip_suffix(".safetensors"))
            .is_some_and(numbered),
        Some(variant) => {
            let current = rest
                .strip_prefix('.')
                .and_then(|rest| rest.strip_prefix(variant))
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|rest| rest.strip_suffix(".safetensors"))
                .is_some_and(numbered);
            let older = rest
                .strip_prefix('-')
                .and_then(|rest| rest.strip_suffix(".safetensors"))
                .and_then(|rest| rest.strip_suffix(variant))
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(numbered);
            current || older
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(names: &[&str], prefer: WeightVariant) -> Result<WeightFiles, WeightChoiceError> {
        choose_weight_files(names.iter().copied(), &["diffusion_pytorch_model", "model"], prefer)
    }

    /// The names `save_pretrained(variant="fp16", max_shard_size=…)` writes (see
    /// `tools/reference/make_sharded_fp16.py`), the older variant shard names, and plain shards.
    #[test]
    fn sharded_fp16_as_diffusers_writes_it_and_as_it_used_to() {
        let current = [
            "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
            "diffusion_pytorch_model.safetensors.index.fp16.json",
        ];
        for prefer in [WeightVariant::Fp16, WeightVariant::Full] {
            let chosen = choose(&current, prefer).expect("sharded fp16");
            assert_eq!(chosen.files, &current[..2]);
            assert_eq!(chosen.index.as_deref(), Some(current[2]));
            assert_eq!(chosen.variant.as_deref(), Some("fp16"));
        }
        let older = [
            "model-00002-of-00002.fp16.safetensors",
            "model-00001-of-00002.fp16.safetensors",
            "model.safetensors.fp16.index.json",
            "model.safetensors",
        ];
        let chosen = choose(&older, WeightVariant::Fp16).expect("older fp16 shards");
        assert_eq!(chosen.files, [older[1], older[0]]);
        assert_eq!(chosen.index.as_deref(), Some(older[2]));
        let full = choose(&older, WeightVariant::Full).expect("full");
        assert_eq!((full.files, full.index), (vec!["model.safetensors".to_owned()], None));

        let plain = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
        let chosen = choose(&plain, WeightVariant::Fp16).expect("plain shards");
        assert_eq!((chosen.files.len(), chosen.variant), (2, None));
    }

    #[test]
    fn pickles_are_never_chosen_and_the_error_says_so() {
        let err =
            choose(&["diffusion_pytorch_model.bin"], WeightVariant::Full).expect_err("pickle");
        assert!(matches!(err, WeightChoiceError::PickleOnly { .. }), "{err:?}");
        let err = choose(&["config.json"], WeightVariant::Full).expect_err("nothing");
        assert_eq!(
            err.to_string(),
            "no diffusion_pytorch_model.safetensors (only .safetensors are loaded)"
        );
    }
}
