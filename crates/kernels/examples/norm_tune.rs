//! Tuning aid (not a test): time of `group_norm` (+SiLU) on (2, 640, 64, 64), 32 groups.

use std::time::Instant;

use imagelab_kernels::isa;
use imagelab_kernels::norm::{GroupNormSpec, group_norm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (batch, channels, spatial) = (2, 640, 64 * 64);
    let input: Vec<f32> = (0..batch * channels * spatial).map(|i| (i % 13) as f32 * 0.3).collect();
    let weight = vec![1.1f32; channels];
    let bias = vec![0.1f32; channels];
    let mut out = vec![0f32; input.len()];
    for allow in [true, false] {
        isa::set_avx512_allowed(allow);
        for silu in [false, true] {
            let spec = GroupNormSpec { groups: 32, eps: 1e-5, weight: &weight, bias: &bias, silu };
            group_norm(&input, &mut out, spatial, spec)?;
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let started = Instant::now();
                group_norm(&input, &mut out, spatial, spec)?;
                best = best.min(started.elapsed().as_secs_f64());
            }
            println!("{} silu {silu}: {:.2} ms", isa::current().name(), best * 1e3);
        }
    }
    Ok(())
}
