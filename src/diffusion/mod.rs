//! Diffusion numerics on candle, faithful to diffusers: text encoders, UNet, VAE, samplers,
//! PyTorch-compatible noise, latent previews, device/dtype policy.
//!
//! This layer knows nothing of channels, windows or output folders: the engine's candle backend
//! drives it through a per-step callback.

pub mod rng;
pub mod schedulers;
