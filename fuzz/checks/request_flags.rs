//! `imagelab generate` flags: any argument list (one per line) through clap, the options and
//! the plan. Parsing never panics; a plan is made or refused naming a field, and a plan made
//! from flags holds values inside the limits.

use clap::Parser;
use imagelab::app::FrontEndConfig;
use imagelab::cli::{Cli, CliCommand};
use imagelab::models::Catalog;
use imagelab::request::{Profiles, build_plan, limits};

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    let mut args = vec!["imagelab", "generate", "--backend", "mock"];
    args.extend(text.lines().take(64));
    let Ok(cli) = Cli::try_parse_from(&args) else { return };
    let Some(CliCommand::Generate(flags)) = cli.command else { return };
    let config = FrontEndConfig::from_lookup(|_| None);
    let Ok(options) = flags.into_options(&config) else { return };
    let plan = build_plan(
        &options.request,
        &Profiles::builtin(),
        &Catalog::builtin(),
        chrono::Local::now(),
        || 7,
    );
    match plan {
        Ok(plan) => {
            for item in &plan.items {
                assert!(item.steps.is_none_or(|s| (1..=limits::MAX_STEPS).contains(&s)));
                assert!(item.cfg.is_none_or(|c| c.is_finite() && c <= limits::MAX_CFG));
                assert!(!item.seeds.is_empty() && item.seeds.len() <= limits::MAX_BATCH as usize);
            }
        }
        Err(err) => assert!(!err.field.is_empty()),
    }
}
