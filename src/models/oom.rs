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

/// How many "smaller" rungs there are.
#[allow(clippy::cast_possible_truncation, reason = "three factors")]
const SMALLER_RUNGS: u8 = SMALLER_LONG_SIDE_FACTORS.len() as u8;

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
    // At most the long side: fits in u32.
    let new_long = u32::try_from(u64::from(long) * u64::from(numerator) / u64::from(denominator))
        .unwrap_or(long)
        / 8
        * 8;
    let new_long = new_long.max(MIN_SIDE_PX);
    let scaled_short =
        (u64::from(short) * u64::from(new_long) + u64::from(long) / 2) / u64::from(long.max(1));
    // At most the new long side: fits in u32.
    let scaled_short = u32::try_from(scaled_short).unwrap_or(new_long);
    let new_short = ((scaled_short + 4) / 8 * 8).clamp(MIN_SIDE_PX.min(new_long), new_long);
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
        (first_step..=SMALLER_RUNGS).find_map(|step| {
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

/// The measures of a loaded pipeline that drive its activation memory, read from its configs
/// (the one memory estimate of the lab; the backend adds the weights it holds).
///
/// - UNet: per pass (×2 with CFG, ×images per call), latent pixels × 12.5·`unet_channels`
///   (the skip connections and working buffers: 4000 for SDXL's 320) plus one attention score
///   matrix, heads × tokens², at the first cross-attention level (SDXL: 10 heads at 1/2 of the
///   latent side), in the UNet's element size;
/// - VAE decode: output pixels × 6·`vae_channels` (768 for SDXL's 128) plus the mid-block
///   attention over all latent pixels, per image, in the VAE's element size; a tiled decode
///   needs one [`VAE_TILE_PX`]-class tile at a time;
/// - the peak is the larger of the two (they do not overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationShape {
    /// Pixels per latent pixel along a side.
    pub vae_scale: u64,
    /// UNet `block_out_channels[0]`.
    pub unet_channels: u64,
    /// Index of the first cross-attention down block (each level halves the side).
    pub attention_level: u32,
    /// Attention heads there.
    pub attention_heads: u64,
    /// Bytes per UNet element.
    pub unet_element_bytes: u64,
    /// VAE `block_out_channels[0]`.
    pub vae_channels: u64,
    /// Bytes per VAE element.
    pub vae_element_bytes: u64,
}

impl ActivationShape {
    /// SDXL base (its `unet/config.json` and `vae/config.json`) with the UNet in elements of
    /// `unet_element_bytes` and the VAE upcast to f32, as it runs in half precision.
    pub const fn sdxl_base(unet_element_bytes: u64) -> Self {
        Self {
            vae_scale: 8,
            unet_channels: 320,
            attention_level: 1,
            attention_heads: 10,
            unet_element_bytes,
            vae_channels: 128,
            vae_element_bytes: 4,
        }
    }

    /// The activation peak of `attempt` making `images` images per call, with tiles of
    /// `vae_tile_px` pixels for a tiled decode.
    pub fn peak_bytes(
        &self,
        attempt: &Attempt,
        with_cfg: bool,
        images: u32,
        vae_tile_px: u32,
    ) -> u64 {
        let scale = self.vae_scale.max(1);
        let images = u64::from(images.max(1));
        let (width, height) = (u64::from(attempt.width), u64::from(attempt.height));
        let latent_px = (width / scale) * (height / scale);
        let tokens = latent_px >> (2 * self.attention_level);
        let passes = images * if with_cfg { 2 } else { 1 };
        let unet_bytes = passes
            * (latent_px * self.unet_channels * 25 / 2 + self.attention_heads * tokens * tokens)
            * self.unet_element_bytes;
        let tile = u64::from(vae_tile_px);
        let (decode_w, decode_h) = if attempt.tiled_vae_decode {
            (width.min(tile), height.min(tile))
        } else {
            (width, height)
        };
        let decode_px = decode_w * decode_h;
        let decode_latent_px = decode_px / (scale * scale);
        let vae_bytes = images
            * (decode_px * 6 * self.vae_channels + decode_latent_px * decode_latent_px)
            * self.vae_element_bytes;
        unet_bytes.max(vae_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters of SDXL base (diffusers' `num_parameters()` of each component).
    const UNET_PARAMS: u64 = 2_567_463_684;
    const TEXT_ENCODER_PARAMS: u64 = 123_060_480;
    const TEXT_ENCODER_2_PARAMS: u64 = 694_659_840;
    const VAE_PARAMS: u64 = 83_653_863;

    /// SDXL base's weights: UNet and text encoders in elements of `element` bytes, the VAE in
    /// f32 (it is upcast).
    fn sdxl_weight_bytes(element: u64) -> u64 {
        (UNET_PARAMS + TEXT_ENCODER_PARAMS + TEXT_ENCODER_2_PARAMS) * element + VAE_PARAMS * 4
    }

    /// SDXL base's need: weights + the activation peak.
    fn sdxl_total(attempt: &Attempt, element: u64, with_cfg: bool, images: u32) -> u64 {
        sdxl_weight_bytes(element)
            + ActivationShape::sdxl_base(element).peak_bytes(attempt, with_cfg, images, VAE_TILE_PX)
    }

    fn at(width: u32, height: u32, tiled_vae_decode: bool) -> Attempt {
        Attempt { tiled_vae_decode, ..Attempt::first(width, height) }
    }

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
            sdxl_total(a, 2, true, 1) + if a.caches_freed { 0 } else { CACHED_OTHER_MODELS }
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
        let base = sdxl_total(&at(1024, 1024, false), 2, true, 1);
        assert!((9_000_000_000..14_000_000_000).contains(&base), "{base}");
        assert!(sdxl_total(&at(1024, 1024, false), 4, true, 1) > base, "f32 needs more");
        assert!(sdxl_total(&at(1024, 1024, false), 2, true, 2) > base, "two images need more");
        assert!(sdxl_total(&at(768, 768, false), 2, true, 1) < base);
        // Each peak alone: the VAE decode (no UNet), the UNet (no VAE).
        let shape = ActivationShape::sdxl_base(2);
        let vae_decode = |attempt: &Attempt| {
            ActivationShape { unet_element_bytes: 0, ..shape }.peak_bytes(
                attempt,
                true,
                1,
                VAE_TILE_PX,
            )
        };
        let unet = |attempt: &Attempt, with_cfg| {
            ActivationShape { vae_element_bytes: 0, ..shape }.peak_bytes(
                attempt,
                with_cfg,
                1,
                VAE_TILE_PX,
            )
        };
        assert!(vae_decode(&at(1024, 1024, true)) < vae_decode(&at(1024, 1024, false)));
        assert!(unet(&at(1024, 1024, false), false) < unet(&at(1024, 1024, false), true));
    }

    #[test]
    fn recognises_allocation_failures() {
        assert!(is_out_of_memory("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"));
        assert!(is_out_of_memory("Metal error: failed to allocate buffer"));
        assert!(!is_out_of_memory("shape mismatch in matmul"));
    }
}
