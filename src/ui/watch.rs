//! The central view while generating: the live preview (one texture, updated in place), the
//! progress bar with step i/n, it/s and ETA, and model-loading progress.

use crate::engine::{JobId, Preview};

/// Progress of the running job, as the events told it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JobProgress {
    /// The running job.
    pub job: JobId,
    /// Model and profile of the running item.
    pub label: String,
    /// Item index and count.
    pub item: usize,
    /// Items in the job.
    pub items: usize,
    /// Image within the item's batch.
    pub image: usize,
    /// Images in the item.
    pub images_in_item: usize,
    /// Steps done.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// Recent speed.
    pub it_per_s: f32,
    /// Model loading message and fraction, while loading.
    pub loading: Option<(String, Option<f32>)>,
    /// Images the whole job makes (every item of a sweep).
    pub job_images: usize,
    /// Images of the job already saved.
    pub job_images_saved: usize,
}

impl JobProgress {
    /// Seconds left for the job: the steps left on this image, then every image not yet
    /// started (the whole sweep) at the current speed; model loads are not counted.
    pub fn eta_secs(&self) -> Option<f32> {
        if self.it_per_s <= 0.0 || self.steps == 0 {
            return None;
        }
        let images_after_this = if self.job_images > 0 {
            self.job_images.saturating_sub(self.job_images_saved + 1)
        } else {
            self.images_in_item.saturating_sub(self.image + 1)
        };
        let steps_left = self.steps.saturating_sub(self.step) + images_after_this * self.steps;
        Some(steps_left as f32 / self.it_per_s)
    }
}

/// The preview and progress view.
#[derive(Default)]
pub struct WatchPanel {
    /// What is running, if anything.
    pub progress: Option<JobProgress>,
    preview: Option<egui::TextureHandle>,
    /// Previews received (tests check the preview moves).
    pub previews_shown: usize,
}

impl std::fmt::Debug for WatchPanel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchPanel").field("progress", &self.progress).finish_non_exhaustive()
    }
}

impl WatchPanel {
    /// Shows a new preview: the texture is made once, then updated with `TextureHandle::set`.
    pub fn set_preview(&mut self, ctx: &egui::Context, preview: &Preview) {
        let size = [preview.width as usize, preview.height as usize];
        if preview.rgb.len() != size[0] * size[1] * 3 {
            return;
        }
        let image = egui::ColorImage::from_rgb(size, &preview.rgb);
        match &mut self.preview {
            Some(texture) => texture.set(image, egui::TextureOptions::NEAREST),
            None => {
                self.preview =
                    Some(ctx.load_texture("live-preview", image, egui::TextureOptions::NEAREST));
            }
        }
        self.previews_shown += 1;
    }

    /// Draws progress and the preview, filling the space given.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        match &self.progress {
            Some(progress) => {
                if let Some((message, fraction)) = &progress.loading {
                    ui.label(format!("Loading model: {message}"));
                    let bar = match fraction {
                        Some(fraction) => egui::ProgressBar::new(*fraction).show_percentage(),
                        None => egui::ProgressBar::new(0.0).animate(true),
                    };
                    ui.add(bar);
                }
                let fraction = if progress.steps == 0 {
                    0.0
                } else {
                    progress.step as f32 / progress.steps as f32
                };
                let eta = progress
                    .eta_secs()
                    .map_or_else(String::new, |secs| format!(", ETA {secs:.0} s"));
                let text = format!(
                    "step {}/{} · {:.2} it/s{eta} · image {}/{} · item {}/{}",
                    progress.step,
                    progress.steps,
                    progress.it_per_s,
                    progress.image + 1,
                    progress.images_in_item.max(1),
                    progress.item + 1,
                    progress.items.max(1),
                );
                ui.label(&progress.label);
                ui.add(egui::ProgressBar::new(fraction).text(text));
            }
            None => {
                ui.label("Idle. Write a prompt and press Generate (Ctrl+Enter).");
            }
        }
        if let Some(texture) = &self.preview {
            let available = ui.available_size();
            ui.centered_and_justified(|ui| {
                ui.add(
                    egui::Image::new(texture)
                        .fit_to_exact_size(available)
                        .maintain_aspect_ratio(true),
                );
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_counts_the_rest_of_the_batch() {
        let progress = JobProgress {
            job: 1,
            step: 5,
            steps: 20,
            image: 0,
            images_in_item: 2,
            it_per_s: 5.0,
            ..JobProgress::default()
        };
        // 15 steps left on this image + 20 on the next, at 5 it/s.
        assert_eq!(progress.eta_secs(), Some(7.0));
        // In a sweep of 6 images with 3 saved: this one and 2 more.
        let sweep = JobProgress { job_images: 6, job_images_saved: 3, ..progress };
        assert_eq!(sweep.eta_secs(), Some((15.0 + 2.0 * 20.0) / 5.0));
        assert_eq!(JobProgress::default().eta_secs(), None);
    }
}
