//! One row of `softmax(scale · x)` in place, attention's step between its two products,
//! compiled per instruction set (the caller's crate is built for baseline x86-64, where the
//! same loop runs four lanes wide at best).
//!
//! Torch's order: `exp(scale·x − scale·max)`, the sum accumulated in 16 lanes then added up,
//! each value multiplied by the sum's inverse. The arithmetic is the same on every path (no
//! contraction into FMAs), so every instruction set gives the same bits.

use crate::isa;
use crate::norm::exp;

const LANES: usize = 16;

/// `row ← softmax(scale · row)`.
pub fn scaled_softmax_row(row: &mut [f32], scale: f32) {
    row_on(isa::current(), row, scale);
}

isa::per_isa!(fn row_on(row: &mut [f32], scale: f32) => row_portable);

#[allow(clippy::inline_always, reason = "inlined into each instruction set's copy")]
#[inline(always)]
fn row_portable(row: &mut [f32], scale: f32) {
    // The maximum in 16 lanes (a comparison, not `f32::max`, so that it vectorises).
    let mut highest = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in highest.iter_mut().zip(chunk) {
            if value > *lane {
                *lane = value;
            }
        }
    }
    let max = chunks.remainder().iter().chain(&highest).copied().fold(f32::NEG_INFINITY, f32::max);
    let shift = max * scale;
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (value, lane) in chunk.iter_mut().zip(&mut lanes) {
            let e = exp(*value * scale - shift);
            *value = e;
            *lane += e;
        }
    }
    let mut sum = 0f32;
    for value in chunks.into_remainder() {
        *value = exp(*value * scale - shift);
        sum += *value;
    }
    sum += lanes.iter().sum::<f32>();
    let inverse = 1.0 / sum;
    for value in row.iter_mut() {
        *value *= inverse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{on_each_isa, values};

    #[test]
    fn rows_match_the_definition_and_every_isa_gives_the_same_bits() {
        for (width, scale) in [(4096, 0.125f32), (77, 0.08), (15, 1.0), (1, 0.5), (33, 3.0)] {
            let input: Vec<f32> = values(width, width as u64).iter().map(|v| v * 20.0).collect();
            let mut want = vec![0f64; width];
            let max = input.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f64;
            for (w, &x) in want.iter_mut().zip(&input) {
                *w = (f64::from(scale) * f64::from(x - max)).exp();
                sum += *w;
            }
            let runs = std::cell::RefCell::new(Vec::new());
            on_each_isa(|| {
                let mut row = input.clone();
                scaled_softmax_row(&mut row, scale);
                for (i, (&got, &w)) in row.iter().zip(&want).enumerate() {
                    let w = w / sum;
                    assert!(
                        (f64::from(got) - w).abs() <= 2e-6 * w + 1e-12,
                        "{width}[{i}]: {got} vs {w}"
                    );
                }
                runs.borrow_mut().push(row);
            });
            assert!(
                runs.into_inner().windows(2).all(|pair| pair[0] == pair[1]),
                "width {width}: paths differ"
            );
        }
    }
}
