//! Samplers, one algorithm per file, each built from the model's own `scheduler_config.json`
//! and numerically equal to the diffusers class it is named after (REFERENCE §4).

use candle_core::{Result, Tensor};

use super::rng::TorchGenerator;

/// The contract the pipeline drives. It mirrors diffusers' scheduler API so the denoising loop
/// reads like diffusers' own:
///
/// ```text
/// latents = noise * init_noise_sigma()                    (txt2img)
/// for (i, t) in timesteps().iter().enumerate() {
///     x_in = scale_model_input(&latents, i)
///     eps  = unet(x_in, t, …)  (+ CFG)
///     latents = step(&eps, i, &latents, generator)
/// }
/// ```
///
/// Multi-stage samplers (Heun) list each timestep as many times as the UNet is called, exactly
/// as diffusers' `scheduler.timesteps` does; `step` is called once per entry.
pub trait Scheduler: Send {
    /// Timesteps the UNet is called with, in call order (diffusers' `scheduler.timesteps`).
    fn timesteps(&self) -> &[f64];

    /// Standard deviation of the initial noise (diffusers' `init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;

    /// diffusers' `scale_model_input` for the call at `step_index`.
    ///
    /// # Errors
    /// Tensor errors.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor>;

    /// diffusers' `step`: the sample after the call at `step_index`. Ancestral and SDE samplers
    /// draw their noise from `generator` in diffusers' order.
    ///
    /// # Errors
    /// Tensor errors.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor>;

    /// diffusers' `add_noise` at the timestep of call `step_index` (img2img's start).
    ///
    /// # Errors
    /// Tensor errors.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor>;

    /// How many UNet calls make one "step" (2 for Heun, else 1): diffusers' `order`.
    fn order(&self) -> usize {
        1
    }
}
