//! Which SIMD instruction set the kernels use, detected once at run time and capped by
//! [`set_cap`] (the front ends' `IMAGELAB_CPU_ISA`, [`CAP_VAR`]: `avx512`, `avx2` or
//! `portable`), e.g. to run the AVX2 path on an AVX-512 machine.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The environment variable the front ends read into [`set_cap`]: `avx512`, `avx2` or
/// `portable` (a cap above what the CPU has changes nothing).
pub const CAP_VAR: &str = "IMAGELAB_CPU_ISA";

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

    /// An instruction set by name (`avx512`, `avx2`, `portable`, any case; also the names
    /// [`Isa::name`] shows); `None` for anything else.
    pub fn parse(text: &str) -> Option<Isa> {
        match text.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx512f" | "avx-512" => Some(Isa::Avx512),
            "avx2" | "avx2+fma" => Some(Isa::Avx2),
            "portable" => Some(Isa::Portable),
            _ => None,
        }
    }

    /// What this CPU supports, ignoring [`set_avx512_allowed`] and [`set_cap`].
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
/// 0: no cap; else `Isa as u8 + 1`.
static CAP: AtomicU8 = AtomicU8::new(0);

/// Caps the instruction set the kernels use (`None`: the best the CPU has). Takes effect for
/// the next kernel call; packed weights stay valid.
pub fn set_cap(cap: Option<Isa>) {
    CAP.store(cap.map_or(0, |isa| isa as u8 + 1), Ordering::Relaxed);
}

/// The cap [`set_cap`] set, if any.
pub fn cap() -> Option<Isa> {
    match CAP.load(Ordering::Relaxed) {
        1 => Some(Isa::Portable),
        2 => Some(Isa::Avx2),
        3 => Some(Isa::Avx512),
        _ => None,
    }
}

/// Lets (or stops) the kernels use AVX-512, e.g. to measure the AVX2 path on an AVX-512 machine.
/// Takes effect for the next kernel call.
pub fn set_avx512_allowed(allowed: bool) {
    AVX512_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// The instruction set the kernels use now: [`Isa::detect`], capped by [`set_cap`], and at AVX2
/// when [`set_avx512_allowed`]`(false)` was called. Every path is compiled into every build.
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
    let detected = cap().map_or(detected, |cap| detected.min(cap));
    if detected == Isa::Avx512 && !AVX512_ALLOWED.load(Ordering::Relaxed) {
        Isa::Avx2
    } else {
        detected
    }
}

/// Defines `fn $name(isa: Isa, args…)` that runs `$body(args…)` compiled for `isa`: the body
/// (an `#[inline(always)]` function) is inlined into one `#[target_feature]` copy per instruction
/// set, so the compiler vectorises its loops as wide as the CPU allows (the crate itself is built
/// for baseline x86-64). `isa` must come from [`current`], which reports only what the CPU has.
macro_rules! per_isa {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        $(#[$meta])*
        $vis fn $name(isa: $crate::isa::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn avx512($($arg: $ty),*) {
                $body($($arg),*);
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                $body($($arg),*);
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `isa` comes from `isa::current`, which reports AVX-512F only where the
                // CPU has it.
                $crate::isa::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, AVX2 and FMA.
                $crate::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                #[cfg(not(target_arch = "x86_64"))]
                $crate::isa::Isa::Avx512 | $crate::isa::Isa::Avx2 => $body($($arg),*),
                $crate::isa::Isa::Portable => $body($($arg),*),
            }
        }
    };
}
pub(crate) use per_isa;

/// Threads the kernels run on (rayon's global pool: `RAYON_NUM_THREADS`, else the CPUs).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_round_trip() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse(" AVX512 "), Some(Isa::Avx512));
        assert_eq!(Isa::parse("avx2"), Some(Isa::Avx2));
        assert_eq!(Isa::parse("sse4"), None);
        assert_eq!(Isa::parse(""), None);
    }
}
