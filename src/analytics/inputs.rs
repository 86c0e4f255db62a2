//! Where favourites come from: a list file, a folder of symlinks or copies, a CSV file with a
//! `path` column, or the window's `favorites.txt` files. Each favourite keeps the text it was
//! given (for `unmatched`) and the places it may be, in the order they are tried.

use std::path::{Path, PathBuf};

use super::AnalyticsError;
use crate::storage::favorites;

/// One way of naming favourites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FavoritesSource {
    /// A text file, one image path per line (blank lines and `#` comments skipped).
    List(PathBuf),
    /// A folder of images: symlinks to them or copies (PNG, JPEG, WebP; recursively).
    Dir(PathBuf),
    /// A CSV file with a `path` column (RFC 4180 quoting; `,`, `;` or tab separated).
    Csv(PathBuf),
    /// Every `favorites.txt` beneath the logs folders (paths relative to the folder holding it).
    Starred,
}

/// A favourite as given, and where it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FavoriteRef {
    /// The path as the source wrote it (reported back in `unmatched`).
    pub given: String,
    /// Where to look, first match wins: as given (relative to the working folder), then next to
    /// the list file, then under each logs root.
    pub candidates: Vec<PathBuf>,
}

impl FavoriteRef {
    fn resolved(given: &str, bases: &[&Path]) -> Self {
        let as_path = Path::new(given);
        let mut candidates = vec![as_path.to_owned()];
        if as_path.is_relative() {
            for base in bases {
                let joined = base.join(as_path);
                if !candidates.contains(&joined) {
                    candidates.push(joined);
                }
            }
        }
        Self { given: given.to_owned(), candidates }
    }
}

/// Image files a favourites folder may hold.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Whether a file name looks like an image we read.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| IMAGE_EXTENSIONS.iter().any(|known| ext.eq_ignore_ascii_case(known)))
}

/// Reads every source. `roots` are the folders holding jobs logs (list entries may be relative
/// to them); `starred_roots` the folders holding a `favorites.txt`.
///
/// # Errors
/// A source that cannot be read, named; nothing is analysed then.
pub fn read_all(
    sources: &[FavoritesSource],
    roots: &[PathBuf],
    starred_roots: &[PathBuf],
) -> Result<Vec<FavoriteRef>, AnalyticsError> {
    let mut found = Vec::new();
    for source in sources {
        match source {
            FavoritesSource::List(file) => found.extend(read_list(file, roots)?),
            FavoritesSource::Dir(dir) => found.extend(read_dir(dir)?),
            FavoritesSource::Csv(file) => found.extend(read_csv(file, roots)?),
            FavoritesSource::Starred => found.extend(read_starred(starred_roots)?),
        }
    }
    Ok(found)
}

fn bases<'a>(file: &'a Path, roots: &'a [PathBuf]) -> Vec<&'a Path> {
    let mut bases: Vec<&Path> = Vec::new();
    if let Some(parent) = file.parent() {
        bases.push(parent);
    }
    bases.extend(roots.iter().map(PathBuf::as_path));
    bases
}

/// A list file: one path per line.
///
/// # Errors
/// The file cannot be read.
pub fn read_list(file: &Path, roots: &[PathBuf]) -> Result<Vec<FavoriteRef>, AnalyticsError> {
    let text = fs_err::read_to_string(file)?;
    let bases = bases(file, roots);
    Ok(text
        .lines()
        .map(|line| line.trim_start_matches('\u{feff}').trim())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| FavoriteRef::resolved(line, &bases))
        .collect())
}

/// A folder of symlinks or copies, recursively (symlinked folders are not followed).
///
/// # Errors
/// Not a folder, or a folder that cannot be listed.
pub fn read_dir(dir: &Path) -> Result<Vec<FavoriteRef>, AnalyticsError> {
    if !dir.is_dir() {
        return Err(AnalyticsError::NotAFolder { flag: "--dir", path: dir.to_owned() });
    }
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in fs_err::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if is_image_name(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|path| FavoriteRef { given: path.display().to_string(), candidates: vec![path] })
        .collect())
}

/// A CSV file's `path` column.
///
/// # Errors
/// The file cannot be read, has no `path` column, or has an unterminated quoted field.
pub fn read_csv(file: &Path, roots: &[PathBuf]) -> Result<Vec<FavoriteRef>, AnalyticsError> {
    let text = fs_err::read_to_string(file)?;
    let text = text.trim_start_matches('\u{feff}');
    let records = parse_csv(text)
        .map_err(|message| AnalyticsError::Csv { message, path: file.to_owned() })?;
    let Some((header, rows)) = records.split_first() else {
        return Err(AnalyticsError::Csv {
            message: "empty file; expected a header row with a `path` column".to_owned(),
            path: file.to_owned(),
        });
    };
    let Some(column) = header.iter().position(|name| name.trim().eq_ignore_ascii_case("path"))
    else {
        return Err(AnalyticsError::Csv {
            message: format!("no `path` column (columns: {})", header.join(", ")),
            path: file.to_owned(),
        });
    };
    let bases = bases(file, roots);
    Ok(rows
        .iter()
        .filter_map(|row| row.get(column))
        .map(|cell| cell.trim())
        .filter(|cell| !cell.is_empty())
        .map(|cell| FavoriteRef::resolved(cell, &bases))
        .collect())
}

/// The window's stars: the `favorites.txt` in each of `roots`, paths relative to that root.
///
/// # Errors
/// A `favorites.txt` that exists but cannot be read.
pub fn read_starred(roots: &[PathBuf]) -> Result<Vec<FavoriteRef>, AnalyticsError> {
    let mut found = Vec::new();
    for root in roots {
        for line in favorites::read(root)? {
            let path = root.join(&line);
            found.push(FavoriteRef { given: path.display().to_string(), candidates: vec![path] });
        }
    }
    Ok(found)
}

/// Splits CSV text into records (RFC 4180): fields separated by the header's delimiter (`,`,
/// else `;` or tab when the header has only those), `"` quotes fields holding delimiters,
/// quotes or line breaks, `""` inside quotes is one quote; CRLF or LF line ends.
///
/// # Errors
/// A quoted field that never closes, or text after a closing quote; the message names the line.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let header_line = text.lines().next().unwrap_or_default();
    let delimiter = if header_line.contains(',') {
        ','
    } else if header_line.contains(';') {
        ';'
    } else if header_line.contains('\t') {
        '\t'
    } else {
        ','
    };
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1_usize;
    let mut in_quotes = false;
    let mut quoted_start_line = 0;
    let mut after_quote = false;
    while let Some(ch) = chars.next() {
        if in_quotes {
            match ch {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    after_quote = true;
                }
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                other => field.push(other),
            }
            continue;
        }
        match ch {
            '"' if field.is_empty() && !after_quote => {
                in_quotes = true;
                quoted_start_line = line;
            }
            c if c == delimiter => {
                record.push(std::mem::take(&mut field));
                after_quote = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                after_quote = false;
                line += 1;
            }
            other if after_quote => {
                return Err(format!("line {line}: {other:?} after a closing quote"));
            }
            other => field.push(other),
        }
    }
    if in_quotes {
        return Err(format!("line {quoted_start_line}: a quoted field never closes"));
    }
    if !field.is_empty() || !record.is_empty() || after_quote {
        record.push(field);
        records.push(record);
    }
    // Blank lines are not records.
    records.retain(|fields| !(fields.len() == 1 && fields[0].is_empty()));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_as_rfc_4180_writes_it() {
        let text = "id,\"path\",note\r\n1,\"a, b.png\",\"said \"\"hi\"\"\"\r\n2,plain.png,\"two\nlines\"\n\n3,,x";
        let records = parse_csv(text).expect("valid");
        assert_eq!(records.len(), 4);
        assert_eq!(records[0], ["id", "path", "note"]);
        assert_eq!(records[1], ["1", "a, b.png", "said \"hi\""]);
        assert_eq!(records[2], ["2", "plain.png", "two\nlines"]);
        assert_eq!(records[3], ["3", "", "x"]);
        assert_eq!(parse_csv("path;x\nc.png;1").expect("semicolons")[1], ["c.png", "1"]);
        assert!(parse_csv("path\n\"open").expect_err("unterminated").contains("line 2"));
        assert!(parse_csv("path\n\"a\"b").expect_err("junk").contains("after a closing quote"));
    }

    #[test]
    fn csv_without_a_path_column_names_the_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f.csv");
        fs_err::write(&file, "file,score\na.png,1\n").expect("write");
        let err = read_csv(&file, &[]).expect_err("no path column").to_string();
        assert!(err.contains("no `path` column (columns: file, score)"), "{err}");
        assert!(err.contains("f.csv"), "{err}");
    }

    #[test]
    fn list_entries_are_tried_as_given_then_beside_the_list_then_under_the_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("favs.txt");
        fs_err::write(&file, "\u{feff}# mine\nsweep/a.png\n\n/abs/b.png\n").expect("write");
        let root = PathBuf::from("/out");
        let found = read_list(&file, std::slice::from_ref(&root)).expect("read");
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].candidates,
            [
                PathBuf::from("sweep/a.png"),
                dir.path().join("sweep/a.png"),
                root.join("sweep/a.png")
            ]
        );
        assert_eq!(found[1].candidates, [PathBuf::from("/abs/b.png")]);
    }
}
