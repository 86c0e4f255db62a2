//! The command line: `imagelab generate|…`, the environment-variable headless mode, and the
//! window when run with no arguments.
//!
//! Exit codes: 0 all done, 1 some item failed, 2 bad usage or input.

pub mod env_mode;
pub mod generate;
pub mod info;
pub mod models;
mod report;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Exit code: every item done.
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one item failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or input; nothing was written.
pub const EXIT_USAGE: u8 = 2;

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
    /// The settings stored in an image (ours, A1111, ComfyUI, InvokeAI, Fooocus).
    Info {
        /// A PNG file.
        file: std::path::PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The model catalog against the local Hugging Face cache: list, prefetch, verify.
    Models(models::ModelsArgs),
    /// Open the window.
    #[cfg(feature = "gui")]
    Gui,
}

/// Entry point of the binary: parses, runs, maps errors to exit codes.
pub fn main() -> ExitCode {
    init_tracing();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() <= 1 && env_mode::is_requested() {
        return ExitCode::from(env_mode::run());
    }
    let parsed = Cli::command()
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let code = match cli.command {
        Some(CliCommand::Generate(args)) => {
            let empty = clap::ArgMatches::default();
            let sub = matches.subcommand_matches("generate").unwrap_or(&empty);
            generate::run_args(*args, sub)
        }
        Some(CliCommand::Info { file, json }) => info::run(&file, json),
        Some(CliCommand::Models(args)) => models::run(&args),
        #[cfg(feature = "gui")]
        Some(CliCommand::Gui) | None => crate::ui::run_window(),
        #[cfg(not(feature = "gui"))]
        None => {
            eprintln!(
                "imagelab was built without the window (feature `gui`); try `imagelab generate --help`"
            );
            EXIT_USAGE
        }
    };
    ExitCode::from(code)
}

/// Logs go to stderr; `RUST_LOG` filters them; `NO_COLOR` turns colour off.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let color = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .try_init();
}
