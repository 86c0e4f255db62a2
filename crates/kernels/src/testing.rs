//! Helpers the kernels' unit tests share.

use crate::isa::{Isa, set_avx512_allowed};

/// Deterministic values in [−1, 1).
pub fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            #[allow(clippy::cast_possible_truncation, reason = "24 random bits")]
            let bits = (state >> 40) as u32;
            bits as f32 / 8_388_608.0 - 1.0
        })
        .collect()
}

/// Every case on every instruction set this CPU has (AVX-512, then AVX2, through the switch).
pub fn on_each_isa(cases: impl Fn()) {
    cases();
    if Isa::detect() == Isa::Avx512 {
        set_avx512_allowed(false);
        cases();
        set_avx512_allowed(true);
    }
}
