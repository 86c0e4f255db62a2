//! What the analysis groups images by: the dimensions (model, profile, scheduler, steps, CFG,
//! resolution, and any other field a jobs-log line carries) and their values.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::models::catalog::Catalog;
use crate::storage::jobs_log::JobRecord;
use crate::storage::metadata::Recovered;

/// One thing images can be grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The model's display name.
    Model,
    /// The style profile.
    Profile,
    /// The sampler (CLI name; another tool's own name when it has no equivalent here).
    Scheduler,
    /// Width × height.
    Resolution,
    /// CFG scale.
    Cfg,
    /// Denoising steps.
    Steps,
    /// Any other field of a jobs-log line (`template`, `runner_job`, a generated prompt's
    /// parts as `field.part`), by its name.
    Extra(String),
}

impl Dimension {
    /// The dimensions every image has, in the order reports show them (REFERENCE §8).
    pub const CORE: [Self; 6] =
        [Self::Model, Self::Profile, Self::Scheduler, Self::Steps, Self::Cfg, Self::Resolution];

    /// The dimensions a request sets, in the order bundles list them.
    pub const BUNDLE: [Self; 6] =
        [Self::Model, Self::Profile, Self::Scheduler, Self::Resolution, Self::Cfg, Self::Steps];

    /// The name in JSON keys (`by_<name>`) and in bundles.
    pub fn name(&self) -> &str {
        match self {
            Self::Model => "model",
            Self::Profile => "profile",
            Self::Scheduler => "scheduler",
            Self::Resolution => "resolution",
            Self::Cfg => "cfg",
            Self::Steps => "steps",
            Self::Extra(name) => name,
        }
    }

    /// The heading people read.
    pub fn label(&self) -> String {
        match self {
            Self::Model => "Model".to_owned(),
            Self::Profile => "Profile".to_owned(),
            Self::Scheduler => "Scheduler".to_owned(),
            Self::Resolution => "Resolution".to_owned(),
            Self::Cfg => "CFG".to_owned(),
            Self::Steps => "Steps".to_owned(),
            Self::Extra(name) => name.clone(),
        }
    }

    /// This dimension's value for an image, when known.
    pub fn value_of(&self, settings: &ImageSettings) -> Option<DimValue> {
        match self {
            Self::Model => settings.model.clone().map(DimValue::Text),
            Self::Profile => settings.profile.clone().map(DimValue::Text),
            Self::Scheduler => settings.scheduler.clone().map(DimValue::Text),
            Self::Resolution => match (settings.width, settings.height) {
                (Some(width), Some(height)) => Some(DimValue::Size { width, height }),
                _ => None,
            },
            Self::Cfg => settings.cfg.map(|cfg| DimValue::Number(Decimal::from_f32(cfg))),
            Self::Steps => {
                settings.steps.map(|steps| DimValue::Number(Decimal::from_u64(steps.into())))
            }
            Self::Extra(name) => settings.extra.get(name).cloned(),
        }
    }
}

/// A number kept as its shortest decimal text, so `7` and `7.0` group together and a CFG of
/// 7.1 reads `7.1` (not its f32 expansion); ordered by value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal(String);

impl Decimal {
    /// An f32 setting (CFG) as A1111 and our infotext write it.
    pub fn from_f32(value: f32) -> Self {
        Self(crate::storage::metadata::infotext::format_number(value))
    }

    /// An integer.
    pub fn from_u64(value: u64) -> Self {
        Self(value.to_string())
    }

    /// A JSON number.
    pub fn from_json(number: &serde_json::Number) -> Self {
        Self(number.to_string())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn value(&self) -> f64 {
        self.0.parse().unwrap_or(f64::NAN)
    }

    /// As a JSON number (an integer when it is one).
    pub fn to_json(&self) -> Value {
        if let Ok(int) = self.0.parse::<i64>() {
            return Value::from(int);
        }
        if let Ok(int) = self.0.parse::<u64>() {
            return Value::from(int);
        }
        serde_json::Number::from_f64(self.value()).map_or(Value::Null, Value::Number)
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value().total_cmp(&other.value()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One value of a dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DimValue {
    /// true / false.
    Bool(bool),
    /// A number.
    Number(Decimal),
    /// Width × height in pixels.
    Size {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Text.
    Text(String),
}

impl DimValue {
    /// A scalar JSON value (`null`, empty text, arrays and objects have none).
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(flag) => Some(Self::Bool(*flag)),
            Value::Number(number) => Some(Self::Number(Decimal::from_json(number))),
            Value::String(text) if !text.trim().is_empty() => Some(Self::Text(text.clone())),
            _ => None,
        }
    }

    /// The value in JSON: numbers as numbers, a resolution as `"WxH"`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Bool(flag) => Value::Bool(*flag),
            Self::Number(number) => number.to_json(),
            Self::Size { .. } | Self::Text(_) => Value::String(self.to_string()),
        }
    }
}

impl fmt::Display for DimValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(flag) => write!(f, "{flag}"),
            Self::Number(number) => f.write_str(number.as_str()),
            Self::Size { width, height } => write!(f, "{width}x{height}"),
            Self::Text(text) => f.write_str(text),
        }
    }
}

/// The settings of one image that the analysis groups by; `None` where not known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageSettings {
    /// Model display name.
    pub model: Option<String>,
    /// Hub id or path of the model (what a request loads).
    pub model_id: Option<String>,
    /// Style profile.
    pub profile: Option<String>,
    /// Sampler CLI name, or another tool's own name.
    pub scheduler: Option<String>,
    /// Steps.
    pub steps: Option<u32>,
    /// CFG scale.
    pub cfg: Option<f32>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Other jobs-log fields, by name.
    pub extra: BTreeMap<String, DimValue>,
}

/// Jobs-log fields that are not dimensions: they are per image or per run (prompts, seeds,
/// paths, times), or are the core dimensions themselves.
const NOT_EXTRA: [&str; 25] = [
    "timestamp",
    "mode",
    "prompt",
    "negative",
    "all_profiles",
    "all_models",
    "profile",
    "model",
    "model_id",
    "scheduler",
    "steps",
    "cfg",
    "width",
    "height",
    "batch_size",
    "seed_base",
    "seeds",
    "paths",
    "run_dir",
    "error",
    "duration_s",
    "device",
    "status",
    "job",
    "notes",
];

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl ImageSettings {
    /// The settings a jobs-log line records. Fields beyond the core ones — named in a newer
    /// [`JobRecord`] or kept in its `extra` — become dimensions by their name: scalars as they
    /// are, an object's scalar members as `field.member`.
    pub fn from_record(record: &JobRecord) -> Self {
        let mut extra = BTreeMap::new();
        if let Ok(Value::Object(fields)) = serde_json::to_value(record) {
            for (name, value) in fields {
                if NOT_EXTRA.contains(&name.as_str()) {
                    continue;
                }
                match &value {
                    Value::Object(members) => {
                        for (member, inner) in members {
                            if let Some(found) = DimValue::from_json(inner) {
                                extra.insert(format!("{name}.{member}"), found);
                            }
                        }
                    }
                    other => {
                        if let Some(found) = DimValue::from_json(other) {
                            extra.insert(name, found);
                        }
                    }
                }
            }
        }
        Self {
            model: non_empty(&record.model),
            model_id: non_empty(&record.model_id),
            profile: non_empty(&record.profile),
            scheduler: non_empty(&record.scheduler),
            steps: (record.steps > 0).then_some(record.steps),
            cfg: Some(record.cfg),
            width: (record.width > 0).then_some(record.width),
            height: (record.height > 0).then_some(record.height),
            extra,
        }
    }

    /// The settings an image's own metadata records: ours exactly (the model under its
    /// catalog name, as the logs write it), another tool's as written — its model under our
    /// catalog name when the catalog knows it, its sampler under our name when there is an
    /// equivalent, and no profile (other tools have none).
    pub fn from_recovered(recovered: &Recovered, catalog: &Catalog) -> Self {
        if let Some(info) = &recovered.generation {
            let model = catalog
                .find(&info.model_id)
                .map(|entry| entry.display_name.clone())
                .or_else(|| non_empty(&info.model))
                .or_else(|| non_empty(&info.model_id));
            return Self {
                model,
                model_id: non_empty(&info.model_id),
                profile: non_empty(&info.profile),
                scheduler: Some(info.sampler.cli_name().to_owned()),
                steps: (info.steps > 0).then_some(info.steps),
                cfg: Some(info.cfg),
                width: (info.width > 0).then_some(info.width),
                height: (info.height > 0).then_some(info.height),
                extra: BTreeMap::new(),
            };
        }
        let known = catalog.find(&recovered.model);
        Self {
            model: known
                .map(|entry| entry.display_name.clone())
                .or_else(|| non_empty(&recovered.model)),
            model_id: known.map(|entry| entry.hub_id.clone()),
            profile: None,
            scheduler: recovered
                .sampler
                .map(|sampler| sampler.cli_name().to_owned())
                .or_else(|| non_empty(&recovered.sampler_name)),
            steps: recovered.steps.filter(|&steps| steps > 0),
            cfg: recovered.cfg,
            width: recovered.width.filter(|&px| px > 0),
            height: recovered.height.filter(|&px| px > 0),
            extra: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_group_by_value_and_sort_numerically() {
        assert_eq!(Decimal::from_f32(7.0), Decimal::from_json(&serde_json::Number::from(7)));
        assert_eq!(Decimal::from_f32(7.1).as_str(), "7.1");
        let mut values = [Decimal::from_u64(30), Decimal::from_f32(4.5), Decimal::from_u64(8)];
        values.sort();
        let texts: Vec<&str> = values.iter().map(Decimal::as_str).collect();
        assert_eq!(texts, ["4.5", "8", "30"]);
        assert_eq!(Decimal::from_f32(7.5).to_json(), serde_json::json!(7.5));
        assert_eq!(Decimal::from_u64(30).to_json(), serde_json::json!(30));
    }

    #[test]
    fn extra_log_fields_become_dimensions() {
        let line = serde_json::json!({
            "timestamp": "2026-01-01T00:00:00+00:00", "mode": "txt2img", "prompt": "p",
            "negative": "", "all_profiles": false, "all_models": false, "profile": "Cinematic",
            "model": "SDXL Base 1.0", "model_id": "stabilityai/stable-diffusion-xl-base-1.0",
            "scheduler": "euler", "steps": 30, "cfg": 7.0, "width": 1024, "height": 768,
            "batch_size": 1, "seed_base": 1, "seeds": [1], "paths": ["a.png"], "run_dir": null,
            "error": null, "duration_s": 1.0, "device": "cpu",
            "template": "portrait", "runner_job": 17, "prompt_parts": {"subject": "a fox", "n": 2},
            "tags": ["x"], "note": null, "empty": ""
        });
        let record: JobRecord = serde_json::from_value(line).expect("a log line");
        let settings = ImageSettings::from_record(&record);
        let names: Vec<&str> = settings.extra.keys().map(String::as_str).collect();
        assert_eq!(names, ["prompt_parts.n", "prompt_parts.subject", "runner_job", "template"]);
        assert_eq!(
            Dimension::Extra("template".into()).value_of(&settings),
            Some(DimValue::Text("portrait".into()))
        );
        assert_eq!(
            Dimension::Resolution.value_of(&settings).map(|v| v.to_string()).as_deref(),
            Some("1024x768")
        );
        assert_eq!(Dimension::Steps.value_of(&settings).map(|v| v.to_json()), Some(30.into()));
    }
}
