//! The prompt generator's random numbers, specified here so that the same template file and
//! `--seed` give the same jobs on any machine and with any crate version.
//!
//! - Seeding: `SplitMix64` (Steele, Lea, Flood 2014; the reference code of Vigna's
//!   `splitmix64.c`): `x += 0x9E3779B97F4A7C15`, then `z = (x ^ x>>30) · 0xBF58476D1CE4E5B9`,
//!   `z = (z ^ z>>27) · 0x94D049BB133111EB`, output `z ^ z>>31`.
//! - Generator: xoshiro256** 1.0 (Blackman, Vigna 2018), its four words the first four
//!   `SplitMix64` outputs of the seed.
//! - Job `n` of run seed `s` uses its own generator seeded with `s ^ splitmix64_mix(n)`, so job
//!   `n` is the same whether 10 or 10 000 jobs are made, and in whichever order GPUs take them.
//! - Integers below `n`: Lemire's multiply-shift with rejection (unbiased); `u32`: the upper 32
//!   bits; floats in [0, 1): the upper 53 bits · 2⁻⁵³; weighted picks walk the cumulative sum
//!   of the weights in file order (IEEE-754 double arithmetic, the same everywhere).

/// The `SplitMix64` finaliser: a bijective mix of 64 bits.
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `SplitMix64`: a 64-bit counter through [`splitmix64_mix`].
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64_mix(self.state)
    }
}

/// xoshiro256**: the generator every draw uses.
#[derive(Debug, Clone)]
pub struct Prng {
    s: [u64; 4],
}

impl Prng {
    /// Seeded from four `SplitMix64` outputs of `seed` (never the all-zero state).
    pub fn from_seed(seed: u64) -> Self {
        let mut init = SplitMix64::new(seed);
        Self { s: [init.next_u64(), init.next_u64(), init.next_u64(), init.next_u64()] }
    }

    /// The generator of job `job` of the run seeded `run_seed`.
    pub fn for_job(run_seed: u64, job: u64) -> Self {
        Self::from_seed(run_seed ^ splitmix64_mix(job))
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// The upper 32 bits of the next output.
    pub fn next_u32(&mut self) -> u32 {
        u32::try_from(self.next_u64() >> 32).unwrap_or(u32::MAX)
    }

    /// A float in [0, 1) from the upper 53 bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An integer in `0..n` (Lemire's method with rejection); `n` = 0 gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            // The low and high halves of a 128-bit product: both fit in 64 bits by construction.
            let low = u64::try_from(product & u128::from(u64::MAX)).unwrap_or(u64::MAX);
            if low >= threshold {
                return u64::try_from(product >> 64).unwrap_or(u64::MAX);
            }
        }
    }

    /// An index into `weights` with probability proportional to its weight (weights are
    /// positive and finite; checked when the template file is read). One draw.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let target = self.unit_f64() * total;
        let mut cumulative = 0.0;
        for (index, weight) in weights.iter().enumerate() {
            cumulative += weight;
            if target < cumulative {
                return index;
            }
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SplitMix64` seeded with 0: the published first outputs (Vigna's reference code; the
    /// values also quoted by the xoshiro and PCG test suites).
    #[test]
    fn splitmix64_matches_the_reference() {
        let mut stream = SplitMix64::new(0);
        assert_eq!(stream.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(stream.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(stream.next_u64(), 0x06C4_5D18_8009_454F);
    }

    /// xoshiro256** from the state {1, 2, 3, 4}: the reference C code's first outputs.
    #[test]
    fn xoshiro256_star_star_matches_the_reference() {
        let mut prng = Prng { s: [1, 2, 3, 4] };
        let first: Vec<u64> = (0..4).map(|_| prng.next_u64()).collect();
        assert_eq!(first, [11_520, 0, 1_509_978_240, 1_215_971_899_390_074_240]);
    }

    #[test]
    fn jobs_are_independent_and_repeatable() {
        let a: Vec<u64> = (0..3).map(|_| Prng::for_job(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Prng::for_job(7, 1).next_u64(), Prng::for_job(7, 2).next_u64());
        assert_ne!(Prng::for_job(7, 1).next_u64(), Prng::for_job(8, 1).next_u64());
    }

    #[test]
    fn below_and_weighted_stay_in_range_and_follow_weights() {
        let mut prng = Prng::from_seed(42);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[prng.weighted(&[1.0, 2.0, 3.0])] += 1;
        }
        // Expected 5 000 / 10 000 / 15 000; 5 standard deviations ≈ 330.
        for (count, expected) in counts.iter().zip([5_000.0, 10_000.0, 15_000.0]) {
            assert!((f64::from(*count) - expected).abs() < 330.0, "{counts:?}");
        }
        assert!((0..1000).all(|_| prng.below(7) < 7));
        assert_eq!(prng.below(1), 0);
        assert!((0..1000).map(|_| prng.unit_f64()).all(|u| (0.0..1.0).contains(&u)));
    }
}
