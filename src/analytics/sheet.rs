//! Contact sheets: a sweep folder as one labelled grid. An all-models sweep is rows = models,
//! columns = profiles; a one-model sweep is a grid of profiles; a batch's images sit side by
//! side as sub-columns. The layout comes from the jobs-log lines of the sweep (or, without a
//! log, from each image's own metadata) and is shared by `imagelab sheet` and the window.
//!
//! The PNG carries its own metadata: an iTXt `imagelab_sheet` chunk (JSON) naming every cell's
//! file, its settings and its rectangle, and every label with its position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AnalyticsError;
use super::inputs::is_image_name;
use crate::font;
use crate::storage::jobs_log::{self, ItemStatus, JobRecord};
use crate::storage::metadata::{png_io, version_string};
use crate::storage::naming;

/// The PNG text chunk holding the sheet's own metadata.
pub const SHEET_KEY: &str = "imagelab_sheet";
/// The default largest sheet width, in pixels.
pub const DEFAULT_MAX_WIDTH_PX: u32 = 4096;
/// The smallest thumbnail width a sheet accepts.
pub const MIN_THUMB_PX: u32 = 16;
/// The sheet's file name in the sweep folder (never overwritten: `-2`, `-3`…).
pub const SHEET_STEM: &str = "contact_sheet";

const MARGIN_PX: u32 = 16;
const BLOCK_GAP_PX: u32 = 8;
const SUB_GAP_PX: u32 = 2;
const LABEL_GAP_PX: u32 = 6;
/// The sheet's background.
pub const BACKGROUND: [u8; 3] = [24, 24, 24];
/// The labels' colour.
pub const INK: [u8; 3] = [235, 235, 235];
/// A cell whose item failed.
pub const FAILED_FILL: [u8; 3] = [110, 28, 28];
/// A cell with no image (never run, cancelled, or the file is gone or unreadable).
pub const EMPTY_FILL: [u8; 3] = [52, 52, 52];

/// How the cells are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SheetKind {
    /// Rows = models, columns = profiles (an all-models sweep).
    ModelsByProfiles,
    /// One model: a near-square grid of profiles, each labelled.
    ProfileGrid,
}

/// What a cell shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// The image.
    Image,
    /// The item failed; the error.
    Failed(String),
    /// No image: cancelled, never run, or its file is gone or unreadable.
    Empty(String),
}

/// One image slot of the sheet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SheetCell {
    /// The model's display name.
    pub model: String,
    /// The profile.
    pub profile: String,
    /// Image index within its batch (the sub-column).
    pub batch_index: usize,
    /// Its seed, when known.
    pub seed: Option<u64>,
    /// The image file, absolute.
    pub path: Option<PathBuf>,
    /// The image file relative to the sweep folder.
    pub file: Option<String>,
    /// What it shows.
    pub status: CellStatus,
}

/// The grid of a sweep: models, profiles, batch width and every cell.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetLayout {
    /// The sweep folder.
    pub run_dir: PathBuf,
    /// How the cells are arranged.
    pub kind: SheetKind,
    /// Models, in sweep order.
    pub models: Vec<String>,
    /// Profiles, in sweep order.
    pub profiles: Vec<String>,
    /// Images per (model, profile): the sub-columns.
    pub batch: usize,
    /// Every cell, model-major then profile then batch index.
    pub cells: Vec<SheetCell>,
    /// The images' most common size (width, height).
    pub image_size: (u32, u32),
    /// The prompt as typed, when an image records it.
    pub prompt: Option<String>,
    /// What the reader noticed (files without settings, damaged log lines).
    pub notes: Vec<String>,
}

impl SheetLayout {
    /// The cell of (model, profile, batch index).
    pub fn cell(&self, model: &str, profile: &str, batch_index: usize) -> Option<&SheetCell> {
        self.cells.iter().find(|cell| {
            cell.model == model && cell.profile == profile && cell.batch_index == batch_index
        })
    }

    /// The block grid: (block rows, block columns) and where each (model, profile) block sits.
    pub fn block_position(&self, model: &str, profile: &str) -> Option<(usize, usize)> {
        let m = self.models.iter().position(|name| name == model)?;
        let p = self.profiles.iter().position(|name| name == profile)?;
        Some(match self.kind {
            SheetKind::ModelsByProfiles => (m, p),
            SheetKind::ProfileGrid => {
                let columns = self.grid_columns();
                (p / columns, p % columns)
            }
        })
    }

    /// Block columns: the profiles for rows of models; for one model, a near-square grid.
    pub fn grid_columns(&self) -> usize {
        match self.kind {
            SheetKind::ModelsByProfiles => self.profiles.len().max(1),
            SheetKind::ProfileGrid => {
                let profiles = self.profiles.len().max(1) as f64;
                let per_block = self.batch.max(1) as f64;
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a small positive count"
                )]
                let columns = (profiles / per_block).sqrt().ceil().max(1.0) as usize;
                columns.min(self.profiles.len().max(1))
            }
        }
    }

    /// Block rows.
    pub fn grid_rows(&self) -> usize {
        match self.kind {
            SheetKind::ModelsByProfiles => self.models.len().max(1),
            SheetKind::ProfileGrid => self.profiles.len().max(1).div_ceil(self.grid_columns()),
        }
    }

    /// The layout of a sweep folder: from the jobs logs in the folder or up to three folders
    /// above it (the lines whose `run_dir` is this folder), else from the images' own metadata.
    ///
    /// # Errors
    /// Not a folder; a folder that cannot be read; no images and no log lines for it.
    pub fn from_run_dir(run_dir: &Path) -> Result<Self, AnalyticsError> {
        if !run_dir.is_dir() {
            return Err(AnalyticsError::NotAFolder { flag: "RUN_DIR", path: run_dir.to_owned() });
        }
        let run_dir = fs_err::canonicalize(run_dir)?;
        let mut notes = Vec::new();
        for root in run_dir.ancestors().take(4) {
            let contents = jobs_log::read_all(root)?;
            let Ok(relative) = run_dir.strip_prefix(root) else { continue };
            let relative = relative.to_string_lossy().replace('\\', "/");
            let records: Vec<&JobRecord> = contents
                .records
                .iter()
                .filter(|record| {
                    record.run_dir.as_deref().map(|dir| dir.trim_end_matches('/'))
                        == Some(relative.as_str())
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            for damaged in &contents.damaged {
                notes.push(format!(
                    "skipped damaged log line {}:{}: {}",
                    damaged.file.display(),
                    damaged.line,
                    damaged.error
                ));
            }
            return Ok(Self::from_records(&run_dir, root, &records, notes));
        }
        Self::from_metadata(&run_dir)
    }

    /// The layout from jobs-log lines (paths relative to `root`). An image's sub-column is its
    /// place in the batch (its seed minus the item's base seed), so the lines of an item that
    /// was interrupted and resumed, or run again, fill one block: an image replaces whatever
    /// held its place, and a failed or missing place never hides an image.
    pub fn from_records(
        run_dir: &Path,
        root: &Path,
        records: &[&JobRecord],
        notes: Vec<String>,
    ) -> Self {
        let mut builder = Builder::default();
        for record in records {
            builder.note_names(&record.model, &record.profile);
            let asked = usize::try_from(record.batch_size).unwrap_or(usize::MAX).min(4096);
            let places = asked.max(record.paths.len());
            let mut taken = vec![false; places];
            let size = (record.width, record.height);
            for (position, relative) in record.paths.iter().enumerate() {
                let seed = record.seeds.get(position).copied();
                let batch_index = seed
                    .and_then(|seed| seed.checked_sub(record.seed_base))
                    .and_then(|offset| usize::try_from(offset).ok())
                    .filter(|&offset| offset < places && !taken[offset])
                    .unwrap_or(position);
                if let Some(place) = taken.get_mut(batch_index) {
                    *place = true;
                }
                let path = root.join(relative);
                builder.place(
                    SheetCell {
                        model: record.model.clone(),
                        profile: record.profile.clone(),
                        batch_index,
                        seed,
                        file: Some(relative_to(run_dir, &path)),
                        path: Some(path),
                        status: CellStatus::Image,
                    },
                    size,
                );
            }
            let status = match (record.status, &record.error) {
                (ItemStatus::Failed, Some(error)) => CellStatus::Failed(error.clone()),
                (ItemStatus::Failed, None) => CellStatus::Failed("failed".to_owned()),
                (ItemStatus::Cancelled, _) => CellStatus::Empty("cancelled".to_owned()),
                (ItemStatus::Interrupted, _) => {
                    CellStatus::Empty("interrupted; `imagelab resume` makes it".to_owned())
                }
                (ItemStatus::Done, _) => CellStatus::Empty("not saved".to_owned()),
            };
            for (batch_index, _) in taken.iter().enumerate().filter(|(_, taken)| !**taken) {
                builder.place(
                    SheetCell {
                        model: record.model.clone(),
                        profile: record.profile.clone(),
                        batch_index,
                        seed: None,
                        path: None,
                        file: None,
                        status: status.clone(),
                    },
                    size,
                );
            }
        }
        let mut layout = builder.finish(run_dir, notes);
        layout.prompt = layout.cells.iter().find_map(|cell| {
            let bytes = fs_err::read(cell.path.as_ref()?).ok()?;
            let info = png_io::read_generation_info(&bytes).ok().flatten()?;
            Some(if info.user_prompt.is_empty() { info.prompt } else { info.user_prompt })
        });
        layout
    }

    /// The layout from the images' own metadata (a sweep folder copied without its log):
    /// images in file-name order (their names start with the time they were made).
    ///
    /// # Errors
    /// The folder cannot be read, or holds no image with our settings.
    pub fn from_metadata(run_dir: &Path) -> Result<Self, AnalyticsError> {
        let mut files = Vec::new();
        let mut pending = vec![(run_dir.to_owned(), 0_usize)];
        while let Some((folder, depth)) = pending.pop() {
            for entry in fs_err::read_dir(&folder)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                let path = entry.path();
                if kind.is_dir() && depth < 2 {
                    pending.push((path, depth + 1));
                } else if kind.is_file() && is_image_name(&path) {
                    files.push(path);
                }
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then_with(|| a.cmp(b)));
        let mut builder = Builder::default();
        let mut notes =
            vec!["no jobs log names this folder; read each image's own settings".into()];
        let mut prompt = None;
        let mut per_item: HashMap<(String, String), usize> = HashMap::new();
        for path in files {
            let info = fs_err::read(&path)
                .ok()
                .and_then(|bytes| png_io::read_generation_info(&bytes).ok().flatten());
            let Some(info) = info else {
                notes.push(format!("no imagelab settings, left out: {}", path.display()));
                continue;
            };
            if prompt.is_none() {
                prompt = Some(if info.user_prompt.is_empty() {
                    info.prompt.clone()
                } else {
                    info.user_prompt.clone()
                });
            }
            let next = per_item.entry((info.model.clone(), info.profile.clone())).or_default();
            let cell = SheetCell {
                model: info.model.clone(),
                profile: info.profile.clone(),
                batch_index: *next,
                seed: Some(info.seed),
                file: Some(relative_to(run_dir, &path)),
                path: Some(path),
                status: CellStatus::Image,
            };
            *next += 1;
            builder.add_cell(cell, (info.width, info.height));
        }
        if builder.cells.is_empty() {
            return Err(AnalyticsError::Sheet(format!(
                "no jobs log names this sweep folder and no image in it has imagelab settings: {}",
                run_dir.display()
            )));
        }
        let mut layout = builder.finish(run_dir, notes);
        layout.prompt = prompt;
        Ok(layout)
    }
}

fn relative_to(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

/// Collects cells in sweep order.
#[derive(Debug, Default)]
struct Builder {
    models: Vec<String>,
    profiles: Vec<String>,
    cells: Vec<SheetCell>,
    sizes: HashMap<(u32, u32), usize>,
}

impl Builder {
    fn note_names(&mut self, model: &str, profile: &str) {
        if !self.models.iter().any(|m| m == model) {
            self.models.push(model.to_owned());
        }
        if !self.profiles.iter().any(|p| p == profile) {
            self.profiles.push(profile.to_owned());
        }
    }

    /// A cell at its place: it replaces what was there, unless that is an image and it is not.
    fn place(&mut self, cell: SheetCell, size: (u32, u32)) {
        let existing = self.cells.iter().position(|other| {
            other.model == cell.model
                && other.profile == cell.profile
                && other.batch_index == cell.batch_index
        });
        if let Some(index) = existing {
            if self.cells[index].status == CellStatus::Image && cell.status != CellStatus::Image {
                return;
            }
            self.cells.remove(index);
        }
        if cell.status == CellStatus::Image && size.0 > 0 && size.1 > 0 {
            *self.sizes.entry(size).or_default() += 1;
        }
        self.cells.push(cell);
    }

    fn add_cell(&mut self, cell: SheetCell, size: (u32, u32)) {
        self.note_names(&cell.model, &cell.profile);
        if size.0 > 0 && size.1 > 0 {
            *self.sizes.entry(size).or_default() += 1;
        }
        self.cells.push(cell);
    }

    fn finish(mut self, run_dir: &Path, notes: Vec<String>) -> SheetLayout {
        let model_rank = |name: &str| self.models.iter().position(|m| m == name);
        let profile_rank = |name: &str| self.profiles.iter().position(|p| p == name);
        self.cells.sort_by_key(|cell| {
            (model_rank(&cell.model), profile_rank(&cell.profile), cell.batch_index)
        });
        let batch = self.cells.iter().map(|cell| cell.batch_index + 1).max().unwrap_or(1);
        let image_size = self
            .sizes
            .iter()
            .max_by_key(|(size, count)| (**count, std::cmp::Reverse(**size)))
            .map_or((1024, 1024), |(size, _)| *size);
        let kind = if self.models.len() > 1 {
            SheetKind::ModelsByProfiles
        } else {
            SheetKind::ProfileGrid
        };
        SheetLayout {
            run_dir: run_dir.to_owned(),
            kind,
            models: self.models,
            profiles: self.profiles,
            batch,
            cells: self.cells,
            image_size,
            prompt: None,
            notes,
        }
    }
}

/// A rectangle on the sheet, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// A label drawn on the sheet, where, and at what scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The text as drawn (the font draws capitals).
    pub text: String,
    /// Left of the first character.
    pub x: u32,
    /// Top of the line.
    pub y: u32,
    /// Each font pixel is `scale`×`scale` sheet pixels.
    pub scale: u32,
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetGeometry {
    /// Sheet width.
    pub width: u32,
    /// Sheet height.
    pub height: u32,
    /// Thumbnail box width.
    pub thumb_width: u32,
    /// Thumbnail box height.
    pub thumb_height: u32,
    /// Label scale.
    pub scale: u32,
    /// One rectangle per cell of the layout, in the same order.
    pub cells: Vec<Rect>,
    /// Every label.
    pub labels: Vec<Label>,
}

fn line_px(scale: u32) -> u32 {
    font::CELL_H * scale
}

fn chars_fitting(width_px: u32, scale: u32) -> usize {
    usize::try_from(width_px / (font::CELL_W * scale)).unwrap_or(usize::MAX).max(1)
}

fn text_px(text: &str, scale: u32) -> u32 {
    u32::try_from(text.chars().count()).unwrap_or(u32::MAX).saturating_mul(font::CELL_W * scale)
}

fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Longest model label, in characters, before it wraps.
const ROW_LABEL_CHARS: usize = 22;

/// The sizes every part of the sheet follows.
#[derive(Debug, Clone, Copy)]
struct Sizing {
    columns: u32,
    rows: u32,
    batch: u32,
    scale: u32,
    thumb_w: u32,
    thumb_h: u32,
    label_w: u32,
    block_w: u32,
}

impl Sizing {
    /// Thumbnails as wide as fits in `max_width_px` (never wider than the images); labels at
    /// scale 2 where a block holds 8 characters, else 1.
    fn fit(layout: &SheetLayout, max_width_px: u32) -> Result<Self, AnalyticsError> {
        let columns = to_u32(layout.grid_columns());
        let batch = to_u32(layout.batch.max(1));
        let (image_w, image_h) = (layout.image_size.0.max(1), layout.image_size.1.max(1));
        let longest_model = layout.models.iter().map(|m| m.chars().count()).max().unwrap_or(1);
        for scale in [2, 1] {
            let label_w = match layout.kind {
                SheetKind::ModelsByProfiles => {
                    to_u32(longest_model.min(ROW_LABEL_CHARS)) * font::CELL_W * scale + LABEL_GAP_PX
                }
                SheetKind::ProfileGrid => 0,
            };
            let fixed = 2 * MARGIN_PX
                + label_w
                + (columns - 1) * BLOCK_GAP_PX
                + columns * (batch - 1) * SUB_GAP_PX;
            let thumb_w = (max_width_px.saturating_sub(fixed) / (columns * batch)).min(image_w);
            let block_w = batch * thumb_w + (batch - 1) * SUB_GAP_PX;
            if scale == 2 && block_w < 8 * font::CELL_W * 2 {
                continue;
            }
            if thumb_w < MIN_THUMB_PX.min(image_w) {
                let needed = fixed + columns * batch * MIN_THUMB_PX;
                return Err(AnalyticsError::Sheet(format!(
                    "--max-width {max_width_px}: too narrow for {columns} column(s) of {batch} \
                     image(s); at least {needed} px gives {MIN_THUMB_PX} px thumbnails"
                )));
            }
            let thumb_h = (u64::from(thumb_w) * u64::from(image_h) / u64::from(image_w)).max(1);
            return Ok(Self {
                columns,
                rows: to_u32(layout.grid_rows()),
                batch,
                scale,
                thumb_w,
                thumb_h: u32::try_from(thumb_h).unwrap_or(u32::MAX),
                label_w,
                block_w,
            });
        }
        unreachable_scale()
    }

    fn content_width(&self) -> u32 {
        2 * MARGIN_PX
            + self.label_w
            + self.columns * self.block_w
            + (self.columns - 1) * BLOCK_GAP_PX
    }

    fn block_x(&self, column: u32) -> u32 {
        MARGIN_PX + self.label_w + column * (self.block_w + BLOCK_GAP_PX)
    }

    fn sub_x(&self, column: u32, sub: u32) -> u32 {
        self.block_x(column) + sub * (self.thumb_w + SUB_GAP_PX)
    }

    /// Height of the batch-index line over each block (none for single images).
    fn sub_header(&self) -> u32 {
        if self.batch > 1 { line_px(1) + 2 } else { 0 }
    }
}

/// Scale 1 always returns from [`Sizing::fit`]; this keeps the function total.
fn unreachable_scale() -> Result<Sizing, AnalyticsError> {
    Err(AnalyticsError::Sheet("no label scale fits".to_owned()))
}

impl SheetGeometry {
    /// Plans the sheet no wider than `max_width_px` (see `Sizing::fit`).
    ///
    /// # Errors
    /// A width too small for thumbnails of at least [`MIN_THUMB_PX`]; the message says the
    /// least width that works.
    pub fn plan(layout: &SheetLayout, max_width_px: u32) -> Result<Self, AnalyticsError> {
        let sizing = Sizing::fit(layout, max_width_px)?;
        let mut labels = Vec::new();
        let mut y = title_labels(layout, &sizing, &mut labels);
        let row_tops = match layout.kind {
            SheetKind::ModelsByProfiles => model_rows(layout, &sizing, &mut labels, &mut y),
            SheetKind::ProfileGrid => profile_rows(layout, &sizing, &mut labels, &mut y),
        };
        let height = y - BLOCK_GAP_PX + MARGIN_PX;
        let cells = layout
            .cells
            .iter()
            .map(|cell| {
                let (row, column) =
                    layout.block_position(&cell.model, &cell.profile).unwrap_or((0, 0));
                Rect {
                    x: sizing.sub_x(to_u32(column), to_u32(cell.batch_index)),
                    y: row_tops.get(row).copied().unwrap_or(0),
                    width: sizing.thumb_w,
                    height: sizing.thumb_h,
                }
            })
            .collect();
        Ok(Self {
            width: sizing.content_width(),
            height,
            thumb_width: sizing.thumb_w,
            thumb_height: sizing.thumb_h,
            scale: sizing.scale,
            cells,
            labels,
        })
    }
}

/// The title lines (sweep folder, the model of a one-model sweep, the prompt); returns the
/// top of what follows.
fn title_labels(layout: &SheetLayout, sizing: &Sizing, labels: &mut Vec<Label>) -> u32 {
    let scale = sizing.scale;
    let title_chars = chars_fitting(sizing.content_width() - 2 * MARGIN_PX, scale);
    let folder =
        layout.run_dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut title = vec![format!("CONTACT SHEET {folder}")];
    if layout.kind == SheetKind::ProfileGrid
        && let Some(model) = layout.models.first()
    {
        title.push(format!("MODEL {model}"));
    }
    if let Some(prompt) = &layout.prompt {
        title.push(format!("PROMPT {prompt}"));
    }
    let mut y = MARGIN_PX;
    for text in title {
        for wrapped in font::wrap(&text, title_chars).into_iter().take(3) {
            labels.push(Label { text: wrapped, x: MARGIN_PX, y, scale });
            y += line_px(scale);
        }
    }
    y + LABEL_GAP_PX
}

fn wrapped_profiles(layout: &SheetLayout, sizing: &Sizing) -> Vec<Vec<String>> {
    let header_chars = chars_fitting(sizing.block_w, sizing.scale);
    layout.profiles.iter().map(|p| font::wrap(p, header_chars)).collect()
}

/// Rows = models under one header of profiles; returns each row's top.
fn model_rows(
    layout: &SheetLayout,
    sizing: &Sizing,
    labels: &mut Vec<Label>,
    y: &mut u32,
) -> Vec<u32> {
    let (scale, line) = (sizing.scale, line_px(sizing.scale));
    let profiles = wrapped_profiles(layout, sizing);
    let header_lines = profiles.iter().map(Vec::len).max().unwrap_or(1);
    let header_h = to_u32(header_lines) * line + 2 + sizing.sub_header();
    for (column, lines) in profiles.iter().enumerate() {
        push_lines(labels, lines, sizing.block_x(to_u32(column)), *y, scale);
    }
    push_sub_headers(labels, sizing, sizing.columns, *y + header_h - sizing.sub_header());
    *y += header_h;
    let mut tops = Vec::with_capacity(layout.models.len());
    for model in &layout.models {
        let lines = font::wrap(model, ROW_LABEL_CHARS);
        tops.push(*y);
        push_lines(labels, &lines, MARGIN_PX, *y, scale);
        *y += sizing.thumb_h.max(to_u32(lines.len()) * line) + BLOCK_GAP_PX;
    }
    tops
}

/// One model: rows of profile blocks, each row under its own header; returns each row's top.
fn profile_rows(
    layout: &SheetLayout,
    sizing: &Sizing,
    labels: &mut Vec<Label>,
    y: &mut u32,
) -> Vec<u32> {
    let profiles = wrapped_profiles(layout, sizing);
    let mut tops = Vec::with_capacity(sizing.rows as usize);
    for row in 0..sizing.rows {
        let in_row: Vec<usize> = (0..sizing.columns)
            .map(|column| (row * sizing.columns + column) as usize)
            .filter(|&index| index < layout.profiles.len())
            .collect();
        let header_lines = in_row.iter().map(|&index| profiles[index].len()).max().unwrap_or(1);
        let header_h = to_u32(header_lines) * line_px(sizing.scale) + 2 + sizing.sub_header();
        for (column, &index) in in_row.iter().enumerate() {
            push_lines(labels, &profiles[index], sizing.block_x(to_u32(column)), *y, sizing.scale);
        }
        push_sub_headers(labels, sizing, to_u32(in_row.len()), *y + header_h - sizing.sub_header());
        *y += header_h;
        tops.push(*y);
        *y += sizing.thumb_h + BLOCK_GAP_PX;
    }
    tops
}

fn push_lines(labels: &mut Vec<Label>, lines: &[String], x: u32, mut y: u32, scale: u32) {
    for line in lines {
        labels.push(Label { text: line.clone(), x, y, scale });
        y += line_px(scale);
    }
}

fn push_sub_headers(labels: &mut Vec<Label>, sizing: &Sizing, blocks: u32, y: u32) {
    if sizing.batch < 2 {
        return;
    }
    for column in 0..blocks {
        for sub in 0..sizing.batch {
            labels.push(Label {
                text: format!("#{}", sub + 1),
                x: sizing.sub_x(column, sub),
                y,
                scale: 1,
            });
        }
    }
}

/// One cell in the sheet's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// The image, relative to the sweep folder (`null` for an empty cell).
    pub file: Option<String>,
    /// Model.
    pub model: String,
    /// Profile.
    pub profile: String,
    /// Sub-column.
    pub batch_index: usize,
    /// Seed.
    pub seed: Option<u64>,
    /// What it shows: `image`, `failed` or `empty`.
    pub status: String,
    /// Why it is failed or empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where it is on the sheet.
    #[serde(flatten)]
    pub rect: Rect,
}

/// The sheet's own metadata (the `imagelab_sheet` chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SheetMetadata {
    /// `imagelab x.y.z`.
    pub version: String,
    /// The sweep folder.
    pub run_dir: String,
    /// How the cells are arranged.
    pub layout: SheetKind,
    /// Models (rows of an all-models sheet).
    pub models: Vec<String>,
    /// Profiles (columns).
    pub profiles: Vec<String>,
    /// Sub-columns per block.
    pub batch: usize,
    /// Sheet width.
    pub width: u32,
    /// Sheet height.
    pub height: u32,
    /// Every cell.
    pub cells: Vec<CellRecord>,
    /// Every label.
    pub labels: Vec<Label>,
}

/// A rendered sheet.
#[derive(Debug, Clone)]
pub struct RenderedSheet {
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    /// What its metadata chunk says.
    pub metadata: SheetMetadata,
    /// Cells whose image could not be read (drawn empty).
    pub unreadable: Vec<String>,
}

fn fill(img: &mut image::RgbImage, rect: Rect, color: [u8; 3]) {
    for y in rect.y..(rect.y + rect.height).min(img.height()) {
        for x in rect.x..(rect.x + rect.width).min(img.width()) {
            img.put_pixel(x, y, image::Rgb(color));
        }
    }
}

/// Draws the sheet: thumbnails decoded through `image` (PNG, JPEG, WebP), shrunk to fit their
/// box keeping their aspect and centred; failed and empty cells filled and marked.
///
/// # Errors
/// A width too small (see [`SheetGeometry::plan`]) or a PNG encoder failure.
pub fn render(layout: &SheetLayout, max_width_px: u32) -> Result<RenderedSheet, AnalyticsError> {
    let geometry = SheetGeometry::plan(layout, max_width_px)?;
    let mut img =
        image::RgbImage::from_pixel(geometry.width, geometry.height, image::Rgb(BACKGROUND));
    for label in &geometry.labels {
        font::draw_text(&mut img, label.x, label.y, label.scale, &label.text, INK);
    }
    let mut unreadable = Vec::new();
    let mut records = Vec::with_capacity(layout.cells.len());
    for (cell, &rect) in layout.cells.iter().zip(&geometry.cells) {
        let mut status = cell.status.clone();
        if status == CellStatus::Image {
            match cell.path.as_deref().map(|path| thumbnail(path, rect)) {
                Some(Ok(thumb)) => {
                    let x = rect.x + (rect.width.saturating_sub(thumb.width())) / 2;
                    let y = rect.y + (rect.height.saturating_sub(thumb.height())) / 2;
                    image::imageops::replace(&mut img, &thumb, i64::from(x), i64::from(y));
                }
                Some(Err(err)) => {
                    unreadable.push(err.clone());
                    status = CellStatus::Empty(err);
                }
                None => status = CellStatus::Empty("no file".to_owned()),
            }
        }
        let (status_name, reason) = match &status {
            CellStatus::Image => ("image", None),
            CellStatus::Failed(error) => {
                fill(&mut img, rect, FAILED_FILL);
                draw_centred(&mut img, rect, "FAILED");
                ("failed", Some(error.clone()))
            }
            CellStatus::Empty(why) => {
                fill(&mut img, rect, EMPTY_FILL);
                ("empty", Some(why.clone()))
            }
        };
        records.push(CellRecord {
            file: cell.file.clone(),
            model: cell.model.clone(),
            profile: cell.profile.clone(),
            batch_index: cell.batch_index,
            seed: cell.seed,
            status: status_name.to_owned(),
            reason,
            rect,
        });
    }
    let metadata = SheetMetadata {
        version: version_string(),
        run_dir: layout.run_dir.display().to_string(),
        layout: layout.kind,
        models: layout.models.clone(),
        profiles: layout.profiles.clone(),
        batch: layout.batch,
        width: geometry.width,
        height: geometry.height,
        cells: records,
        labels: geometry.labels,
    };
    let png = encode(&img, &metadata)
        .map_err(|err| AnalyticsError::Sheet(format!("cannot encode the sheet: {err}")))?;
    Ok(RenderedSheet { png, metadata, unreadable })
}

fn draw_centred(img: &mut image::RgbImage, rect: Rect, text: &str) {
    let scale = if text_px(text, 2) + 4 <= rect.width { 2 } else { 1 };
    let x = rect.x + rect.width.saturating_sub(text_px(text, scale)) / 2;
    let y = rect.y + rect.height.saturating_sub(7 * scale) / 2;
    font::draw_text(img, x, y, scale, text, INK);
}

/// The image at `path` shrunk to fit `rect`, keeping its aspect.
fn thumbnail(path: &Path, rect: Rect) -> Result<image::RgbImage, String> {
    let bytes = fs_err::read(path).map_err(|err| err.to_string())?;
    let decoded = image::load_from_memory(&bytes)
        .map_err(|err| format!("cannot decode: {err}: {}", path.display()))?;
    let fitted = if decoded.width() == rect.width && decoded.height() == rect.height {
        decoded
    } else {
        decoded.resize(rect.width, rect.height, image::imageops::FilterType::Triangle)
    };
    Ok(fitted.to_rgb8())
}

fn encode(img: &image::RgbImage, metadata: &SheetMetadata) -> Result<Vec<u8>, String> {
    let json = serde_json::to_string(metadata).map_err(|err| err.to_string())?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, img.width(), img.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let title = format!("Contact sheet of {}", metadata.run_dir);
    let text = |encoder: &mut png::Encoder<'_, &mut Vec<u8>>, key: &str, value: String| {
        if png_io::is_latin1(&value) {
            encoder.add_text_chunk(key.to_owned(), value)
        } else {
            encoder.add_itxt_chunk(key.to_owned(), value)
        }
    };
    text(&mut encoder, "Title", title).map_err(|err| err.to_string())?;
    text(&mut encoder, "Software", metadata.version.clone()).map_err(|err| err.to_string())?;
    encoder.add_itxt_chunk(SHEET_KEY.to_owned(), json).map_err(|err| err.to_string())?;
    let mut writer = encoder.write_header().map_err(|err| err.to_string())?;
    writer.write_image_data(img.as_raw()).map_err(|err| err.to_string())?;
    writer.finish().map_err(|err| err.to_string())?;
    Ok(out)
}

/// Renders the sheet of `layout` and writes it: to `out` when given, else into the sweep
/// folder as `contact_sheet.png`; never over an existing file (`-2`, `-3`…).
///
/// # Errors
/// See [`render`]; the file cannot be written.
pub fn write(
    layout: &SheetLayout,
    out: Option<&Path>,
    max_width_px: u32,
) -> Result<(PathBuf, RenderedSheet), AnalyticsError> {
    let rendered = render(layout, max_width_px)?;
    let (dir, stem) = match out {
        Some(path) => (
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned(),
            path.file_stem()
                .map_or_else(|| SHEET_STEM.to_owned(), |s| s.to_string_lossy().into_owned()),
        ),
        None => (layout.run_dir.clone(), SHEET_STEM.to_owned()),
    };
    let path = naming::write_new_file(&dir, &stem, "png", &rendered.png)?;
    Ok((path, rendered))
}

/// Reads a sheet's own metadata back from its PNG bytes.
///
/// # Errors
/// Not a PNG, no `imagelab_sheet` chunk, or a chunk that is not valid.
pub fn read_metadata(png_bytes: &[u8]) -> Result<SheetMetadata, String> {
    let text = png_io::scan_text_chunks(png_bytes).map_err(|err| err.to_string())?;
    let json = text.get(SHEET_KEY).ok_or_else(|| format!("no {SHEET_KEY} chunk"))?;
    serde_json::from_str(json).map_err(|err| err.to_string())
}
