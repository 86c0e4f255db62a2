//! The left panel: every setting of a request, and the Generate / Cancel / Skip buttons. It
//! edits the form and returns what the user asked for; it never reaches into the engine.

use crate::models::catalog::{Catalog, EntryKind};
use crate::request::plan::image_count;
use crate::request::{Profiles, Sweep, limits};
use crate::vocab::{DeviceChoice, LoraSpec, OutputFormat, SamplerKind, SigmaSchedule};

use super::model_status::{ModelAvailability, ModelStatusSource};
use super::settings::{FormSettings, aspect_presets};
use super::thumbnails::ThumbnailLoader;

/// Any local diffusers folder or hub id works too (the engine detects the layout).
fn model_path_ui(ui: &mut egui::Ui, model: &mut String) {
    ui.horizontal(|ui| {
        let label = ui.label("Path or hub id");
        ui.add(
            egui::TextEdit::singleline(model).desired_width(150.0).hint_text("folder or org/name"),
        )
        .labelled_by(label.id);
        if ui.button("Folder...").on_hover_text("a diffusers folder (model_index.json)").clicked()
            && let Some(folder) = rfd::FileDialog::new().pick_folder()
        {
            *model = folder.display().to_string();
        }
    });
}

/// The VAE picker's entry for the model's own VAE.
const MODEL_VAE: &str = "Model's own";

/// Sweeps making more images than this ask for confirmation first.
pub const CONFIRM_ABOVE_IMAGES: usize = 50;

/// What the user asked for in this panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAction {
    /// Download this model (catalog display name).
    Download(String),
    /// Generate with the current form (confirmed if it was a large sweep).
    Generate,
    /// Import an A1111 `styles.csv` or Fooocus style JSON as profiles.
    ImportStyles(std::path::PathBuf),
    /// Cancel the running job.
    Cancel,
    /// Skip the running item.
    Skip,
    /// Submit the form to Slurm as a job array (the Slurm fields of the launcher).
    SubmitToSlurm,
}

/// What the panel reads but does not own.
pub struct ControlsContext<'a> {
    /// The model menu.
    pub catalog: &'a Catalog,
    /// The profile menu.
    pub profiles: &'a Profiles,
    /// Cached / not downloaded, per model.
    pub model_status: &'a dyn ModelStatusSource,
    /// The seed of the last run, for "reuse last".
    pub last_seed: Option<u64>,
    /// Whether a job is running (enables Cancel and Skip).
    pub busy: bool,
    /// For the img2img thumbnail.
    pub thumbnails: &'a mut ThumbnailLoader,
    /// The Slurm fields, drawn under Generate when sbatch was found.
    pub slurm: Option<&'a mut super::slurm::SlurmPanel>,
}

/// The left panel's state: the form (persisted) and the open confirmation.
#[derive(Debug, Default)]
pub struct ControlsPanel {
    /// The settings, restored from storage.
    pub form: FormSettings,
    /// A large sweep waits for "Run it" in a modal.
    pub confirming_images: Option<usize>,
}

impl ControlsPanel {
    /// How many images Generate would make now.
    pub fn planned_images(&self, profiles: &Profiles, catalog: &Catalog) -> usize {
        image_count(self.form.sweep, self.form.batch, profiles, catalog)
    }

    /// Draws the panel; returns the user's action, if any.
    pub fn ui(&mut self, ui: &mut egui::Ui, cx: &mut ControlsContext<'_>) -> Option<ControlAction> {
        let mut action = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            let download = self.model_ui(ui, cx);
            self.vae_ui(ui, cx.catalog);
            self.lora_ui(ui, cx.catalog);
            self.prompt_ui(ui);
            self.size_ui(ui, cx.catalog);
            self.sampling_ui(ui, cx.last_seed);
            self.img2img_ui(ui, cx.thumbnails);
            self.device_ui(ui);
            self.output_ui(ui);
            self.sweep_ui(ui, cx.profiles, cx.catalog);
            ui.separator();
            action = self.run_buttons_ui(ui, cx).or(download);
            if let Some(slurm) = cx.slurm.as_deref_mut().filter(|slurm| slurm.available) {
                let images = image_count(self.form.sweep, self.form.batch, cx.profiles, cx.catalog);
                if slurm.launcher_ui(ui, images) {
                    action = Some(ControlAction::SubmitToSlurm);
                }
            }
        });
        if let Some(images) = self.confirming_images {
            action = action.or(self.confirm_ui(ui.ctx(), images));
        }
        action
    }

    /// Ctrl+Enter, checked once per frame by the app.
    pub fn shortcut_pressed(ctx: &egui::Context) -> bool {
        ctx.input_mut(|input| input.consume_key(egui::Modifiers::COMMAND, egui::Key::Enter))
    }

    /// Generate was asked for: either go, or open the confirmation for a large sweep.
    pub fn request_generate(&mut self, profiles: &Profiles, catalog: &Catalog) -> bool {
        let images = self.planned_images(profiles, catalog);
        if images > CONFIRM_ABOVE_IMAGES {
            self.confirming_images = Some(images);
            false
        } else {
            true
        }
    }

    /// The VAE: the model's own, a VAE of the models folders, or any hub id / path.
    fn vae_ui(&mut self, ui: &mut egui::Ui, catalog: &Catalog) {
        let form = &mut self.form;
        ui.horizontal(|ui| {
            let label = ui.label("VAE");
            let shown = form.vae.clone().unwrap_or_else(|| MODEL_VAE.to_owned());
            egui::ComboBox::from_id_salt("vae")
                .selected_text(shown)
                .width(200.0)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut form.vae, None, MODEL_VAE);
                    for entry in catalog.entries().iter().filter(|e| e.kind == EntryKind::Vae) {
                        ui.selectable_value(
                            &mut form.vae,
                            Some(entry.display_name.clone()),
                            &entry.display_name,
                        );
                    }
                    for vae in &catalog.library().vaes {
                        ui.selectable_value(&mut form.vae, Some(vae.name.clone()), &vae.name);
                    }
                })
                .response
                .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            let label = ui.label("VAE path or hub id");
            let mut text = form.vae.clone().unwrap_or_default();
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut text)
                        .desired_width(150.0)
                        .hint_text("e.g. madebyollin/sdxl-vae-fp16-fix"),
                )
                .labelled_by(label.id);
            if edit.changed() {
                form.vae = (!text.trim().is_empty()).then(|| text.trim().to_owned());
            }
        });
    }

    /// The LoRAs of the models folders, each with a weight (negative allowed); LoRAs chosen
    /// otherwise (restored from an image) are listed too.
    fn lora_ui(&mut self, ui: &mut egui::Ui, catalog: &Catalog) {
        let form = &mut self.form;
        let found = &catalog.library().loras;
        let title = format!("LoRAs ({} chosen, {} found)", form.loras.len(), found.len());
        egui::CollapsingHeader::new(title).id_salt("loras").show(ui, |ui| {
            for lora in found {
                let source = lora.path.display().to_string();
                let position = form
                    .loras
                    .iter()
                    .position(|chosen| chosen.source == source || chosen.source == lora.name);
                let mut on = position.is_some();
                ui.horizontal(|ui| {
                    if ui.checkbox(&mut on, &lora.name).changed() {
                        match (on, position) {
                            (true, None) => {
                                form.loras.push(LoraSpec { source: source.clone(), weight: 1.0 });
                            }
                            (false, Some(index)) => {
                                form.loras.remove(index);
                            }
                            _ => {}
                        }
                    }
                    if let Some(index) = form
                        .loras
                        .iter()
                        .position(|chosen| chosen.source == source || chosen.source == lora.name)
                    {
                        let slider = egui::Slider::new(&mut form.loras[index].weight, -2.0..=2.0)
                            .step_by(0.05);
                        ui.add(slider).on_hover_text(format!("weight of {}", lora.name));
                    }
                });
            }
            let known: Vec<String> =
                found.iter().flat_map(|l| [l.path.display().to_string(), l.name.clone()]).collect();
            let mut remove = None;
            for (index, chosen) in form.loras.iter_mut().enumerate() {
                if known.contains(&chosen.source) {
                    continue;
                }
                ui.horizontal(|ui| {
                    ui.label(&chosen.source);
                    ui.add(egui::Slider::new(&mut chosen.weight, -2.0..=2.0).step_by(0.05));
                    if ui.small_button("Remove").clicked() {
                        remove = Some(index);
                    }
                });
            }
            if let Some(index) = remove {
                form.loras.remove(index);
            }
            if found.is_empty() {
                ui.weak(
                    "Give a models folder (--models-dir, IMAGELAB_MODELS_DIR) to list its LoRAs.",
                );
            }
        });
    }

    fn model_ui(&mut self, ui: &mut egui::Ui, cx: &ControlsContext<'_>) -> Option<ControlAction> {
        let mut action = None;
        let form = &mut self.form;
        let before = form.model.clone();
        let label = ui.label("Model");
        egui::ComboBox::from_id_salt("model")
            .selected_text(form.model.clone())
            .width(240.0)
            .height(480.0)
            .show_ui(ui, |ui| {
                for entry in cx.catalog.entries().iter().filter(|e| e.kind != EntryKind::Vae) {
                    let status = cx.model_status.availability(&entry.display_name).label();
                    let text = if status.is_empty() {
                        entry.display_name.clone()
                    } else {
                        format!("{}  ({status})", entry.display_name)
                    };
                    ui.selectable_value(&mut form.model, entry.display_name.clone(), text);
                }
                let local = &cx.catalog.library().checkpoints;
                if !local.is_empty() {
                    ui.separator();
                    for model in local {
                        let text = format!("{}  ({})", model.name, model.kind.label());
                        ui.selectable_value(&mut form.model, model.name.clone(), text);
                    }
                }
            })
            .response
            .labelled_by(label.id);
        model_path_ui(ui, &mut form.model);
        if form.model != before {
            form.apply_model_defaults(cx.catalog);
        }
        match cx.model_status.availability(&form.model) {
            ModelAvailability::NotDownloaded | ModelAvailability::Partial => {
                if ui.button("Download").on_hover_text("fetch it now, not on first use").clicked() {
                    action = Some(ControlAction::Download(form.model.clone()));
                }
            }
            ModelAvailability::Downloading(fraction) => {
                let bar = match fraction {
                    Some(fraction) => egui::ProgressBar::new(fraction).show_percentage(),
                    None => egui::ProgressBar::new(0.0).animate(true),
                };
                ui.add(bar.text("downloading"));
            }
            ModelAvailability::Cached | ModelAvailability::Unknown => {}
        }
        if let Some(import) = Self::profile_ui(form, ui, cx.profiles) {
            action = Some(import);
        }
        let label = ui.label("Scheduler");
        let scheduler_text =
            form.scheduler.map_or("Profile / model default", SamplerKind::gui_name);
        egui::ComboBox::from_id_salt("scheduler")
            .selected_text(scheduler_text)
            .width(240.0)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut form.scheduler, None, "Profile / model default");
                for kind in SamplerKind::ALL {
                    ui.selectable_value(&mut form.scheduler, Some(kind), kind.gui_name());
                }
            })
            .response
            .labelled_by(label.id);
        let label = ui.label("Schedule type");
        egui::ComboBox::from_id_salt("schedule_type")
            .selected_text(form.schedule_type.a1111_name())
            .width(240.0)
            .show_ui(ui, |ui| {
                for schedule in SigmaSchedule::ALL {
                    ui.selectable_value(&mut form.schedule_type, schedule, schedule.a1111_name());
                }
            })
            .response
            .labelled_by(label.id);
        action
    }

    /// The profile menu (shipped profiles, then imported styles) and "Import styles...".
    fn profile_ui(
        form: &mut FormSettings,
        ui: &mut egui::Ui,
        profiles: &Profiles,
    ) -> Option<ControlAction> {
        let mut action = None;
        let label = ui.label("Profile");
        egui::ComboBox::from_id_salt("profile")
            .selected_text(form.profile.clone())
            .width(240.0)
            .show_ui(ui, |ui| {
                for profile in profiles.all().iter().filter(|p| !p.is_imported()) {
                    ui.selectable_value(&mut form.profile, profile.name.clone(), &profile.name)
                        .on_hover_text(format!(
                            "adds: {}\nnegative adds: {}",
                            profile.prompt_suffix, profile.negative_suffix
                        ));
                }
                let imported: Vec<_> = profiles.all().iter().filter(|p| p.is_imported()).collect();
                if !imported.is_empty() {
                    ui.separator();
                    ui.weak("Imported styles");
                }
                for profile in imported {
                    ui.selectable_value(&mut form.profile, profile.name.clone(), &profile.name)
                        .on_hover_text(format!(
                            "{}\nprompt: {}\nnegative: {}",
                            profile.imported_from.as_deref().unwrap_or_default(),
                            profile.prompt_suffix,
                            profile.negative_suffix
                        ));
                }
            })
            .response
            .labelled_by(label.id);
        if ui
            .button("Import styles...")
            .on_hover_text("an AUTOMATIC1111 styles.csv or a Fooocus style JSON file")
            .clicked()
            && let Some(file) =
                rfd::FileDialog::new().add_filter("styles", &["csv", "json"]).pick_file()
        {
            action = Some(ControlAction::ImportStyles(file));
        }
        if let Some(profile) = profiles.get(&form.profile)
            && !profile.prompt_suffix.is_empty()
        {
            ui.small(format!("+ {}", profile.prompt_suffix))
                .on_hover_text(format!("negative + {}", profile.negative_suffix));
        }
        action
    }

    fn prompt_ui(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Prompt");
        ui.add(
            egui::TextEdit::multiline(&mut self.form.prompt)
                .desired_rows(4)
                .desired_width(f32::INFINITY)
                .hint_text("a lighthouse at dusk, volumetric fog"),
        )
        .labelled_by(label.id);
        let label = ui.label("Negative prompt");
        ui.add(
            egui::TextEdit::multiline(&mut self.form.negative)
                .desired_rows(2)
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label.id);
        self.restored_extras_ui(ui);
    }

    /// Settings only an image restores (no control sets them yet): shown, and clearable, when
    /// set, so a restored run is not silently different from what the form shows.
    fn restored_extras_ui(&mut self, ui: &mut egui::Ui) {
        let form = &mut self.form;
        if !form.loras.is_empty() {
            ui.horizontal_wrapped(|ui| {
                let names: Vec<String> = form
                    .loras
                    .iter()
                    .map(|lora| format!("{}:{}", lora.source, lora.weight))
                    .collect();
                ui.small(format!("LoRAs from the image: {}", names.join(", ")));
                if ui.small_button("Clear LoRAs").clicked() {
                    form.loras.clear();
                }
            });
        }
        if form.truncate_prompt {
            ui.checkbox(
                &mut form.truncate_prompt,
                "Truncate prompts at 77 tokens (from the image)",
            );
        }
    }

    fn size_ui(&mut self, ui: &mut egui::Ui, catalog: &Catalog) {
        let form = &mut self.form;
        let native = catalog.find(&form.model).map(|entry| entry.defaults);
        ui.label("Size");
        if let Some(native) = native {
            ui.horizontal_wrapped(|ui| {
                for (width, height) in aspect_presets(native) {
                    let selected = form.width_px == width && form.height_px == height;
                    if ui.selectable_label(selected, format!("{width}×{height}")).clicked() {
                        form.width_px = width;
                        form.height_px = height;
                    }
                }
            });
        }
        let step = limits::SIZE_MULTIPLE_PX;
        ui.horizontal(|ui| {
            let label = ui.label("W");
            ui.add(
                egui::DragValue::new(&mut form.width_px)
                    .range(limits::MIN_SIZE_PX..=limits::MAX_SIZE_PX)
                    .speed(step),
            )
            .labelled_by(label.id);
            let label = ui.label("H");
            ui.add(
                egui::DragValue::new(&mut form.height_px)
                    .range(limits::MIN_SIZE_PX..=limits::MAX_SIZE_PX)
                    .speed(step),
            )
            .labelled_by(label.id);
        });
        form.width_px -= form.width_px % step;
        form.height_px -= form.height_px % step;
    }

    fn sampling_ui(&mut self, ui: &mut egui::Ui, last_seed: Option<u64>) {
        let form = &mut self.form;
        egui::Grid::new("sampling").num_columns(2).show(ui, |ui| {
            let label = ui.label("Steps");
            ui.add(egui::DragValue::new(&mut form.steps).range(1..=limits::MAX_STEPS))
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("CFG");
            ui.add(egui::DragValue::new(&mut form.cfg).range(0.0..=limits::MAX_CFG).speed(0.1))
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("Batch");
            ui.add(egui::DragValue::new(&mut form.batch).range(1..=limits::MAX_BATCH))
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("Seed");
            ui.horizontal(|ui| {
                ui.add_enabled(!form.random_seed, egui::DragValue::new(&mut form.seed))
                    .labelled_by(label.id);
                if ui.button("Dice").on_hover_text("a new random seed").clicked() {
                    form.seed = crate::request::plan::random_seed();
                    form.random_seed = false;
                }
                if ui
                    .add_enabled(last_seed.is_some(), egui::Button::new("Reuse last"))
                    .on_hover_text("reuse the last seed")
                    .clicked()
                    && let Some(seed) = last_seed
                {
                    form.seed = seed;
                    form.random_seed = false;
                }
                ui.checkbox(&mut form.random_seed, "Random");
            });
            ui.end_row();
        });
    }

    fn img2img_ui(&mut self, ui: &mut egui::Ui, thumbnails: &mut ThumbnailLoader) {
        let form = &mut self.form;
        ui.collapsing("img2img", |ui| {
            ui.horizontal(|ui| {
                if ui.button("Choose image...").clicked()
                    && let Some(path) = rfd::FileDialog::new()
                        .add_filter("images", &["png", "jpg", "jpeg", "webp"])
                        .pick_file()
                {
                    form.init_image = Some(path);
                }
                if form.init_image.is_some() && ui.button("Clear").clicked() {
                    form.init_image = None;
                }
            });
            match &form.init_image {
                Some(path) => {
                    ui.small(path.display().to_string());
                    thumbnails.request(path);
                    if let Some(texture) = thumbnails.texture(path) {
                        ui.add(egui::Image::new(texture).max_size(egui::vec2(160.0, 160.0)));
                    }
                    ui.add(egui::Slider::new(&mut form.strength, 0.0..=1.0).text("Strength"));
                }
                None => {
                    ui.small(
                        "or drop an image on the window (a PNG of ours restores its settings)",
                    );
                }
            }
        });
    }

    fn device_ui(&mut self, ui: &mut egui::Ui) {
        let form = &mut self.form;
        ui.horizontal(|ui| {
            let label = ui.label("Device");
            egui::ComboBox::from_id_salt("device")
                .selected_text(form.device.to_string())
                .show_ui(ui, |ui| {
                    for device in [
                        DeviceChoice::Auto,
                        DeviceChoice::Cpu,
                        DeviceChoice::Cuda(0),
                        DeviceChoice::Metal,
                    ] {
                        ui.selectable_value(&mut form.device, device, device.to_string());
                    }
                })
                .response
                .labelled_by(label.id);
        });
    }

    fn output_ui(&mut self, ui: &mut egui::Ui) {
        let output = &mut self.form.output;
        ui.horizontal(|ui| {
            let label = ui.label("Format");
            egui::ComboBox::from_id_salt("format")
                .selected_text(output.format.display_name())
                .show_ui(ui, |ui| {
                    for format in OutputFormat::ALL {
                        ui.selectable_value(&mut output.format, format, format.display_name());
                    }
                })
                .response
                .labelled_by(label.id);
            if output.format == OutputFormat::Webp {
                ui.checkbox(&mut output.lossless, "Lossless");
            } else {
                output.lossless = false;
            }
        });
        if output.format == OutputFormat::Jpeg
            || (output.format == OutputFormat::Webp && !output.lossless)
        {
            ui.add(egui::Slider::new(&mut output.quality, 1..=100).text("Quality"));
        }
    }

    fn sweep_ui(&mut self, ui: &mut egui::Ui, profiles: &Profiles, catalog: &Catalog) {
        ui.label("Sweep");
        let form = &mut self.form;
        ui.radio_value(&mut form.sweep, Sweep::None, "None");
        ui.radio_value(&mut form.sweep, Sweep::AllProfiles, "All profiles");
        ui.radio_value(&mut form.sweep, Sweep::AllModelsAllProfiles, "All models × all profiles");
        let images = image_count(form.sweep, form.batch, profiles, catalog);
        let text = format!("{images} image{}", if images == 1 { "" } else { "s" });
        if images > CONFIRM_ABOVE_IMAGES {
            ui.colored_label(ui.visuals().warn_fg_color, format!("{text} (asks to confirm)"));
        } else {
            ui.label(text);
        }
    }

    fn run_buttons_ui(
        &mut self,
        ui: &mut egui::Ui,
        cx: &ControlsContext<'_>,
    ) -> Option<ControlAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            let generate = ui
                .add(egui::Button::new("Generate").min_size(egui::vec2(110.0, 28.0)))
                .on_hover_text("Ctrl+Enter");
            if generate.clicked() && self.request_generate(cx.profiles, cx.catalog) {
                action = Some(ControlAction::Generate);
            }
            if ui.add_enabled(cx.busy, egui::Button::new("Cancel")).clicked() {
                action = Some(ControlAction::Cancel);
            }
            if ui.add_enabled(cx.busy, egui::Button::new("Skip")).clicked() {
                action = Some(ControlAction::Skip);
            }
        });
        action
    }

    fn confirm_ui(&mut self, ctx: &egui::Context, images: usize) -> Option<ControlAction> {
        let mut action = None;
        egui::Modal::new(egui::Id::unique("imagelab.confirm_sweep")).show(ctx, |ui| {
            ui.heading("Large sweep");
            ui.label(format!("This sweep makes {images} images. Run it?"));
            ui.horizontal(|ui| {
                if ui.button("Run it").clicked() {
                    action = Some(ControlAction::Generate);
                    self.confirming_images = None;
                }
                if ui.button("Back").clicked() {
                    self.confirming_images = None;
                }
            });
        });
        action
    }
}
