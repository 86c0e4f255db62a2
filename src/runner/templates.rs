//! Prompt template files: named lists of words and phrases, and templates that combine them.
//!
//! A file is RON (like `profiles.ron`) or, when its name ends in `.json`, JSON:
//!
//! ```ron
//! (
//!     negative: "lowres, blurry, watermark",     // optional, for every template
//!     seeds: Random,                             // Random | Fixed(42) | Sequential(1000)
//!     models: [], profiles: ["Cinematic"],       // optional defaults (see the runner)
//!     lists: {
//!         "subject": ["a red fox", "3::an old lighthouse", "a {adjective} tower"],
//!         "adjective": ["ancient", "glowing"],
//!     },
//!     templates: [
//!         (name: "scene", text: "A {subject} at {dawn|2::dusk}", weight: 2.0,
//!          models: ["SDXL Base 1.0"], profiles: ["Watercolor"], negative: "people"),
//!     ],
//! )
//! ```
//!
//! Text syntax: `{name}` is a random entry of list `name` (entries may use slots in turn);
//! `{a|b|c}` is an inline choice; `N::` in front of a list entry or a choice weights it (default
//! 1, as the Dynamic Prompts extension writes weights); a backslash makes the next character
//! literal (`\{`, `\}`, `\|`, written `"\\{"` inside a RON or JSON string), as ComfyUI's
//! dynamic prompts do.
//! Unknown slots, empty lists, cycles between lists, bad weights and unknown profile or model
//! names are errors with the line and column of the offending text.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use super::source_map::{Position, SourceMap};
use crate::models::catalog::Catalog;
use crate::request::Profiles;

/// The template file shipped with the lab (hundreds of combinations across fantasy, sci-fi,
/// portrait, architecture, nature, product…), compiled in so the runner works from any folder.
pub const BUILTIN_TEMPLATES_RON: &str = include_str!("../../assets/prompt-templates.ron");
/// How errors name the built-in file.
pub const BUILTIN_NAME: &str = "<built-in prompt-templates.ron>";

/// How a template picks each job's seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum SeedPolicy {
    /// A 32-bit seed drawn from the job's generator (so still fixed by `--seed`).
    Random,
    /// The same seed for every job (compare prompts on one noise).
    Fixed(u64),
    /// `N + job number − 1`.
    Sequential(u64),
}

/// Why a template file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    /// The file could not be read (the message names it).
    #[error("prompt templates: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed RON or JSON.
    #[error("prompt templates {file}:{}:{}: {message}", at.line, at.column)]
    Syntax {
        /// The file.
        file: String,
        /// Where.
        at: Position,
        /// What the parser said.
        message: String,
    },
    /// Well-formed but unusable.
    #[error("prompt templates {file}{}: {message}", at.map(|p| format!(":{}:{}", p.line, p.column)).unwrap_or_default())]
    Invalid {
        /// The file.
        file: String,
        /// Where, when the text can be found.
        at: Option<Position>,
        /// What is wrong.
        message: String,
    },
}

impl TemplatesError {
    /// The position the error points at, if any.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Io(_) => None,
            Self::Syntax { at, .. } => Some(*at),
            Self::Invalid { at, .. } => *at,
        }
    }
}

/// A parsed piece of template text.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `{name}`: an entry of a list.
    Slot {
        /// The list.
        name: String,
        /// Character index of the `{` in the text it came from.
        at: usize,
    },
    /// `{a|b}`: one of the variants, by weight.
    Choice {
        /// One weight per variant.
        weights: Vec<f64>,
        /// The variants.
        variants: Vec<Vec<Piece>>,
    },
}

/// A syntax error inside one text: where (character index) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct TextError {
    /// Character index in the text.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses template text (no weight prefix).
///
/// # Errors
/// A stray `}`, an unclosed `{`, an empty `{}`, a bad weight.
pub fn parse_text(text: &str) -> Result<Vec<Piece>, TextError> {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    parse_sequence(&chars, &mut pos, 0)
}

/// Parses a list entry: an optional `N::` weight, then text.
///
/// # Errors
/// As [`parse_text`].
pub fn parse_entry(text: &str) -> Result<(f64, Vec<Piece>), TextError> {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let weight = parse_weight(&chars, &mut pos)?.unwrap_or(1.0);
    let pieces = parse_sequence(&chars, &mut pos, 0)?;
    Ok((weight, pieces))
}

fn push_char(pieces: &mut Vec<Piece>, c: char) {
    if let Some(Piece::Text(text)) = pieces.last_mut() {
        text.push(c);
    } else {
        pieces.push(Piece::Text(c.to_string()));
    }
}

/// Reads until the end, or inside a group until its `|` or `}` (left for the caller).
fn parse_sequence(chars: &[char], pos: &mut usize, depth: usize) -> Result<Vec<Piece>, TextError> {
    let mut pieces = Vec::new();
    while let Some(&c) = chars.get(*pos) {
        match c {
            '\\' if *pos + 1 < chars.len() => {
                push_char(&mut pieces, chars[*pos + 1]);
                *pos += 2;
            }
            '{' => pieces.push(parse_group(chars, pos, depth)?),
            '}' if depth == 0 => {
                return Err(TextError {
                    at: *pos,
                    message: "a `}` closes nothing (write `\\}` for a literal brace)".into(),
                });
            }
            '}' | '|' if depth > 0 => return Ok(pieces),
            other => {
                push_char(&mut pieces, other);
                *pos += 1;
            }
        }
    }
    Ok(pieces)
}

/// `{…}` at `pos`: a slot or a choice.
fn parse_group(chars: &[char], pos: &mut usize, depth: usize) -> Result<Piece, TextError> {
    let start = *pos;
    *pos += 1;
    let mut weights = Vec::new();
    let mut variants = Vec::new();
    let mut any_weight = false;
    loop {
        let weight = parse_weight(chars, pos)?;
        any_weight |= weight.is_some();
        weights.push(weight.unwrap_or(1.0));
        variants.push(parse_sequence(chars, pos, depth + 1)?);
        match chars.get(*pos) {
            Some('|') => *pos += 1,
            Some('}') => {
                *pos += 1;
                break;
            }
            _ => {
                return Err(TextError {
                    at: start,
                    message: "this `{` is never closed (write `\\{` for a literal brace)".into(),
                });
            }
        }
    }
    if variants.len() == 1 && !any_weight {
        let name = match variants.pop().unwrap_or_default().as_slice() {
            [] => String::new(),
            [Piece::Text(text)] => text.trim().to_owned(),
            _ => {
                return Err(TextError {
                    at: start,
                    message: "`{…}` holds a list name, or choices separated by `|`".into(),
                });
            }
        };
        if name.is_empty() {
            return Err(TextError { at: start, message: "`{}` names no list".into() });
        }
        return Ok(Piece::Slot { name, at: start });
    }
    Ok(Piece::Choice { weights, variants })
}

/// An optional `N::` weight at `pos` (after spaces); moves past it when present.
fn parse_weight(chars: &[char], pos: &mut usize) -> Result<Option<f64>, TextError> {
    let mut i = *pos;
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    let digits_start = i;
    while chars.get(i).is_some_and(|c| c.is_ascii_digit() || *c == '.') {
        i += 1;
    }
    if i == digits_start || chars.get(i) != Some(&':') || chars.get(i + 1) != Some(&':') {
        return Ok(None);
    }
    let number: String = chars[digits_start..i].iter().collect();
    match number.parse::<f64>() {
        Ok(weight) if weight.is_finite() && weight > 0.0 => {
            *pos = i + 2;
            Ok(Some(weight))
        }
        _ => Err(TextError {
            at: digits_start,
            message: format!("weight {number:?} must be a number greater than 0"),
        }),
    }
}

/// The slots a parsed text refers to, with their character index, in order.
pub fn slots(pieces: &[Piece]) -> Vec<(&str, usize)> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(_) => {}
            Piece::Slot { name, at } => out.push((name.as_str(), *at)),
            Piece::Choice { variants, .. } => {
                for variant in variants {
                    out.extend(slots(variant));
                }
            }
        }
    }
    out
}

// ── The file as written ──────────────────────────────────────────────────────────────────

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    negative: Option<String>,
    #[serde(default)]
    seeds: Option<SeedPolicy>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    profiles: Vec<String>,
    #[serde(default)]
    lists: OrderedLists,
    templates: Vec<TemplateModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateModel {
    name: String,
    text: String,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    profiles: Vec<String>,
    #[serde(default)]
    negative: Option<String>,
    #[serde(default)]
    seeds: Option<SeedPolicy>,
}

fn one() -> f64 {
    1.0
}

/// A map kept in file order, duplicates included (so they can be reported).
#[derive(Debug, Default)]
struct OrderedLists(Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for OrderedLists {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListsVisitor;
        impl<'de> Visitor<'de> for ListsVisitor {
            type Value = OrderedLists;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from list names to lists of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedLists, A::Error> {
                let mut lists = Vec::new();
                while let Some((name, entries)) = map.next_entry::<String, Vec<String>>()? {
                    lists.push((name, entries));
                }
                Ok(OrderedLists(lists))
            }
        }
        deserializer.deserialize_map(ListsVisitor)
    }
}

// ── The validated set ────────────────────────────────────────────────────────────────────

/// One entry of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    /// As written (weight prefix included).
    pub text: String,
    /// Its weight (default 1).
    pub weight: f64,
    /// Parsed.
    pub pieces: Vec<Piece>,
}

/// A named list.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotList {
    /// The name `{name}` refers to.
    pub name: String,
    /// Its entries, in file order.
    pub entries: Vec<ListEntry>,
}

/// One template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Its name (logged with every job).
    pub name: String,
    /// As written.
    pub text: String,
    /// Parsed.
    pub pieces: Vec<Piece>,
    /// How often it is picked relative to the others.
    pub weight: f64,
    /// Models it may run on (model keys; empty: the file's, else the runner's).
    pub models: Vec<String>,
    /// Profiles it may use (empty: the file's, else the runner's).
    pub profiles: Vec<String>,
    /// Its negative prompt (text with slots), else the file's.
    pub negative: Option<(String, Vec<Piece>)>,
    /// Its seed policy, else the file's.
    pub seeds: Option<SeedPolicy>,
}

/// A validated template file.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSet {
    /// How errors and logs name the file.
    pub file: String,
    /// The lists, in file order.
    pub lists: Vec<SlotList>,
    /// The templates, in file order.
    pub templates: Vec<Template>,
    /// Negative prompt for templates that give none.
    pub negative: Option<(String, Vec<Piece>)>,
    /// Seed policy for templates that give none (default: random).
    pub seeds: SeedPolicy,
    /// Models for templates that name none.
    pub models: Vec<String>,
    /// Profiles for templates that name none.
    pub profiles: Vec<String>,
}

/// Which syntax a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RON (the default).
    Ron,
    /// JSON (a name ending in `.json`).
    Json,
}

impl Format {
    /// JSON for `*.json`, RON for everything else.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Ron,
        }
    }
}

struct Checker<'a> {
    file: &'a str,
    map: SourceMap,
}

impl Checker<'_> {
    fn invalid(&self, at: Option<Position>, message: String) -> TemplatesError {
        TemplatesError::Invalid { file: self.file.to_owned(), at, message }
    }

    /// A text error inside the literal `text` (searched from byte `after`).
    fn in_text(&self, text: &str, after: usize, err: &TextError, what: &str) -> TemplatesError {
        self.invalid(self.map.inside(text, err.at, after), format!("{what}: {}", err.message))
    }
}

impl TemplateSet {
    /// The built-in file.
    ///
    /// # Errors
    /// Only if the shipped file is broken (a test checks it is not).
    pub fn builtin(profiles: &Profiles, catalog: &Catalog) -> Result<Self, TemplatesError> {
        Self::parse(BUILTIN_TEMPLATES_RON, BUILTIN_NAME, Format::Ron, profiles, catalog)
    }

    /// Reads `path` (JSON when it ends in `.json`, else RON).
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid template file.
    pub fn load(
        path: &Path,
        profiles: &Profiles,
        catalog: &Catalog,
    ) -> Result<Self, TemplatesError> {
        let text = fs_err::read_to_string(path)?;
        Self::parse(&text, &path.display().to_string(), Format::of(path), profiles, catalog)
    }

    /// Parses and checks a template file; `file` names it in errors.
    ///
    /// # Errors
    /// Syntax errors and every check of the module docs, with line and column.
    pub fn parse(
        text: &str,
        file: &str,
        format: Format,
        profiles: &Profiles,
        catalog: &Catalog,
    ) -> Result<Self, TemplatesError> {
        let model: FileModel = match format {
            Format::Ron => ron::Options::default()
                .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
                .from_str(text)
                .map_err(|err| TemplatesError::Syntax {
                    file: file.to_owned(),
                    at: Position { line: err.span.start.line, column: err.span.start.col },
                    message: err.code.to_string(),
                })?,
            Format::Json => serde_json::from_str(text).map_err(|err| TemplatesError::Syntax {
                file: file.to_owned(),
                at: Position { line: err.line(), column: err.column() },
                message: err.to_string(),
            })?,
        };
        let checker = Checker { file, map: SourceMap::new(text) };
        let lists = check_lists(&checker, model.lists.0)?;
        check_cycles(&checker, &lists)?;
        if model.templates.is_empty() {
            let at = checker.map.key("templates", 0).map(|k| k.0);
            return Err(checker.invalid(at, "no templates".into()));
        }
        let negative = match model.negative {
            None => None,
            Some(text) => {
                let pieces =
                    parse_text(&text).map_err(|err| checker.in_text(&text, 0, &err, "negative"))?;
                check_slots(&checker, &lists, &text, &pieces, 0, "negative")?;
                Some((text, pieces))
            }
        };
        check_names(&checker, &model.models, &model.profiles, profiles, catalog, 0)?;
        let mut templates: Vec<Template> = Vec::new();
        for entry in model.templates {
            templates.push(check_template(&checker, &lists, &templates, entry, profiles, catalog)?);
        }
        Ok(Self {
            file: file.to_owned(),
            lists,
            templates,
            negative,
            seeds: model.seeds.unwrap_or(SeedPolicy::Random),
            models: model.models,
            profiles: model.profiles,
        })
    }

    /// The list called `name`.
    pub fn list(&self, name: &str) -> Option<&SlotList> {
        self.lists.iter().find(|list| list.name == name)
    }

    /// How many distinct prompts the templates can make (choices and list entries multiplied
    /// out; saturating), a figure for `--dry-run` and the README.
    pub fn combinations(&self) -> u128 {
        fn count(set: &TemplateSet, pieces: &[Piece]) -> u128 {
            pieces.iter().fold(1u128, |acc, piece| {
                let n = match piece {
                    Piece::Text(_) => 1,
                    Piece::Slot { name, .. } => set.list(name).map_or(1, |list| {
                        list.entries
                            .iter()
                            .fold(0u128, |sum, e| sum.saturating_add(count(set, &e.pieces)))
                    }),
                    Piece::Choice { variants, .. } => {
                        variants.iter().fold(0u128, |sum, v| sum.saturating_add(count(set, v)))
                    }
                };
                acc.saturating_mul(n)
            })
        }
        self.templates.iter().fold(0u128, |sum, t| sum.saturating_add(count(self, &t.pieces)))
    }
}

fn check_lists(
    checker: &Checker<'_>,
    raw: Vec<(String, Vec<String>)>,
) -> Result<Vec<SlotList>, TemplatesError> {
    let lists_key = checker.map.key("lists", 0).map_or(0, |(_, offset)| offset);
    let mut lists: Vec<SlotList> = Vec::new();
    let mut after = lists_key;
    for (name, entries) in raw {
        let key = checker.map.key(&name, after);
        let key_at = key.map(|k| k.0);
        let key_offset = key.map_or(after, |k| k.1);
        after = key_offset + 1;
        if name.trim().is_empty() || name.trim() != name || name.contains(['{', '}', '|']) {
            return Err(checker.invalid(
                key_at,
                format!(
                    "list name {name:?} must be non-empty, without surrounding spaces or {{ }} |"
                ),
            ));
        }
        if lists.iter().any(|list| list.name == name) {
            return Err(checker.invalid(key_at, format!("list {name:?} is defined twice")));
        }
        if entries.is_empty() {
            return Err(checker.invalid(key_at, format!("list {name:?} is empty")));
        }
        let mut parsed = Vec::with_capacity(entries.len());
        for text in entries {
            let (weight, pieces) = parse_entry(&text).map_err(|err| {
                checker.in_text(&text, key_offset, &err, &format!("list {name:?}"))
            })?;
            parsed.push(ListEntry { text, weight, pieces });
        }
        lists.push(SlotList { name, entries: parsed });
    }
    // Unknown slots inside list entries.
    for list in &lists {
        let key_offset = checker.map.key(&list.name, lists_key).map_or(0, |k| k.1);
        for entry in &list.entries {
            check_slots(
                checker,
                &lists,
                &entry.text,
                &entry.pieces,
                key_offset,
                &format!("list {:?}", list.name),
            )?;
        }
    }
    Ok(lists)
}

fn check_slots(
    checker: &Checker<'_>,
    lists: &[SlotList],
    text: &str,
    pieces: &[Piece],
    after: usize,
    what: &str,
) -> Result<(), TemplatesError> {
    for (name, at) in slots(pieces) {
        if !lists.iter().any(|list| list.name == name) {
            let mut known: Vec<&str> = lists.iter().map(|l| l.name.as_str()).collect();
            known.sort_unstable();
            return Err(checker.invalid(
                checker.map.inside(text, at, after),
                format!(
                    "{what}: unknown slot {{{name}}}; lists: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            ));
        }
    }
    Ok(())
}

/// Lists that refer to each other in a loop would never finish expanding.
fn check_cycles(checker: &Checker<'_>, lists: &[SlotList]) -> Result<(), TemplatesError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        checker: &Checker<'_>,
        lists: &[SlotList],
        index: usize,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Result<(), TemplatesError> {
        marks[index] = Mark::Open;
        path.push(index);
        let list = &lists[index];
        for entry in &list.entries {
            for (name, at) in slots(&entry.pieces) {
                let Some(next) = lists.iter().position(|l| l.name == name) else { continue };
                match marks[next] {
                    Mark::Done => {}
                    Mark::New => visit(checker, lists, next, marks, path)?,
                    Mark::Open => {
                        let start = path.iter().position(|&i| i == next).unwrap_or(0);
                        let mut names: Vec<&str> =
                            path[start..].iter().map(|&i| lists[i].name.as_str()).collect();
                        names.push(name);
                        let key_offset = checker.map.key(&list.name, 0).map_or(0, |k| k.1);
                        return Err(checker.invalid(
                            checker.map.inside(&entry.text, at, key_offset),
                            format!("lists refer to each other in a cycle: {}", names.join(" → ")),
                        ));
                    }
                }
            }
        }
        path.pop();
        marks[index] = Mark::Done;
        Ok(())
    }
    let mut marks = vec![Mark::New; lists.len()];
    for index in 0..lists.len() {
        if marks[index] == Mark::New {
            visit(checker, lists, index, &mut marks, &mut Vec::new())?;
        }
    }
    Ok(())
}

fn check_names(
    checker: &Checker<'_>,
    models: &[String],
    profile_names: &[String],
    profiles: &Profiles,
    catalog: &Catalog,
    after: usize,
) -> Result<(), TemplatesError> {
    for name in profile_names {
        if profiles.get(name).is_none() {
            return Err(checker.invalid(
                checker.map.value(name, after).map(|v| v.0),
                format!("unknown profile {name:?}; valid: {}", profiles.names().join(", ")),
            ));
        }
    }
    for key in models {
        if let Err(err) = catalog.resolve(key) {
            return Err(checker
                .invalid(checker.map.value(key, after).map(|v| v.0), format!("model: {err}")));
        }
    }
    Ok(())
}

fn check_template(
    checker: &Checker<'_>,
    lists: &[SlotList],
    done: &[Template],
    entry: TemplateModel,
    profiles: &Profiles,
    catalog: &Catalog,
) -> Result<Template, TemplatesError> {
    // Search from the template's name literal onwards (names are unique).
    let templates_key = checker.map.key("templates", 0).map_or(0, |k| k.1);
    let mut name_at = checker.map.value(&entry.name, templates_key);
    if done.iter().any(|t| t.name == entry.name) {
        let first = name_at.map_or(templates_key, |v| v.1 + 1);
        name_at = checker.map.value(&entry.name, first).or(name_at);
        return Err(checker
            .invalid(name_at.map(|v| v.0), format!("template {:?} is defined twice", entry.name)));
    }
    let after = name_at.map_or(templates_key, |v| v.1);
    let what = format!("template {:?}", entry.name);
    if entry.name.trim().is_empty() {
        return Err(checker.invalid(name_at.map(|v| v.0), "a template has an empty name".into()));
    }
    if !(entry.weight.is_finite() && entry.weight > 0.0) {
        return Err(checker.invalid(
            name_at.map(|v| v.0),
            format!("{what}: weight {} must be a number greater than 0", entry.weight),
        ));
    }
    if entry.text.trim().is_empty() {
        return Err(checker.invalid(name_at.map(|v| v.0), format!("{what}: empty text")));
    }
    let pieces =
        parse_text(&entry.text).map_err(|err| checker.in_text(&entry.text, after, &err, &what))?;
    check_slots(checker, lists, &entry.text, &pieces, after, &what)?;
    let negative = match entry.negative {
        None => None,
        Some(text) => {
            let negative_pieces = parse_text(&text)
                .map_err(|err| checker.in_text(&text, after, &err, &format!("{what} negative")))?;
            check_slots(
                checker,
                lists,
                &text,
                &negative_pieces,
                after,
                &format!("{what} negative"),
            )?;
            Some((text, negative_pieces))
        }
    };
    check_names(checker, &entry.models, &entry.profiles, profiles, catalog, after)?;
    Ok(Template {
        name: entry.name,
        text: entry.text,
        pieces,
        weight: entry.weight,
        models: entry.models,
        profiles: entry.profiles,
        negative,
        seeds: entry.seeds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: Format) -> Result<TemplateSet, TemplatesError> {
        TemplateSet::parse(text, "t.ron", format, &Profiles::builtin(), &Catalog::builtin())
    }

    /// The error's (line, column) and message.
    fn error_at(text: &str, format: Format) -> (usize, usize, String) {
        let err = parse(text, format).expect_err("an error");
        let at = err.position().unwrap_or_else(|| panic!("no position: {err}"));
        (at.line, at.column, err.to_string())
    }

    fn position(text: &str, format: Format) -> (usize, usize) {
        let (line, column, _) = error_at(text, format);
        (line, column)
    }

    #[test]
    fn text_syntax() {
        assert_eq!(
            parse_text("a {x} b").expect("ok"),
            vec![
                Piece::Text("a ".into()),
                Piece::Slot { name: "x".into(), at: 2 },
                Piece::Text(" b".into())
            ]
        );
        let Piece::Choice { weights, variants } =
            &parse_text("{red|2.5::{x} blue}").expect("ok")[0]
        else {
            panic!("a choice")
        };
        assert!(weights.len() == 2 && (weights[1] - 2.5).abs() < 1e-12, "{weights:?}");
        assert_eq!(variants[1][0], Piece::Slot { name: "x".into(), at: 10 });
        assert_eq!(parse_text(r"\{lit\} a|b").expect("ok"), vec![Piece::Text("{lit} a|b".into())]);
        assert!((parse_entry("3::a fox").expect("ok").0 - 3.0).abs() < 1e-12);
        assert_eq!(parse_text("a {b").expect_err("unclosed").at, 2);
        assert_eq!(parse_text("a }").expect_err("stray").at, 2);
        assert_eq!(parse_text("{}").expect_err("empty").at, 0);
        assert!(parse_entry("0::never").expect_err("weight").message.contains("greater than 0"));
    }

    #[test]
    fn unknown_slots_point_at_the_reference() {
        let text = "(\n  lists: { \"subject\": [\"fox\"] },\n  templates: [\n    (name: \"a\", text: \"A {subject} in {enviroment}\"),\n  ],\n)\n";
        let (line, column, message) = error_at(text, Format::Ron);
        assert_eq!((line, column), (4, 39), "{message}");
        assert!(
            message.contains("unknown slot {enviroment}") && message.contains("lists: subject"),
            "{message}"
        );
        assert!(message.starts_with("prompt templates t.ron:4:39: template \"a\""), "{message}");
        // Inside a list entry, and in a negative prompt.
        let text = "(\n  lists: {\n    \"a\": [\"x\", \"y {nope}\"],\n  },\n  templates: [(name: \"t\", text: \"{a}\")],\n)";
        assert_eq!(position(text, Format::Ron), (3, 19));
        let text = "(lists: {\"a\": [\"x\"]}, templates: [(name: \"t\", text: \"{a}\", negative: \"{b}\")])";
        let (line, column, message) = error_at(text, Format::Ron);
        assert_eq!((line, column), (1, 71), "{message}");
    }

    #[test]
    fn empty_lists_duplicates_and_cycles_point_at_their_place() {
        let text = "(\n  lists: {\n    \"ok\": [\"x\"],\n    \"empty\": [],\n  },\n  templates: [(name: \"t\", text: \"{ok}\")],\n)";
        let (line, column, message) = error_at(text, Format::Ron);
        assert_eq!((line, column), (4, 5));
        assert!(message.contains("list \"empty\" is empty"), "{message}");

        let text = "(\n  lists: {\n    \"a\": [\"x {b}\"],\n    \"b\": [\"y\", \"z {c}\"],\n    \"c\": [\"{a} w\"],\n  },\n  templates: [(name: \"t\", text: \"{a}\")],\n)";
        let (line, column, message) = error_at(text, Format::Ron);
        assert_eq!((line, column), (5, 12), "{message}");
        assert!(message.contains("cycle: a → b → c → a"), "{message}");
        let selfish = "(lists: {\"me\": [\"{me}\"]}, templates: [(name: \"t\", text: \"{me}\")])";
        assert!(error_at(selfish, Format::Ron).2.contains("cycle: me → me"));

        let twice = "(lists: {\"a\": [\"x\"],\n \"a\": [\"y\"]}, templates: [(name: \"t\", text: \"{a}\")])";
        let (line, column, message) = error_at(twice, Format::Ron);
        assert_eq!((line, column), (2, 2), "{message}");
        let twice =
            "(lists: {}, templates: [(name: \"t\", text: \"a\"),\n (name: \"t\", text: \"b\")])";
        assert_eq!(position(twice, Format::Ron), (2, 9));
    }

    #[test]
    fn bad_names_weights_and_syntax() {
        let text = "(lists: {}, templates: [(name: \"t\", text: \"a\",\n  profiles: [\"Cinematic\", \"Cinematik\"])])";
        let (line, column, message) = error_at(text, Format::Ron);
        assert_eq!((line, column), (2, 27));
        assert!(message.contains("unknown profile \"Cinematik\""), "{message}");
        let text =
            "(lists: {\"a\": [\"x\", \"0.0::y\"]}, templates: [(name: \"t\", text: \"{a}\")])";
        let (_, column, message) = error_at(text, Format::Ron);
        assert_eq!(column, 22, "{message}");
        assert!(message.contains("weight \"0.0\" must be a number greater than 0"), "{message}");
        let text = "(lists: {}, templates: [(name: \"t\", text: \"a\", weight: -2.0)])";
        assert!(error_at(text, Format::Ron).2.contains("weight -2 must be"));
        let text = "(lists: {}, templates: [(name: \"t\", txt: \"a\")])";
        let (line, column, message) = error_at(text, Format::Ron);
        assert_eq!(line, 1);
        assert!(column > 20 && message.contains("txt"), "{column} {message}");
        let text = "(lists: {}, templates: [(name: \"t\", text: \"a\"]\n";
        assert_eq!(error_at(text, Format::Ron).0, 1);
        let text = "(lists: {}, templates: [(name: \"t\", text: \"a {\")])";
        let (_, column, message) = error_at(text, Format::Ron);
        assert_eq!(column, 46, "{message}");
        assert!(message.contains("never closed"), "{message}");
    }

    #[test]
    fn json_files_work_with_positions_too() {
        let good = r#"{"lists": {"c": ["red", "2::blue"]}, "seeds": {"Fixed": 5},
            "templates": [{"name": "t", "text": "a {c} fox", "profiles": ["Watercolor"]}]}"#;
        let set = parse(good, Format::Json).expect("valid JSON");
        assert_eq!(set.seeds, SeedPolicy::Fixed(5));
        assert!((set.lists[0].entries[1].weight - 2.0).abs() < 1e-12);
        let bad = "{\"lists\": {\"c\": [\"red\"]},\n \"templates\": [{\"name\": \"t\", \"text\": \"a {d}\"}]}";
        assert_eq!(position(bad, Format::Json), (2, 41));
        let broken = "{\"lists\": {},\n \"templates\": [}";
        assert_eq!(error_at(broken, Format::Json).0, 2);
        assert_eq!(Format::of(Path::new("x.JSON")), Format::Json);
        assert_eq!(Format::of(Path::new("x.ron")), Format::Ron);
    }
}
