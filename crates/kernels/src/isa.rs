//! Which SIMD instruction set the kernels use, detected once at run time.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The kernels' instruction sets, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust (auto-vectorised for the build's baseline).
    Portable,
    /// AVX2 with FMA (x86-64-v3).
    Avx2,
    /// AVX-512F (x86-64-v4).
    Avx512,
}

impl Isa {
    /// The name shown in logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512f",
        }
    }

    /// What this CPU supports, ignoring [`set_avx512_allowed`].
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}

static AVX512_ALLOWED: AtomicBool = AtomicBool::new(true);
/// 0: not detected yet; else `Isa as u8 + 1`.
static DETECTED: AtomicU8 = AtomicU8::new(0);

/// Lets (or stops) the kernels use AVX-512, e.g. to measure the AVX2 path on an AVX-512 machine.
/// Takes effect for the next kernel call.
pub fn set_avx512_allowed(allowed: bool) {
    AVX512_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// The instruction set the kernels use now: [`Isa::detect`], capped at AVX2 when
/// [`set_avx512_allowed`]`(false)` was called or the crate is built without `x86-v4`.
pub fn current() -> Isa {
    let detected = match DETECTED.load(Ordering::Relaxed) {
        0 => {
            let isa = Isa::detect();
            DETECTED.store(isa as u8 + 1, Ordering::Relaxed);
            isa
        }
        1 => Isa::Portable,
        2 => Isa::Avx2,
        _ => Isa::Avx512,
    };
    if detected == Isa::Avx512
        && (!cfg!(feature = "x86-v4") || !AVX512_ALLOWED.load(Ordering::Relaxed))
    {
        Isa::Avx2
    } else {
        detected
    }
}

/// Threads the kernels run on (rayon's global pool: `RAYON_NUM_THREADS`, else the CPUs).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
