//! `imagelab info FILE`: the settings stored in any tool's PNG, JPEG or WebP (ours exactly;
//! A1111, ComfyUI, InvokeAI, Fooocus, NovelAI as closely as they map). `generate --from`
//! re-runs them ([`crate::request::restore`]).

use std::path::Path;

use super::{CliError, Outcome};
use crate::storage::metadata::{format_human, recover_file};

/// Runs `imagelab info FILE [--json]`.
///
/// # Errors
/// The file cannot be read or holds no settings (the message names the file).
pub fn run(file: &Path, json: bool) -> Result<Outcome, CliError> {
    let recovered = recover_file(file).map_err(|err| CliError::Usage(format!("info: {err}")))?;
    if json {
        let text = serde_json::to_string_pretty(&recovered)
            .map_err(|err| CliError::Usage(err.to_string()))?;
        println!("{text}");
        for warning in &recovered.warnings {
            eprintln!("warning: {warning}");
        }
    } else {
        let text = format_human(&recovered);
        // The human form lists the warnings itself.
        if text.ends_with('\n') { print!("{text}") } else { println!("{text}") }
    }
    Ok(Outcome::Done)
}
