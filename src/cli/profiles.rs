//! `imagelab profiles list|import`: the style profiles the lab offers, and styles brought from
//! AUTOMATIC1111 (`styles.csv`) or Fooocus (style JSON) into the user profiles file.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, Outcome};
use crate::app::FrontEndConfig;
use crate::request::profiles::{ImportReport, Profiles, import_styles};
use crate::storage::styles::StylesFormat;

/// Flags of `imagelab profiles`.
#[derive(Debug, Clone, Args)]
pub struct ProfilesArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ProfilesAction,
    /// One JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `profiles` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum ProfilesAction {
    /// Every profile: the shipped ones, then the imported ones with where they came from.
    List,
    /// Import an A1111 `styles.csv` or a Fooocus style JSON file into the user profiles file
    /// (`IMAGELAB_USER_PROFILES`, else `profiles.user.ron` beside the profiles), merged with
    /// what was imported before; names are kept, `{prompt}` places the prompt as each tool does.
    Import {
        /// The styles file.
        file: PathBuf,
    },
}

/// Runs `imagelab profiles …`.
///
/// # Errors
/// A broken profiles or styles file (named), or a write that failed; nothing is written then.
pub fn run(args: &ProfilesArgs, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    match &args.action {
        ProfilesAction::List => {
            let profiles = config.profiles().map_err(|err| CliError::Usage(err.to_string()))?;
            list(&profiles, args.json)
        }
        ProfilesAction::Import { file } => {
            let shipped = Profiles::shipped(config.profiles_path().as_deref())
                .map_err(|err| CliError::Usage(err.to_string()))?;
            let report = import_styles(file, &config.user_profiles_path(), &shipped)
                .map_err(|err| CliError::Usage(format!("profiles import: {err}")))?;
            print_report(&report, args.json)?;
            Ok(Outcome::Done)
        }
    }
}

fn list(profiles: &Profiles, json: bool) -> Result<Outcome, CliError> {
    if json {
        let items: Vec<serde_json::Value> = profiles
            .all()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "prompt": p.prompt_suffix,
                    "negative": p.negative_suffix,
                    "imported_from": p.imported_from,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&serde_json::json!({ "profiles": items }))
            .map_err(|err| CliError::Usage(err.to_string()))?;
        println!("{text}");
    } else {
        for profile in profiles.all() {
            match &profile.imported_from {
                Some(origin) => println!("{}  [imported: {origin}]", profile.name),
                None => println!("{}", profile.name),
            }
        }
    }
    Ok(Outcome::Done)
}

fn print_report(report: &ImportReport, json: bool) -> Result<(), CliError> {
    let format = match report.format {
        StylesFormat::A1111Csv => "a1111_csv",
        StylesFormat::FooocusJson => "fooocus_json",
    };
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "format": format,
            "user_file": report.user_file,
            "added": report.added,
            "updated": report.updated,
            "overriding": report.overriding,
            "warnings": report.warnings,
        }))
        .map_err(|err| CliError::Usage(err.to_string()))?;
        println!("{text}");
    } else {
        let count = report.added.len() + report.updated.len();
        println!(
            "imported {count} style{} into {} ({} new, {} updated)",
            if count == 1 { "" } else { "s" },
            report.user_file.display(),
            report.added.len(),
            report.updated.len()
        );
        for name in &report.added {
            println!("  + {name}");
        }
        for name in &report.updated {
            println!("  ~ {name}");
        }
        if !report.overriding.is_empty() {
            println!("replacing the shipped profiles: {}", report.overriding.join(", "));
        }
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
