//! `imagelab favorites analyze|apply`: what the favourites share (per-setting rates and lifts,
//! the bundles of settings they have in common) and running a bundle with a new prompt through
//! the normal generate path.

use std::path::PathBuf;

use clap::{ArgMatches, Args, Subcommand};

use super::generate::{self, GenerateArgs};
use super::{CliError, Outcome};
use crate::analytics::stats::DEFAULT_MIN_SUPPORT;
use crate::analytics::{self, Analysis, FavoritesSource};
use crate::app::FrontEndConfig;

/// Flags of `imagelab favorites`.
#[derive(Debug, Args)]
pub struct FavoritesArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FavoritesCommand,
}

/// `favorites` actions.
#[derive(Debug, Subcommand)]
pub enum FavoritesCommand {
    /// What the favourites share: per model, profile, scheduler, steps, CFG, resolution (and
    /// any other jobs-log field) the favourite count, images made, rate and lift; then the
    /// bundles of settings favourites share, each as a ready command.
    Analyze(AnalyzeArgs),
    /// Runs bundle N of the analysis (same favourites flags) with a new prompt; every
    /// `generate` flag applies and overrides the bundle.
    Apply(Box<ApplyArgs>),
}

/// Which images are favourites and where the logs are.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// A text file with one image path per line (repeatable).
    #[arg(long = "list", value_name = "FILE")]
    pub lists: Vec<PathBuf>,
    /// A folder of favourites: symlinks, or copies matched by their settings or content
    /// (repeatable).
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// A CSV file with a `path` column (repeatable).
    #[arg(long = "csv", value_name = "FILE")]
    pub csvs: Vec<PathBuf>,
    /// The images starred in the window (`favorites.txt` under the logs folders).
    #[arg(long)]
    pub starred: bool,
    /// Folders whose `jobs*.log` files (recursively, every instance) list what was made;
    /// default: the output folder.
    #[arg(long = "logs", value_name = "DIR", num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// Least number of favourites a bundle must have.
    #[arg(long, default_value_t = DEFAULT_MIN_SUPPORT)]
    pub min_support: usize,
}

/// Flags of `favorites analyze`.
#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    /// Favourites and logs.
    #[command(flatten)]
    pub source: SourceArgs,
    /// One JSON object on stdout (every value and bundle).
    #[arg(long)]
    pub json: bool,
    /// Bundles shown in the tables.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Values shown per dimension in the tables.
    #[arg(long, default_value_t = 12)]
    pub rows: usize,
}

/// Flags of `favorites apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The bundle's number in `favorites analyze` (from 1).
    #[arg(value_name = "N")]
    pub number: usize,
    /// Favourites and logs (as given to `analyze`).
    #[command(flatten)]
    pub source: SourceArgs,
    /// The run: `--prompt` is required; any other flag overrides the bundle.
    #[command(flatten)]
    pub generate: GenerateArgs,
}

impl SourceArgs {
    fn sources(&self) -> Result<Vec<FavoritesSource>, CliError> {
        let mut sources: Vec<FavoritesSource> = Vec::new();
        sources.extend(self.lists.iter().cloned().map(FavoritesSource::List));
        sources.extend(self.dirs.iter().cloned().map(FavoritesSource::Dir));
        sources.extend(self.csvs.iter().cloned().map(FavoritesSource::Csv));
        if self.starred {
            sources.push(FavoritesSource::Starred);
        }
        if sources.is_empty() {
            return Err(CliError::Usage(
                "favorites: name the favourites with --list FILE, --dir DIR, --csv FILE or --starred"
                    .to_owned(),
            ));
        }
        if self.min_support == 0 {
            return Err(CliError::Usage("--min-support: at least 1".to_owned()));
        }
        Ok(sources)
    }

    /// The logs folders: as given, else the output folder when it exists.
    fn log_dirs(&self, output_root: PathBuf) -> Vec<PathBuf> {
        if !self.logs.is_empty() {
            return self.logs.clone();
        }
        if output_root.is_dir() {
            vec![output_root]
        } else {
            eprintln!(
                "note: the output folder {} does not exist; no jobs logs read (--logs DIR names others)",
                output_root.display()
            );
            Vec::new()
        }
    }

    fn analyze(&self, output_root: PathBuf) -> Result<Analysis, CliError> {
        let sources = self.sources()?;
        analytics::analyze(&sources, &self.log_dirs(output_root), self.min_support)
            .map_err(|err| CliError::Usage(err.to_string()))
    }
}

/// Runs `imagelab favorites …`; `matches` are the `favorites` subcommand's (they tell which
/// generate flags `apply` was given).
///
/// # Errors
/// Bad favourites or logs (exit 2), or what the run returns.
pub fn run(
    args: FavoritesArgs,
    matches: &ArgMatches,
    config: &FrontEndConfig,
) -> Result<Outcome, CliError> {
    match args.command {
        FavoritesCommand::Analyze(analyze) => run_analyze(&analyze, config),
        FavoritesCommand::Apply(apply) => {
            let empty = ArgMatches::default();
            let sub = matches.subcommand_matches("apply").unwrap_or(&empty);
            run_apply(*apply, sub, config)
        }
    }
}

fn run_analyze(args: &AnalyzeArgs, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    let analysis = args.source.analyze(config.output_root())?;
    if args.json {
        let text = serde_json::to_string_pretty(&analysis.to_json())
            .map_err(|err| CliError::Failed(format!("cannot write JSON: {err}")))?;
        println!("{text}");
        for damaged in &analysis.damaged {
            eprintln!(
                "warning: skipped damaged log line {}:{}: {}",
                damaged.file.display(),
                damaged.line,
                damaged.error
            );
        }
    } else {
        print!("{}", analysis.format_human(args.rows, args.top));
    }
    Ok(Outcome::Done)
}

fn run_apply(
    args: ApplyArgs,
    matches: &ArgMatches,
    config: &FrontEndConfig,
) -> Result<Outcome, CliError> {
    if !generate::typed(matches, "prompt") {
        return Err(CliError::Usage(
            "favorites apply: give --prompt; a bundle brings settings, not a prompt".to_owned(),
        ));
    }
    if args.generate.bundle.is_some() || args.generate.from.is_some() {
        return Err(CliError::Usage(
            "favorites apply: the bundle is N; --bundle and --from do not go with it".to_owned(),
        ));
    }
    let analysis = args.source.analyze(args.generate.out.clone())?;
    let Some(index) = args.number.checked_sub(1).filter(|&index| index < analysis.bundles.len())
    else {
        return Err(CliError::Usage(format!(
            "favorites apply: no bundle {}; the analysis has {} (numbered from 1; see \
             `imagelab favorites analyze`)",
            args.number,
            analysis.bundles.len()
        )));
    };
    let bundle = &analysis.bundles[index];
    let overlay = bundle.request.to_overlay().map_err(|err| CliError::Usage(err.to_string()))?;
    eprintln!("bundle {}: {} ({} favourites)", args.number, bundle.describe(), bundle.count);
    let mut options = args.generate.into_options(config)?;
    overlay.apply(&mut options.request, generate::typed_fields(matches));
    generate::run(&options, config)
}
