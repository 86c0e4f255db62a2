//! imagelab's CPU kernels, on plain `f32` slices (no tensor library):
//!
//! - [`conv::PackedConv2d`]: a 2-D convolution (NCHW in and out, like candle and torch) as a
//!   blocked im2col: tiles of output positions are packed straight into the micro-kernel's panels
//!   (no full im2col buffer), the weights are packed once at load time, the bias is added in the
//!   epilogue, and the output tiles run in parallel on rayon; large 3×3 stride-1 convolutions
//!   run as Winograd F(2×2, 3×3) on the same micro-kernel.
//! - [`norm::group_norm`]: GroupNorm with an optional fused SiLU, statistics in `f64`, one pass
//!   over memory for the output.
//! - [`gemm::PackedMatrix`]: a matrix product with the right-hand side (a linear layer's weight)
//!   packed once, on the same micro-kernel as the convolution.
//! - [`activation::mul_gelu`]: GEGLU's `hidden · gelu(gate)` in one pass.
//!
//! The instruction set is chosen at run time ([`isa::Isa`]): AVX-512, AVX2+FMA, or portable Rust.

pub mod activation;
pub mod conv;
pub mod gemm;
pub mod isa;
mod micro;
pub mod norm;
pub mod softmax;
mod winograd;

pub use micro::zeroed;
#[cfg(test)]
mod testing;

use std::fmt;

/// Bad arguments to a kernel (sizes that do not match), caught before any work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// Kernel result.
pub type Result<T> = std::result::Result<T, KernelError>;

fn bail<T>(message: String) -> Result<T> {
    Err(KernelError(message))
}
