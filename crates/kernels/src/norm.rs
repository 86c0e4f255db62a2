//! GroupNorm with an optional fused SiLU, on NCHW (or any `[batch][channels][spatial]`) `f32`.
//!
//! Per (image, group) block: one pass sums x and x² in `f64` (mean and variance), then one pass
//! writes
//! `y = (x − mean)·(γ/σ) + β`, and `y·sigmoid(y)` when fused with SiLU. Blocks run in parallel.

use rayon::prelude::*;

use crate::isa;
use crate::{Result, bail};

/// GroupNorm's parameters.
#[derive(Debug, Clone, Copy)]
pub struct GroupNormSpec<'a> {
    /// Groups (divides the channel count).
    pub groups: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Per-channel scale γ.
    pub weight: &'a [f32],
    /// Per-channel shift β.
    pub bias: &'a [f32],
    /// Apply SiLU (`y·sigmoid(y)`) to the result.
    pub silu: bool,
}

/// Normalises `input` (`[batch][channels][spatial]`, `channels` = `spec.weight.len()`) into
/// `output` (same layout).
///
/// # Errors
/// Lengths that do not match, or groups that do not divide the channels.
pub fn group_norm(
    input: &[f32],
    output: &mut [f32],
    spatial: usize,
    spec: GroupNormSpec,
) -> Result<()> {
    let channels = spec.weight.len();
    if spec.bias.len() != channels {
        return bail(format!(
            "group_norm: weight has {channels} channels, bias {}",
            spec.bias.len()
        ));
    }
    if spec.groups == 0 || !channels.is_multiple_of(spec.groups) {
        return bail(format!(
            "group_norm: {} groups do not divide {channels} channels",
            spec.groups
        ));
    }
    let image = channels * spatial;
    if image == 0 || !input.len().is_multiple_of(image) || output.len() != input.len() {
        return bail(format!(
            "group_norm: input has {} values, output {}, not a whole number of {channels}x{spatial} images",
            input.len(),
            output.len()
        ));
    }
    let per_group = channels / spec.groups;
    let block = per_group * spatial;
    let isa = isa::current();
    output.par_chunks_mut(block).zip(input.par_chunks(block)).enumerate().for_each(
        |(index, (out, x))| {
            let group = index % spec.groups;
            let channels = group * per_group..(group + 1) * per_group;
            let affine = Affine {
                weight: &spec.weight[channels.clone()],
                bias: &spec.bias[channels],
                eps: spec.eps,
                spatial,
                silu: spec.silu,
            };
            run_block(isa, x, out, &affine);
        },
    );
    Ok(())
}

struct Affine<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f64,
    spatial: usize,
    silu: bool,
}

isa::per_isa!(fn run_block(x: &[f32], out: &mut [f32], affine: &Affine) => block);

const LANES: usize = 16;

#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn block(x: &[f32], out: &mut [f32], affine: &Affine) {
    // One read for the statistics: Σx and Σx² in f64, whose 53 bits leave E[x²] − E[x]² exact
    // to far below f32's precision for any activation an f32 model holds.
    let n = x.len() as f64;
    let mut sums = [0f64; LANES];
    let mut squares = [0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let (mut tail, mut tail_squares) = (0f64, 0f64);
    for &v in chunks.remainder() {
        tail += f64::from(v);
        tail_squares += f64::from(v) * f64::from(v);
    }
    for chunk in chunks {
        for ((sum, square), &v) in sums.iter_mut().zip(&mut squares).zip(chunk) {
            let v = f64::from(v);
            *sum += v;
            *square += v * v;
        }
    }
    let mean = (sums.iter().sum::<f64>() + tail) / n;
    let variance = ((squares.iter().sum::<f64>() + tail_squares) / n - mean * mean).max(0.0);
    let inv_std = 1.0 / (variance + affine.eps).sqrt();
    #[allow(clippy::cast_possible_truncation, reason = "the normalisation runs in f32, as torch's")]
    let mean32 = mean as f32;
    for (c, (xc, oc)) in
        x.chunks_exact(affine.spatial).zip(out.chunks_exact_mut(affine.spatial)).enumerate()
    {
        #[allow(clippy::cast_possible_truncation, reason = "f32 scale, computed in f64")]
        let scale = (f64::from(affine.weight[c]) * inv_std) as f32;
        let shift = affine.bias[c];
        if affine.silu {
            for (o, &v) in oc.iter_mut().zip(xc) {
                let y = (v - mean32) * scale + shift;
                *o = y / (1.0 + exp(-y));
            }
        } else {
            for (o, &v) in oc.iter_mut().zip(xc) {
                *o = (v - mean32) * scale + shift;
            }
        }
    }
}

/// `e^x` in f32 (Cephes' polynomial after a reduction by ln 2; within 2 ulp on [−87, 88], 0 below,
/// about 2^128 above), written to vectorise.
#[allow(clippy::inline_always, reason = "inlined into each instruction set's loop")]
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-88.0, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    #[allow(clippy::cast_possible_wrap, reason = "bit patterns: the difference is n in −127..=127")]
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    #[allow(clippy::cast_sign_loss, reason = "exponent + 127 is in 0..=254")]
    let scale = f32::from_bits((exponent.wrapping_add(127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::set_avx512_allowed;

    fn values(count: usize, seed: u32) -> Vec<f32> {
        (0..count)
            .map(|i| {
                #[allow(clippy::cast_possible_truncation, reason = "test data")]
                let i = i as u32;
                let h = i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503));
                (h >> 8) as f32 / 16_777_216.0 * 6.0 - 2.0
            })
            .collect()
    }

    /// candle's and torch's definition, in f64.
    fn reference(input: &[f32], spatial: usize, spec: GroupNormSpec) -> Vec<f32> {
        let channels = spec.weight.len();
        let per_group = channels / spec.groups;
        let block = per_group * spatial;
        let mut out = Vec::with_capacity(input.len());
        for (index, x) in input.chunks(block).enumerate() {
            let group = index % spec.groups;
            let n = x.len() as f64;
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            for (i, &v) in x.iter().enumerate() {
                let c = group * per_group + i / spatial;
                let mut y = (f64::from(v) - mean) / (var + spec.eps).sqrt()
                    * f64::from(spec.weight[c])
                    + f64::from(spec.bias[c]);
                if spec.silu {
                    y /= 1.0 + (-y).exp();
                }
                #[allow(clippy::cast_possible_truncation, reason = "test reference")]
                out.push(y as f32);
            }
        }
        out
    }

    fn check(batch: usize, channels: usize, spatial: usize, groups: usize, silu: bool) {
        let mut input = values(batch * channels * spatial, 1);
        // An offset mean, as activations have, to exercise the centring.
        for v in &mut input {
            *v += 3.0;
        }
        let weight = values(channels, 2);
        let bias = values(channels, 3);
        let spec = GroupNormSpec { groups, eps: 1e-5, weight: &weight, bias: &bias, silu };
        let expected = reference(&input, spatial, spec);
        let mut got = vec![0f32; input.len()];
        group_norm(&input, &mut got, spatial, spec).unwrap();
        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (g - e).abs() <= 2e-6 * (1.0 + e.abs()),
                "b{batch} c{channels} s{spatial} g{groups} silu {silu} isa {}: out[{i}] = {g}, expected {e}",
                isa::current().name()
            );
        }
    }

    #[test]
    fn group_norm_with_and_without_silu() {
        for allow in [true, false] {
            set_avx512_allowed(allow);
            check(2, 64, 49, 32, true);
            check(1, 12, 17, 3, false);
            check(3, 6, 1, 6, true);
            check(1, 32, 1000, 32, true);
            check(2, 10, 33, 1, false);
        }
        set_avx512_allowed(true);
    }

    #[test]
    fn exp_is_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!((got - exact).abs() <= 3e-7 * exact, "exp({x}) = {got}, expected {exact}");
            x += 0.0137;
        }
        assert!(exp(-200.0).abs() < f32::MIN_POSITIVE);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn bad_arguments_are_errors() {
        let weight = [1.0; 6];
        let spec =
            GroupNormSpec { groups: 4, eps: 1e-5, weight: &weight, bias: &weight, silu: false };
        let mut out = [0.0; 12];
        assert!(group_norm(&[0.0; 12], &mut out, 2, spec).unwrap_err().0.contains("do not divide"));
        let spec = GroupNormSpec { groups: 3, ..spec };
        assert!(
            group_norm(&[0.0; 11], &mut out[..11], 2, spec).unwrap_err().0.contains("whole number")
        );
        let spec = GroupNormSpec { bias: &weight[..5], ..spec };
        assert!(group_norm(&[0.0; 12], &mut out, 2, spec).unwrap_err().0.contains("bias 5"));
    }
}
