//! The sweep grid: a finished sweep laid out as its contact sheet (rows = models, columns =
//! profiles; one model: a grid of profiles; batches side by side). A click opens the image in
//! the gallery; the Star button under it, or `S` while the pointer is on it, stars it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::analytics::sheet::{CellStatus, SheetCell, SheetKind, SheetLayout};

use super::thumbnails::ThumbnailLoader;

/// What the user asked for in the grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepAction {
    /// Show this image large (in the gallery).
    Open(PathBuf),
    /// Star or un-star (path relative to the output root, starred).
    SetFavorite(String, bool),
    /// Show another sweep folder.
    Show(PathBuf),
}

/// The grid's state.
#[derive(Debug)]
pub struct SweepPanel {
    /// The sweep shown.
    pub layout: Option<SheetLayout>,
    /// Why the last layout failed.
    pub error: Option<String>,
    /// Sweep folders of the output root, newest first.
    pub sweeps: Vec<PathBuf>,
    /// Thumbnail width on screen, in points.
    pub thumb_points: f32,
}

impl Default for SweepPanel {
    fn default() -> Self {
        Self { layout: None, error: None, sweeps: Vec::new(), thumb_points: 96.0 }
    }
}

/// The accessible name of a cell's image and of its star.
pub fn cell_name(cell: &SheetCell) -> String {
    format!("{} / {} #{}", cell.model, cell.profile, cell.batch_index + 1)
}

impl SweepPanel {
    /// Draws the grid; returns the user's action, if any.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        thumbnails: &mut ThumbnailLoader,
        favorites: &BTreeSet<String>,
        output_root: &Path,
    ) -> Option<SweepAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            ui.strong("Sweep");
            let shown = self.layout.as_ref().map(|layout| layout.run_dir.clone());
            let label = |path: &Path| {
                path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            };
            egui::ComboBox::from_id_salt("sweep-folder")
                .selected_text(shown.as_deref().map_or_else(|| "choose a sweep".to_owned(), label))
                .show_ui(ui, |ui| {
                    for folder in &self.sweeps {
                        if ui
                            .selectable_label(shown.as_ref() == Some(folder), label(folder))
                            .clicked()
                        {
                            action = Some(SweepAction::Show(folder.clone()));
                        }
                    }
                });
            ui.add(egui::Slider::new(&mut self.thumb_points, 48.0..=256.0).text("size"));
        });
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        let Some(layout) = &self.layout else {
            ui.label("A finished sweep shows here as a grid: click opens, Star (or S) stars.");
            return action;
        };
        ui.label(format!(
            "{} model(s) × {} profile(s) × {} image(s). Click opens; Star, or S with the pointer on an image, stars it.",
            layout.models.len(),
            layout.profiles.len(),
            layout.batch
        ));
        let cx = GridContext { thumb: self.thumb_points, favorites, output_root };
        egui::ScrollArea::both().id_salt("sweep-grid").show(ui, |ui| {
            let found = match layout.kind {
                SheetKind::ModelsByProfiles => models_by_profiles_ui(ui, layout, thumbnails, &cx),
                SheetKind::ProfileGrid => profile_grid_ui(ui, layout, thumbnails, &cx),
            };
            if found.is_some() {
                action = found;
            }
        });
        action
    }
}

struct GridContext<'a> {
    thumb: f32,
    favorites: &'a BTreeSet<String>,
    output_root: &'a Path,
}

fn models_by_profiles_ui(
    ui: &mut egui::Ui,
    layout: &SheetLayout,
    thumbnails: &mut ThumbnailLoader,
    cx: &GridContext<'_>,
) -> Option<SweepAction> {
    let mut action = None;
    egui::Grid::new("sweep-models-by-profiles").spacing([8.0, 8.0]).show(ui, |ui| {
        ui.label("");
        for profile in &layout.profiles {
            ui.strong(profile);
        }
        ui.end_row();
        for model in &layout.models {
            ui.strong(model);
            for profile in &layout.profiles {
                if let Some(found) = block_ui(ui, layout, model, profile, thumbnails, cx) {
                    action = Some(found);
                }
            }
            ui.end_row();
        }
    });
    action
}

fn profile_grid_ui(
    ui: &mut egui::Ui,
    layout: &SheetLayout,
    thumbnails: &mut ThumbnailLoader,
    cx: &GridContext<'_>,
) -> Option<SweepAction> {
    let mut action = None;
    let model = layout.models.first().cloned().unwrap_or_default();
    ui.strong(&model);
    let columns = layout.grid_columns();
    egui::Grid::new("sweep-profile-grid").spacing([8.0, 8.0]).show(ui, |ui| {
        for (index, profile) in layout.profiles.iter().enumerate() {
            ui.vertical(|ui| {
                ui.strong(profile);
                if let Some(found) = block_ui(ui, layout, &model, profile, thumbnails, cx) {
                    action = Some(found);
                }
            });
            if (index + 1) % columns == 0 {
                ui.end_row();
            }
        }
    });
    action
}

/// One (model, profile) block: its batch side by side, each with its star.
fn block_ui(
    ui: &mut egui::Ui,
    layout: &SheetLayout,
    model: &str,
    profile: &str,
    thumbnails: &mut ThumbnailLoader,
    cx: &GridContext<'_>,
) -> Option<SweepAction> {
    let mut action = None;
    ui.horizontal(|ui| {
        for index in 0..layout.batch {
            let Some(cell) = layout.cell(model, profile, index) else {
                ui.add_sized([cx.thumb, cx.thumb], egui::Label::new("—"));
                continue;
            };
            ui.vertical(|ui| {
                if let Some(found) = cell_ui(ui, cell, thumbnails, cx) {
                    action = Some(found);
                }
            });
        }
    });
    action
}

fn cell_ui(
    ui: &mut egui::Ui,
    cell: &SheetCell,
    thumbnails: &mut ThumbnailLoader,
    cx: &GridContext<'_>,
) -> Option<SweepAction> {
    let size = egui::vec2(cx.thumb, cx.thumb);
    let name = cell_name(cell);
    let (CellStatus::Image, Some(path)) = (&cell.status, &cell.path) else {
        let text = match &cell.status {
            CellStatus::Failed(_) => "failed",
            _ => "—",
        };
        let reason = match &cell.status {
            CellStatus::Failed(why) | CellStatus::Empty(why) => why.clone(),
            CellStatus::Image => String::new(),
        };
        ui.add_enabled(false, egui::Button::new(text).min_size(size))
            .on_disabled_hover_text(reason);
        return None;
    };
    thumbnails.request(path);
    let relative = crate::engine::relative_path(cx.output_root, path);
    let starred = cx.favorites.contains(&relative);
    let response = match thumbnails.texture(path) {
        Some(texture) => {
            ui.add(egui::Button::image(egui::Image::new(texture).fit_to_exact_size(size)))
        }
        None => ui.add(egui::Button::new("…").min_size(size)),
    };
    response.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Button, true, format!("Open {name}"))
    });
    let response = response.on_hover_text(format!("{name}: click opens, S stars"));
    let mut action = None;
    if response.clicked() {
        action = Some(SweepAction::Open(path.clone()));
    }
    if response.hovered() && ui.input(|input| input.key_pressed(egui::Key::S)) {
        action = Some(SweepAction::SetFavorite(relative.clone(), !starred));
    }
    let star = ui.add(egui::Button::selectable(starred, if starred { "Starred" } else { "Star" }));
    star.widget_info(|| {
        egui::WidgetInfo::selected(egui::Role::CheckBox, true, starred, format!("Star {name}"))
    });
    if star.clicked() {
        action = Some(SweepAction::SetFavorite(relative, !starred));
    }
    action
}
