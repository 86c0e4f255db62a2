//! The Insights panel: what the starred images share, as bar charts (`egui_plot`) and the same
//! numbers in a table, and the bundles of settings with "use these settings". A named worker
//! reads the logs and matches the stars off the UI thread; the panel asks again whenever the
//! stars change or a job finishes. The worker also lays out sweep folders for the sweep grid.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::analytics::sheet::SheetLayout;
use crate::analytics::stats::DEFAULT_MIN_SUPPORT;
use crate::analytics::{self, Analysis, BundleRequest, DimValue, FavoritesSource};
use crate::request::Sweep;

/// What the worker is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InsightsRequest {
    /// Analyse the stars of an output root (its `favorites.txt`, its logs).
    Analyze { root: PathBuf, min_support: usize },
    /// Lay out a sweep folder.
    Sheet(PathBuf),
    /// List the sweep folders of an output root.
    Sweeps(PathBuf),
}

/// What the worker answers.
#[derive(Debug)]
pub enum InsightsResult {
    /// A fresh analysis, or why there is none.
    Analysis(Result<Box<Analysis>, String>),
    /// A sweep's layout, or why there is none.
    Sheet(PathBuf, Result<Box<SheetLayout>, String>),
    /// The sweep folders, newest first.
    Sweeps(Vec<PathBuf>),
}

/// The handle on the `imagelab-insights` thread.
pub struct InsightsWorker {
    requests: Sender<InsightsRequest>,
    results: Receiver<InsightsResult>,
    /// An analysis asked for but not sent (the queue was full): sent with the next drain.
    deferred: Option<InsightsRequest>,
}

impl std::fmt::Debug for InsightsWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsightsWorker").finish_non_exhaustive()
    }
}

const CHANNEL_CAPACITY: usize = 16;

impl InsightsWorker {
    /// Starts the thread; `waker` is called after each answer.
    ///
    /// # Errors
    /// The thread could not start.
    pub fn spawn(waker: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (request_tx, request_rx) = bounded::<InsightsRequest>(CHANNEL_CAPACITY);
        let (result_tx, result_rx) = bounded::<InsightsResult>(CHANNEL_CAPACITY);
        std::thread::Builder::new().name("imagelab-insights".into()).spawn(move || {
            while let Ok(first) = request_rx.recv() {
                // Only the newest analysis matters: skip the ones queued behind it.
                let mut batch = vec![first];
                batch.extend(request_rx.try_iter());
                let newest_analysis = batch
                    .iter()
                    .rposition(|request| matches!(request, InsightsRequest::Analyze { .. }));
                for (index, request) in batch.into_iter().enumerate() {
                    let answer = match request {
                        InsightsRequest::Analyze { root, min_support } => {
                            if Some(index) != newest_analysis {
                                continue;
                            }
                            InsightsResult::Analysis(analyze_stars(&root, min_support))
                        }
                        InsightsRequest::Sheet(run_dir) => {
                            let layout = SheetLayout::from_run_dir(&run_dir)
                                .map(Box::new)
                                .map_err(|err| err.to_string());
                            InsightsResult::Sheet(run_dir, layout)
                        }
                        InsightsRequest::Sweeps(root) => InsightsResult::Sweeps(list_sweeps(&root)),
                    };
                    if result_tx.send(answer).is_err() {
                        return;
                    }
                    waker();
                }
            }
        })?;
        Ok(Self { requests: request_tx, results: result_rx, deferred: None })
    }

    /// A worker with no thread (when it could not start): requests go nowhere.
    pub fn inert() -> Self {
        let (requests, _) = bounded(1);
        let (_, results) = bounded(1);
        Self { requests, results, deferred: None }
    }

    fn send(&mut self, request: InsightsRequest) -> bool {
        match self.requests.try_send(request) {
            Ok(()) => true,
            Err(TrySendError::Full(request)) => {
                if matches!(request, InsightsRequest::Analyze { .. }) {
                    self.deferred = Some(request);
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Asks for a fresh analysis of the stars under `root`.
    pub fn analyze(&mut self, root: &Path, min_support: usize) -> bool {
        self.send(InsightsRequest::Analyze { root: root.to_owned(), min_support })
    }

    /// Asks for the layout of a sweep folder.
    pub fn sheet(&mut self, run_dir: &Path) -> bool {
        self.send(InsightsRequest::Sheet(run_dir.to_owned()))
    }

    /// Asks for the sweep folders of `root`.
    pub fn sweeps(&mut self, root: &Path) -> bool {
        self.send(InsightsRequest::Sweeps(root.to_owned()))
    }

    /// Takes the answers that arrived; re-sends a deferred analysis.
    pub fn drain(&mut self) -> Vec<InsightsResult> {
        let answers: Vec<InsightsResult> = self.results.try_iter().collect();
        if let Some(request) = self.deferred.take() {
            self.send(request);
        }
        answers
    }
}

fn analyze_stars(root: &Path, min_support: usize) -> Result<Box<Analysis>, String> {
    if !root.is_dir() {
        return Err(format!("no output folder yet: {}", root.display()));
    }
    analytics::analyze(&[FavoritesSource::Starred], &[root.to_owned()], min_support)
        .map(Box::new)
        .map_err(|err| err.to_string())
}

/// Folders of `root` named as sweeps name them (`<time>_all-profiles`, …), newest first.
fn list_sweeps(root: &Path) -> Vec<PathBuf> {
    let slugs = [Sweep::AllProfiles.slug(), Sweep::AllModelsAllProfiles.slug()];
    let mut found: Vec<PathBuf> = fs_err::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.is_dir()
                        && path.file_name().and_then(|n| n.to_str()).is_some_and(|name| {
                            slugs.iter().any(|slug| name.ends_with(&format!("_{slug}")))
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.reverse();
    found
}

/// What the user asked for in the panel.
#[derive(Debug, Clone, PartialEq)]
pub enum InsightsAction {
    /// Put a bundle's settings into the form.
    UseBundle(BundleRequest),
    /// Compute again.
    Refresh,
}

/// The panel's state.
#[derive(Debug)]
pub struct InsightsPanel {
    /// The latest analysis.
    pub analysis: Option<Analysis>,
    /// Why the latest one failed.
    pub error: Option<String>,
    /// An analysis is on its way.
    pub pending: bool,
    /// The dimension shown in the chart (index into the analysis' dimensions).
    pub dimension: usize,
    /// Least favourites per bundle.
    pub min_support: usize,
}

impl Default for InsightsPanel {
    fn default() -> Self {
        Self {
            analysis: None,
            error: None,
            pending: false,
            dimension: 0,
            min_support: DEFAULT_MIN_SUPPORT,
        }
    }
}

fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

fn lift_text(lift: Option<f64>) -> String {
    lift.map_or_else(|| "-".to_owned(), |lift| format!("{lift:.2}"))
}

fn value_text(value: Option<&DimValue>) -> String {
    value.map_or_else(|| "(not recorded)".to_owned(), ToString::to_string)
}

/// Bars shown at most per chart.
const MAX_BARS: usize = 30;
/// Bundles listed at most.
const MAX_BUNDLES: usize = 10;

impl InsightsPanel {
    /// Takes a fresh analysis.
    pub fn set_result(&mut self, result: Result<Box<Analysis>, String>) {
        self.pending = false;
        match result {
            Ok(analysis) => {
                if self.dimension >= analysis.dimensions.len() {
                    self.dimension = 0;
                }
                self.analysis = Some(*analysis);
                self.error = None;
            }
            Err(error) => self.error = Some(error),
        }
    }

    /// Draws the panel; returns the user's action, if any.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> Option<InsightsAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            ui.strong("Insights");
            if ui.button("Refresh").clicked() {
                action = Some(InsightsAction::Refresh);
            }
            ui.label("Least favourites per bundle");
            let changed =
                ui.add(egui::DragValue::new(&mut self.min_support).range(1..=1000)).changed();
            if changed {
                action = Some(InsightsAction::Refresh);
            }
            if self.pending {
                ui.spinner();
                ui.label("updating…");
            }
        });
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        let Some(analysis) = &self.analysis else {
            ui.label("Reading the jobs logs and the stars…");
            return action;
        };
        ui.label(format!(
            "{} favourite(s) among {} image(s): {} overall. Rate = favourites ÷ images with the \
             value; lift = rate ÷ overall rate (above 1: favoured).",
            analysis.count,
            analysis.generated,
            percent(analysis.overall_rate)
        ));
        if analysis.count == 0 {
            ui.label("Star images in the gallery or the sweep grid: the numbers follow.");
        }
        if !analysis.unmatched.is_empty() {
            ui.label(format!(
                "{} starred file(s) are gone or hold no settings.",
                analysis.unmatched.len()
            ));
        }
        if !analysis.damaged.is_empty() {
            ui.label(format!("{} damaged log line(s) skipped.", analysis.damaged.len()));
        }
        egui::ScrollArea::vertical().id_salt("insights").show(ui, |ui| {
            if let Some(bundle) = bundles_ui(ui, analysis) {
                action = Some(InsightsAction::UseBundle(bundle));
            }
            ui.separator();
            dimension_ui(ui, analysis, &mut self.dimension);
        });
        action
    }
}

/// The dimension chooser, the chart of its lifts and the table of its numbers.
fn dimension_ui(ui: &mut egui::Ui, analysis: &Analysis, dimension: &mut usize) {
    ui.horizontal_wrapped(|ui| {
        for (index, stats) in analysis.dimensions.iter().enumerate() {
            if ui.selectable_label(*dimension == index, stats.dimension.label()).clicked() {
                *dimension = index;
            }
        }
    });
    let Some(stats) = analysis.dimensions.get(*dimension) else { return };
    let rows: Vec<_> = stats.rows.iter().take(MAX_BARS).collect();
    let names: Vec<String> = rows.iter().map(|row| value_text(row.value.as_ref())).collect();
    // Theme colours: the selection's for the bars, the warning's for "average".
    let bar_color = ui.visuals().selection.bg_fill;
    let line_color = ui.visuals().warn_fg_color;
    let lift_bars: Vec<egui_plot::Bar> = rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            egui_plot::Bar::new(index as f64, row.lift.unwrap_or(0.0))
                .name(format!(
                    "{}: {} of {} ({}), lift {}",
                    names[index],
                    row.count,
                    row.generated,
                    percent(row.rate),
                    lift_text(row.lift)
                ))
                .width(0.7)
                .fill(bar_color)
        })
        .collect();
    let axis_names = names.clone();
    egui_plot::Plot::new(("insights-lift", stats.dimension.name().to_owned()))
        .height(180.0)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .y_axis_label("lift")
        .include_y(0.0)
        .include_y(1.5)
        .x_axis_formatter(move |mark, _range| {
            let index = mark.value.round();
            if (mark.value - index).abs() > 1e-6 || index < 0.0 {
                return String::new();
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "checked ≥ 0"
            )]
            let index = index as usize;
            axis_names.get(index).map(|name| name.chars().take(14).collect()).unwrap_or_default()
        })
        .show(ui, |plot| {
            plot.add(egui_plot::BarChart::new("lift", lift_bars).color(bar_color));
            plot.add(egui_plot::HLine::new("overall (lift 1)", 1.0).color(line_color));
        });
    egui::Grid::new(("insights-table", stats.dimension.name().to_owned()))
        .striped(true)
        .num_columns(5)
        .show(ui, |ui| {
            ui.strong(stats.dimension.label());
            ui.strong("favs");
            ui.strong("images");
            ui.strong("rate");
            ui.strong("lift");
            ui.end_row();
            for (row, name) in rows.iter().zip(&names) {
                ui.label(name);
                ui.label(row.count.to_string());
                ui.label(row.generated.to_string());
                ui.label(percent(row.rate));
                ui.label(lift_text(row.lift));
                ui.end_row();
            }
        });
    if stats.rows.len() > MAX_BARS {
        ui.label(format!("… {} more value(s)", stats.rows.len() - MAX_BARS));
    }
}

fn bundles_ui(ui: &mut egui::Ui, analysis: &Analysis) -> Option<BundleRequest> {
    let mut chosen = None;
    ui.strong("Your best configurations");
    if analysis.bundles.is_empty() {
        ui.label(format!(
            "No combination of settings is shared by {} or more favourites more often than \
             average.",
            analysis.min_support
        ));
        return None;
    }
    ui.label("Settings favourites share, by how many favourites have them, then lift.");
    for (index, bundle) in analysis.bundles.iter().enumerate().take(MAX_BUNDLES) {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!(
                "{}. {} favs of {} ({}, lift {}): {}",
                index + 1,
                bundle.count,
                bundle.generated,
                percent(bundle.rate),
                lift_text(bundle.lift),
                bundle.describe()
            ));
            if ui.button("Use these settings").clicked() {
                chosen = Some(bundle.request.clone());
            }
        });
    }
    chosen
}
