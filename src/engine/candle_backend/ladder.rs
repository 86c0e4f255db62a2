//! The out-of-memory ladder around one generation: with a memory budget, the first rung whose
//! estimate fits is planned before anything is allocated; on an allocation failure the next
//! rung is tried. The estimate is the models layer's ([`ActivationShape`]) with the loaded
//! pipeline's measures, plus the weights the cache holds.

use std::ops::ControlFlow;
use std::time::Instant;

use super::CandleBackend;
use crate::diffusion::pipeline::DiffusionPipeline;
use crate::diffusion::unet::PerBlock;
use crate::engine::backend::{BackendError, GenerateParams, Generated, StepUpdate};
use crate::models::cache::ByteSize;
use crate::models::oom::{ActivationShape, Attempt, next_rung, plan_within_budget};

impl CandleBackend {
    /// The estimated peak memory of `attempt` with the current pipeline (`None` before load):
    /// the tensor bytes of the current pipeline, plus every other cached pipeline unless the
    /// attempt frees the cache, plus the activation peak of the models layer's estimate
    /// ([`ActivationShape::peak_bytes`]) with this pipeline's measures, one image per call.
    pub fn estimate_bytes(&self, attempt: &Attempt, with_cfg: bool) -> Option<u64> {
        let (key, pipeline) = self.current.as_ref()?;
        let pipeline_bytes = pipeline.byte_size();
        let others = if attempt.caches_freed {
            0
        } else {
            let cached = self.cache.stats().used_bytes;
            if self.cache.contains(key) { cached.saturating_sub(pipeline_bytes) } else { cached }
        };
        let activations =
            activation_shape(pipeline).peak_bytes(attempt, with_cfg, 1, self.vae_tile_px);
        Some(pipeline_bytes + others + activations)
    }

    /// Generates with the current pipeline, walking the ladder as memory requires.
    pub(super) fn generate_within_memory(
        &mut self,
        params: &GenerateParams,
        on_step: &mut dyn FnMut(StepUpdate<'_>) -> ControlFlow<()>,
    ) -> Result<Generated, BackendError> {
        let Some((key, _)) = &self.current else {
            return Err(BackendError::Failed("candle: generate before load".to_owned()));
        };
        let key = key.clone();
        let started = Instant::now();
        let (requested_w, requested_h) = (params.width, params.height);
        let with_cfg = params.cfg > 1.0;
        let mut attempt = match self.memory_budget {
            None => Attempt::first(requested_w, requested_h),
            Some(budget) => plan_within_budget(requested_w, requested_h, budget, |attempt| {
                self.estimate_bytes(attempt, with_cfg).unwrap_or(0)
            })
            .map_err(|err| {
                BackendError::OutOfMemory(format!(
                    "{err} (raise IMAGELAB_MEMORY_BUDGET_MB or ask for a smaller image)"
                ))
            })?,
        };
        loop {
            if attempt.caches_freed {
                let freed = self.free_other_pipelines(&key);
                tracing::info!(freed_bytes = freed, "out-of-memory ladder freed the model cache");
            }
            let result = self.generate_attempt(params, &attempt, on_step);
            if params.init_image.is_some() {
                self.account_vae_encoder(&key);
            }
            match result {
                Ok(mut generated) => {
                    let note = attempt.describe(requested_w, requested_h);
                    if !note.is_empty() {
                        generated.notes.push(note);
                    }
                    generated.timings.total_s = started.elapsed().as_secs_f64();
                    return Ok(generated);
                }
                Err(BackendError::OutOfMemory(message)) => {
                    let Some(next) = next_rung(requested_w, requested_h, &attempt) else {
                        return Err(BackendError::OutOfMemory(format!(
                            "{message} (every rung of the out-of-memory ladder was tried, down \
                             to {}x{} with a tiled VAE decode)",
                            attempt.width, attempt.height
                        )));
                    };
                    tracing::warn!(%message, next = %next.describe(requested_w, requested_h), "out of memory; trying the next rung");
                    attempt = next;
                }
                Err(other) => return Err(other),
            }
        }
    }
}

/// The measures of `pipeline` that drive its activation memory, read from its configs.
pub(super) fn activation_shape(pipeline: &DiffusionPipeline) -> ActivationShape {
    let unet = pipeline.unet().config();
    let attention_level =
        unet.down_block_types.iter().position(|kind| kind.contains("CrossAttn")).unwrap_or(0);
    let heads = per_block(
        unet.num_attention_heads.as_ref().unwrap_or(&unet.attention_head_dim),
        attention_level,
    );
    ActivationShape {
        vae_scale: pipeline.vae_scale_factor().max(1) as u64,
        unet_channels: unet.block_out_channels.first().copied().unwrap_or(0) as u64,
        attention_level: u32::try_from(attention_level).unwrap_or(0),
        attention_heads: heads as u64,
        unet_element_bytes: pipeline.dtype().size_in_bytes() as u64,
        vae_channels: pipeline.vae().config().block_out_channels.first().copied().unwrap_or(0)
            as u64,
        vae_element_bytes: pipeline.active_vae().dtype().size_in_bytes() as u64,
    }
}

/// The value of a per-block setting at down block `index` (the last one when shorter).
fn per_block(setting: &PerBlock<usize>, index: usize) -> usize {
    match setting {
        PerBlock::One(value) => *value,
        PerBlock::Each(values) => values.get(index).or(values.last()).copied().unwrap_or(1),
    }
}
