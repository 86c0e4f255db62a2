//! `imagelab models list|prefetch|verify`: the catalog against the local Hugging Face cache.

use clap::{Args, Subcommand};

use super::{CliError, Outcome};
use crate::app::FrontEndConfig;
use crate::models::hub::{DownloadEvent, HubConfig, WeightVariant};
use crate::models::manage;

/// Flags of `imagelab models`.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ModelsAction,
    /// Prefer `*.fp16.safetensors` variants (what a GPU run loads).
    #[arg(long, global = true)]
    pub fp16: bool,
    /// One JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// A models folder to list too (A1111 or ComfyUI layout, or any folder of files);
    /// repeatable, added to `IMAGELAB_MODELS_DIR`.
    #[arg(long = "models-dir", global = true)]
    pub models_dirs: Vec<std::path::PathBuf>,
}

/// `models` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum ModelsAction {
    /// Every catalog model: cached, partial or not downloaded, with sizes; then every
    /// checkpoint, LoRA and VAE of the models folders, and the files refused there.
    List,
    /// Download what each named model needs (`all` or none = every catalog model).
    Prefetch {
        /// Catalog names or hub ids.
        names: Vec<String>,
        /// Every catalog model.
        #[arg(long)]
        all: bool,
    },
    /// Hash every cached file against its blob name.
    Verify,
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| CliError::Failed(format!("cannot write JSON: {err}")))?;
    println!("{text}");
    Ok(())
}

/// `SomeFailed` when `failed`.
fn outcome(failed: bool) -> Outcome {
    if failed { Outcome::SomeFailed } else { Outcome::Done }
}

/// Runs `imagelab models …`.
///
/// # Errors
/// An unknown model name (exit 2); JSON that cannot be written.
pub fn run(args: &ModelsArgs, front_end: &FrontEndConfig) -> Result<Outcome, CliError> {
    let catalog = front_end.catalog(&args.models_dirs);
    let config: HubConfig = front_end.hub();
    let prefer = if args.fp16 { WeightVariant::Fp16 } else { WeightVariant::Full };
    match &args.action {
        ModelsAction::List => {
            let mut listings = manage::list_models(&catalog, &config, prefer);
            listings.extend(manage::list_local(&catalog));
            if args.json {
                print_json(&listings)?;
            } else {
                print!("{}", manage::format_listing(&listings));
            }
            Ok(Outcome::Done)
        }
        ModelsAction::Prefetch { names, all } => {
            let names = if *all { vec!["all".to_owned()] } else { names.clone() };
            let mut on_event = |model: &str, event: &DownloadEvent| match event {
                DownloadEvent::Started { repo_file, total_bytes } => {
                    eprintln!(
                        "{model}: downloading {repo_file} ({})",
                        manage::human_bytes(*total_bytes)
                    );
                }
                DownloadEvent::AlreadyCached { repo_file } => {
                    eprintln!("{model}: cached {repo_file}");
                }
                _ => {}
            };
            let outcomes = manage::prefetch(&catalog, &names, &config, prefer, &mut on_event)
                .map_err(|err| CliError::Usage(err.to_string()))?;
            if args.json {
                print_json(&outcomes)?;
            } else {
                print!("{}", manage::format_prefetch(&outcomes));
            }
            Ok(outcome(outcomes.iter().any(|o| o.error.is_some())))
        }
        ModelsAction::Verify => {
            let mut on_file = |repo: &str, file: &str| tracing::info!("verifying {repo}: {file}");
            let reports = manage::verify(&catalog, &config, prefer, &mut on_file);
            if args.json {
                print_json(&reports)?;
            } else {
                print!("{}", manage::format_verify(&reports));
            }
            Ok(outcome(!reports.iter().all(manage::RepoVerification::is_healthy)))
        }
    }
}
