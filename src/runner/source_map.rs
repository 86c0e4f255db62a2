//! Where a string of a template file sits in its text, so that errors found after parsing
//! (an unknown slot, an empty list, a cycle) carry a line and a column like syntax errors do.
//!
//! serde's RON and JSON readers give positions only for syntax errors, so this module lexes
//! the string literals of the text itself (RON and JSON share the double-quoted form; RON's raw
//! strings `r#"…"#`, char literals and `//`/`/* */` comments are skipped correctly) and keeps,
//! for every decoded character, where it came from.

/// A 1-based line and column (columns count characters, as editors show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One string literal: its decoded value and the byte offset of each decoded character.
#[derive(Debug, Clone)]
struct Literal {
    /// Byte offset of the opening quote (or `r`).
    start: usize,
    value: String,
    /// Byte offset in the source of each char of `value`, in order.
    char_offsets: Vec<usize>,
    /// Byte offset just past the literal.
    end: usize,
}

/// The string literals of a text, in order.
#[derive(Debug, Clone)]
pub struct SourceMap {
    text: String,
    literals: Vec<Literal>,
}

impl SourceMap {
    /// Lexes `text`; anything unreadable just ends the scan (the parser reports it).
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), literals: lex(text) }
    }

    /// The position of byte offset `offset`.
    pub fn position(&self, offset: usize) -> Position {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position { line, column: before[line_start..].chars().count() + 1 }
    }

    /// The first literal equal to `value` at or after byte `after`; its index.
    fn find(&self, value: &str, after: usize) -> Option<usize> {
        self.literals.iter().position(|lit| lit.start >= after && lit.value == value)
    }

    /// Where the first string literal equal to `value` starts (at or after `after`).
    pub fn value(&self, value: &str, after: usize) -> Option<(Position, usize)> {
        self.find(value, after)
            .map(|i| (self.position(self.literals[i].start), self.literals[i].start))
    }

    /// Where the map key `key` starts: a literal equal to it followed by `:`.
    pub fn key(&self, key: &str, after: usize) -> Option<(Position, usize)> {
        let mut from = after;
        while let Some(i) = self.find(key, from) {
            let lit = &self.literals[i];
            if self.text[lit.end..].trim_start().starts_with(':') {
                return Some((self.position(lit.start), lit.start));
            }
            from = lit.end;
        }
        None
    }

    /// Where character `char_index` of the first literal equal to `value` (at or after byte
    /// `after`) sits.
    pub fn inside(&self, value: &str, char_index: usize, after: usize) -> Option<Position> {
        let i = self.find(value, after)?;
        let lit = &self.literals[i];
        let offset = lit.char_offsets.get(char_index).copied().unwrap_or(lit.start);
        Some(self.position(offset))
    }
}

fn lex(text: &str) -> Vec<Literal> {
    let bytes = text.as_bytes();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // RON block comments nest.
                let mut depth = 0usize;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                // A RON char literal: '"' must not open a string.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) =>
            {
                match raw_string(text, i) {
                    Some(lit) => {
                        i = lit.end;
                        literals.push(lit);
                    }
                    None => i += 1,
                }
            }
            b'"' => match quoted_string(text, i) {
                Some(lit) => {
                    i = lit.end;
                    literals.push(lit);
                }
                None => break,
            },
            _ => i += 1,
        }
    }
    literals
}

/// `r"…"` or `r#"…"#` starting at `start`.
fn raw_string(text: &str, start: usize) -> Option<Literal> {
    let rest = &text[start + 1..];
    let hashes = rest.bytes().take_while(|&b| b == b'#').count();
    if rest.as_bytes().get(hashes) != Some(&b'"') {
        return None;
    }
    let body_start = start + 1 + hashes + 1;
    let closing = format!("\"{}", "#".repeat(hashes));
    let body_len = text[body_start..].find(&closing)?;
    let body = &text[body_start..body_start + body_len];
    Some(Literal {
        start,
        value: body.to_owned(),
        char_offsets: body.char_indices().map(|(at, _)| body_start + at).collect(),
        end: body_start + body_len + closing.len(),
    })
}

/// `"…"` with escapes, starting at `start`.
fn quoted_string(text: &str, start: usize) -> Option<Literal> {
    let mut value = String::new();
    let mut char_offsets = Vec::new();
    let mut chars = text[start + 1..].char_indices().map(|(at, c)| (start + 1 + at, c)).peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some(Literal { start, value, char_offsets, end: at + 1 }),
            '\\' => {
                let (_, escape) = chars.next()?;
                let decoded = match escape {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'u' => {
                        let mut hex = String::new();
                        if chars.peek().is_some_and(|(_, c)| *c == '{') {
                            chars.next();
                            for (_, c) in chars.by_ref() {
                                if c == '}' {
                                    break;
                                }
                                hex.push(c);
                            }
                        } else {
                            for _ in 0..4 {
                                hex.push(chars.next()?.1);
                            }
                        }
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('\u{fffd}')
                    }
                    'x' => {
                        let hex: String = [chars.next()?.1, chars.next()?.1].iter().collect();
                        u8::from_str_radix(&hex, 16).map_or('\u{fffd}', char::from)
                    }
                    other => other,
                };
                value.push(decoded);
                char_offsets.push(at);
            }
            other => {
                value.push(other);
                char_offsets.push(at);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_keys_and_characters_past_comments_and_escapes() {
        let text = "// \"not this\"\n(\n  lists: {\n    \"a\": [\"x \\\"q\\\" {b}\"],\n    /* \"a\": */ 'x',\n    \"b\": [r#\"raw {c}\"#],\n  },\n)\n";
        let map = SourceMap::new(text);
        assert_eq!(map.key("a", 0).map(|(p, _)| p), Some(Position { line: 4, column: 5 }));
        assert_eq!(map.key("b", 0).map(|(p, _)| p), Some(Position { line: 6, column: 5 }));
        assert_eq!(map.value("not this", 0), None, "comments are skipped");
        // `{b}` is at char 6 of the decoded `x "q" {b}`; in the source it follows two escapes.
        assert_eq!(map.inside("x \"q\" {b}", 6, 0), Some(Position { line: 4, column: 20 }));
        assert_eq!(map.inside("raw {c}", 4, 0), Some(Position { line: 6, column: 18 }));
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let map = SourceMap::new("[\"é\", \"ü {x}\"]");
        assert_eq!(map.inside("ü {x}", 2, 0), Some(Position { line: 1, column: 10 }));
    }
}
