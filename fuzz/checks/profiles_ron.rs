//! A profiles file (`profiles.ron`, `IMAGELAB_PROFILES`): the RON parser and every check, then a
//! plan with each profile. Whatever parses must hold values the flags would accept, and a plan
//! is either made or refused with a named field — never a panic or an absurd allocation.

use imagelab::models::Catalog;
use imagelab::request::{Profiles, Request, build_plan, limits};

/// The target's check of one input: panics on what the target reports.
pub fn check(text: &str) {
    let Ok(profiles) = Profiles::parse(text, "fuzz.ron") else { return };
    let catalog = Catalog::builtin();
    for profile in profiles.all() {
        if let Some(steps) = profile.default_steps {
            assert!((1..=limits::MAX_STEPS).contains(&steps), "{steps}");
        }
        if let Some(cfg) = profile.default_cfg {
            assert!(cfg.is_finite() && (0.0..=limits::MAX_CFG).contains(&cfg), "{cfg}");
        }
        let request = Request {
            prompt: "a fox".into(),
            profile: profile.name.clone(),
            seed: Some(1),
            ..Request::default()
        };
        match build_plan(&request, &profiles, &catalog, chrono::Local::now(), || 1) {
            Ok(plan) => assert_eq!(plan.items.len(), 1),
            Err(err) => assert!(!err.field.is_empty()),
        }
    }
}
