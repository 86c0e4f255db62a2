//! `TorchGenerator` against `torch.randn(n, generator=torch.Generator().manual_seed(seed))`
//! (REFERENCE §5). Reference: tests/fixtures/schedulers/rng.json, written by
//! `tools/reference/make_scheduler_refs.py` with torch 2.15 on x86-64.

use imagelab::diffusion::rng::TorchGenerator;
use serde_json::Value;

use crate::util::repo_root;

fn reference() -> Value {
    let path = repo_root().join("tests/fixtures/schedulers/rng.json");
    serde_json::from_str(&fs_err::read_to_string(path).expect("rng.json")).expect("json")
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number")).collect()
}

/// torch's n ≥ 16 path computes log/cos/sin in float32 (with AVX2, through Sleef's vectorised
/// functions); Rust uses libm's. Measured on 6 seeds (two above 2³²) × lengths 16…40, 100 and
/// 65 536: at most 2.4e-7 absolute (one float32 ulp of a value in [2, 4)); the scalar path
/// (n < 16) is bit-identical. 1e-6 leaves headroom for other CPUs while any wrong draw order
/// changes values by O(1).
const VECTOR_PATH_TOLERANCE: f64 = 1e-6;

#[test]
fn randn_matches_torch_for_many_lengths_and_seeds() {
    let reference = reference();
    let mut worst_vector = 0.0f64;
    let mut worst_scalar = 0.0f64;
    for entry in reference["single"].as_array().expect("array") {
        let seed = entry["seed"].as_u64().expect("seed");
        let n = entry["n"].as_u64().expect("n") as usize;
        let ours = TorchGenerator::new(seed).randn(n);
        assert_eq!(ours.len(), n);
        let expected = floats(&entry["values"]);
        let stride = entry["sample_every"].as_u64().map_or(1, |s| s as usize);
        let mut compare = |index: usize, want: f64| {
            let error = (f64::from(ours[index]) - want).abs();
            if n < 16 {
                worst_scalar = worst_scalar.max(error);
                // float64 Box–Muller rounded to float32 on both sides: identical. (The JSON
                // value is the float32 widened; serde_json may parse it one float64 ulp off,
                // so compare as float32.)
                let want32 = want as f32;
                assert!(
                    ours[index] == want32,
                    "seed {seed} n {n} [{index}]: {} vs {want}",
                    ours[index]
                );
            } else {
                worst_vector = worst_vector.max(error);
                assert!(
                    error <= VECTOR_PATH_TOLERANCE,
                    "seed {seed} n {n} [{index}]: {} vs torch {want}",
                    ours[index]
                );
            }
        };
        for (k, want) in expected.iter().enumerate() {
            compare(k * stride, *want);
        }
        if let Some(tail) = entry.get("tail") {
            let tail = floats(tail);
            for (k, want) in tail.iter().enumerate() {
                compare(n - tail.len() + k, *want);
            }
            let sum: f64 = ours.iter().map(|v| f64::from(*v)).sum();
            let want = entry["sum"].as_f64().expect("sum");
            assert!((sum - want).abs() < 1e-2, "seed {seed} n {n}: sum {sum} vs {want}");
        }
    }
    eprintln!("randn: worst scalar-path error {worst_scalar:e}, vector-path {worst_vector:e}");
}

#[test]
fn consecutive_small_draws_share_torchs_cached_normal() {
    let reference = reference();
    let consecutive = &reference["consecutive"];
    let mut generator = TorchGenerator::new(consecutive["seed"].as_u64().expect("seed"));
    for (draw, want) in consecutive["values"].as_array().expect("array").iter().enumerate() {
        let want = floats(want);
        let ours = generator.randn(want.len());
        for (a, b) in ours.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() <= VECTOR_PATH_TOLERANCE,
                "draw {draw}: {ours:?} vs torch {want:?}"
            );
        }
    }
}
