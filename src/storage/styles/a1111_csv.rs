//! AUTOMATIC1111's `styles.csv`, read as `StyleDatabase.load_from_csv` reads it:
//! `open(path, encoding="utf-8-sig", newline="")` (a BOM is dropped), `csv.DictReader(file,
//! skipinitialspace=True)` (the first row names the columns: `name`, `prompt` — or `text` in
//! old files — and `negative_prompt`), rows whose name starts with `#` skipped, later rows
//! replacing earlier ones of the same name.
//!
//! The CSV reader follows the state machine of Python's `_csv` module for the `excel` dialect: quoted fields
//! may span lines and double their quotes, spaces after a comma are skipped, a quote inside an
//! unquoted field is kept, a file ending inside quotes ends the field.

use super::{ImportedStyle, StyleSemantics, StylesError, StylesFile, StylesFormat};

/// One input step: a character, or the end of a line as Python's line iteration gives it.
#[derive(Clone, Copy, PartialEq)]
enum Input {
    Char(char),
    EndOfLine,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    StartRecord,
    StartField,
    InField,
    InQuotedField,
    QuoteInQuotedField,
    EatNewline,
}

/// Lines as `open(newline="")` iterates them: each ends after `\n`, `\r\n` or a lone `\r`.
fn py_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\n' => {
                lines.push(&text[start..=at]);
                start = at + 1;
            }
            b'\r' => {
                let end = if bytes.get(at + 1) == Some(&b'\n') { at + 1 } else { at };
                lines.push(&text[start..=end]);
                start = end + 1;
                at = end;
            }
            _ => {}
        }
        at += 1;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// The reader's buffers.
#[derive(Default)]
struct CsvReader {
    done: Vec<Vec<String>>,
    fields: Vec<String>,
    field: String,
}

impl CsvReader {
    fn save_field(&mut self) {
        self.fields.push(std::mem::take(&mut self.field));
    }

    fn save_record(&mut self) {
        self.done.push(std::mem::take(&mut self.fields));
    }

    /// A field ends at a line break (`\n`/`\r` seen, the line's end still to come) or at the
    /// line's end itself; returns the next state.
    fn end_field_at(&mut self, end: bool) -> State {
        self.save_field();
        if end {
            self.save_record();
            State::StartRecord
        } else {
            State::EatNewline
        }
    }
}

/// Every record of a CSV text, as Python's `csv.reader(..., skipinitialspace=True)` yields
/// them (blank lines give empty records).
pub fn read_records(text: &str) -> Vec<Vec<String>> {
    let mut out = CsvReader::default();
    let mut state = State::StartRecord;
    for line in py_lines(text) {
        let inputs = line.chars().map(Input::Char).chain(std::iter::once(Input::EndOfLine));
        for input in inputs {
            let end = input == Input::EndOfLine;
            let line_break = end || matches!(input, Input::Char('\n' | '\r'));
            state = match (state, input) {
                (State::StartRecord | State::EatNewline, Input::EndOfLine) => {
                    out.save_record();
                    State::StartRecord
                }
                (State::StartRecord, Input::Char('\n' | '\r')) => State::EatNewline,
                (State::StartRecord | State::StartField, Input::Char('"')) => State::InQuotedField,
                (State::StartRecord | State::StartField, Input::Char(' ')) => State::StartField,
                (State::InQuotedField, Input::Char('"')) => State::QuoteInQuotedField,
                (State::QuoteInQuotedField, Input::Char('"')) => {
                    out.field.push('"');
                    State::InQuotedField
                }
                (
                    State::StartRecord
                    | State::StartField
                    | State::InField
                    | State::QuoteInQuotedField,
                    _,
                ) if line_break => out.end_field_at(end),
                (
                    State::StartRecord
                    | State::StartField
                    | State::InField
                    | State::QuoteInQuotedField,
                    Input::Char(','),
                ) => {
                    out.save_field();
                    State::StartField
                }
                // In a quoted field everything is kept; after a closing quote (not strict) the
                // quoting has ended and the character is kept.
                (State::InQuotedField, Input::Char(c)) => {
                    out.field.push(c);
                    State::InQuotedField
                }
                (
                    State::StartRecord
                    | State::StartField
                    | State::InField
                    | State::QuoteInQuotedField,
                    Input::Char(c),
                ) => {
                    out.field.push(c);
                    State::InField
                }
                (other, _) => other,
            };
        }
    }
    // End of data inside a field (non-strict): the field and record end there.
    if !out.field.is_empty() || state == State::InQuotedField {
        out.save_field();
        out.save_record();
    }
    out.done
}

/// Reads A1111's `styles.csv`.
///
/// # Errors
/// No header row, or no `name` column, or neither a `prompt` nor a `text` column.
pub fn parse(text: &str) -> Result<StylesFile, StylesError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = read_records(text).into_iter();
    let Some(header) = records.next() else {
        return Err(StylesError::Invalid("styles.csv is empty (no header row)".to_owned()));
    };
    // dict(zip(fieldnames, row)): with a repeated column name the later column wins.
    let column = |name: &str| header.iter().rposition(|h| h == name);
    let name_column = column("name").ok_or_else(|| {
        StylesError::Invalid(format!(
            "styles.csv has no \"name\" column (header: {})",
            header.join(",")
        ))
    })?;
    let prompt_column = column("prompt").or_else(|| column("text")).ok_or_else(|| {
        StylesError::Invalid(format!(
            "styles.csv has no \"prompt\" (or old \"text\") column (header: {})",
            header.join(",")
        ))
    })?;
    let negative_column = column("negative_prompt");
    let mut found =
        StylesFile { format: StylesFormat::A1111Csv, styles: Vec::new(), warnings: Vec::new() };
    let mut row_number = 1;
    for record in records {
        row_number += 1;
        // DictReader skips records that are empty lists (blank lines).
        if record.is_empty() {
            continue;
        }
        let cell = |at: usize| record.get(at).cloned();
        let Some(name) = cell(name_column) else {
            found.warnings.push(format!("row {row_number} has no name cell; skipped"));
            continue;
        };
        if name.starts_with('#') {
            continue;
        }
        if name.trim().is_empty() {
            found.warnings.push(format!("row {row_number} has an empty name; skipped"));
            continue;
        }
        if record.len() > header.len() {
            found.warnings.push(format!(
                "row {row_number} ({name:?}) has {} cells for {} columns; the extra cells are \
                 ignored (a comma missing its quotes?)",
                record.len(),
                header.len()
            ));
        }
        let style = ImportedStyle {
            prompt: cell(prompt_column).unwrap_or_default(),
            negative: negative_column.and_then(cell).unwrap_or_default(),
            name,
            semantics: StyleSemantics::A1111,
        };
        if let Some(existing) = found.styles.iter_mut().find(|s| s.name == style.name) {
            found.warnings.push(format!(
                "style {:?} is defined twice; row {row_number} replaces the earlier one (as \
                 A1111 does)",
                style.name
            ));
            *existing = style;
        } else {
            found.styles.push(style);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_python_csv() {
        // Each expectation was printed by Python 3.11's csv.reader(skipinitialspace=True).
        assert_eq!(
            read_records("name,prompt\na,\"b\n"),
            vec![vec!["name", "prompt"], vec!["a", "b\n"]]
        );
        assert_eq!(
            read_records("name,prompt\n\n\na, b ,c\n\"x\"y,\"q\"\"r\"\r\nlast"),
            vec![
                vec!["name", "prompt"],
                vec![],
                vec![],
                vec!["a", "b ", "c"],
                vec!["xy", "q\"r"],
                vec!["last"],
            ]
        );
        assert_eq!(
            read_records("name,prompt\r\"a\rb\",c"),
            vec![vec!["name", "prompt"], vec!["a\rb", "c"]]
        );
        assert_eq!(read_records("a,,\"\"\n"), vec![vec!["a", "", ""]]);
        assert_eq!(read_records("a,b\"c\"d\n"), vec![vec!["a", "b\"c\"d"]]);
    }

    #[test]
    fn reads_a1111_styles() {
        let text = "\u{feff}name,prompt,negative_prompt\n\
            Cinematic,\"cinematic still, {prompt}, film grain\",\"cartoon, anime\"\n\
            # comment row,ignored,\n\
            Multi,\"line one\nline two\",\n\
            Short,only prompt\n\
            Cinematic,\"second {prompt}\",\n\
            ,nameless,\n";
        let found = parse(text).expect("parses");
        let names: Vec<&str> = found.styles.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["Cinematic", "Multi", "Short"]);
        assert_eq!(found.styles[0].prompt, "second {prompt}");
        assert_eq!(found.styles[0].negative, "");
        assert_eq!(found.styles[1].prompt, "line one\nline two");
        assert_eq!(found.styles[2].negative, "");
        let joined = found.warnings.join("\n");
        assert!(joined.contains("defined twice") && joined.contains("empty name"), "{joined}");
    }

    #[test]
    fn old_text_column_and_bad_headers() {
        let found = parse("name,text\nOld,\"x, {prompt}\"\n").expect("parses");
        assert_eq!(found.styles[0].prompt, "x, {prompt}");
        assert!(parse("").expect_err("empty").to_string().contains("empty"));
        assert!(
            parse("title,prompt\na,b\n").expect_err("no name").to_string().contains("\"name\"")
        );
        assert!(
            parse("name,negative\na,b\n").expect_err("no prompt").to_string().contains("prompt")
        );
    }
}
