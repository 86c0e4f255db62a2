//! GEGLU's element-wise step, `hidden · gelu(gate)` with the exact (erf) GELU that diffusers'
//! `GEGLU` uses, in one parallel pass written over `hidden`, compiled per instruction set.
//!
//! `erf` is `1 − erfc`, with erfc from the Chebyshev fit `t·exp(−x² + P(t))`, `t = 1/(1 + x/2)`
//! (fractional error below 1.2·10⁻⁷ for every x ≥ 0), and [`crate::norm::exp`]: erf to about
//! 3·10⁻⁷ in f32, so GELU to about 1.5·10⁻⁷·|x|, near f32's own rounding of the result.

use rayon::prelude::*;

use crate::isa;
use crate::norm::exp;
use crate::{Result, bail};

/// Elements per rayon task.
const PER_TASK: usize = 1 << 14;

/// The error function, to about 3·10⁻⁷ (absolute: the fit's 1.2·10⁻⁷ and f32 rounding), written
/// to vectorise.
#[allow(clippy::inline_always, reason = "inlined into each instruction set's loop")]
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77_f32;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_204;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_7;
    p = p * t - 1.265_512_2;
    let erfc = t * exp(p - z * z);
    (1.0 - erfc).copysign(x)
}

/// GELU with erf: `x·½·(1 + erf(x/√2))`.
#[allow(clippy::inline_always, reason = "inlined into each instruction set's loop")]
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `hidden[i] ·= gelu(gate[i])`, in parallel.
///
/// # Errors
/// Slices of different lengths.
pub fn mul_gelu(hidden: &mut [f32], gate: &[f32]) -> Result<()> {
    if hidden.len() != gate.len() {
        return bail(format!("mul_gelu: {} values and a gate of {}", hidden.len(), gate.len()));
    }
    let isa = isa::current();
    hidden
        .par_chunks_mut(PER_TASK)
        .zip(gate.par_chunks(PER_TASK))
        .for_each(|(hidden, gate)| run(isa, hidden, gate));
    Ok(())
}

isa::per_isa!(fn run(hidden: &mut [f32], gate: &[f32]) => block);

#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn block(hidden: &mut [f32], gate: &[f32]) {
    for (value, &g) in hidden.iter_mut().zip(gate) {
        *value *= gelu(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::set_avx512_allowed;

    /// erf by its Maclaurin series (|x| ≤ 3) or its asymptotic continued fraction, in f64.
    fn erf_reference(x: f64) -> f64 {
        let z = x.abs();
        let value = if z <= 3.0 {
            let (mut term, mut sum, mut n) = (z, z, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -z * z / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(z) = exp(−z²)/√π · 1/(z + 1/2/(z + 1/(z + 3/2/(z + …)))).
            let mut fraction = z;
            for k in (1..60).rev() {
                fraction = z + f64::from(k) / 2.0 / fraction;
            }
            1.0 - (-z * z).exp() / std::f64::consts::PI.sqrt() / fraction
        };
        value.copysign(x)
    }

    #[test]
    fn erf_and_gelu_match_the_series() {
        let mut x = -9.0f32;
        while x <= 9.0 {
            let exact = erf_reference(f64::from(x));
            assert!(
                (f64::from(erf(x)) - exact).abs() < 4e-7,
                "erf({x}) = {}, exact {exact}",
                erf(x)
            );
            let exact_gelu = f64::from(x) * 0.5 * (1.0 + erf_reference(f64::from(x) / 2f64.sqrt()));
            let got = f64::from(gelu(x));
            assert!(
                (got - exact_gelu).abs() < 3e-7 * (1.0 + f64::from(x).abs()),
                "gelu({x}) = {got}, exact {exact_gelu}"
            );
            x += 0.013;
        }
        assert!(
            (erf(f32::INFINITY) - 1.0).abs() <= 0.0 && (erf(f32::NEG_INFINITY) + 1.0).abs() <= 0.0
        );
        assert!(gelu(-100.0).abs() < 1e-30 && (gelu(100.0) - 100.0).abs() < 1e-4);
    }

    #[test]
    fn mul_gelu_on_each_isa_and_bad_lengths() {
        let gate: Vec<f32> = (0..40_000).map(|i| ((i as f32) * 0.37).sin() * 6.0).collect();
        let hidden: Vec<f32> = (0..40_000).map(|i| ((i as f32) * 0.11).cos()).collect();
        let mut runs = vec![];
        for allow in [true, false] {
            set_avx512_allowed(allow);
            let mut out = hidden.clone();
            mul_gelu(&mut out, &gate).unwrap();
            runs.push(out);
        }
        set_avx512_allowed(true);
        for out in &runs {
            for ((&o, &h), &g) in out.iter().zip(&hidden).zip(&gate) {
                let exact = f64::from(h)
                    * f64::from(g)
                    * 0.5
                    * (1.0 + erf_reference(f64::from(g) / 2f64.sqrt()));
                assert!((f64::from(o) - exact).abs() < 1e-6, "{h}·gelu({g}) = {o}, exact {exact}");
            }
        }
        assert!(mul_gelu(&mut [0.0; 3], &[0.0; 2]).unwrap_err().0.contains("gate of 2"));
    }
}
