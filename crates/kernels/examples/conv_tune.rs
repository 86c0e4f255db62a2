//! Tuning aid (not a test): GFLOP/s of `PackedConv2d` on one shape for a few blockings, im2col
//! and Winograd (counted as the direct convolution's multiply-adds), and each one's relative
//! L2 error against the f64 definition on 2000 sampled outputs (random inputs and weights).
//!
//! ```text
//! cargo run --release -p imagelab-kernels --example conv_tune -- BATCH CIN COUT K STRIDE PAD H W [MC KC]...
//! ```

use std::time::Instant;

use imagelab_kernels::conv::{Algorithm, Blocking, Conv2dShape, PackedConv2d};
use imagelab_kernels::isa;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [batch, cin, cout, k, stride, padding, h, w, ref blockings @ ..] = args[..] else {
        return Err("usage: conv_tune BATCH CIN COUT K STRIDE PAD H W [MC KC]...".into());
    };
    let shape = Conv2dShape {
        in_channels: cin,
        out_channels: cout,
        kernel_h: k,
        kernel_w: k,
        stride,
        padding,
    };
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / 8_388_608.0 - 1.0
    };
    let input: Vec<f32> = (0..batch * cin * h * w).map(|_| uniform()).collect();
    // Weights at the scale of a trained layer's (≈ 1/√fan-in), so outputs stay O(1).
    let scale = 1.0 / (shape.reduction() as f32).sqrt();
    let weight: Vec<f32> = (0..cout * shape.reduction()).map(|_| uniform() * scale).collect();
    let bias: Vec<f32> = (0..cout).map(|_| uniform() * 0.1).collect();
    let flops = shape.flops(batch, h, w)?;
    let mut list: Vec<Blocking> =
        blockings.chunks_exact(2).map(|p| Blocking { mc: p[0], kc: p[1] }).collect();
    if list.is_empty() {
        list.push(Blocking::default());
    }
    let (oh, ow) = shape.output_size(h, w)?;
    let mut out = vec![0f32; batch * cout * oh * ow];
    for allow in [true, false] {
        isa::set_avx512_allowed(allow);
        for (&blocking, algorithm) in
            list.iter().flat_map(|b| [Algorithm::Im2col, Algorithm::Winograd].map(|a| (b, a)))
        {
            let conv = PackedConv2d::new(shape, &weight, Some(&bias))?
                .with_blocking(blocking)
                .with_algorithm(algorithm);
            conv.forward_into(&input, batch, h, w, &mut out)?;
            let mut best = f64::INFINITY;
            for _ in 0..10 {
                let started = Instant::now();
                conv.forward_into(&input, batch, h, w, &mut out)?;
                best = best.min(started.elapsed().as_secs_f64());
            }
            let error = sampled_error(shape, (batch, h, w), &input, &weight, &bias, &out)?;
            println!(
                "{} {algorithm:?} mc {} kc {}: {:.1} ms, {:.0} GFLOP/s (direct-equivalent), \
                 rel L2 vs f64 {error:.1e}",
                isa::current().name(),
                blocking.mc,
                blocking.kc,
                best * 1e3,
                flops / best / 1e9
            );
        }
    }
    Ok(())
}

/// Relative L2 error of `out` against the f64 definition, on 2000 outputs spread over it.
fn sampled_error(
    shape: Conv2dShape,
    (batch, h, w): (usize, usize, usize),
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &[f32],
) -> Result<f64, Box<dyn std::error::Error>> {
    let (oh, ow) = shape.output_size(h, w)?;
    let (cin, cout, k) = (shape.in_channels, shape.out_channels, shape.kernel_h);
    let (mut err, mut norm) = (0f64, 0f64);
    let total = batch * cout * oh * ow;
    for sample in 0..2000usize.min(total) {
        let at = sample * 7919 % total;
        let (b, rest) = (at / (cout * oh * ow), at % (cout * oh * ow));
        let (co, p) = (rest / (oh * ow), rest % (oh * ow));
        let (oy, ox) = (p / ow, p % ow);
        let mut sum = f64::from(bias[co]);
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    let iy = (oy * shape.stride + ky).checked_sub(shape.padding);
                    let ix = (ox * shape.stride + kx).checked_sub(shape.padding);
                    let (Some(iy), Some(ix)) = (iy, ix) else { continue };
                    if iy >= h || ix >= w {
                        continue;
                    }
                    let x = input[((b * cin + ci) * h + iy) * w + ix];
                    let g = weight[((co * cin + ci) * k + ky) * k + kx];
                    sum += f64::from(x) * f64::from(g);
                }
            }
        }
        err += (f64::from(out[at]) - sum).powi(2);
        norm += sum * sum;
    }
    Ok((err / norm.max(1e-300)).sqrt())
}
