//! The gallery: this session's images first, then the output folder's; thumbnails come from
//! the decoding thread. A large view shows an image's settings, its star, "use these
//! settings", copy prompt / seed and "open folder".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::storage::metadata::GenerationInfo;

use super::thumbnails::ThumbnailLoader;

/// Thumbnail size on screen, in points.
const THUMB_POINTS: f32 = 112.0;

/// One image in the gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryEntry {
    /// Full path.
    pub path: PathBuf,
    /// Path relative to the output root (the favourites key).
    pub relative: String,
    /// Made in this session.
    pub from_session: bool,
    /// Its metadata, once the decoder read it.
    pub info: Option<GenerationInfo>,
}

/// What the user asked for in the gallery.
#[derive(Debug, Clone, PartialEq)]
pub enum GalleryAction {
    /// Put this image's settings into the form.
    UseSettings(Box<GenerationInfo>),
    /// Star or un-star (relative path, starred).
    SetFavorite(String, bool),
    /// Copy text to the clipboard.
    Copy(String),
    /// Open the folder holding this file.
    OpenFolder(PathBuf),
}

/// The gallery's state.
#[derive(Debug, Default)]
pub struct GalleryPanel {
    /// Images, newest first.
    pub entries: Vec<GalleryEntry>,
    /// The image shown large.
    pub selected: Option<PathBuf>,
    /// Starred paths (relative to the output root).
    pub favorites: BTreeSet<String>,
}

impl GalleryPanel {
    /// Adds an image made now (newest first); ignored when already listed.
    pub fn add_session_image(&mut self, path: PathBuf, relative: String) {
        if let Some(existing) = self.entries.iter().position(|entry| entry.path == path) {
            self.entries[existing].from_session = true;
            return;
        }
        self.entries.insert(0, GalleryEntry { path, relative, from_session: true, info: None });
    }

    /// Adds the output folder's images after the session's.
    pub fn add_listing(&mut self, root: &Path, paths: Vec<PathBuf>) {
        for path in paths {
            if self.entries.iter().any(|entry| entry.path == path) {
                continue;
            }
            let relative = crate::engine::relative_path(root, &path);
            self.entries.push(GalleryEntry { path, relative, from_session: false, info: None });
        }
    }

    /// Records the metadata the decoder read.
    pub fn set_info(&mut self, path: &Path, info: Option<GenerationInfo>) {
        if let Some(entry) = self.entries.iter_mut().find(|entry| entry.path == path) {
            entry.info = info;
        }
    }

    /// Draws the grid, and the large view of the selected image.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        thumbnails: &mut ThumbnailLoader,
    ) -> Option<GalleryAction> {
        let mut action = None;
        let session = self.entries.iter().filter(|entry| entry.from_session).count();
        ui.horizontal(|ui| {
            ui.strong("Gallery");
            ui.label(format!("{session} this session · {} in all", self.entries.len()));
        });
        if let Some(selected) = self.selected.clone()
            && let Some(entry) = self.entries.iter().find(|entry| entry.path == selected)
        {
            action = self.large_view_ui(ui, entry, thumbnails);
        }
        egui::ScrollArea::vertical().id_salt("gallery").show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                for entry in &self.entries {
                    thumbnails.request(&entry.path);
                    let starred = self.favorites.contains(&entry.relative);
                    let name = entry
                        .path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    let response = match thumbnails.texture(&entry.path) {
                        Some(texture) => ui.add(
                            egui::Button::image(
                                egui::Image::new(texture)
                                    .fit_to_exact_size(egui::vec2(THUMB_POINTS, THUMB_POINTS)),
                            )
                            .selected(self.selected.as_ref() == Some(&entry.path)),
                        ),
                        None => {
                            ui.add_sized([THUMB_POINTS, THUMB_POINTS], egui::Button::new("..."))
                        }
                    };
                    let response = response.on_hover_text(if starred {
                        format!("{name} (favourite)")
                    } else {
                        name
                    });
                    if response.clicked() {
                        self.selected = Some(entry.path.clone());
                    }
                }
            });
        });
        action
    }

    fn large_view_ui(
        &self,
        ui: &mut egui::Ui,
        entry: &GalleryEntry,
        thumbnails: &ThumbnailLoader,
    ) -> Option<GalleryAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            if let Some(texture) = thumbnails.texture(&entry.path) {
                ui.add(egui::Image::new(texture).fit_to_exact_size(egui::vec2(256.0, 256.0)));
            }
            ui.vertical(|ui| {
                ui.label(&entry.relative);
                let starred = self.favorites.contains(&entry.relative);
                let star = if starred { "Favourite: yes" } else { "Favourite: no" };
                if ui.selectable_label(starred, star).clicked() {
                    action = Some(GalleryAction::SetFavorite(entry.relative.clone(), !starred));
                }
                match &entry.info {
                    Some(info) => {
                        ui.label(format!(
                            "{} · {} · {} · {} steps · CFG {} · {}×{} · seed {}",
                            info.model,
                            info.profile,
                            info.sampler.gui_name(),
                            info.steps,
                            info.cfg,
                            info.width,
                            info.height,
                            info.seed
                        ));
                        ui.add(egui::Label::new(&info.prompt).wrap());
                        ui.horizontal(|ui| {
                            if ui.button("Use these settings").clicked() {
                                action = Some(GalleryAction::UseSettings(Box::new(info.clone())));
                            }
                            if ui.button("Copy prompt").clicked() {
                                action = Some(GalleryAction::Copy(info.prompt.clone()));
                            }
                            if ui.button("Copy seed").clicked() {
                                action = Some(GalleryAction::Copy(info.seed.to_string()));
                            }
                        });
                    }
                    None => {
                        ui.label("no imagelab settings in this file");
                    }
                }
                if ui.button("Open folder").clicked() {
                    action = Some(GalleryAction::OpenFolder(entry.path.clone()));
                }
            });
        });
        ui.separator();
        action
    }
}
