//! Environment-variable headless mode (REFERENCE §8), for containers on GPU servers: triggers
//! when `HEADLESS=1` or `PROMPT` is set and no arguments are given, and runs exactly what
//! `imagelab generate` would run with the same settings.

use std::path::PathBuf;

use super::generate::{self, GenerateOptions};
use super::{CliError, Outcome};
use crate::app::config::{BACKEND_VAR, DEVICE_VAR, INSTANCE_ID_VAR, OUTPUT_DIR_VAR};
use crate::app::{BackendChoice, DEFAULT_OUTPUT_DIR, FrontEndConfig};
use crate::models::catalog::DEFAULT_MODEL;
use crate::request::{Request, RequestError, Sweep};
use crate::vocab::{
    DEFAULT_QUALITY, DeviceChoice, OutputFormat, Precision, RAW_PROFILE, SamplerKind, SaveOptions,
    SigmaSchedule,
};

/// Every variable the mode reads, for `--help` and docs.
pub const VARIABLES: &[&str] = &[
    "HEADLESS",
    "PROMPT",
    "NEGATIVE_PROMPT",
    "MODEL_KEY",
    "STYLE_PROFILE",
    "MODE",
    "WIDTH",
    "HEIGHT",
    "STEPS",
    "GUIDANCE",
    "BATCH_SIZE",
    "SEED",
    "SCHEDULER",
    "SCHEDULE_TYPE",
    "INIT_IMAGE_PATH",
    "IMG2IMG_STRENGTH",
    "RUN_ALL_PROFILES",
    "RUN_ALL_MODELS",
    "IMAGE_FORMAT",
    "IMAGE_QUALITY",
    "IMAGE_LOSSLESS",
    BACKEND_VAR,
    OUTPUT_DIR_VAR,
    DEVICE_VAR,
    "IMAGELAB_DTYPE",
    "IMAGELAB_JSON",
    INSTANCE_ID_VAR,
];

/// True when the environment asks for env-var mode.
pub fn is_requested(config: &FrontEndConfig) -> bool {
    requested_by(&|name: &str| config.var(name))
}

fn requested_by(lookup: &dyn Fn(&str) -> Option<String>) -> bool {
    lookup("PROMPT").is_some()
        || lookup("HEADLESS").is_some_and(|v| parse_bool_text(&v) == Some(true))
}

/// Runs env-var mode: the same run as `imagelab generate` with the same settings.
///
/// # Errors
/// A variable with a bad value (named), or what [`generate::run`] refuses.
pub fn run(config: &FrontEndConfig) -> Result<Outcome, CliError> {
    let options = parse(&|name: &str| config.var(name))?;
    generate::run(&options, config)
}

fn parse_bool_text(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// `value` parsed as a number, naming variable `name` when it is not one.
fn number<T: std::str::FromStr>(
    name: &str,
    value: Option<String>,
) -> Result<Option<T>, RequestError> {
    value
        .map(|text| {
            text.parse::<T>()
                .map_err(|_| RequestError::new(name, format!("{text:?} is not a valid number")))
        })
        .transpose()
}

/// Reads the mode's variables through `lookup` (the process environment, or a map in tests).
///
/// # Errors
/// A variable with a bad value, named; both sweep switches on.
pub fn parse(lookup: &dyn Fn(&str) -> Option<String>) -> Result<GenerateOptions, RequestError> {
    let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let flag = |name: &str| -> Result<bool, RequestError> {
        match lookup(name) {
            None => Ok(false),
            Some(value) => parse_bool_text(&value).ok_or_else(|| {
                RequestError::new(
                    name,
                    format!("{value:?} is not a boolean (1/0, true/false, yes/no)"),
                )
            }),
        }
    };
    let sweep = Sweep::from_switches(flag("RUN_ALL_PROFILES")?, flag("RUN_ALL_MODELS")?).map_err(
        |mut err| {
            err.field = "RUN_ALL_PROFILES/RUN_ALL_MODELS".into();
            err
        },
    )?;
    let init_path = get("INIT_IMAGE_PATH").map(PathBuf::from);
    let init_image = match get("MODE").map(|m| m.to_ascii_lowercase()).as_deref() {
        None => init_path,
        Some("txt2img") => None,
        Some("img2img") => Some(init_path.ok_or_else(|| {
            RequestError::new("INIT_IMAGE_PATH", "MODE=img2img needs INIT_IMAGE_PATH")
        })?),
        Some(other) => {
            return Err(RequestError::new("MODE", format!("{other:?}; valid: txt2img, img2img")));
        }
    };
    let scheduler = get("SCHEDULER")
        .map(|name| {
            SamplerKind::parse(&name)
                .map_err(|message| RequestError::new("SCHEDULER", message.to_string()))
        })
        .transpose()?;
    let schedule_type = get("SCHEDULE_TYPE")
        .map(|name| {
            SigmaSchedule::parse(&name)
                .map_err(|m| RequestError::new("SCHEDULE_TYPE", m.to_string()))
        })
        .transpose()?
        .unwrap_or_default();
    let device = get(DEVICE_VAR)
        .map(|text| {
            DeviceChoice::parse(&text).map_err(|m| RequestError::new(DEVICE_VAR, m.to_string()))
        })
        .transpose()?
        .unwrap_or_default();
    let dtype = get("IMAGELAB_DTYPE")
        .map(|text| {
            Precision::parse(&text).map_err(|m| RequestError::new("IMAGELAB_DTYPE", m.to_string()))
        })
        .transpose()?;
    let output = SaveOptions {
        format: get("IMAGE_FORMAT")
            .map(|text| {
                OutputFormat::parse(&text)
                    .map_err(|m| RequestError::new("IMAGE_FORMAT", m.to_string()))
            })
            .transpose()?
            .unwrap_or_default(),
        quality: number("IMAGE_QUALITY", get("IMAGE_QUALITY"))?.unwrap_or(DEFAULT_QUALITY),
        lossless: flag("IMAGE_LOSSLESS")?,
    };
    let backend = get(BACKEND_VAR)
        .map(|text| {
            BackendChoice::parse(&text).map_err(|m| RequestError::new(BACKEND_VAR, m.to_string()))
        })
        .transpose()?
        .unwrap_or(BackendChoice::Candle);
    let request = Request {
        model: get("MODEL_KEY").unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        prompt: lookup("PROMPT").unwrap_or_default(),
        negative: lookup("NEGATIVE_PROMPT").unwrap_or_default(),
        profile: get("STYLE_PROFILE").unwrap_or_else(|| RAW_PROFILE.to_owned()),
        scheduler,
        schedule_type,
        width: number("WIDTH", get("WIDTH"))?,
        height: number("HEIGHT", get("HEIGHT"))?,
        steps: number("STEPS", get("STEPS"))?,
        cfg: number("GUIDANCE", get("GUIDANCE"))?,
        batch: number("BATCH_SIZE", get("BATCH_SIZE"))?.unwrap_or(1),
        seed: number("SEED", get("SEED"))?,
        init_image,
        strength: number("IMG2IMG_STRENGTH", get("IMG2IMG_STRENGTH"))?.unwrap_or(0.75),
        sweep,
        device,
        dtype,
        output,
        ..Request::default()
    };
    Ok(GenerateOptions {
        request,
        out: get(OUTPUT_DIR_VAR).map_or_else(|| PathBuf::from(DEFAULT_OUTPUT_DIR), PathBuf::from),
        json: flag("IMAGELAB_JSON")?,
        backend,
        instance_id: get(INSTANCE_ID_VAR),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_map(pairs: &[(&str, &str)]) -> Result<GenerateOptions, RequestError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        parse(&move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn full_set_parses() {
        let options = parse_map(&[
            ("PROMPT", "a cat"),
            ("NEGATIVE_PROMPT", "blurry"),
            ("MODEL_KEY", "SDXL Turbo"),
            ("STYLE_PROFILE", "Cinematic"),
            ("WIDTH", "512"),
            ("HEIGHT", "768"),
            ("STEPS", "4"),
            ("GUIDANCE", "0"),
            ("BATCH_SIZE", "2"),
            ("SEED", "42"),
            ("SCHEDULER", "Euler a"),
            ("RUN_ALL_PROFILES", "true"),
            ("IMAGELAB_BACKEND", "mock"),
            ("IMAGELAB_OUTPUT_DIR", "/tmp/x"),
            ("IMAGELAB_DEVICE", "cuda:1"),
            ("INSTANCE_ID", "gpu1"),
            ("IMAGE_FORMAT", "webp"),
            ("IMAGE_QUALITY", "75"),
            ("IMAGE_LOSSLESS", "1"),
        ])
        .expect("valid");
        let r = &options.request;
        assert_eq!(
            (r.width, r.height, r.steps, r.cfg, r.batch, r.seed),
            (Some(512), Some(768), Some(4), Some(0.0), 2, Some(42))
        );
        assert_eq!(r.scheduler, Some(SamplerKind::EulerA));
        assert_eq!(r.sweep, Sweep::AllProfiles);
        assert_eq!(r.device, DeviceChoice::Cuda(1));
        assert_eq!(options.backend, BackendChoice::Mock);
        assert_eq!(options.out, PathBuf::from("/tmp/x"));
        assert_eq!(options.instance_id.as_deref(), Some("gpu1"));
        assert_eq!(
            r.output,
            SaveOptions { format: OutputFormat::Webp, quality: 75, lossless: true }
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, field) in [
            (vec![("PROMPT", "x"), ("WIDTH", "wide")], "WIDTH"),
            (vec![("PROMPT", "x"), ("RUN_ALL_MODELS", "maybe")], "RUN_ALL_MODELS"),
            (vec![("PROMPT", "x"), ("SCHEDULER", "plms")], "SCHEDULER"),
            (vec![("PROMPT", "x"), ("MODE", "img2img")], "INIT_IMAGE_PATH"),
            (vec![("PROMPT", "x"), ("MODE", "video")], "MODE"),
            (vec![("PROMPT", "x"), ("IMAGE_FORMAT", "gif")], "IMAGE_FORMAT"),
            (vec![("PROMPT", "x"), ("IMAGE_QUALITY", "high")], "IMAGE_QUALITY"),
            (
                vec![("PROMPT", "x"), ("RUN_ALL_MODELS", "1"), ("RUN_ALL_PROFILES", "1")],
                "RUN_ALL_PROFILES/RUN_ALL_MODELS",
            ),
        ] {
            let err = parse_map(&pairs).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn mode_decides_img2img() {
        let implicit = parse_map(&[("PROMPT", "x"), ("INIT_IMAGE_PATH", "in.png")]).expect("ok");
        assert_eq!(implicit.request.init_image, Some(PathBuf::from("in.png")));
        let txt = parse_map(&[("PROMPT", "x"), ("MODE", "txt2img"), ("INIT_IMAGE_PATH", "in.png")])
            .expect("ok");
        assert_eq!(txt.request.init_image, None);
    }

    #[test]
    fn trigger_rules() {
        let map = |pairs: Vec<(&'static str, &'static str)>| {
            let map: HashMap<&str, &str> = pairs.into_iter().collect();
            move |name: &str| map.get(name).map(|v| (*v).to_owned())
        };
        assert!(requested_by(&map(vec![("PROMPT", "")])));
        assert!(requested_by(&map(vec![("HEADLESS", "1")])));
        assert!(!requested_by(&map(vec![("HEADLESS", "0")])));
        assert!(!requested_by(&map(vec![])));
    }
}
