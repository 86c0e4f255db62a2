//! `imagelab sheet RUN_DIR`: a sweep folder as one labelled contact-sheet PNG.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{CliError, Outcome};
use crate::analytics::sheet::{self, DEFAULT_MAX_WIDTH_PX, SheetLayout};

/// Flags of `imagelab sheet`.
#[derive(Debug, Clone, Args)]
pub struct SheetArgs {
    /// The sweep folder (`<output>/<time>_<sweep>/`).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Where to write the PNG (never over an existing file); default:
    /// `RUN_DIR/contact_sheet.png`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Largest sheet width in pixels; thumbnails shrink to fit (never grow past the images).
    #[arg(long, default_value_t = DEFAULT_MAX_WIDTH_PX)]
    pub max_width: u32,
    /// One JSON object on stdout: the file, its size and every cell.
    #[arg(long)]
    pub json: bool,
}

/// Runs `imagelab sheet`.
///
/// # Errors
/// Not a sweep folder, nothing to show, or a width too small (exit 2); the PNG cannot be
/// written (exit 1).
pub fn run(args: &SheetArgs) -> Result<Outcome, CliError> {
    let layout = SheetLayout::from_run_dir(&args.run_dir)
        .map_err(|err| CliError::Usage(format!("sheet: {err}")))?;
    // Plan first: a width that cannot work is bad input, found before any image is decoded.
    sheet::SheetGeometry::plan(&layout, args.max_width)
        .map_err(|err| CliError::Usage(format!("sheet: {err}")))?;
    let (path, rendered) = sheet::write(&layout, args.out.as_deref(), args.max_width)
        .map_err(|err| CliError::Failed(format!("sheet: {err}")))?;
    for note in &layout.notes {
        eprintln!("note: {note}");
    }
    for problem in &rendered.unreadable {
        eprintln!("warning: drawn empty: {problem}");
    }
    let metadata = &rendered.metadata;
    let count = |status: &str| metadata.cells.iter().filter(|cell| cell.status == status).count();
    if args.json {
        let value = json!({
            "path": path,
            "width": metadata.width,
            "height": metadata.height,
            "layout": metadata.layout,
            "models": metadata.models,
            "profiles": metadata.profiles,
            "batch": metadata.batch,
            "cells": metadata.cells,
        });
        let text = serde_json::to_string_pretty(&value)
            .map_err(|err| CliError::Failed(format!("cannot write JSON: {err}")))?;
        println!("{text}");
    } else {
        println!(
            "{} ({}x{} px: {} model(s) x {} profile(s) x {} image(s); {} shown, {} failed, {} empty)",
            path.display(),
            metadata.width,
            metadata.height,
            metadata.models.len(),
            metadata.profiles.len(),
            metadata.batch,
            count("image"),
            count("failed"),
            count("empty"),
        );
    }
    Ok(Outcome::Done)
}
