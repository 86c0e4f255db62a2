//! Environment-variable mode: any values (UTF-8 or not) for the variables it reads. Bad bytes
//! must be refused naming the variable; whatever parses must validate or be refused naming a
//! field — never a panic, never a value silently dropped.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use imagelab::app::FrontEndConfig;
use imagelab::cli::env_mode;
use imagelab::models::Catalog;
use imagelab::request::{Profiles, build_plan};

/// The target's check of one input: panics on what the target reports.
pub fn check(data: &[u8]) {
    // Lines of `<variable index byte><value bytes>`.
    let mut vars: HashMap<&'static str, OsString> = HashMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&index, value)) = line.split_first() else { continue };
        let name = env_mode::VARIABLES[usize::from(index) % env_mode::VARIABLES.len()];
        vars.insert(name, OsString::from_vec(value.to_vec()));
    }
    let all_utf8 = vars.values().all(|value| value.to_str().is_some());
    let lookup = vars.clone();
    let config = FrontEndConfig::from_os_lookup(move |name| lookup.get(name).cloned());
    match config.check_utf8(env_mode::VARIABLES) {
        Err(err) => {
            assert!(!all_utf8);
            assert!(vars.get(err.variable).is_some_and(|v| v.to_str().is_none()));
            return;
        }
        Ok(()) => assert!(all_utf8),
    }
    let _ = env_mode::is_requested(&config);
    let Ok(options) = env_mode::parse(&|name: &str| config.var(name)) else { return };
    let plan = build_plan(
        &options.request,
        &Profiles::builtin(),
        &Catalog::builtin(),
        chrono::Local::now(),
        || 7,
    );
    if let Err(err) = plan {
        assert!(!err.field.is_empty());
    }
}
