//! Noise exactly as PyTorch's CPU generator makes it (REFERENCE §5), so a seed gives the noise
//! diffusers and ComfyUI give.

/// PyTorch's CPU generator (`torch.Generator("cpu").manual_seed(seed)`): MT19937 plus torch's
/// normal-sampling algorithm.
#[derive(Clone)]
pub struct TorchGenerator {
    state: [u32; 624],
    index: usize,
    /// torch's `next_double_normal_sample`: the second value of the last scalar Box–Muller
    /// pair, returned by the next scalar draw.
    cached_normal: Option<f64>,
}

impl std::fmt::Debug for TorchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchGenerator").field("index", &self.index).finish_non_exhaustive()
    }
}

impl TorchGenerator {
    /// Seeds the generator as `manual_seed(seed)` does (MT19937 takes the low 32 bits).
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; 624];
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the low 32 bits, as torch seeds mt19937"
        )]
        let low = seed as u32;
        state[0] = low;
        for i in 1..624 {
            let prev = state[i - 1];
            #[allow(clippy::cast_possible_truncation, reason = "i < 624")]
            let i32_ = i as u32;
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i32_);
        }
        Self { state, index: 624, cached_normal: None }
    }

    /// The next raw 32-bit output of MT19937.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// One float32 uniform in [0, 1): `(next_u32 & 0xFFFFFF) · 2⁻²⁴`.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `torch.randn(n, generator=g)` for float32, values in torch's order.
    /// (n < 16 follows torch's scalar path.)
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.scalar_normal()).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let mut start = 0;
        while start + 16 <= n {
            normal_fill_16(&mut data[start..start + 16]);
            start += 16;
        }
        if !n.is_multiple_of(16) {
            let tail = n - 16;
            for value in &mut data[tail..] {
                *value = self.uniform_f32();
            }
            normal_fill_16(&mut data[tail..]);
        }
        data
    }

    /// `torch.randn(shape, generator=g, dtype=float32)` as a tensor on `device` (drawn on the
    /// CPU, as diffusers' `randn_tensor` draws with a CPU generator, then moved).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn randn_tensor(
        &mut self,
        shape: &candle_core::Shape,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let values = self.randn(shape.elem_count());
        candle_core::Tensor::from_vec(values, shape.clone(), device)
    }

    /// torch's scalar normal (`at::normal_distribution<double>`): Box–Muller on two 53-bit
    /// uniforms, returning `r·cos θ` and keeping `r·sin θ` for the next scalar draw, as torch
    /// keeps it in the generator.
    fn scalar_normal(&mut self) -> f32 {
        let value = if let Some(cached) = self.cached_normal.take() {
            cached
        } else {
            let u1 = self.uniform_f64();
            let u2 = self.uniform_f64();
            let radius = (-2.0 * (-u2).ln_1p()).sqrt();
            let theta = 2.0 * std::f64::consts::PI * u1;
            self.cached_normal = Some(radius * theta.sin());
            radius * theta.cos()
        };
        #[allow(clippy::cast_possible_truncation, reason = "torch draws in f64 and rounds to f32")]
        let value = value as f32;
        value
    }

    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        let bits = (hi << 32) | lo;
        (bits & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
}

fn normal_fill_16(data: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f32::consts::PI * u2;
        data[j] = radius * theta.cos();
        data[j + 8] = radius * theta.sin();
    }
}
