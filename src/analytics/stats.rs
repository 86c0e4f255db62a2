//! The numbers: per dimension, how many favourites and how many generated images have each
//! value, the favourite rate and the lift; and the bundles, the value combinations favourites
//! share, each a ready request.
//!
//! Definitions (also in `docs/FAVORITES.md`):
//! - The population is every image the jobs logs list, plus each favourite the logs do not
//!   know (read from its own metadata), each counted once. `generated` counts it; `count`
//!   counts the distinct favourite images in it.
//! - For a value *v* of a dimension: `count(v)` favourites and `generated(v)` images have it;
//!   `rate(v) = count(v) / generated(v)`; `lift(v) = rate(v) / (count / generated)`, the
//!   favourite rate of *v* over the overall rate: 2 means twice as likely to be a favourite as
//!   an image picked at random, whatever the share of images *v* made. Images without the
//!   value recorded form a `null` row. Rows are ordered by count, then lift, then value.
//! - A bundle fixes values of some of model, profile, scheduler, resolution, CFG and steps.
//!   Its support is the number of favourites having all of them. Bundles are the closed
//!   combinations with support ≥ `min_support`: a combination is dropped when every favourite
//!   having it also shares a further value (the longer combination says the same, more
//!   precisely), and when its lift is not above 1 (favourites are no more common with it than
//!   overall: it describes everything, not the favourites). Ranked by support, then lift, then
//!   the number of values fixed, then values.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AnalyticsError;
use super::images::{Image, Matched, MatchedBy, Origin, Population, Unmatched};
use super::values::{DimValue, Dimension};
use crate::models::catalog::Catalog;
use crate::request::restore::RequestOverlay;
use crate::storage::jobs_log::DamagedLine;
use crate::vocab::SamplerKind;

/// The default least number of favourites a bundle must have.
pub const DEFAULT_MIN_SUPPORT: usize = 2;

/// One value's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The value (`None`: not recorded).
    pub value: Option<DimValue>,
    /// Favourites with it.
    pub count: usize,
    /// Images with it (favourites included).
    pub generated: usize,
    /// `count / generated`.
    pub rate: f64,
    /// `rate / overall rate` (`None` when there are no favourites).
    pub lift: Option<f64>,
}

/// A dimension's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct DimensionStats {
    /// Which dimension.
    pub dimension: Dimension,
    /// Every value seen in the population, ranked.
    pub rows: Vec<Row>,
}

/// A combination of values favourites share.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The values fixed, in [`Dimension::BUNDLE`] order.
    pub values: Vec<(Dimension, DimValue)>,
    /// The model's hub id or path, when the bundle fixes the model.
    pub model_id: Option<String>,
    /// Favourites with every value (the support).
    pub count: usize,
    /// Images with every value.
    pub generated: usize,
    /// `count / generated`.
    pub rate: f64,
    /// `rate / overall rate`.
    pub lift: Option<f64>,
    /// The favourites, as given.
    pub favorites: Vec<String>,
    /// The request it makes (see [`Bundle::request_with`]).
    pub request: BundleRequest,
}

/// The settings a bundle sets, as `generate --bundle FILE:N` reads them back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleRequest {
    /// Model key (catalog name, hub id or path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Style profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Sampler CLI name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// Width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// CFG scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfg: Option<f32>,
    /// Steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
}

impl BundleRequest {
    /// The overlay `generate` lays under the flags the user typed (as `--from` does).
    ///
    /// # Errors
    /// A scheduler that is not one of ours (another tool's sampler), named.
    pub fn to_overlay(&self) -> Result<RequestOverlay, AnalyticsError> {
        let scheduler = self
            .scheduler
            .as_deref()
            .map(|name| {
                SamplerKind::parse(name)
                    .map_err(|err| AnalyticsError::Bundle(format!("the bundle's scheduler: {err}")))
            })
            .transpose()?;
        Ok(RequestOverlay {
            model: self.model.clone(),
            profile: self.profile.clone(),
            scheduler: scheduler.map(Some),
            width: self.width,
            height: self.height,
            cfg: self.cfg,
            steps: self.steps,
            ..RequestOverlay::default()
        })
    }

    /// `imagelab generate …` with these settings and a prompt placeholder.
    pub fn command(&self) -> String {
        let mut args = vec!["imagelab".to_owned(), "generate".to_owned()];
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}"));
                args.push(shell_quote(&value));
            }
        };
        flag("model", self.model.clone());
        flag("profile", self.profile.clone());
        flag("scheduler", self.scheduler.clone());
        flag("width", self.width.map(|v| v.to_string()));
        flag("height", self.height.map(|v| v.to_string()));
        flag("cfg", self.cfg.map(crate::storage::metadata::infotext::format_number));
        flag("steps", self.steps.map(|v| v.to_string()));
        args.push("--prompt".to_owned());
        args.push("'…'".to_owned());
        args.join(" ")
    }
}

/// Quotes for a POSIX shell when needed.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c));
    if plain { text.to_owned() } else { format!("'{}'", text.replace('\'', "'\\''")) }
}

impl Bundle {
    /// The value this bundle fixes for `dimension`.
    pub fn value(&self, dimension: &Dimension) -> Option<&DimValue> {
        self.values.iter().find(|(dim, _)| dim == dimension).map(|(_, value)| value)
    }

    /// The request fields it sets. The model is named as the catalog names it when the
    /// catalog knows its id, else by its id (hub id or path), else by the name recorded.
    pub fn request_with(&self, catalog: &Catalog) -> BundleRequest {
        let text = |dimension: &Dimension| self.value(dimension).map(ToString::to_string);
        let model = self.value(&Dimension::Model).map(|name| {
            self.model_id
                .as_deref()
                .and_then(|id| catalog.find(id))
                .map(|entry| entry.display_name.clone())
                .or_else(|| self.model_id.clone())
                .unwrap_or_else(|| name.to_string())
        });
        let (width, height) = match self.value(&Dimension::Resolution) {
            Some(DimValue::Size { width, height }) => (Some(*width), Some(*height)),
            _ => (None, None),
        };
        BundleRequest {
            model,
            profile: text(&Dimension::Profile),
            scheduler: text(&Dimension::Scheduler),
            width,
            height,
            cfg: text(&Dimension::Cfg).and_then(|cfg| cfg.parse().ok()),
            steps: text(&Dimension::Steps).and_then(|steps| steps.parse().ok()),
        }
    }

    /// `model SDXL Base 1.0 · profile Cinematic · 1024x1024 · CFG 7 · 30 steps`.
    pub fn describe(&self) -> String {
        self.values
            .iter()
            .map(|(dimension, value)| match dimension {
                Dimension::Resolution => value.to_string(),
                Dimension::Cfg => format!("CFG {value}"),
                Dimension::Steps => format!("{value} steps"),
                other => format!("{} {value}", other.name()),
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// A favourite in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct FavoriteEntry {
    /// As given.
    pub given: String,
    /// The image it names.
    pub image: String,
    /// How it was matched.
    pub matched_by: MatchedBy,
    /// The tool whose metadata was read, for favourites the logs do not know.
    pub source: Option<String>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Distinct favourite images analysed.
    pub count: usize,
    /// Images in the population.
    pub generated: usize,
    /// `count / generated`.
    pub overall_rate: f64,
    /// Per dimension: the core ones, then every extra log field, by name.
    pub dimensions: Vec<DimensionStats>,
    /// Least support of a bundle.
    pub min_support: usize,
    /// Ranked bundles.
    pub bundles: Vec<Bundle>,
    /// The favourites and what they matched.
    pub favorites: Vec<FavoriteEntry>,
    /// Favourites that matched nothing.
    pub unmatched: Vec<Unmatched>,
    /// Favourites naming an image already counted.
    pub duplicates: Vec<String>,
    /// Log files read.
    pub logs: Vec<String>,
    /// Log lines skipped.
    pub damaged: Vec<DamagedLine>,
    /// What else the reader noticed.
    pub notes: Vec<String>,
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn lift(rate: f64, overall: f64) -> Option<f64> {
    (overall > 0.0).then(|| rate / overall)
}

/// Higher count first, then higher lift (unknown last).
fn rank(
    count_a: usize,
    lift_a: Option<f64>,
    count_b: usize,
    lift_b: Option<f64>,
) -> std::cmp::Ordering {
    count_b.cmp(&count_a).then_with(|| {
        let a = lift_a.unwrap_or(f64::NEG_INFINITY);
        let b = lift_b.unwrap_or(f64::NEG_INFINITY);
        b.total_cmp(&a)
    })
}

impl Analysis {
    /// Counts, rates, lifts and bundles for the matched favourites over the population.
    pub fn compute(population: &Population, matched: &Matched, min_support: usize) -> Self {
        let images = population.images();
        let favorite_images: Vec<&Image> =
            matched.favorites.iter().map(|favorite| &images[favorite.image]).collect();
        let count = favorite_images.len();
        let generated = images.len();
        let overall_rate = ratio(count, generated);

        let mut dimensions_seen: Vec<Dimension> = Dimension::CORE.to_vec();
        let mut extras: Vec<String> =
            images.iter().flat_map(|image| image.settings.extra.keys().cloned()).collect();
        extras.sort();
        extras.dedup();
        dimensions_seen.extend(
            extras
                .into_iter()
                .filter(|name| !Dimension::CORE.iter().any(|core| core.name() == name))
                .map(Dimension::Extra),
        );
        let dimensions = dimensions_seen
            .into_iter()
            .map(|dimension| dimension_stats(dimension, images, &favorite_images, overall_rate))
            .collect();

        let min_support = min_support.max(1);
        let mut bundles = bundles(images, matched, min_support, overall_rate);
        let catalog = Catalog::builtin();
        for bundle in &mut bundles {
            bundle.request = bundle.request_with(&catalog);
        }
        let favorites = matched
            .favorites
            .iter()
            .map(|favorite| {
                let image = &images[favorite.image];
                FavoriteEntry {
                    given: favorite.given.clone(),
                    image: image.path.display().to_string(),
                    matched_by: favorite.matched_by,
                    source: match &image.origin {
                        Origin::Log => None,
                        Origin::Metadata(source) => Some(source.display_name().to_owned()),
                    },
                }
            })
            .collect();
        Self {
            count,
            generated,
            overall_rate,
            dimensions,
            min_support,
            bundles,
            favorites,
            unmatched: matched.unmatched.clone(),
            duplicates: matched.duplicates.clone(),
            logs: population.log_files().iter().map(|p| p.display().to_string()).collect(),
            damaged: population.damaged().to_vec(),
            notes: population.notes().to_vec(),
        }
    }

    /// The rows of one dimension.
    pub fn dimension(&self, dimension: &Dimension) -> Option<&DimensionStats> {
        self.dimensions.iter().find(|stats| &stats.dimension == dimension)
    }

    /// Favourites analysed from their own metadata (the logs do not know them).
    pub fn from_own_metadata(&self) -> usize {
        self.favorites.iter().filter(|f| f.matched_by == MatchedBy::OwnMetadata).count()
    }

    /// The JSON report (REFERENCE §8): `{count, by_model: [{value, count, …}], …, bundles,
    /// unmatched}`, plus the population size, rates, lifts, bundle requests, the favourites'
    /// matches, damaged log lines and the log files read.
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("count".into(), json!(self.count));
        out.insert("generated".into(), json!(self.generated));
        out.insert("overall_rate".into(), json!(self.overall_rate));
        out.insert("min_support".into(), json!(self.min_support));
        out.insert(
            "dimensions".into(),
            self.dimensions.iter().map(|d| Value::from(d.dimension.name())).collect(),
        );
        for stats in &self.dimensions {
            let rows = stats
                .rows
                .iter()
                .map(|row| {
                    let mut entry = json!({
                        "value": row.value.as_ref().map_or(Value::Null, DimValue::to_json),
                        "count": row.count,
                        "generated": row.generated,
                        "rate": row.rate,
                        "lift": row.lift,
                    });
                    if let Some(DimValue::Size { width, height }) = &row.value {
                        entry["width"] = json!(width);
                        entry["height"] = json!(height);
                    }
                    entry
                })
                .collect();
            out.insert(format!("by_{}", stats.dimension.name()), Value::Array(rows));
        }
        let bundles = self
            .bundles
            .iter()
            .enumerate()
            .map(|(index, bundle)| {
                let request = &bundle.request;
                let value = |dimension: &Dimension| {
                    bundle.value(dimension).map_or(Value::Null, DimValue::to_json)
                };
                let (width, height) = match bundle.value(&Dimension::Resolution) {
                    Some(DimValue::Size { width, height }) => (json!(width), json!(height)),
                    _ => (Value::Null, Value::Null),
                };
                json!({
                    "rank": index + 1,
                    "model": value(&Dimension::Model),
                    "model_id": bundle.model_id,
                    "profile": value(&Dimension::Profile),
                    "scheduler": value(&Dimension::Scheduler),
                    "width": width,
                    "height": height,
                    "cfg": value(&Dimension::Cfg),
                    "steps": value(&Dimension::Steps),
                    "fields": bundle.values.iter().map(|(d, _)| d.name()).collect::<Vec<_>>(),
                    "count": bundle.count,
                    "generated": bundle.generated,
                    "rate": bundle.rate,
                    "lift": bundle.lift,
                    "request": request,
                    "command": request.command(),
                    "favorites": bundle.favorites,
                })
            })
            .collect();
        out.insert("bundles".into(), Value::Array(bundles));
        out.insert(
            "unmatched".into(),
            self.unmatched.iter().map(|u| Value::from(u.given.clone())).collect(),
        );
        out.insert(
            "unmatched_reasons".into(),
            self.unmatched.iter().map(|u| json!({"path": u.given, "reason": u.reason})).collect(),
        );
        out.insert("duplicates".into(), json!(self.duplicates));
        out.insert(
            "favorites".into(),
            self.favorites
                .iter()
                .map(|f| {
                    json!({"path": f.given, "image": f.image, "matched_by": f.matched_by.name(),
                           "source": f.source})
                })
                .collect(),
        );
        out.insert("logs".into(), json!(self.logs));
        out.insert(
            "damaged".into(),
            self.damaged
                .iter()
                .map(|d| json!({"file": d.file.display().to_string(), "line": d.line, "error": d.error}))
                .collect(),
        );
        out.insert("notes".into(), json!(self.notes));
        Value::Object(out)
    }

    /// The human report: a summary, one table per dimension (at most `rows` values each), the
    /// first `top` bundles with their commands, unmatched favourites and damaged log lines.
    pub fn format_human(&self, rows: usize, top: usize) -> String {
        let mut out = String::new();
        self.summary_text(&mut out);
        for stats in &self.dimensions {
            if !stats.rows.is_empty() {
                out.push('\n');
                table_text(&mut out, stats, rows);
            }
        }
        out.push('\n');
        self.bundles_text(&mut out, top);
        self.problems_text(&mut out);
        out
    }

    fn summary_text(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{} favourite(s) among {} image(s): {} overall.",
            self.count,
            self.generated,
            percent(self.overall_rate)
        );
        let own = self.from_own_metadata();
        let _ = writeln!(
            out,
            "{} matched through the jobs logs ({} log file(s)), {own} read from their own metadata, \
             {} unmatched, {} duplicate(s).",
            self.count - own,
            self.logs.len(),
            self.unmatched.len(),
            self.duplicates.len()
        );
        let _ = writeln!(
            out,
            "rate = favourites / images with the value; lift = rate / overall rate (1.00 = average)."
        );
    }

    fn bundles_text(&self, out: &mut String, top: usize) {
        if self.bundles.is_empty() {
            let _ = writeln!(
                out,
                "No bundles: no combination of settings is shared by {} or more favourites more \
                 often than average.",
                self.min_support
            );
            return;
        }
        let _ = writeln!(
            out,
            "Bundles: settings shared by at least {} favourites, ranked by favourites, then lift.",
            self.min_support
        );
        for (index, bundle) in self.bundles.iter().enumerate().take(top) {
            let _ = writeln!(
                out,
                "{:>3}. {} favs of {} images ({}, lift {}): {}",
                index + 1,
                bundle.count,
                bundle.generated,
                percent(bundle.rate),
                lift_text(bundle.lift),
                bundle.describe()
            );
            let _ = writeln!(out, "     {}", bundle.request.command());
        }
        if self.bundles.len() > top {
            let _ =
                writeln!(out, "… {} more bundle(s) (--json lists all)", self.bundles.len() - top);
        }
        let _ = writeln!(
            out,
            "Run one with a new prompt: imagelab favorites apply N --prompt '…' (same favourites \
             flags), or imagelab generate --bundle ANALYSIS.json:N --prompt '…'."
        );
    }

    fn problems_text(&self, out: &mut String) {
        if !self.unmatched.is_empty() {
            let _ = writeln!(out, "\nUnmatched ({}):", self.unmatched.len());
            for unmatched in &self.unmatched {
                let _ = writeln!(out, "  {}: {}", unmatched.given, unmatched.reason);
            }
        }
        if !self.damaged.is_empty() {
            let _ = writeln!(out, "\nDamaged log lines skipped ({}):", self.damaged.len());
            for damaged in &self.damaged {
                let _ = writeln!(
                    out,
                    "  {}:{}: {}",
                    damaged.file.display(),
                    damaged.line,
                    damaged.error
                );
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
    }
}

/// One dimension as a table of at most `rows` values.
fn table_text(out: &mut String, stats: &DimensionStats, rows: usize) {
    let width = stats
        .rows
        .iter()
        .take(rows)
        .map(|row| value_text(row.value.as_ref()).chars().count())
        .chain([stats.dimension.label().chars().count()])
        .max()
        .unwrap_or(0)
        .min(40);
    let _ = writeln!(
        out,
        "{:<width$}  {:>5}  {:>6}  {:>7}  {:>6}",
        stats.dimension.label(),
        "favs",
        "images",
        "rate",
        "lift"
    );
    for row in stats.rows.iter().take(rows) {
        let text: String = value_text(row.value.as_ref()).chars().take(40).collect();
        let _ = writeln!(
            out,
            "{text:<width$}  {:>5}  {:>6}  {:>7}  {:>6}",
            row.count,
            row.generated,
            percent(row.rate),
            lift_text(row.lift)
        );
    }
    if stats.rows.len() > rows {
        let _ = writeln!(out, "… {} more value(s) (--json lists all)", stats.rows.len() - rows);
    }
}

fn lift_text(lift: Option<f64>) -> String {
    lift.map_or_else(|| "-".to_owned(), |lift| format!("{lift:.2}"))
}

fn value_text(value: Option<&DimValue>) -> String {
    value.map_or_else(|| "(not recorded)".to_owned(), ToString::to_string)
}

fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

fn dimension_stats(
    dimension: Dimension,
    images: &[Image],
    favorites: &[&Image],
    overall_rate: f64,
) -> DimensionStats {
    let mut generated: HashMap<Option<DimValue>, usize> = HashMap::new();
    for image in images {
        *generated.entry(dimension.value_of(&image.settings)).or_default() += 1;
    }
    let mut favored: HashMap<Option<DimValue>, usize> = HashMap::new();
    for image in favorites {
        *favored.entry(dimension.value_of(&image.settings)).or_default() += 1;
    }
    let mut rows: Vec<Row> = generated
        .into_iter()
        .map(|(value, made)| {
            let count = favored.get(&value).copied().unwrap_or(0);
            let rate = ratio(count, made);
            Row { value, count, generated: made, rate, lift: lift(rate, overall_rate) }
        })
        .collect();
    rows.sort_by(|a, b| {
        rank(a.count, a.lift, b.count, b.lift).then_with(|| match (&a.value, &b.value) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
    });
    DimensionStats { dimension, rows }
}

/// The values of `image` on the dimensions of `mask` (bit i = `Dimension::BUNDLE[i]`), when
/// all are known.
fn key_of(image: &Image, mask: usize) -> Option<Vec<DimValue>> {
    Dimension::BUNDLE
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, dimension)| dimension.value_of(&image.settings))
        .collect()
}

fn bundles(
    images: &[Image],
    matched: &Matched,
    min_support: usize,
    overall_rate: f64,
) -> Vec<Bundle> {
    let dims = Dimension::BUNDLE.len();
    let mut found = Vec::new();
    for mask in 1..(1_usize << dims) {
        // Favourites per combination of values on these dimensions.
        let mut groups: BTreeMap<Vec<DimValue>, Vec<usize>> = BTreeMap::new();
        for (index, favorite) in matched.favorites.iter().enumerate() {
            if let Some(key) = key_of(&images[favorite.image], mask) {
                groups.entry(key).or_default().push(index);
            }
        }
        groups.retain(|_, members| members.len() >= min_support);
        if groups.is_empty() {
            continue;
        }
        let mut made: HashMap<Vec<DimValue>, usize> = HashMap::new();
        for image in images {
            if let Some(key) = key_of(image, mask) {
                *made.entry(key).or_default() += 1;
            }
        }
        for (key, members) in groups {
            let member_images: Vec<&Image> =
                members.iter().map(|&m| &images[matched.favorites[m].image]).collect();
            // Closed: no further dimension on which all these favourites agree.
            let extendable = (0..dims).filter(|bit| mask & (1 << bit) == 0).any(|bit| {
                let dimension = &Dimension::BUNDLE[bit];
                let first = dimension.value_of(&member_images[0].settings);
                first.is_some()
                    && member_images
                        .iter()
                        .all(|image| dimension.value_of(&image.settings) == first)
            });
            if extendable {
                continue;
            }
            let dims_in: Vec<Dimension> = Dimension::BUNDLE
                .iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, dimension)| dimension.clone())
                .collect();
            let count = members.len();
            let generated = made.get(&key).copied().unwrap_or(count);
            // Useful only where favourites are more common than overall (lift > 1, compared
            // exactly): a combination every image shares says nothing about favourites.
            if count * images.len() <= matched.favorites.len() * generated {
                continue;
            }
            let rate = ratio(count, generated);
            let model_id = dims_in
                .contains(&Dimension::Model)
                .then(|| member_images.iter().find_map(|image| image.settings.model_id.clone()))
                .flatten();
            found.push(Bundle {
                values: dims_in.into_iter().zip(key).collect(),
                model_id,
                count,
                generated,
                rate,
                lift: lift(rate, overall_rate),
                favorites: members.iter().map(|&m| matched.favorites[m].given.clone()).collect(),
                request: BundleRequest::default(),
            });
        }
    }
    found.sort_by(|a, b| {
        rank(a.count, a.lift, b.count, b.lift)
            .then_with(|| b.values.len().cmp(&a.values.len()))
            .then_with(|| a.values.cmp(&b.values))
    });
    found
}

/// Bundle `number` (1-based, as reports number them) of a saved analysis: the JSON of
/// `favorites analyze --json` (or just its `bundles` array). Its `request` is taken as it is.
///
/// # Errors
/// The file cannot be read or is not such JSON; no bundle `number`; the message names the
/// file.
pub fn read_bundle(file: &std::path::Path, number: usize) -> Result<BundleRequest, AnalyticsError> {
    let text = fs_err::read_to_string(file)?;
    let fail = |message: String| {
        AnalyticsError::Bundle(format!("--bundle: {message}: {}", file.display()))
    };
    let json: Value = serde_json::from_str(&text)
        .map_err(|err| fail(format!("not the JSON of `favorites analyze --json` ({err})")))?;
    let bundles = match &json {
        Value::Array(items) => items,
        Value::Object(fields) => match fields.get("bundles") {
            Some(Value::Array(items)) => items,
            _ => return Err(fail("no `bundles` array".to_owned())),
        },
        _ => return Err(fail("not the JSON of `favorites analyze --json`".to_owned())),
    };
    let Some(bundle) = number.checked_sub(1).and_then(|index| bundles.get(index)) else {
        return Err(fail(format!(
            "no bundle {number}; it lists {} (numbered from 1)",
            bundles.len()
        )));
    };
    let request = bundle.get("request").unwrap_or(bundle);
    serde_json::from_value(request.clone())
        .map_err(|err| fail(format!("bundle {number} is not a request ({err})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::images::FavoriteMatch;
    use crate::analytics::values::ImageSettings;
    use std::path::PathBuf;

    /// Models A and B × profiles P, Q, R × 2 images, everything else equal.
    fn population() -> Population {
        let mut images = Vec::new();
        for model in ["A", "B"] {
            for profile in ["P", "Q", "R"] {
                for index in 0..2 {
                    let name = format!("{model}{profile}{index}");
                    images.push(Image {
                        path: PathBuf::from(format!("/out/{name}.png")),
                        shown: name,
                        seed: Some(index),
                        prompt: "p".into(),
                        settings: ImageSettings {
                            model: Some(model.into()),
                            model_id: Some(format!("org/{model}")),
                            profile: Some(profile.into()),
                            scheduler: Some("euler".into()),
                            steps: Some(30),
                            cfg: Some(7.0),
                            width: Some(1024),
                            height: Some(1024),
                            ..ImageSettings::default()
                        },
                        origin: Origin::Log,
                        run_dir: None,
                    });
                }
            }
        }
        Population::from_images(images)
    }

    fn favorites(population: &Population, names: &[&str]) -> Matched {
        let favorites = names
            .iter()
            .map(|name| FavoriteMatch {
                given: (*name).to_owned(),
                image: population
                    .images()
                    .iter()
                    .position(|image| image.shown == *name)
                    .expect("known image"),
                matched_by: MatchedBy::Path,
            })
            .collect();
        Matched { favorites, ..Matched::default() }
    }

    fn described(analysis: &Analysis) -> Vec<(String, usize, String)> {
        analysis
            .bundles
            .iter()
            .map(|b| (b.describe(), b.count, format!("{:.2}", b.lift.unwrap_or(0.0))))
            .collect()
    }

    #[test]
    fn rates_lifts_and_closed_bundles_ranked_by_support_then_lift() {
        let population = population();
        let matched = favorites(&population, &["AP0", "AP1", "AQ0", "BP1"]);
        let analysis = Analysis::compute(&population, &matched, 2);
        // 4 favourites of 12 images: overall rate 1/3.
        assert_eq!((analysis.count, analysis.generated), (4, 12));
        let models = analysis.dimension(&Dimension::Model).expect("by model");
        let a = &models.rows[0];
        assert_eq!(
            (a.value.as_ref().map(ToString::to_string).as_deref(), a.count, a.generated),
            (Some("A"), 3, 6)
        );
        assert!((a.rate - 0.5).abs() < 1e-12 && (a.lift.expect("lift") - 1.5).abs() < 1e-12);
        let b = &models.rows[1];
        assert!((b.lift.expect("lift") - 0.5).abs() < 1e-12, "1/6 over 1/3");
        let profiles = analysis.dimension(&Dimension::Profile).expect("by profile");
        let order: Vec<(String, usize)> = profiles
            .rows
            .iter()
            .map(|row| (row.value.as_ref().map(ToString::to_string).unwrap_or_default(), row.count))
            .collect();
        assert_eq!(order, [("P".into(), 3), ("Q".into(), 1), ("R".into(), 0)]);

        // {everything shared} has lift 1 and is left out; {A} and {P} close over the shared
        // settings; {B} alone is below the support.
        let shared = "scheduler euler · 1024x1024 · CFG 7 · 30 steps";
        assert_eq!(
            described(&analysis),
            [
                (format!("profile P · {shared}"), 3, "2.25".into()),
                (format!("model A · {shared}"), 3, "1.50".into()),
                (format!("model A · profile P · {shared}"), 2, "3.00".into()),
            ]
        );
        let request = &analysis.bundles[2].request;
        assert_eq!(request.model.as_deref(), Some("org/A"), "an unknown model by its id");
        assert_eq!(
            (request.width, request.height, request.steps),
            (Some(1024), Some(1024), Some(30))
        );
        assert_eq!(
            request.command(),
            "imagelab generate --model org/A --profile P --scheduler euler --width 1024 \
             --height 1024 --cfg 7 --steps 30 --prompt '…'"
        );

        let strict = Analysis::compute(&population, &matched, 3);
        assert_eq!(strict.bundles.len(), 2);
        let loose = Analysis::compute(&population, &matched, 1);
        let tail: Vec<String> = described(&loose)[3..].iter().map(|b| b.0.clone()).collect();
        // Support 1, lift 1.5 each: the tie goes to the values' order.
        assert_eq!(
            tail,
            [format!("model A · profile Q · {shared}"), format!("model B · profile P · {shared}")]
        );
    }

    #[test]
    fn no_favourites_means_no_lift_and_no_bundles() {
        let population = population();
        let analysis = Analysis::compute(&population, &Matched::default(), 2);
        assert_eq!(analysis.count, 0);
        assert!(analysis.bundles.is_empty());
        assert!(analysis.dimensions.iter().all(|d| d.rows.iter().all(|row| row.lift.is_none())));
        assert!(analysis.format_human(12, 10).contains("No bundles"));
    }

    #[test]
    fn bundle_requests_become_overlays_and_refuse_foreign_samplers() {
        let request = BundleRequest {
            model: Some("SDXL Turbo".into()),
            scheduler: Some("dpmpp_2m_karras".into()),
            cfg: Some(1.5),
            ..BundleRequest::default()
        };
        let overlay = request.to_overlay().expect("valid");
        assert_eq!(overlay.scheduler, Some(Some(SamplerKind::Dpmpp2mKarras)));
        assert_eq!(
            (overlay.cfg, overlay.width, overlay.prompt.as_deref()),
            (Some(1.5), None, None)
        );
        let foreign =
            BundleRequest { scheduler: Some("DPM++ 3M SDE".into()), ..BundleRequest::default() };
        let err = foreign.to_overlay().expect_err("no equivalent").to_string();
        assert!(err.contains("scheduler"), "{err}");
    }
}
