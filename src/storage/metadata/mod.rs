//! Image metadata: what the lab writes into every image and reads back from any tool's images.
//!
//! Written ([`encode::encode_image`]): AUTOMATIC1111's infotext (read by Civitai, A1111's PNG
//! Info and the common readers) — a PNG `parameters` chunk, or the EXIF `UserComment` of a JPEG
//! or WebP — and the complete [`GenerationInfo`] as JSON (PNG iTXt `imagelab`, XMP
//! `imagelab:generation`), from which a run can be repeated exactly.
//!
//! Read: [`recover`] turns the metadata of our own images, AUTOMATIC1111's (PNG, JPEG, WebP,
//! stealth), ComfyUI's, InvokeAI's (2.x to 6.x), Fooocus' and NovelAI's into one [`Recovered`]
//! request (what `imagelab info` prints and `generate --from` re-runs), keeping what it cannot
//! map as text and saying what differs.

pub mod a1111;
pub mod comfyui;
pub mod containers;
pub mod encode;
pub mod exif;
pub mod fooocus;
pub mod foreign_samplers;
pub mod infotext;
pub mod invokeai;
pub mod invokeai_legacy;
pub mod jpeg_io;
pub mod novelai;
pub mod png_io;
mod recover;
pub mod stealth;
mod values;
pub mod webp_io;
pub mod xmp;

pub use recover::{
    MAX_IMAGE_FILE_BYTES, MetadataError, Recovered, Source, format_human, recover, recover_file,
    recover_from_chunks, recover_from_image_text,
};

use serde::{Deserialize, Serialize};

use crate::vocab::{LoraSpec, Mode, RAW_PROFILE, SamplerKind, SigmaSchedule};

/// The noise source whose seeds reproduce PyTorch's CPU generator (and diffusers/ComfyUI).
pub const NOISE_SOURCE_TORCH_CPU: &str = "torch-cpu";

/// Everything needed to make an image again; stored as JSON in the `imagelab` chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationInfo {
    /// Prompt as sent to the encoders (profile suffix applied).
    pub prompt: String,
    /// Negative prompt as sent (profile suffix applied).
    pub negative: String,
    /// The prompt the user typed.
    pub user_prompt: String,
    /// The negative prompt the user typed.
    pub user_negative: String,
    /// Style profile name.
    pub profile: String,
    /// Model display name.
    pub model: String,
    /// Hub id or path.
    pub model_id: String,
    /// Hub commit the weights came from, when known.
    pub model_revision: Option<String>,
    /// The sampler that ran (never `Default`: resolved from the model's config).
    pub sampler: SamplerKind,
    /// Sigma schedule chosen independently of the sampler (`automatic` = the sampler's own).
    pub schedule_type: SigmaSchedule,
    /// The sampler the user asked for (may be `Default`).
    pub requested_sampler: SamplerKind,
    /// Denoising steps.
    pub steps: u32,
    /// CFG scale.
    pub cfg: f32,
    /// Seed of this image.
    pub seed: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// txt2img or img2img.
    pub mode: Mode,
    /// img2img strength.
    pub strength: Option<f32>,
    /// img2img source file, as given.
    pub init_image: Option<String>,
    /// Noise source (see [`NOISE_SOURCE_TORCH_CPU`]).
    pub noise_source: String,
    /// LoRA adapters applied.
    pub loras: Vec<LoraSpec>,
    /// Prompts truncated at 77 tokens instead of chunked.
    pub truncate_prompt: bool,
    /// Precision the UNet ran in.
    pub dtype: String,
    /// Device label.
    pub device: String,
    /// `imagelab x.y.z`.
    pub version: String,
    /// What the run had to do that a re-run should know (prompt chunking, OOM ladder…).
    pub notes: Vec<String>,
}

impl Default for GenerationInfo {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative: String::new(),
            user_prompt: String::new(),
            user_negative: String::new(),
            profile: RAW_PROFILE.to_owned(),
            model: String::new(),
            model_id: String::new(),
            model_revision: None,
            sampler: SamplerKind::Euler,
            requested_sampler: SamplerKind::Default,
            schedule_type: SigmaSchedule::Automatic,
            steps: 30,
            cfg: 7.0,
            seed: 0,
            width: 1024,
            height: 1024,
            mode: Mode::Txt2img,
            strength: None,
            init_image: None,
            noise_source: NOISE_SOURCE_TORCH_CPU.to_owned(),
            loras: Vec::new(),
            truncate_prompt: false,
            dtype: "f32".to_owned(),
            device: "cpu".to_owned(),
            version: version_string(),
            notes: Vec::new(),
        }
    }
}

/// `imagelab <crate version>`, as written in `Version:`.
pub fn version_string() -> String {
    format!("imagelab {}", env!("CARGO_PKG_VERSION"))
}
