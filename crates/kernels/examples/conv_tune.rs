//! Tuning aid (not a test): GFLOP/s of `PackedConv2d` on one shape for a few blockings, im2col
//! and Winograd (counted as the direct convolution's multiply-adds).
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
    let input: Vec<f32> = (0..batch * cin * h * w).map(|i| (i % 7) as f32 * 0.1).collect();
    let weight: Vec<f32> = (0..cout * shape.reduction()).map(|i| (i % 5) as f32 * 0.01).collect();
    let bias = vec![0.5f32; cout];
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
            println!(
                "{} {algorithm:?} mc {} kc {}: {:.1} ms, {:.0} GFLOP/s (direct-equivalent)",
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
