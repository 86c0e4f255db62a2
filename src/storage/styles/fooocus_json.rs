//! Fooocus' style JSON files (`sdxl_styles/*.json`): an array of
//! `{"name": …, "prompt": …, "negative_prompt": …}`, read as `modules/sdxl_styles.py` reads
//! them: `prompt` and `negative_prompt` default to empty, the name is shown as `normalize_key`
//! spells it, and a later entry replaces an earlier one of the same (normalised) name.

use serde_json::Value;

use super::{ImportedStyle, StyleSemantics, StylesError, StylesFile, StylesFormat};

/// Fooocus' `normalize_key`: `-` to space, each space-separated word capitalised (first
/// character upper, rest lower), then `3d`→`3D`, `Sai`→`SAI`, `Mre`→`MRE`, `(s`→`(S`.
pub fn normalize_key(name: &str) -> String {
    let spaced = name.replace('-', " ");
    let words: Vec<String> = spaced
        .split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => {
                    first.to_uppercase().chain(chars.as_str().to_lowercase().chars()).collect()
                }
                None => String::new(),
            }
        })
        .collect();
    words
        .join(" ")
        .replace("3d", "3D")
        .replace("Sai", "SAI")
        .replace("Mre", "MRE")
        .replace("(s", "(S")
}

/// Reads a Fooocus style JSON file.
///
/// # Errors
/// Not JSON, not an array, or an entry that is not an object with a string `name` (Fooocus
/// refuses the whole file then, and so does this); the error names the entry.
pub fn parse(text: &str) -> Result<StylesFile, StylesError> {
    let mut warnings = Vec::new();
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            warnings.push(
                "the file starts with a byte-order mark, which Fooocus' reader refuses; read \
                 without it"
                    .to_owned(),
            );
            rest
        }
        None => text,
    };
    let value: Value = serde_json::from_str(text).map_err(|err| {
        StylesError::Invalid(format!("Fooocus style file is not valid JSON: {err}"))
    })?;
    let Value::Array(entries) = value else {
        return Err(StylesError::Invalid("Fooocus style file is not a JSON array".to_owned()));
    };
    let mut found = StylesFile { format: StylesFormat::FooocusJson, styles: Vec::new(), warnings };
    for (index, entry) in entries.iter().enumerate() {
        let number = index + 1;
        let Value::Object(fields) = entry else {
            return Err(StylesError::Invalid(format!("style entry {number} is not an object")));
        };
        let Some(name) = fields.get("name").and_then(Value::as_str) else {
            return Err(StylesError::Invalid(format!(
                "style entry {number} has no \"name\" string"
            )));
        };
        let text_field = |key: &str| -> Result<String, StylesError> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(text)) => Ok(text.clone()),
                Some(other) => Err(StylesError::Invalid(format!(
                    "style entry {number} ({name:?}): \"{key}\" is {other}, not a string"
                ))),
            }
        };
        let style = ImportedStyle {
            name: normalize_key(name),
            prompt: text_field("prompt")?,
            negative: text_field("negative_prompt")?,
            semantics: StyleSemantics::Fooocus,
        };
        if style.name.trim().is_empty() {
            found.warnings.push(format!("style entry {number} has an empty name; skipped"));
            continue;
        }
        if let Some(existing) = found.styles.iter_mut().find(|s| s.name == style.name) {
            found.warnings.push(format!(
                "style {:?} is defined twice; entry {number} replaces the earlier one (as Fooocus \
                 does)",
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
    fn normalize_key_like_fooocus() {
        assert_eq!(normalize_key("sai-3d-model"), "SAI 3D Model");
        assert_eq!(normalize_key("mre-cinematic-dynamic"), "MRE Cinematic Dynamic");
        assert_eq!(normalize_key("Fooocus Sharp"), "Fooocus Sharp");
        assert_eq!(normalize_key("misc (steampunk)"), "Misc (Steampunk)");
        assert_eq!(normalize_key("ads-luxury  twice"), "Ads Luxury  Twice");
    }

    #[test]
    fn reads_entries() {
        let text = r#"[
            {"name": "sai-cinematic", "prompt": "cinematic film still {prompt} . shallow depth of field",
             "negative_prompt": "anime, cartoon"},
            {"name": "Only Name"},
            {"name": "SAI Cinematic", "prompt": "replaced {prompt}"}
        ]"#;
        let found = parse(text).expect("parses");
        let names: Vec<&str> = found.styles.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["SAI Cinematic", "Only Name"]);
        assert_eq!(found.styles[0].prompt, "replaced {prompt}");
        assert_eq!(found.styles[1].negative, "");
        assert!(found.warnings[0].contains("twice"), "{:?}", found.warnings);
        assert!(parse("{}").is_err());
        assert!(parse("[1]").expect_err("entry").to_string().contains("entry 1"));
        assert!(parse("[{\"prompt\": \"x\"}]").expect_err("name").to_string().contains("name"));
        assert!(
            parse("[{\"name\": \"a\", \"prompt\": 3}]")
                .expect_err("type")
                .to_string()
                .contains("prompt")
        );
        assert!(parse("\u{feff}[]").expect("bom").warnings[0].contains("byte-order"));
    }
}
