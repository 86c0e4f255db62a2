//! CLIP's BPE tokenizer, built from a model's own `tokenizer/vocab.json` + `merges.txt` +
//! `tokenizer_config.json` (the files the hub repos ship; no `tokenizer.json` needed), giving
//! the ids transformers' `CLIPTokenizer` gives: NFC, whitespace collapsed, lower-cased, CLIP's
//! pre-tokenisation regex, byte-level characters, `</w>` word ends, BOS/EOS and padding.
//!
//! Prompts longer than one window are either cut (diffusers) or split into windows of
//! `max_length − 2` tokens (AUTOMATIC1111 / ComfyUI); [`PromptTokens`] says which happened.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::error::{DiffusionError, Result, read_json, read_text};

const BOS: &str = "<|startoftext|>";
/// CLIP's BPE merges, shipped with the program (see [`ClipTokenizer::clip`]).
const CLIP_MERGES: &str = include_str!("../../assets/clip/merges.txt");
const EOS: &str = "<|endoftext|>";
/// CLIP's pre-tokenisation: contractions, letter runs, single digits, other-symbol runs.
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// How prompts longer than one window are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongPromptMode {
    /// Windows of `max_length − 2` tokens, each encoded and concatenated (A1111, ComfyUI).
    #[default]
    Chunk,
    /// Keep the first window and drop the rest (diffusers).
    Truncate,
}

/// A tokenized prompt ready for a text encoder: one or more windows of `max_length` ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTokens {
    /// Each window: BOS, up to `max_length − 2` tokens, EOS, padding.
    pub windows: Vec<Vec<u32>>,
    /// Tokens in the prompt (without BOS/EOS).
    pub token_count: usize,
    /// Tokens that went into windows after the first (chunk mode).
    pub chunked_tokens: usize,
    /// Tokens cut off (truncate mode).
    pub dropped_tokens: usize,
}

/// A CLIP BPE tokenizer.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    merge_ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    pattern: Regex,
    /// Special tokens (BOS, EOS, pad, unk) by text, longest first: transformers splits them
    /// out before BPE wherever they appear (so `tokenizer_2`'s pad `!` is always its own token).
    specials: Vec<(String, u32)>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    max_length: usize,
    lowercase: bool,
}

impl ClipTokenizer {
    /// Loads a tokenizer folder: `vocab.json` + `merges.txt` (as the hub repos ship them) or,
    /// when those are absent, `tokenizer.json` (all transformers 5 `save_pretrained` writes);
    /// with `tokenizer_config.json` (and `special_tokens_map.json` when present).
    ///
    /// # Errors
    /// Missing or malformed files, special tokens absent from the vocabulary.
    pub fn from_folder(folder: &Path) -> Result<Self> {
        let vocab_path = folder.join("vocab.json");
        let json_path = folder.join("tokenizer.json");
        let (vocab, merges, source) = if !vocab_path.exists() && json_path.exists() {
            let (vocab, merges) = read_tokenizer_json(&json_path)?;
            (vocab, merges, json_path)
        } else {
            let vocab: HashMap<String, u32> = read_json("tokenizer vocabulary", &vocab_path)?;
            let merges_path = folder.join("merges.txt");
            let merges = parse_merges(&read_text("tokenizer merges", &merges_path)?, &merges_path)?;
            (vocab, merges, vocab_path)
        };
        let optional_json = |name: &str, what: &'static str| -> Result<Value> {
            let path = folder.join(name);
            if path.exists() { read_json(what, &path) } else { Ok(Value::Null) }
        };
        let config = optional_json("tokenizer_config.json", "tokenizer config")?;
        let special = optional_json("special_tokens_map.json", "special tokens map")?;
        Self::from_parts(vocab, &merges, &config, &special, &source)
    }

    /// CLIP's own tokenizer, shipped with the program (`assets/clip/merges.txt`, the merges of
    /// `openai/clip-vit-large-patch14` and of every SD/SDXL repo's tokenizer; the vocabulary is
    /// built from them as CLIP's `SimpleTokenizer` builds it): for single-file checkpoints,
    /// which carry no tokenizer. `pad` is `<|endoftext|>` for CLIP ViT-L (SD 1.x, SDXL's first
    /// encoder) and `!` for OpenCLIP (SDXL's second encoder, SD 2.x), as their repos configure.
    ///
    /// # Errors
    /// Only if the shipped merges were damaged.
    pub fn clip(pad: &str) -> Result<Self> {
        let source = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/clip/merges.txt"));
        let merges = parse_merges(CLIP_MERGES, source)?;
        // CLIP's order: the byte characters as `bytes_to_unicode()` lists them (the printable
        // bytes first, then the others), the same with `</w>`, the merges, the two specials.
        let byte_chars = byte_to_unicode();
        let (printable, others): (Vec<usize>, Vec<usize>) = (0..256).partition(|&byte| {
            u32::from(byte_chars[byte]) == u32::try_from(byte).unwrap_or(u32::MAX)
        });
        let ordered: Vec<char> =
            printable.into_iter().chain(others).map(|byte| byte_chars[byte]).collect();
        let mut tokens: Vec<String> = ordered.iter().map(char::to_string).collect();
        tokens.extend(ordered.iter().map(|c| format!("{c}</w>")));
        tokens.extend(merges.iter().map(|(left, right)| format!("{left}{right}")));
        tokens.push(BOS.to_owned());
        tokens.push(EOS.to_owned());
        let mut vocab = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.into_iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| {
                DiffusionError::config("vocabulary", "more than 2^32 tokens", source)
            })?;
            // As CLIP's `dict(zip(vocab, range(len(vocab))))`: a repeated token keeps its last id.
            vocab.insert(token, id);
        }
        let config = serde_json::json!({
            "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad,
            "model_max_length": 77, "do_lower_case": true,
        });
        Self::from_parts(vocab, &merges, &config, &Value::Null, source)
    }

    /// Builds the tokenizer from its vocabulary, merges (in rank order) and configs; `source`
    /// is named in errors.
    fn from_parts(
        vocab: HashMap<String, u32>,
        merges: &[(String, String)],
        config: &Value,
        special: &Value,
        source: &Path,
    ) -> Result<Self> {
        let token = |name: &str, default: &str| -> String {
            token_content(config, name)
                .or_else(|| token_content(special, name))
                .unwrap_or_else(|| default.to_owned())
        };
        let lookup = |name: &str, text: &str| -> Result<u32> {
            vocab.get(text).copied().ok_or_else(|| {
                DiffusionError::config(name, format!("{text:?} is not in the vocabulary"), source)
            })
        };
        let mut specials = Vec::new();
        let mut special = |name: &str, default: &str| -> Result<u32> {
            let text = token(name, default);
            let id = lookup(name, &text)?;
            if !specials.iter().any(|(known, _)| *known == text) {
                specials.push((text, id));
            }
            Ok(id)
        };
        let bos_id = special("bos_token", BOS)?;
        let eos_id = special("eos_token", EOS)?;
        let pad_id = special("pad_token", EOS)?;
        let unk_id = special("unk_token", EOS)?;
        specials.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        // CLIP's text encoders have 77 positions; some configs carry a huge sentinel instead.
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .and_then(|value| usize::try_from(value).ok())
            .filter(|&value| (3..=77).contains(&value))
            .unwrap_or(77);
        let lowercase = config.get("do_lower_case").and_then(Value::as_bool).unwrap_or(true);
        let mut merge_ranks = HashMap::with_capacity(merges.len());
        for pair in merges {
            let rank = merge_ranks.len();
            merge_ranks.entry(pair.clone()).or_insert(rank);
        }
        let pattern = Regex::new(CLIP_PATTERN)
            .map_err(|err| DiffusionError::Unsupported(format!("tokenizer regex: {err}")))?;
        Ok(Self {
            vocab,
            merge_ranks,
            byte_chars: byte_to_unicode(),
            pattern,
            specials,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            max_length,
            lowercase,
        })
    }

    /// Window length including BOS and EOS (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of the end-of-text token.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The prompt's token ids without BOS/EOS, untruncated.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized: String = text.nfc().collect();
        let collapsed = collapse_whitespace(&normalized);
        let normalized = if self.lowercase { collapsed.to_lowercase() } else { collapsed };
        let mut ids = Vec::new();
        for (segment, special) in split_special(&normalized, &self.specials) {
            if let Some(id) = special {
                ids.push(id);
                continue;
            }
            for piece in self.pattern.find_iter(segment) {
                self.bpe(piece.as_str(), &mut ids);
            }
        }
        ids
    }

    /// `tokenizer(text, padding="max_length", truncation=True)`: one window of `max_length`.
    pub fn encode_padded(&self, text: &str) -> Vec<u32> {
        let ids = self.encode(text);
        let keep = ids.len().min(self.max_length - 2);
        self.window(&ids[..keep])
    }

    /// Tokenizes a prompt into windows, chunking or truncating what does not fit in one.
    pub fn tokenize(&self, text: &str, mode: LongPromptMode) -> PromptTokens {
        let ids = self.encode(text);
        let per_window = self.max_length - 2;
        let token_count = ids.len();
        if token_count <= per_window {
            return PromptTokens {
                windows: vec![self.window(&ids)],
                token_count,
                chunked_tokens: 0,
                dropped_tokens: 0,
            };
        }
        match mode {
            LongPromptMode::Truncate => PromptTokens {
                windows: vec![self.window(&ids[..per_window])],
                token_count,
                chunked_tokens: 0,
                dropped_tokens: token_count - per_window,
            },
            LongPromptMode::Chunk => PromptTokens {
                windows: ids.chunks(per_window).map(|chunk| self.window(chunk)).collect(),
                token_count,
                chunked_tokens: token_count - per_window,
                dropped_tokens: 0,
            },
        }
    }

    /// An all-padding window for an empty prompt (BOS, EOS, padding).
    pub fn empty_window(&self) -> Vec<u32> {
        self.window(&[])
    }

    fn window(&self, tokens: &[u32]) -> Vec<u32> {
        let mut window = Vec::with_capacity(self.max_length);
        window.push(self.bos_id);
        window.extend_from_slice(tokens);
        window.push(self.eos_id);
        window.resize(self.max_length, self.pad_id);
        window
    }

    /// Byte-level BPE of one pre-tokenized piece, appending its ids.
    fn bpe(&self, piece: &str, ids: &mut Vec<u32>) {
        let mut symbols: Vec<String> =
            piece.bytes().map(|byte| self.byte_chars[usize::from(byte)].to_string()).collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(index, pair)| {
                    self.merge_ranks
                        .get(&(pair[0].clone(), pair[1].clone()))
                        .map(|&rank| (rank, index))
                })
                .min();
            let Some((_, index)) = best else { break };
            let right = symbols.remove(index + 1);
            symbols[index].push_str(&right);
        }
        ids.extend(
            symbols.iter().map(|symbol| self.vocab.get(symbol).copied().unwrap_or(self.unk_id)),
        );
    }
}

/// `merges.txt`: a `#version` line, then one merge per line, two symbols separated by a space.
fn parse_merges(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(DiffusionError::config(
                format!("line {}", line_index + 1),
                "a merge is two symbols separated by one space",
                path,
            ));
        };
        merges.push((left.to_owned(), right.to_owned()));
    }
    Ok(merges)
}

/// The BPE model of a `tokenizer.json` (the `tokenizers` library's file): `model.vocab` and
/// `model.merges`, each merge written as `"a b"` or, in newer files, as `["a", "b"]`. The
/// pre-tokenizer and normalizer are CLIP's, as for the vocab.json form.
/// A vocabulary and its merges in rank order.
type VocabAndMerges = (HashMap<String, u32>, Vec<(String, String)>);

fn read_tokenizer_json(path: &Path) -> Result<VocabAndMerges> {
    let json: Value = read_json("tokenizer.json", path)?;
    let model = &json["model"];
    if model.get("type").and_then(Value::as_str).is_some_and(|kind| kind != "BPE") {
        return Err(DiffusionError::config("model.type", "only a BPE tokenizer is CLIP's", path));
    }
    let vocab: HashMap<String, u32> = serde_json::from_value(model["vocab"].clone())
        .map_err(|err| DiffusionError::config("model.vocab", err.to_string(), path))?;
    let Some(entries) = model.get("merges").and_then(Value::as_array) else {
        return Err(DiffusionError::config("model.merges", "missing or not a list", path));
    };
    let mut merges = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let pair = match entry {
            Value::String(text) => text.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())),
            Value::Array(items) => match items.as_slice() {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        let Some(pair) = pair else {
            return Err(DiffusionError::config(
                format!("model.merges[{index}]"),
                "a merge is \"a b\" or [\"a\", \"b\"]",
                path,
            ));
        };
        merges.push(pair);
    }
    Ok((vocab, merges))
}

/// The content of a special-token entry, written either as a string or as an `AddedToken`
/// object with a `content` field.
fn token_content(config: &Value, name: &str) -> Option<String> {
    match config.get(name)? {
        Value::String(text) => Some(text.clone()),
        Value::Object(object) => object.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `\s+` → one space, as the tokenizer's normalizer does.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for character in text.chars() {
        if character.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(character);
            in_space = false;
        }
    }
    out
}

/// Splits out the special tokens (`specials`, longest first), which the tokenizer treats as
/// single tokens wherever they appear.
fn split_special<'text>(
    text: &'text str,
    specials: &[(String, u32)],
) -> Vec<(&'text str, Option<u32>)> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let mut next: Option<(usize, usize, u32)> = None;
        for (marker, id) in specials {
            if let Some(at) = rest.find(marker.as_str())
                && next.is_none_or(|(best, _, _)| at < best)
            {
                next = Some((at, marker.len(), *id));
            }
        }
        let Some((at, length, id)) = next else {
            if !rest.is_empty() {
                parts.push((rest, None));
            }
            return parts;
        };
        if at > 0 {
            parts.push((&rest[..at], None));
        }
        parts.push((&rest[at..at + length], Some(id)));
        rest = &rest[at + length..];
    }
}

/// GPT-2/CLIP's reversible byte → printable character map.
fn byte_to_unicode() -> [char; 256] {
    let printable = |byte: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&byte)
            || (0xA1..=0xAC).contains(&byte)
            || (0xAE..=0xFF).contains(&byte)
    };
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for byte in 0..256u32 {
        let code = if printable(byte) {
            byte
        } else {
            extra += 1;
            255 + extra
        };
        table[byte as usize] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion")
    }

    fn recorded() -> Value {
        let text = fs_err::read_to_string(fixtures().join("tokens.json")).expect("tokens.json");
        serde_json::from_str(&text).expect("tokens.json parses")
    }

    fn ids(value: &Value) -> Vec<Vec<u32>> {
        serde_json::from_value(value.clone()).expect("ids")
    }

    /// Exact ids of transformers' `CLIPTokenizer` on tricky prompts, for the real 49 408-entry
    /// vocabulary and for each tiny pipeline's tokenizer (pad `<|endoftext|>` and `!`).
    #[test]
    fn matches_transformers_ids_exactly() {
        let recorded = recorded();
        let prompts: Vec<String> =
            serde_json::from_value(recorded["prompts"].clone()).expect("prompts");
        for name in ["tokenizer_clip", "sdxl_tiny/tokenizer", "sdxl_tiny/tokenizer_2"] {
            let tokenizer =
                ClipTokenizer::from_folder(&fixtures().join(name)).expect("tokenizer loads");
            let padded = ids(&recorded[name]["padded_77"]);
            let untruncated = ids(&recorded[name]["untruncated"]);
            assert_eq!(
                u64::from(tokenizer.pad_id()),
                recorded[name]["pad_token_id"].as_u64().expect("pad id")
            );
            for (index, prompt) in prompts.iter().enumerate() {
                assert_eq!(
                    tokenizer.encode_padded(prompt),
                    padded[index],
                    "{name} padded {prompt:?}"
                );
                let mut full = vec![tokenizer.bos_id];
                full.extend(tokenizer.encode(prompt));
                full.push(tokenizer.eos_id);
                assert_eq!(full, untruncated[index], "{name} untruncated {prompt:?}");
            }
        }
    }

    fn assert_recorded_ids(
        tokenizer: &ClipTokenizer,
        record: &Value,
        prompts: &[String],
        what: &str,
    ) {
        assert_eq!(
            u64::from(tokenizer.pad_id()),
            record["pad_token_id"].as_u64().expect("pad id"),
            "{what} pad"
        );
        let padded = ids(&record["padded_77"]);
        let untruncated = ids(&record["untruncated"]);
        for (index, prompt) in prompts.iter().enumerate() {
            assert_eq!(tokenizer.encode_padded(prompt), padded[index], "{what} padded {prompt:?}");
            let mut full = vec![tokenizer.bos_id];
            full.extend(tokenizer.encode(prompt));
            full.push(tokenizer.eos_id);
            assert_eq!(full, untruncated[index], "{what} untruncated {prompt:?}");
        }
    }

    /// The shipped vocabulary is CLIP's: built from the shipped merges it equals the real
    /// 49 408-entry `vocab.json`, and it tokenizes as transformers does with it, for both pads.
    #[test]
    fn shipped_clip_tokenizer_is_the_real_vocabulary() {
        let recorded = recorded();
        let prompts: Vec<String> =
            serde_json::from_value(recorded["prompts"].clone()).expect("prompts");
        let shipped = ClipTokenizer::clip("<|endoftext|>").expect("shipped");
        let vocab_json =
            fs_err::read_to_string(fixtures().join("tokenizer_clip/vocab.json")).expect("vocab");
        let real: HashMap<String, u32> = serde_json::from_str(&vocab_json).expect("json");
        assert_eq!(shipped.vocab, real);
        assert_recorded_ids(&shipped, &recorded["tokenizer_clip"], &prompts, "shipped CLIP");
        // The OpenCLIP pad: `!` is its own token wherever it appears, as with tokenizer_2.
        let bang = ClipTokenizer::clip("!").expect("shipped, pad !");
        assert_eq!(bang.pad_id(), 0);
        assert_eq!(bang.encode("wow!!!"), vec![real["wow</w>"], 0, 0, 0]);
    }

    /// Folders with only `tokenizer.json` + `tokenizer_config.json` (transformers 5's
    /// `save_pretrained`) give the ids transformers gives with them.
    #[test]
    fn tokenizer_json_only_folders_match_transformers() {
        let folder = fixtures().join("tokenizer_json");
        let text = fs_err::read_to_string(folder.join("tokens.json")).expect("tokens.json");
        let recorded: Value = serde_json::from_str(&text).expect("parses");
        let prompts: Vec<String> =
            serde_json::from_value(recorded["prompts"].clone()).expect("prompts");
        for name in ["tokenizer", "tokenizer_2"] {
            assert!(!folder.join(name).join("vocab.json").exists());
            let tokenizer = ClipTokenizer::from_folder(&folder.join(name)).expect("loads");
            assert_recorded_ids(&tokenizer, &recorded[name], &prompts, name);
        }
        let broken = tempfile::tempdir().expect("tempdir");
        fs_err::write(broken.path().join("tokenizer.json"), r#"{"model": {"type": "Unigram"}}"#)
            .expect("write");
        let err = ClipTokenizer::from_folder(broken.path()).expect_err("not BPE");
        assert!(err.to_string().contains("model.type"), "{err}");
    }

    #[test]
    fn long_prompts_are_chunked_or_truncated_and_say_so() {
        let tokenizer =
            ClipTokenizer::from_folder(&fixtures().join("tokenizer_clip")).expect("tokenizer");
        let prompt = "red ".repeat(100);
        let chunked = tokenizer.tokenize(&prompt, LongPromptMode::Chunk);
        assert_eq!(chunked.token_count, 100);
        assert_eq!(chunked.windows.len(), 2);
        assert_eq!(chunked.chunked_tokens, 25);
        assert_eq!(chunked.windows[1][26], tokenizer.eos_id);
        assert!(chunked.windows.iter().all(|window| window.len() == 77));
        let truncated = tokenizer.tokenize(&prompt, LongPromptMode::Truncate);
        assert_eq!(truncated.windows.len(), 1);
        assert_eq!(truncated.dropped_tokens, 25);
        assert_eq!(truncated.windows[0], tokenizer.encode_padded(&prompt));
    }
}
