//! Diffusion numerics on candle, faithful to diffusers: text encoders, UNet, VAE, samplers,
//! PyTorch-compatible noise, latent previews, device/dtype policy.
//!
//! This layer knows nothing of channels, windows or output folders: the engine's candle backend
//! drives it through a per-step callback.

pub mod attention;
pub mod clip;
pub mod device;
pub mod error;
pub mod inplace;
pub mod kernels;
pub mod layers;
pub mod lora;
pub mod pipeline;
pub mod rng;
pub mod schedulers;
pub mod single_file;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::DiffusionError;
