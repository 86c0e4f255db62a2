//! Styles files (A1111 CSV, Fooocus JSON), applied to a prompt and extracted back.

use imagelab::storage::styles;

/// The target's check of one input: panics on what the target reports.
pub fn check(data: &[u8]) {
    if let Ok(file) = styles::parse_styles(data) {
        let mut texts = Vec::new();
        for style in &file.styles {
            assert!(!style.name.trim().is_empty());
            let (prompt, negative) = style.apply("a cat", "blurry");
            texts.push((style.name.as_str(), style.prompt.as_str(), style.negative.as_str()));
            let _ = styles::a1111_extract_styles(&texts, &prompt, &negative);
        }
    }
}
