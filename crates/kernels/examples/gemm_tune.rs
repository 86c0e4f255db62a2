//! Tuning aid (not a test): GFLOP/s of `PackedMatrix::matmul_into` against the `gemm` crate (what
//! candle's CPU matmul calls) on one linear-layer shape, both instruction sets of ours.
//!
//! ```text
//! cargo run --release -p imagelab-kernels --example gemm_tune -- M K N [MC KC]...
//! ```

use std::time::Instant;

use imagelab_kernels::gemm::{Blocking, PackedMatrix};
use imagelab_kernels::isa;

fn best(mut call: impl FnMut()) -> f64 {
    call();
    let mut best = f64::INFINITY;
    for _ in 0..12 {
        let started = Instant::now();
        call();
        best = best.min(started.elapsed().as_secs_f64());
    }
    best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [m, k, n, ref blockings @ ..] = args[..] else {
        return Err("usage: gemm_tune M K N [MC KC]...".into());
    };
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let weight: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.01).collect();
    let bias = vec![0.5f32; n];
    let flops = 2.0 * (m * n * k) as f64;
    let mut list: Vec<Blocking> =
        blockings.chunks_exact(2).map(|p| Blocking { mc: p[0], kc: p[1] }).collect();
    if list.is_empty() {
        list.push(Blocking::default());
    }
    let mut c = vec![0f32; m * n];
    // (pack with AVX-512 allowed, run with it allowed): 64-wide panels with AVX-512 kernels,
    // 16-wide panels with AVX-512 kernels, 16-wide with AVX2 ones.
    for (pack_wide, run_avx512) in [(true, true), (false, true), (false, false)] {
        for &blocking in &list {
            isa::set_avx512_allowed(pack_wide);
            let packed =
                PackedMatrix::from_linear(&weight, n, k, Some(&bias))?.with_blocking(blocking);
            isa::set_avx512_allowed(run_avx512);
            let seconds = best(|| packed.matmul_into(&a, m, &mut c).expect("sizes match"));
            println!(
                "ours {} ({}-wide panels) mc {} kc {}: {:.2} ms, {:.0} GFLOP/s",
                isa::current().name(),
                if pack_wide { 64 } else { 16 },
                blocking.mc,
                blocking.kc,
                seconds * 1e3,
                flops / seconds / 1e9
            );
        }
    }
    // The gemm crate with the weight stored (k, n) row-major, as `layers::Dense` gives it.
    let mut b = vec![0f32; k * n];
    for j in 0..n {
        for kk in 0..k {
            b[kk * n + j] = weight[j * k + kk];
        }
    }
    let threads = rayon::current_num_threads();
    let seconds = best(|| {
        // SAFETY: the slices hold m×k, k×n and m×n row-major values, as the strides say.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n.cast_signed(),
                false,
                a.as_ptr(),
                1,
                k.cast_signed(),
                b.as_ptr(),
                1,
                n.cast_signed(),
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            );
        }
    });
    println!(
        "gemm crate (x86-v4 feature: {}): {:.2} ms, {:.0} GFLOP/s",
        cfg!(feature = "x86-v4"),
        seconds * 1e3,
        flops / seconds / 1e9
    );
    Ok(())
}
