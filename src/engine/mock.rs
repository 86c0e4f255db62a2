//! A deterministic mock backend: an image derived from the seed with the prompt and settings
//! drawn on it. It honours size, steps, progress, preview and cancel, so the engine, the CLI
//! and the window can be tested and demonstrated with no weights and no GPU.
//!
//! Failure injection for tests and demos: [`MockBackend::failing_model`] (a display name whose
//! load fails), [`MockBackend::failing_prompt`] (a substring of the final prompt that fails the
//! image half-way); front ends set them from `IMAGELAB_MOCK_*` (see `app::config`).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::backend::{
    Backend, BackendError, Capabilities, GenerateParams, Generated, LoadProgress, LoadedModel,
    Preview, StepUpdate, Timings,
};
use crate::font;
use crate::models::catalog::ModelRef;
use crate::storage::metadata::NOISE_SOURCE_TORCH_CPU;
use crate::vocab::{DeviceChoice, Precision, SamplerKind};

/// Largest side of a preview, in pixels.
const PREVIEW_MAX_PX: u32 = 128;

/// The mock generator.
#[derive(Debug, Clone, Default)]
pub struct MockBackend {
    step_delay: Duration,
    fail_model: Option<String>,
    fail_prompt: Option<String>,
    loaded: Option<ModelRef>,
    /// How many times a model was (re)loaded: tests check that sweeps load each model once.
    pub loads: usize,
}

impl MockBackend {
    /// A mock with no delay and no failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sleeps this long per step (so cancel and progress can be watched).
    #[must_use]
    pub fn with_step_delay(mut self, delay: Duration) -> Self {
        self.step_delay = delay;
        self
    }

    /// Loading the model with this display name fails.
    #[must_use]
    pub fn failing_model(mut self, display_name: impl Into<String>) -> Self {
        self.fail_model = Some(display_name.into());
        self
    }

    /// Images whose final prompt contains this text fail half-way.
    #[must_use]
    pub fn failing_prompt(mut self, needle: impl Into<String>) -> Self {
        self.fail_prompt = Some(needle.into());
        self
    }
}

impl Backend for MockBackend {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            img2img: true,
            negative_prompt: true,
            seeds: true,
            custom_schedulers: true,
            lora: true,
            controlnet: false,
            upscaling: false,
        }
    }

    fn device_label(&self) -> String {
        "mock".to_owned()
    }

    fn load(
        &mut self,
        model: &ModelRef,
        _device: DeviceChoice,
        _dtype: Option<Precision>,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<LoadedModel, BackendError> {
        if self.fail_model.as_deref() == Some(model.display_name.as_str()) {
            return Err(BackendError::Failed(format!(
                "mock: loading {} failed (IMAGELAB_MOCK_FAIL_MODEL)",
                model.display_name
            )));
        }
        let started = Instant::now();
        if self.loaded.as_ref() != Some(model) {
            on_progress(LoadProgress {
                message: format!("loading {}", model.display_name),
                fraction: Some(0.0),
            });
            self.loads += 1;
            self.loaded = Some(model.clone());
            on_progress(LoadProgress {
                message: format!("loaded {}", model.display_name),
                fraction: Some(1.0),
            });
        }
        Ok(LoadedModel {
            defaults: model.defaults,
            model_id: model.model_id(),
            revision: None,
            load_s: started.elapsed().as_secs_f64(),
        })
    }

    fn generate(
        &mut self,
        params: &GenerateParams,
        on_step: &mut dyn FnMut(StepUpdate<'_>) -> ControlFlow<()>,
    ) -> Result<Generated, BackendError> {
        let Some(model) = self.loaded.clone() else {
            return Err(BackendError::Failed("mock: generate before load".into()));
        };
        let started = Instant::now();
        let sampler = match params.sampler {
            SamplerKind::Default => SamplerKind::Euler,
            other => other,
        };
        let mut final_image = render(params, &model.display_name, sampler);
        if let Some(init) = &params.init_image {
            blend_into(&mut final_image, init, 1.0 - params.strength);
        }
        let noise = noise_image(params.width, params.height, params.seed);
        let steps = params.steps.max(1) as usize;
        let mut steps_s = Vec::with_capacity(steps);
        let fails =
            self.fail_prompt.as_deref().is_some_and(|needle| params.prompt.contains(needle));
        for step in 1..=steps {
            let step_started = Instant::now();
            if !self.step_delay.is_zero() {
                std::thread::sleep(self.step_delay);
            }
            if fails && step * 2 > steps {
                return Err(BackendError::Failed(format!(
                    "mock: prompt contains {:?} (IMAGELAB_MOCK_FAIL_PROMPT)",
                    self.fail_prompt.as_deref().unwrap_or_default()
                )));
            }
            let fraction = step as f32 / steps as f32;
            let preview = params.want_preview.then(|| preview_of(&noise, &final_image, fraction));
            steps_s.push(step_started.elapsed().as_secs_f64());
            if on_step(StepUpdate { step, steps, preview: preview.as_ref() }).is_break() {
                return Err(BackendError::Cancelled);
            }
        }
        let latent_safetensors =
            params.save_latent.then(|| mock_latent(&final_image)).transpose()?;
        Ok(Generated {
            image: final_image,
            latent_safetensors,
            sampler,
            noise_source: NOISE_SOURCE_TORCH_CPU.to_owned(),
            dtype: "f32".to_owned(),
            notes: vec!["mock backend: not a diffusion image".to_owned()],
            timings: Timings {
                load_s: 0.0,
                encode_s: 0.0,
                steps_s,
                decode_s: 0.0,
                total_s: started.elapsed().as_secs_f64(),
            },
        })
    }
}

/// splitmix64: a tiny, well-mixed hash for deterministic colours.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn color_of(seed: u64, salt: u64) -> [u8; 3] {
    let bits = mix(seed ^ salt.wrapping_mul(0x5851_f42d_4c95_7f2d));
    let [r, g, b, ..] = bits.to_le_bytes();
    [r, g, b]
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "pixel arithmetic on values kept within 0..=255"
)]
fn render(params: &GenerateParams, model: &str, sampler: SamplerKind) -> RgbImage {
    let (width, height) = (params.width, params.height);
    let top = color_of(params.seed, 1);
    let bottom = color_of(params.seed, 2);
    let accent = color_of(params.seed, 3);
    let mut img = RgbImage::from_fn(width, height, |x, y| {
        let t = y as f32 / height.max(1) as f32;
        let wave =
            ((x as f32 / width.max(1) as f32) * std::f32::consts::TAU * 2.0 + t * 9.0).sin() * 0.08;
        let mut px = [0u8; 3];
        for c in 0..3 {
            let base = f32::from(top[c]) * (1.0 - t) + f32::from(bottom[c]) * t;
            px[c] = (base * (0.92 + wave)).clamp(0.0, 255.0) as u8;
        }
        image::Rgb(px)
    });
    // A seeded disc, so different seeds differ in shape too.
    let cx = (mix(params.seed ^ 0x7) % u64::from(width.max(1))) as f32;
    let cy = (mix(params.seed ^ 0xb) % u64::from(height.max(1))) as f32;
    let radius = width.min(height) as f32 * 0.22;
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        if dx * dx + dy * dy < radius * radius {
            *px = image::Rgb(accent);
        }
    }
    let scale = (width / 256).max(1);
    let cols = ((width / (font::CELL_W * scale)).saturating_sub(2)) as usize;
    let mut lines = vec!["IMAGELAB MOCK".to_owned()];
    lines.extend(font::wrap(&params.prompt, cols).into_iter().take(6));
    lines.push(format!("SEED {}", params.seed));
    lines.push(format!("{}X{} STEPS {} CFG {}", width, height, params.steps, params.cfg));
    lines.push(format!("{} / {}", sampler.gui_name(), model));
    let luminance = |c: [u8; 3]| u32::from(c[0]) * 3 + u32::from(c[1]) * 6 + u32::from(c[2]);
    let ink = if luminance(top) > 1280 { [0, 0, 0] } else { [255, 255, 255] };
    for (row, line) in lines.iter().enumerate() {
        let y = scale * 4 + u32::try_from(row).unwrap_or(0) * font::CELL_H * scale;
        font::draw_text(&mut img, scale * 4, y, scale, line, ink);
    }
    img
}

fn noise_image(width: u32, height: u32, seed: u64) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let bits = mix(seed ^ (u64::from(y) << 32 | u64::from(x)));
        let [r, g, b, ..] = bits.to_le_bytes();
        image::Rgb([r, g, b])
    })
}

/// `dst = dst·(1−keep) + src·keep` where sizes agree (the engine already resized `src`).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "pixel arithmetic on values kept within 0..=255"
)]
fn blend_into(dst: &mut RgbImage, src: &RgbImage, keep: f32) {
    if dst.dimensions() != src.dimensions() {
        return;
    }
    for (d, s) in dst.pixels_mut().zip(src.pixels()) {
        for c in 0..3 {
            d.0[c] = (f32::from(d.0[c]) * (1.0 - keep) + f32::from(s.0[c]) * keep).round() as u8;
        }
    }
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "pixel arithmetic on values kept within 0..=255"
)]
fn preview_of(noise: &RgbImage, target: &RgbImage, fraction: f32) -> Preview {
    let (width, height) = target.dimensions();
    let step = (width.max(height) / PREVIEW_MAX_PX).max(1);
    let (pw, ph) = (width.div_ceil(step), height.div_ceil(step));
    let mut rgb = Vec::with_capacity((pw * ph * 3) as usize);
    for y in 0..ph {
        for x in 0..pw {
            let (sx, sy) = ((x * step).min(width - 1), (y * step).min(height - 1));
            let n = noise.get_pixel(sx, sy).0;
            let t = target.get_pixel(sx, sy).0;
            for c in 0..3 {
                rgb.push((f32::from(n[c]) * (1.0 - fraction) + f32::from(t[c]) * fraction) as u8);
            }
        }
    }
    Preview { width: pw, height: ph, rgb }
}

/// A `[1, 4, h/8, w/8]` f32 tensor under `latent_tensor`, as ComfyUI saves latents.
fn mock_latent(img: &RgbImage) -> Result<Vec<u8>, BackendError> {
    let (lw, lh) = ((img.width() / 8).max(1), (img.height() / 8).max(1));
    let mut values: Vec<f32> = Vec::with_capacity((4 * lw * lh) as usize);
    for channel in 0..4u32 {
        for y in 0..lh {
            for x in 0..lw {
                let px = img.get_pixel(x * 8, y * 8).0;
                let v =
                    if channel < 3 { f32::from(px[channel as usize]) / 127.5 - 1.0 } else { 0.0 };
                values.push(v);
            }
        }
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![1, 4, lh as usize, lw as usize],
        &bytes,
    )
    .map_err(|e| BackendError::Failed(format!("mock latent: {e}")))?;
    safetensors::tensor::serialize([("latent_tensor", view)], None)
        .map_err(|e| BackendError::Failed(format!("mock latent: {e}")))
}
