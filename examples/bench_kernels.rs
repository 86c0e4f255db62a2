//! Bench (not a test): GFLOP/s of our CPU conv2d kernel (`imagelab-kernels`, AVX-512 and AVX2
//! paths) against candle's conv2d and torch's (`tools/reference/bench_kernels.py`, run in the
//! same run when a Python is given), on SDXL's convolution shapes, plus GroupNorm+SiLU and an
//! sgemm 2048³ (candle's matmul, i.e. the `gemm` crate) for reference. Prints a Markdown table.
//! Ours runs as `Algorithm::Auto` (Winograd where it pays) and as im2col alone; GFLOP/s count
//! the direct convolution's multiply-adds for every column.
//!
//! ```text
//! cargo run --release --example bench_kernels -- [--python PATH] [--reps N] [--mc N --kc N]
//! ```

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};
use imagelab_kernels::conv::{Algorithm, Blocking, Conv2dShape, PackedConv2d};
use imagelab_kernels::isa::{self, Isa};
use imagelab_kernels::norm::{GroupNormSpec, group_norm};

/// (name, [batch, in, out, kernel, stride, padding, height, width]); the same list as
/// `tools/reference/bench_kernels.py`.
const CONVS: [(&str, [usize; 8]); 7] = [
    ("3x3 320->320 64x64 b2", [2, 320, 320, 3, 1, 1, 64, 64]),
    ("3x3 640->640 64x64 b2", [2, 640, 640, 3, 1, 1, 64, 64]),
    ("3x3 1280->1280 32x32 b2", [2, 1280, 1280, 3, 1, 1, 32, 32]),
    ("3x3 1280->1280 8x8 b2", [2, 1280, 1280, 3, 1, 1, 8, 8]),
    ("3x3 s2 640->640 64x64 b2", [2, 640, 640, 3, 2, 1, 64, 64]),
    ("1x1 640->1280 32x32 b2", [2, 640, 1280, 1, 1, 0, 32, 32]),
    ("3x3 4->320 128x128 b2", [2, 4, 320, 3, 1, 1, 128, 128]),
];

fn best<T>(reps: usize, mut call: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<f64> {
    call()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let started = Instant::now();
        call()?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn torch_times(python: &str, reps: usize) -> anyhow::Result<HashMap<String, f64>> {
    let output = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/reference/bench_kernels.py"))
        .args(["--reps", &reps.to_string()])
        .output()?;
    if !output.status.success() {
        anyhow::bail!("bench_kernels.py failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let mut times = HashMap::new();
    for line in String::from_utf8(output.stdout)?.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let name = value["name"].as_str().unwrap_or_default().to_owned();
        times.insert(name, value["seconds"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(times)
}

fn cell(flops: f64, seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "–".to_owned(), |s| format!("{:.0}", flops / s / 1e9))
}

#[allow(clippy::too_many_lines, reason = "one table, row by row")]
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let reps: usize = value("--reps").map_or(Ok(3), |t| t.parse())?;
    let mut blocking = Blocking::default();
    if let Some(mc) = value("--mc") {
        blocking.mc = mc.parse()?;
    }
    if let Some(kc) = value("--kc") {
        blocking.kc = kc.parse()?;
    }
    let torch = match value("--python") {
        Some(python) => Some(torch_times(python, reps)?),
        None => None,
    };
    let torch_time = |name: &str| torch.as_ref().and_then(|t| t.get(name).copied());
    let device = Device::Cpu;
    println!(
        "CPU kernels: {} rayon threads, detected ISA {}, blocking mc {} kc {}, torch threads {}\n",
        isa::threads(),
        Isa::detect().name(),
        blocking.mc,
        blocking.kc,
        torch_time("threads").map_or_else(|| "–".to_owned(), |t| t.to_string())
    );
    println!(
        "| kernel | ours AVX-512 | ours AVX2 | ours im2col AVX-512 | ours im2col AVX2 | candle 0.11 | torch |"
    );
    println!("|---|---|---|---|---|---|---|");

    let size = 2048;
    let lhs = Tensor::randn(0f32, 1.0, (size, size), &device)?;
    let rhs = Tensor::randn(0f32, 1.0, (size, size), &device)?;
    let gemm_s = best(reps, || Ok(lhs.matmul(&rhs)?))?;
    let flops = 2.0 * (size * size * size) as f64;
    println!(
        "| sgemm 2048³ (candle = gemm crate) | – | – | – | – | {} | {} |",
        cell(flops, Some(gemm_s)),
        cell(flops, torch_time("sgemm 2048^3"))
    );

    for (name, [batch, cin, cout, k, stride, padding, h, w]) in CONVS {
        let shape = Conv2dShape {
            in_channels: cin,
            out_channels: cout,
            kernel_h: k,
            kernel_w: k,
            stride,
            padding,
        };
        let flops = shape.flops(batch, h, w)?;
        let x = Tensor::randn(0f32, 1.0, (batch, cin, h, w), &device)?;
        let weight = (Tensor::randn(0f32, 1.0, (cout, cin, k, k), &device)? * 0.05)?;
        let bias = Tensor::randn(0f32, 1.0, cout, &device)?;
        let packed = PackedConv2d::new(
            shape,
            &weight.flatten_all()?.to_vec1::<f32>()?,
            Some(&bias.to_vec1::<f32>()?),
        )?
        .with_blocking(blocking);
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        let (oh, ow) = shape.output_size(h, w)?;
        let mut out = vec![0f32; batch * cout * oh * ow];
        let mut ours = |allow_avx512: bool, algorithm: Algorithm| -> anyhow::Result<Option<f64>> {
            isa::set_avx512_allowed(allow_avx512);
            if allow_avx512 && isa::current() != Isa::Avx512 {
                return Ok(None);
            }
            let conv = packed.clone().with_algorithm(algorithm);
            let seconds = best(reps, || Ok(conv.forward_into(&input, batch, h, w, &mut out)?))?;
            isa::set_avx512_allowed(true);
            Ok(Some(seconds))
        };
        // A throwaway round first: the first shape's first timings after the last shape's
        // buffers were freed ran up to 1.7x slower (8x8: the whole best-of-5), whichever
        // column came first.
        ours(true, Algorithm::Im2col)?;
        let avx512 = ours(true, Algorithm::Auto)?;
        let avx2 = ours(false, Algorithm::Auto)?;
        let im2col_avx512 = ours(true, Algorithm::Im2col)?;
        let im2col_avx2 = ours(false, Algorithm::Im2col)?;
        let config = Conv2dConfig { padding, stride, ..Conv2dConfig::default() };
        let candle_conv = Conv2d::new(weight, Some(bias), config);
        let candle = best(reps, || Ok(candle_conv.forward(&x)?))?;
        println!(
            "| conv {name} | {} | {} | {} | {} | {} | {} |",
            cell(flops, avx512),
            cell(flops, avx2),
            cell(flops, im2col_avx512),
            cell(flops, im2col_avx2),
            cell(flops, Some(candle)),
            cell(flops, torch_time(name))
        );
    }

    let (name, batch, channels, groups, plane_side) =
        ("groupnorm+silu 640 64x64 b2", 2, 640, 32, 64);
    let activations = Tensor::randn(0f32, 1.0, (batch, channels, plane_side, plane_side), &device)?;
    let gamma = Tensor::randn(0f32, 1.0, channels, &device)?;
    let beta = Tensor::randn(0f32, 1.0, channels, &device)?;
    let input = activations.flatten_all()?.to_vec1::<f32>()?;
    let (weight, bias) = (gamma.to_vec1::<f32>()?, beta.to_vec1::<f32>()?);
    let spec = GroupNormSpec { groups, eps: 1e-5, weight: &weight, bias: &bias, silu: true };
    let mut out = vec![0f32; input.len()];
    let ours = best(reps, || Ok(group_norm(&input, &mut out, plane_side * plane_side, spec)?))?;
    let candle_norm = candle_nn::GroupNorm::new(gamma, beta, channels, groups, 1e-5)?;
    let candle = best(reps, || Ok(candle_nn::ops::silu(&candle_norm.forward(&activations)?)?))?;
    let ms = |s: Option<f64>| s.map_or_else(|| "–".to_owned(), |s| format!("{:.2} ms", s * 1e3));
    println!(
        "| {name} (time) | {} | – | – | – | {} | {} |",
        ms(Some(ours)),
        ms(Some(candle)),
        ms(torch_time(name))
    );
    Ok(())
}
