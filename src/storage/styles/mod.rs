//! Style presets users bring from other tools: AUTOMATIC1111's `styles.csv` and Fooocus' style
//! JSON files, read into [`ImportedStyle`]s, with each tool's `{prompt}` semantics.
//!
//! - A1111 (`modules/styles.py`): `merge_prompts` puts the prompt where the style says
//!   `{prompt}` (every occurrence); a style without one is appended as `, style` (both sides
//!   stripped, empty sides dropped). The negative prompt is merged the same way. Reading an
//!   image back, `extract_styles_from_prompt` takes matching style text off the prompts and
//!   names the styles (the infotext "Styles array").
//! - Fooocus (`modules/sdxl_styles.py`, `async_worker.py`): `p.replace('{prompt}', prompt)`
//!   split into lines; without a placeholder the prompt comes first and the style lines follow;
//!   the style's negative lines come *before* the user's negative; empty items are dropped.
//!   Fooocus encodes each item separately; here they are joined with `", "`, as its A1111
//!   metadata scheme writes them. Names are shown as its `normalize_key` spells them.

pub mod a1111_csv;
pub mod fooocus_json;

use serde::{Deserialize, Serialize};

/// The placeholder both tools use.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";

/// Largest styles file read.
pub const MAX_STYLES_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Whose rules combine a style with the user's prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StyleSemantics {
    /// AUTOMATIC1111's `merge_prompts` (also this lab's own suffix rule when there is no
    /// placeholder).
    #[default]
    A1111,
    /// Fooocus' `apply_style` and prompt workloads.
    Fooocus,
}

/// Which tool's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StylesFormat {
    /// A1111 `styles.csv` (`name,prompt,negative_prompt`).
    A1111Csv,
    /// Fooocus style JSON (`[{"name", "prompt", "negative_prompt"}]`).
    FooocusJson,
}

/// One style as the tool defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedStyle {
    /// The name the tool shows.
    pub name: String,
    /// Prompt text, possibly with `{prompt}`.
    pub prompt: String,
    /// Negative prompt text, possibly with `{prompt}` (A1111 only).
    pub negative: String,
    /// Whose rules apply it.
    pub semantics: StyleSemantics,
}

/// The styles of one file, in the order the tool would list them, plus notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StylesFile {
    /// The format read.
    pub format: StylesFormat,
    /// Styles; a name defined twice keeps its last definition (both tools use a dict).
    pub styles: Vec<ImportedStyle>,
    /// Rows skipped, duplicates, repaired encodings.
    pub warnings: Vec<String>,
}

/// Why a styles file cannot be imported; nothing is imported then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StylesError {
    /// Over [`MAX_STYLES_FILE_BYTES`].
    #[error("styles file is {0} bytes, over the {MAX_STYLES_FILE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("styles file is not UTF-8 text (byte {0})")]
    NotText(usize),
    /// The content is not what the format requires.
    #[error("{0}")]
    Invalid(String),
}

/// Reads a styles file: JSON (an array) is Fooocus', anything else A1111's CSV.
///
/// # Errors
/// Too large, not UTF-8, or not a valid file of either format; the error names the row, entry
/// or column.
pub fn parse_styles(bytes: &[u8]) -> Result<StylesFile, StylesError> {
    if bytes.len() > MAX_STYLES_FILE_BYTES {
        return Err(StylesError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|err| StylesError::NotText(err.valid_up_to()))?;
    let without_bom = text.strip_prefix('\u{feff}').unwrap_or(text);
    if without_bom.trim_start().starts_with('[') {
        fooocus_json::parse(text)
    } else {
        a1111_csv::parse(text)
    }
}

/// Python's `str.isspace` (what `strip()` removes).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// Python's `str.splitlines()` (no line ends kept).
pub fn py_splitlines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if is_break {
            lines.push(&text[start..at]);
            let mut end = at + c.len_utf8();
            if c == '\r'
                && let Some(&(next_at, '\n')) = chars.peek()
            {
                chars.next();
                end = next_at + 1;
            }
            start = end;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// A1111's `merge_prompts(style_text, prompt)`.
pub fn a1111_merge(style_text: &str, prompt: &str) -> String {
    if style_text.contains(PROMPT_PLACEHOLDER) {
        style_text.replace(PROMPT_PLACEHOLDER, prompt)
    } else {
        let parts: Vec<&str> =
            [prompt.trim_matches(is_py_space), style_text.trim_matches(is_py_space)]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
        parts.join(", ")
    }
}

/// Fooocus' prompt and negative workloads for one style, joined with `", "`.
pub fn fooocus_apply(
    style_prompt: &str,
    style_negative: &str,
    prompt: &str,
    negative: &str,
) -> (String, String) {
    let has_placeholder = style_prompt.contains(PROMPT_PLACEHOLDER);
    let replaced = style_prompt.replace(PROMPT_PLACEHOLDER, prompt);
    let mut positive: Vec<&str> = py_splitlines(&replaced);
    if !has_placeholder {
        positive.insert(0, prompt);
    }
    let mut negatives: Vec<&str> = py_splitlines(style_negative);
    negatives.push(negative);
    let join = |items: Vec<&str>, default: &str| -> String {
        let kept: Vec<&str> = items.into_iter().filter(|s| !s.is_empty()).collect();
        if kept.is_empty() { default.to_owned() } else { kept.join(", ") }
    };
    (join(positive, prompt), join(negatives, negative))
}

impl ImportedStyle {
    /// The prompt and negative prompt with this style applied, by its tool's rules.
    pub fn apply(&self, prompt: &str, negative: &str) -> (String, String) {
        match self.semantics {
            StyleSemantics::A1111 => {
                (a1111_merge(&self.prompt, prompt), a1111_merge(&self.negative, negative))
            }
            StyleSemantics::Fooocus => {
                fooocus_apply(&self.prompt, &self.negative, prompt, negative)
            }
        }
    }
}

/// Runs of two or more spaces (A1111's `re_spaces`) become one.
fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut spaces = 0;
    for c in text.chars() {
        if c == ' ' {
            spaces += 1;
        } else {
            if spaces > 0 {
                out.push(' ');
            }
            spaces = 0;
            out.push(c);
        }
    }
    if spaces > 0 {
        out.push(' ');
    }
    out
}

/// A1111's `extract_style_text_from_prompt`: whether the prompt is this style applied to some
/// prompt, and that prompt.
pub fn a1111_extract_text(style_text: &str, prompt: &str) -> Option<String> {
    let prompt = collapse_spaces(prompt.trim_matches(is_py_space));
    let style = collapse_spaces(style_text.trim_matches(is_py_space));
    if style.contains(PROMPT_PLACEHOLDER) {
        let mut parts = style.split(PROMPT_PLACEHOLDER);
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            // Two placeholders: A1111 raises here; no match.
            return None;
        };
        (prompt.len() >= left.len() + right.len()
            && prompt.starts_with(left)
            && prompt.ends_with(right))
        .then(|| prompt[left.len()..prompt.len() - right.len()].to_owned())
    } else if prompt.ends_with(&style) {
        let rest = &prompt[..prompt.len() - style.len()];
        Some(rest.strip_suffix(", ").unwrap_or(rest).to_owned())
    } else {
        None
    }
}

/// A1111's `extract_styles_from_prompt`: the styles (in application order) whose text the
/// prompts carry, and the prompts without them. `styles` are (name, prompt, negative).
pub fn a1111_extract_styles(
    styles: &[(&str, &str, &str)],
    prompt: &str,
    negative: &str,
) -> (Vec<String>, String, String) {
    let mut applicable: Vec<&(&str, &str, &str)> = styles.iter().collect();
    let mut extracted = Vec::new();
    let (mut prompt, mut negative) = (prompt.to_owned(), negative.to_owned());
    loop {
        let found = applicable.iter().position(|(_, style_prompt, style_negative)| {
            if style_prompt.is_empty() && style_negative.is_empty() {
                return false;
            }
            a1111_extract_text(style_prompt, &prompt).is_some()
                && a1111_extract_text(style_negative, &negative).is_some()
        });
        let Some(index) = found else { break };
        let (name, style_prompt, style_negative) = *applicable.remove(index);
        if let (Some(p), Some(n)) = (
            a1111_extract_text(style_prompt, &prompt),
            a1111_extract_text(style_negative, &negative),
        ) {
            prompt = p;
            negative = n;
        }
        extracted.push(name.to_owned());
    }
    extracted.reverse();
    (extracted, prompt, negative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_merge_rules() {
        assert_eq!(
            a1111_merge("cinematic, {prompt}, film grain", "a cat"),
            "cinematic, a cat, film grain"
        );
        assert_eq!(a1111_merge("{prompt} and {prompt}", " x "), " x  and  x ");
        assert_eq!(a1111_merge(" film grain ", " a cat "), "a cat, film grain");
        assert_eq!(a1111_merge("", "a cat"), "a cat");
        assert_eq!(a1111_merge("grain", ""), "grain");
    }

    #[test]
    fn fooocus_workloads() {
        assert_eq!(
            fooocus_apply(
                "cinematic still {prompt} . emotional",
                "anime, cartoon",
                "a fox",
                "blurry"
            ),
            ("cinematic still a fox . emotional".to_owned(), "anime, cartoon, blurry".to_owned())
        );
        // No placeholder: the prompt first, then each style line.
        assert_eq!(
            fooocus_apply("line one\nline two", "", "a fox", ""),
            ("a fox, line one, line two".to_owned(), String::new())
        );
        // Everything empty: the defaults.
        assert_eq!(fooocus_apply("", "", "", ""), (String::new(), String::new()));
    }

    #[test]
    fn splitlines_like_python() {
        assert_eq!(
            py_splitlines("a\u{0b}b\u{0c}c\u{1c}d\u{85}e\u{2028}f\r\ng\rh\n"),
            vec!["a", "b", "c", "d", "e", "f", "g", "h"]
        );
        assert_eq!(py_splitlines("\n\nx"), vec!["", "", "x"]);
        assert!(py_splitlines("").is_empty());
    }

    #[test]
    fn extraction_reverses_application() {
        let styles = [
            ("Cinematic", "cinematic still, {prompt}, film grain", "cartoon"),
            ("Sharp", "sharp focus", ""),
            ("Empty", "", ""),
        ];
        let (prompt, negative) = ("a  cat", "blurry");
        let (p, n) = (a1111_merge(styles[0].1, prompt), a1111_merge(styles[0].2, negative));
        let (p, n) = (a1111_merge(styles[1].1, &p), a1111_merge(styles[1].2, &n));
        assert_eq!(p, "cinematic still, a  cat, film grain, sharp focus");
        let (found, back_p, back_n) = a1111_extract_styles(&styles, &p, &n);
        assert_eq!(found, vec!["Cinematic", "Sharp"]);
        assert_eq!((back_p.as_str(), back_n.as_str()), ("a cat", "blurry"));
        let (none, same, _) = a1111_extract_styles(&styles, "unrelated", "");
        assert!(none.is_empty());
        assert_eq!(same, "unrelated");
        assert_eq!(a1111_extract_text("{prompt} x {prompt}", "a x b"), None);
    }
}
