//! The out-of-memory ladder: what to try next when an image does not fit in memory.
//!
//! The rungs, in order (pure planning; the engine does the freeing and retrying):
//! 1. the request as asked;
//! 2. the same size after freeing the model cache (other loaded models);
//! 3. smaller sizes keeping the aspect ratio: the long side at 3/4, 9/16 and 1/2 of the
//!    requested one (the seed ladder 768 → 576 → 512 for SDXL's native 1024), multiples of 8;
//! 4. the smallest size with a tiled VAE decode.
//!
//! The same ladder serves allocation failures (`next_rung` after each failure) and budgets
//! (`plan_within_budget` walks it with an estimate before anything is allocated).
//! [`Attempt::describe`] is the sentence for the record and the log.

use serde::{Deserialize, Serialize};

/// Long-side factors of the "smaller" rungs (numerator, denominator): 1024 → 768 → 576 → 512.
pub const SMALLER_LONG_SIDE_FACTORS: [(u32, u32); 3] = [(3, 4), (9, 16), (1, 2)];

/// The smallest side the ladder goes to, in pixels (8 latent pixels).
pub const MIN_SIDE_PX: u32 = 64;

/// Tile side (pixels) the memory estimate assumes for a tiled VAE decode.
pub const VAE_TILE_PX: u32 = 256;

/// Which rung an attempt is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rung", content = "step")]
pub enum Rung {
    /// As requested.
    AsRequested,
    /// Same size after freeing the model cache.
    FreeCaches,
    /// A smaller size (step 1 = 3/4, 2 = 9/16, 3 = 1/2 of the long side).
    Smaller(u8),
    /// The smallest size with a tiled VAE decode.
    TiledVaeDecode,
}

/// One try at generating: the size and the memory-saving measures in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Width in pixels (multiple of 8).
    pub width: u32,
    /// Height in pixels (multiple of 8).
    pub height: u32,
    /// The model cache was freed before this try.
    pub caches_freed: bool,
    /// Decode the VAE in tiles.
    pub tiled_vae_decode: bool,
    /// The rung.
    pub rung: Rung,
}

impl Attempt {
    /// The first try: the request as asked.
    pub fn first(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            caches_freed: false,
            tiled_vae_decode: false,
            rung: Rung::AsRequested,
        }
    }

    /// What was done, for the record and the log (empty for the first try).
    pub fn describe(&self, requested_width: u32, requested_height: u32) -> String {
        let mut parts = Vec::new();
        if self.caches_freed {
            parts.push("freed the model cache".to_owned());
        }
        if (self.width, self.height) != (requested_width, requested_height) {
            parts.push(format!(
                "reduced size to {}x{} (requested {requested_width}x{requested_height})",
                self.width, self.height
            ));
        }
        if self.tiled_vae_decode {
            parts.push("tiled VAE decode".to_owned());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("out of memory fallback: {}", parts.join(", "))
        }
    }
}

/// The size of smaller-rung `step` (1-based) for a request, aspect ratio kept.
fn smaller_size(requested_width: u32, requested_height: u32, step: u8) -> Option<(u32, u32)> {
    let (numerator, denominator) =
        *SMALLER_LONG_SIDE_FACTORS.get(usize::from(step).checked_sub(1)?)?;
    let long = requested_width.max(requested_height);
    let short = requested_width.min(requested_height);
    let new_long = (u64::from(long) * u64::from(numerator) / u64::from(denominator)) as u32 / 8 * 8;
    let new_long = new_long.max(MIN_SIDE_PX);
    let scaled_short =
        (u64::from(short) * u64::from(new_long) + u64::from(long) / 2) / u64::from(long.max(1));
    let new_short = ((scaled_short as u32 + 4) / 8 * 8).clamp(MIN_SIDE_PX.min(new_long), new_long);
    Some(if requested_width >= requested_height {
        (new_long, new_short)
    } else {
        (new_short, new_long)
    })
}

/// The rung after `current` for a request of `requested_width`×`requested_height`, or `None`
/// when the ladder is exhausted. Smaller rungs that would not shrink the image are skipped.
pub fn next_rung(
    requested_width: u32,
    requested_height: u32,
    current: &Attempt,
) -> Option<Attempt> {
    let smaller_from = |first_step: u8| {
        (first_step..=SMALLER_LONG_SIDE_FACTORS.len() as u8).find_map(|step| {
            let (width, height) = smaller_size(requested_width, requested_height, step)?;
            (u64::from(width) * u64::from(height)
                < u64::from(current.width) * u64::from(current.height))
            .then_some(Attempt {
                width,
                height,
                caches_freed: true,
                tiled_vae_decode: false,
                rung: Rung::Smaller(step),
            })
        })
    };
    let tiled = Attempt {
        tiled_vae_decode: true,
        caches_freed: true,
        rung: Rung::TiledVaeDecode,
        ..*current
    };
    match current.rung {
        Rung::AsRequested => {
            Some(Attempt { caches_freed: true, rung: Rung::FreeCaches, ..*current })
        }
        Rung::FreeCaches => smaller_from(1).or(Some(tiled)),
        Rung::Smaller(step) => smaller_from(step + 1).or(Some(tiled)),
        Rung::TiledVaeDecode => None,
    }
}

/// Every rung for a request, first try included.
pub fn ladder(requested_width: u32, requested_height: u32) -> Vec<Attempt> {
    let mut rungs = vec![Attempt::first(requested_width, requested_height)];
    while let Some(next) =
        rungs.last().and_then(|last| next_rung(requested_width, requested_height, last))
    {
        rungs.push(next);
    }
    rungs
}

/// No rung fits the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "out of memory: even {width}x{height} with freed caches and a tiled VAE decode needs an \
     estimated {needed_bytes} bytes, over the {budget_bytes}-byte budget"
)]
pub struct LadderExhausted {
    /// Width of the last rung.
    pub width: u32,
    /// Height of the last rung.
    pub height: u32,
    /// Its estimated need.
    pub needed_bytes: u64,
    /// The budget.
    pub budget_bytes: u64,
}

/// The first rung whose estimated need fits `budget_bytes`.
///
/// # Errors
/// [`LadderExhausted`] when none fits.
pub fn plan_within_budget(
    requested_width: u32,
    requested_height: u32,
    budget_bytes: u64,
    estimate_bytes: impl Fn(&Attempt) -> u64,
) -> Result<Attempt, LadderExhausted> {
    let mut last = None;
    for attempt in ladder(requested_width, requested_height) {
        let needed_bytes = estimate_bytes(&attempt);
        if needed_bytes <= budget_bytes {
            if attempt.rung != Rung::AsRequested {
                tracing::warn!(needed_bytes, budget_bytes, what = %attempt.describe(requested_width, requested_height), "estimated memory over budget");
            }
            return Ok(attempt);
        }
        last = Some((attempt, needed_bytes));
    }
    let (attempt, needed_bytes) =
        last.unwrap_or((Attempt::first(requested_width, requested_height), 0));
    Err(LadderExhausted {
        width: attempt.width,
        height: attempt.height,
        needed_bytes,
        budget_bytes,
    })
}

/// True when a backend error message is an allocation failure (CUDA, Metal, CPU).
pub fn is_out_of_memory(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["out of memory", "out_of_memory", "outofmemory", "failed to allocate", "memory allocation"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// Parameters of SDXL base (diffusers' `num_parameters()` of each component).
const UNET_PARAMS: u64 = 2_567_463_684;
const TEXT_ENCODER_PARAMS: u64 = 123_060_480;
const TEXT_ENCODER_2_PARAMS: u64 = 694_659_840;
const VAE_PARAMS: u64 = 83_653_863;

/// An SDXL memory need, split by what holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// UNet + text encoders in the chosen dtype, VAE in f32 (it is upcast).
    pub weights_bytes: u64,
    /// Peak UNet activations (CFG doubles the batch; attention scores materialised).
    pub unet_activation_bytes: u64,
    /// Peak VAE decode activations in f32 (tiled: one tile at a time).
    pub vae_decode_bytes: u64,
    /// Weights + the larger of the two activation peaks (they do not overlap).
    pub total_bytes: u64,
}

/// A coarse upper estimate of SDXL inference memory (not a measurement).
///
/// UNet peak: the skip connections and working buffers (~4000 channels-equivalent per latent
/// pixel) plus one 10-head attention score matrix at the 1/16 level, for `batch × 2` passes
/// when `cfg` guidance runs. VAE peak: three 256-channel f32 buffers at output resolution plus
/// the mid-block attention over all latent pixels, per image; tiled: the same for a
/// [`VAE_TILE_PX`] tile.
pub fn estimate_sdxl_bytes(
    width: u32,
    height: u32,
    batch: u32,
    dtype: candle_core::DType,
    with_cfg: bool,
    tiled_vae_decode: bool,
) -> MemoryEstimate {
    let element = dtype.size_in_bytes() as u64;
    let weights_bytes =
        (UNET_PARAMS + TEXT_ENCODER_PARAMS + TEXT_ENCODER_2_PARAMS) * element + VAE_PARAMS * 4;
    let passes = u64::from(batch.max(1)) * if with_cfg { 2 } else { 1 };
    let latent_px = u64::from(width / 8) * u64::from(height / 8);
    let tokens = u64::from(width / 16) * u64::from(height / 16);
    let unet_activation_bytes = passes * (latent_px * 4000 + 10 * tokens * tokens) * element;
    let (decode_w, decode_h) = if tiled_vae_decode {
        (width.min(VAE_TILE_PX), height.min(VAE_TILE_PX))
    } else {
        (width, height)
    };
    let decode_px = u64::from(decode_w) * u64::from(decode_h);
    let decode_latent_px = decode_px / 64;
    let vae_decode_bytes =
        u64::from(batch.max(1)) * (decode_px * 256 * 3 + decode_latent_px * decode_latent_px) * 4;
    MemoryEstimate {
        weights_bytes,
        unet_activation_bytes,
        vae_decode_bytes,
        total_bytes: weights_bytes + unet_activation_bytes.max(vae_decode_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn sizes(rungs: &[Attempt]) -> Vec<(u32, u32, Rung)> {
        rungs.iter().map(|a| (a.width, a.height, a.rung)).collect()
    }

    #[test]
    fn square_1024_follows_the_seed_ladder() {
        assert_eq!(
            sizes(&ladder(1024, 1024)),
            [
                (1024, 1024, Rung::AsRequested),
                (1024, 1024, Rung::FreeCaches),
                (768, 768, Rung::Smaller(1)),
                (576, 576, Rung::Smaller(2)),
                (512, 512, Rung::Smaller(3)),
                (512, 512, Rung::TiledVaeDecode),
            ]
        );
    }

    #[test]
    fn smaller_rungs_keep_aspect_and_multiples_of_8() {
        let rungs = ladder(832, 1216);
        assert_eq!(
            sizes(&rungs[2..5]),
            [
                (624, 912, Rung::Smaller(1)),
                (464, 680, Rung::Smaller(2)),
                (416, 608, Rung::Smaller(3))
            ]
        );
        for rung in &rungs {
            assert_eq!((rung.width % 8, rung.height % 8), (0, 0), "{rung:?}");
            let aspect = f64::from(rung.width) / f64::from(rung.height);
            assert!((aspect - 832.0 / 1216.0).abs() < 0.02, "{rung:?}");
        }
        assert_eq!(sizes(&ladder(64, 64)).len(), 3, "nothing smaller than 64: straight to tiling");
    }

    /// Budgets squeezed just enough to force each rung: the estimate of SDXL f16 at each
    /// attempt, plus 5 GB of other cached models until the caches are freed.
    #[test]
    fn each_rung_is_forced_by_a_small_enough_budget() {
        const CACHED_OTHER_MODELS: u64 = 5_000_000_000;
        let estimate = |a: &Attempt| {
            estimate_sdxl_bytes(a.width, a.height, 1, DType::F16, true, a.tiled_vae_decode)
                .total_bytes
                + if a.caches_freed { 0 } else { CACHED_OTHER_MODELS }
        };
        let rungs = ladder(1024, 1024);
        let needs: Vec<u64> = rungs.iter().map(estimate).collect();
        assert!(needs.windows(2).all(|w| w[1] < w[0]), "each rung must need less: {needs:?}");
        for (rung, need) in rungs.iter().zip(&needs) {
            assert_eq!(plan_within_budget(1024, 1024, *need, estimate).expect("fits"), *rung);
            if let Ok(chosen) = plan_within_budget(1024, 1024, need - 1, estimate) {
                assert_ne!(chosen, *rung, "one byte less must push past this rung");
            }
        }
        let exhausted = plan_within_budget(1024, 1024, needs[needs.len() - 1] - 1, estimate)
            .expect_err("none fits");
        assert_eq!((exhausted.width, exhausted.height), (512, 512));
        assert_eq!(
            rungs[3].describe(1024, 1024),
            "out of memory fallback: freed the model cache, reduced size to 576x576 (requested 1024x1024)"
        );
        assert_eq!(rungs[0].describe(1024, 1024), "");
        assert!(rungs[5].describe(1024, 1024).ends_with("tiled VAE decode"));
    }

    /// Public figures: SDXL fp16 at 1024² without memory optimisations needs roughly 10–13 GB
    /// of GPU memory (diffusers' SDXL docs and common reports); our estimate is an upper bound
    /// in that neighbourhood, and must scale the right way.
    #[test]
    fn sdxl_estimate_is_plausible_and_monotonic() {
        let base = estimate_sdxl_bytes(1024, 1024, 1, DType::F16, true, false);
        assert!((9_000_000_000..14_000_000_000).contains(&base.total_bytes), "{base:?}");
        assert!(
            estimate_sdxl_bytes(1024, 1024, 1, DType::F32, true, false).total_bytes
                > base.total_bytes
        );
        assert!(
            estimate_sdxl_bytes(1024, 1024, 2, DType::F16, true, false).total_bytes
                > base.total_bytes
        );
        assert!(
            estimate_sdxl_bytes(768, 768, 1, DType::F16, true, false).total_bytes
                < base.total_bytes
        );
        assert!(
            estimate_sdxl_bytes(1024, 1024, 1, DType::F16, true, true).vae_decode_bytes
                < base.vae_decode_bytes
        );
        assert!(
            estimate_sdxl_bytes(1024, 1024, 1, DType::F16, false, false).unet_activation_bytes
                < base.unet_activation_bytes
        );
    }

    #[test]
    fn recognises_allocation_failures() {
        assert!(is_out_of_memory("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"));
        assert!(is_out_of_memory("Metal error: failed to allocate buffer"));
        assert!(!is_out_of_memory("shape mismatch in matmul"));
    }
}
