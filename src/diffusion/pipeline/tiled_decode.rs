//! The VAE decode in overlapping tiles: the out-of-memory ladder's last rung, bounding the
//! VAE's peak memory by one tile.

use candle_core::{Device, Tensor};

use super::DiffusionPipeline;
use crate::diffusion::error::{DiffusionError, Result};

impl DiffusionPipeline {
    /// [`Self::decode`] in overlapping tiles, to bound the VAE's peak memory by a tile.
    ///
    /// Latents (B, C, h, w) are cut into `tile_latent_px`² tiles that overlap their neighbours
    /// by `overlap` latent pixels (the last tile of a row or column is moved back to end at the
    /// edge, overlapping more); each tile is decoded alone and the overlaps are cross-faded with
    /// linear weights (in the spirit of diffusers' `tiled_decode`). The result is close to, not
    /// equal to, the full decode: the VAE's GroupNorms take their statistics over each tile and
    /// its mid-block attention sees only the tile. Latents that fit in one tile decode whole.
    ///
    /// # Errors
    /// `overlap >= tile_latent_px` or a zero tile ([`DiffusionError::InvalidRequest`]); tensor
    /// errors.
    pub fn decode_tiled(
        &self,
        latents: &Tensor,
        tile_latent_px: usize,
        overlap: usize,
    ) -> Result<Tensor> {
        if tile_latent_px == 0 || overlap >= tile_latent_px {
            return Err(DiffusionError::InvalidRequest(format!(
                "tiled VAE decode: overlap {overlap} must be smaller than the tile \
                 {tile_latent_px} (latent pixels)"
            )));
        }
        let (batch, _, latent_h, latent_w) = latents.dims4()?;
        if latent_h <= tile_latent_px && latent_w <= tile_latent_px {
            return self.decode(latents);
        }
        let scale = self.vae_scale_factor();
        let (height, width) = (latent_h * scale, latent_w * scale);
        let rows = tile_spans(latent_h, tile_latent_px, overlap);
        let columns = tile_spans(latent_w, tile_latent_px, overlap);
        let channels = self.vae.config().out_channels;
        let plane = height * width;
        let mut sum = vec![0f32; batch * channels * plane];
        let mut weight_sum = vec![0f32; plane];
        let scaled = (latents / self.vae.config().scaling_factor)?;
        for (row_index, &(top, tile_h)) in rows.iter().enumerate() {
            let weights_y = blend_weights(&rows, row_index, scale);
            for (column_index, &(left, tile_w)) in columns.iter().enumerate() {
                let weights_x = blend_weights(&columns, column_index, scale);
                let tile = scaled.narrow(2, top, tile_h)?.narrow(3, left, tile_w)?;
                let decoded = self
                    .vae_decode(&tile)?
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let (pixels_h, pixels_w) = (tile_h * scale, tile_w * scale);
                let (origin_y, origin_x) = (top * scale, left * scale);
                for (y, weight_y) in weights_y.iter().enumerate() {
                    for (x, weight_x) in weights_x.iter().enumerate() {
                        let weight = weight_y * weight_x;
                        let target = (origin_y + y) * width + origin_x + x;
                        weight_sum[target] += weight;
                        for image in 0..batch * channels {
                            sum[image * plane + target] +=
                                weight * decoded[(image * pixels_h + y) * pixels_w + x];
                        }
                    }
                }
            }
        }
        for (index, value) in sum.iter_mut().enumerate() {
            *value /= weight_sum[index % plane].max(f32::MIN_POSITIVE);
        }
        let decoded = Tensor::from_vec(sum, (batch, channels, height, width), &Device::Cpu)?;
        Ok(((decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }
}

/// Tiles along one axis of `length` latent pixels: (start, length) pairs, each `tile` long
/// (or the whole axis when shorter), consecutive ones overlapping by at least `overlap`.
fn tile_spans(length: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    if length <= tile {
        return vec![(0, length)];
    }
    let stride = tile - overlap;
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        if start + tile >= length {
            spans.push((length - tile, tile));
            return spans;
        }
        spans.push((start, tile));
        start += stride;
    }
}

/// Per-pixel blend weights of tile `index` of `spans` (latent units, `scale` pixels each):
/// a linear ramp from 0 to 1 across each overlap with a neighbouring tile, 1 elsewhere. Where
/// two tiles overlap their ramps sum to 1: a linear cross-fade.
fn blend_weights(spans: &[(usize, usize)], index: usize, scale: usize) -> Vec<f32> {
    let (start, length) = spans[index];
    let end = start + length;
    let before = index.checked_sub(1).and_then(|previous| spans.get(previous)).map_or(
        0,
        |&(previous_start, previous_length)| {
            (previous_start + previous_length).saturating_sub(start) * scale
        },
    );
    let after =
        spans.get(index + 1).map_or(0, |&(next_start, _)| end.saturating_sub(next_start) * scale);
    let pixels = length * scale;
    (0..pixels)
        .map(|pixel| {
            let ramp = |distance: usize, overlap: usize| {
                if overlap == 0 { 1.0 } else { ((distance as f32 + 0.5) / overlap as f32).min(1.0) }
            };
            ramp(pixel, before) * ramp(pixels - 1 - pixel, after)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_and_overlaps_cross_fade_to_one() {
        assert_eq!(tile_spans(8, 16, 4), [(0, 8)]);
        assert_eq!(tile_spans(32, 16, 4), [(0, 16), (12, 16), (16, 16)]);
        assert_eq!(tile_spans(28, 16, 4), [(0, 16), (12, 16)]);
        let spans = tile_spans(40, 16, 4);
        assert_eq!(spans.last(), Some(&(24, 16)));
        let scale = 2;
        let mut total = vec![0f32; 40 * scale];
        for index in 0..spans.len() {
            for (offset, weight) in blend_weights(&spans, index, scale).iter().enumerate() {
                total[spans[index].0 * scale + offset] += weight;
            }
        }
        assert!(total.iter().all(|sum| (sum - 1.0).abs() < 1e-5), "{total:?}");
    }
}
