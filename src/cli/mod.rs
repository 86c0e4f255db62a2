//! The command line: `imagelab generate|info|models|favorites|sheet|serve|…`, the
//! environment-variable headless mode, and the window when run with no arguments.
//!
//! Every command returns `Result<Outcome, CliError>`; [`main`] is the one place that prints an
//! error and picks the exit code: 0 all done, 1 some item failed, 2 bad usage or input,
//! 3 no idle GPU (`gpus --pick`), 4 no NVIDIA driver or GPU, 130/143 stopped by SIGINT/SIGTERM
//! (see `app::stop`).

pub mod env_mode;
pub mod favorites;
pub mod generate;
pub mod gpus;
pub mod info;
pub mod models;
pub mod profiles;
mod report;
pub mod resume;
pub mod runner;
pub mod serve;
pub mod sheet;
pub mod slurm;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::{ConfigError, FrontEndConfig};

/// Exit code: every item done.
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one item failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or input; nothing was written.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `gpus --pick`: every GPU is busy (try again later).
pub const EXIT_NO_IDLE_GPU: u8 = 3;
/// Exit code: no NVIDIA driver or no GPU (`gpus`, `runner --gpus 0,2`).
pub const EXIT_NO_GPU: u8 = 4;

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done (exit 0).
    Done,
    /// It ran, but at least one item failed or was cancelled (exit 1).
    SomeFailed,
    /// A signal stopped it cleanly; the exit code is 128 + the signal's number (130, 143).
    Stopped(u8),
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Done => EXIT_OK,
            Self::SomeFailed => EXIT_FAILED,
            Self::Stopped(code) => code,
        }
    }
}

/// Why a command stopped: printed once, as `error: …`, by [`main`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or input, found before any work (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A request field, named.
    #[error(transparent)]
    Request(#[from] crate::request::RequestError),
    /// A front-end setting from the environment, named.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run started but could not finish (exit 1).
    #[error("{0}")]
    Failed(String),
    /// Every GPU is busy (exit 3).
    #[error("{0}")]
    NoIdleGpu(String),
    /// No NVIDIA driver or no GPU (exit 4).
    #[error("{0}")]
    NoGpu(String),
    /// clap's own answer: a usage error (exit 2), or `--help` / `--version` (exit 0).
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Request(_) | Self::Config(_) => EXIT_USAGE,
            Self::Failed(_) => EXIT_FAILED,
            Self::NoIdleGpu(_) => EXIT_NO_IDLE_GPU,
            Self::NoGpu(_) => EXIT_NO_GPU,
            Self::Clap(err) if err.use_stderr() => EXIT_USAGE,
            Self::Clap(_) => EXIT_OK,
        }
    }

    /// Prints the error on stderr (clap's answers as clap formats them, on their stream).
    pub fn print(&self) {
        match self {
            Self::Clap(err) => {
                let _ = err.print();
            }
            other => eprintln!("error: {other}"),
        }
    }
}

/// SDXL Image Lab: native Stable Diffusion XL, in a window or headless.
#[derive(Debug, Parser)]
#[command(name = "imagelab", version, about, long_about = None)]
pub struct Cli {
    /// What to do; with none, the window opens (or env-var mode runs when PROMPT/HEADLESS is set).
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Generate images headless (same engine, files and log as the window).
    Generate(Box<generate::GenerateArgs>),
    /// The settings stored in an image (ours, A1111, ComfyUI, InvokeAI, Fooocus, NovelAI).
    Info {
        /// A PNG, JPEG or WebP file.
        file: std::path::PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The model catalog against the local Hugging Face cache: list, prefetch, verify.
    Models(models::ModelsArgs),
    /// What your favourites share, and running their best settings again.
    Favorites(favorites::FavoritesArgs),
    /// A labelled contact-sheet PNG of a sweep folder.
    Sheet(sheet::SheetArgs),
    /// Finish the unfinished jobs of the persistent queue: each image once, in the same
    /// folders, with the same seeds.
    Resume(resume::ResumeArgs),
    /// The NVIDIA GPUs: memory, utilisation, processes, which are idle (`--pick`: one index).
    Gpus(gpus::GpusArgs),
    /// Prompts the generator makes from a template file (what `runner` would run).
    Prompts(runner::PromptsArgs),
    /// Generated jobs on every idle GPU until a job count, a time, or a stop.
    Runner(Box<runner::RunnerArgs>),
    /// Style profiles: list them, import A1111 `styles.csv` or Fooocus style JSON.
    Profiles(profiles::ProfilesArgs),
    /// Sweeps as Slurm job arrays into one shared run folder: submit, status, cancel.
    Slurm {
        /// What to do.
        #[command(subcommand)]
        command: slurm::SlurmCommand,
    },
    /// Serve the engine over HTTP (our API and the AUTOMATIC1111-compatible /sdapi/v1 subset)
    /// or, with --stdio, as JSON lines on stdin/stdout.
    Serve(Box<serve::ServeArgs>),
    /// Open the window (with --serve, the HTTP API beside it on the same engine).
    #[cfg(feature = "gui")]
    Gui(Box<serve::GuiArgs>),
}

/// Entry point of the binary: parses, runs, prints the error if any, maps it to an exit code.
pub fn main() -> ExitCode {
    let config = FrontEndConfig::from_process_env();
    init_tracing(&config);
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match run(&args, &config) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            err.print();
            err.exit_code()
        }
    };
    ExitCode::from(code)
}

/// Parses `args` (the program name first) and runs the command.
///
/// # Errors
/// Whatever stopped the command; [`CliError::exit_code`] says which exit code it means.
pub fn run(args: &[std::ffi::OsString], config: &FrontEndConfig) -> Result<Outcome, CliError> {
    // A variable the lab reads but cannot decode is refused, never taken as unset.
    config.check_utf8(crate::app::config::VARIABLES)?;
    config.check_utf8(env_mode::VARIABLES)?;
    config.check_switches()?;
    if args.len() <= 1 && env_mode::is_requested(config)? {
        return env_mode::run(config);
    }
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = parsed?;
    match cli.command {
        Some(CliCommand::Generate(args)) => {
            let empty = clap::ArgMatches::default();
            let sub = matches.subcommand_matches("generate").unwrap_or(&empty);
            generate::run_args(*args, sub, config)
        }
        Some(CliCommand::Info { file, json }) => info::run(&file, json),
        Some(CliCommand::Models(args)) => models::run(&args, config),
        Some(CliCommand::Favorites(args)) => {
            let empty = clap::ArgMatches::default();
            let sub = matches.subcommand_matches("favorites").unwrap_or(&empty);
            favorites::run(args, sub, config)
        }
        Some(CliCommand::Sheet(args)) => sheet::run(&args),
        Some(CliCommand::Resume(args)) => resume::run(&args, config),
        Some(CliCommand::Gpus(args)) => gpus::run(&args, config),
        Some(CliCommand::Prompts(args)) => runner::run_prompts(&args, config),
        Some(CliCommand::Runner(args)) => {
            runner::run_runner(&args, config, &crate::runner::StopToken::new())
        }
        Some(CliCommand::Profiles(args)) => profiles::run(&args, config),
        Some(CliCommand::Slurm { command }) => {
            let empty = clap::ArgMatches::default();
            let sub = matches.subcommand_matches("slurm").unwrap_or(&empty);
            slurm::run(command, sub, config)
        }
        Some(CliCommand::Serve(args)) => serve::run(*args, config),
        #[cfg(feature = "gui")]
        Some(CliCommand::Gui(args)) if args.serve => serve::run_gui(&args, config),
        #[cfg(feature = "gui")]
        Some(CliCommand::Gui(_)) | None => {
            crate::ui::run_window(config).map_err(|err| match err {
                crate::ui::WindowError::Config(err) => CliError::Config(err),
                crate::ui::WindowError::Window(message) => {
                    CliError::Failed(format!("cannot open the window: {message}"))
                }
                crate::ui::WindowError::Serve(err) => CliError::Failed(err.to_string()),
            })?;
            let stopped = crate::app::StopSignals::installed().and_then(|stops| stops.exit_code());
            Ok(stopped.map_or(Outcome::Done, Outcome::Stopped))
        }
        #[cfg(not(feature = "gui"))]
        None => Err(CliError::Usage(
            "imagelab was built without the window (feature `gui`); try `imagelab generate --help`"
                .to_owned(),
        )),
    }
}

/// Logs go to stderr; `RUST_LOG` filters them; `NO_COLOR` turns colour off.
fn init_tracing(config: &FrontEndConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = config
        .log_filter()
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let color = !config.no_color() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .try_init();
}
