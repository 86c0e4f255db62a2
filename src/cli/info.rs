//! `imagelab info FILE` and `imagelab generate --from FILE`: settings read back from any
//! tool's PNG (ours exactly; A1111, ComfyUI, InvokeAI, Fooocus as closely as they map).

use std::path::Path;

use clap::ArgMatches;

use super::generate::GenerateArgs;
use super::{EXIT_OK, EXIT_USAGE};
use crate::models::catalog::Catalog;
use crate::storage::metadata::{Recovered, format_human, recover_file};

/// Runs `imagelab info FILE [--json]`.
pub fn run(file: &Path, json: bool) -> u8 {
    match recover_file(file) {
        Ok(recovered) => {
            if json {
                match serde_json::to_string_pretty(&recovered) {
                    Ok(text) => println!("{text}"),
                    Err(err) => {
                        eprintln!("error: {err}");
                        return EXIT_USAGE;
                    }
                }
                for warning in &recovered.warnings {
                    eprintln!("warning: {warning}");
                }
            } else {
                let text = format_human(&recovered);
                // The human form lists the warnings itself.
                if text.ends_with('\n') { print!("{text}") } else { println!("{text}") }
            }
            EXIT_OK
        }
        Err(err) => {
            eprintln!("error: info: {err}");
            EXIT_USAGE
        }
    }
}

/// True when the user typed `--<id>` (so it overrides what the image says).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// Fills `args` from the image at `file`, keeping every flag the user typed. Returns what a
/// re-run will do differently from the original, for stderr.
///
/// # Errors
/// The file cannot be read or holds no settings; the message names the file.
pub fn apply_from(
    file: &Path,
    args: &mut GenerateArgs,
    matches: &ArgMatches,
) -> Result<Vec<String>, String> {
    let recovered = recover_file(file).map_err(|err| format!("--from: {err}"))?;
    let mut notes = recovered.warnings.clone();
    if let Some(info) = &recovered.generation {
        apply_ours(info, args, matches);
    } else {
        apply_foreign(&recovered, args, matches, &mut notes);
    }
    Ok(notes)
}

fn apply_ours(
    info: &crate::storage::metadata::GenerationInfo,
    args: &mut GenerateArgs,
    matches: &ArgMatches,
) {
    if !given(matches, "model") {
        args.model =
            if info.model_id.is_empty() { info.model.clone() } else { info.model_id.clone() };
    }
    if !given(matches, "prompt") {
        args.prompt.clone_from(&info.user_prompt);
    }
    if !given(matches, "negative") {
        args.negative.clone_from(&info.user_negative);
    }
    if !given(matches, "profile") {
        args.profile.clone_from(&info.profile);
    }
    if !given(matches, "scheduler") {
        args.scheduler = Some(info.sampler);
    }
    if !given(matches, "schedule_type") {
        args.schedule_type = info.schedule_type;
    }
    if !given(matches, "steps") {
        args.steps = Some(info.steps);
    }
    if !given(matches, "cfg") {
        args.cfg = Some(info.cfg);
    }
    if !given(matches, "seed") {
        args.seed = Some(info.seed);
        if !given(matches, "batch") {
            args.batch = 1;
        }
    }
    if !given(matches, "width") {
        args.width = Some(info.width);
    }
    if !given(matches, "height") {
        args.height = Some(info.height);
    }
    if !given(matches, "init_image") {
        args.init_image = info.init_image.as_ref().map(Into::into);
    }
    if !given(matches, "strength")
        && let Some(strength) = info.strength
    {
        args.strength = strength;
    }
    if !given(matches, "loras") {
        args.loras.clone_from(&info.loras);
    }
    if !given(matches, "truncate") {
        args.truncate = info.truncate_prompt;
    }
}

fn apply_foreign(
    recovered: &Recovered,
    args: &mut GenerateArgs,
    matches: &ArgMatches,
    notes: &mut Vec<String>,
) {
    let source = recovered.source.display_name();
    notes.push(format!("{source} image: running the closest equivalent; the tool's own noise and model files may differ"));
    if !given(matches, "model") && !recovered.model.is_empty() {
        match Catalog::builtin().resolve(&recovered.model) {
            Ok(_) => args.model.clone_from(&recovered.model),
            Err(_) => notes.push(format!(
                "model {:?} from the image is not known here; using {:?} (pass --model to choose)",
                recovered.model, args.model
            )),
        }
    }
    if !given(matches, "prompt") {
        args.prompt.clone_from(&recovered.prompt);
    }
    if !given(matches, "negative") {
        args.negative.clone_from(&recovered.negative);
    }
    if !given(matches, "scheduler") {
        match recovered.sampler {
            Some(kind) => args.scheduler = Some(kind),
            None if !recovered.sampler_name.is_empty() => notes.push(format!(
                "sampler {:?} has no equivalent here; using the model's default",
                recovered.sampler_name
            )),
            None => {}
        }
    }
    let keep = |id: &str| !given(matches, id);
    if keep("steps") && recovered.steps.is_some() {
        args.steps = recovered.steps;
    }
    if keep("cfg") && recovered.cfg.is_some() {
        args.cfg = recovered.cfg;
    }
    if keep("seed") && recovered.seed.is_some() {
        args.seed = recovered.seed;
    }
    if keep("width") && recovered.width.is_some() {
        args.width = recovered.width;
    }
    if keep("height") && recovered.height.is_some() {
        args.height = recovered.height;
    }
    if keep("loras") && !recovered.loras.is_empty() {
        args.loras.clone_from(&recovered.loras);
    }
    if recovered.strength.is_some() && args.init_image.is_none() {
        notes.push("the image was img2img; pass --init-image to re-run it as img2img".to_owned());
    }
}
