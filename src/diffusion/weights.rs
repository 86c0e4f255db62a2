//! Weights: `.safetensors` only, memory-mapped (the one audited `unsafe` of the crate), and the
//! choice of file within a component folder (`*.fp16.safetensors` on GPU when present).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::error::{DiffusionError, Result};

/// The weights file of a diffusers component folder: `<stem>.fp16.safetensors` when
/// `prefer_fp16` and it exists, else `<stem>.safetensors`. Pickled `.bin` files are never
/// considered.
///
/// # Errors
/// Neither file exists (the message names both).
pub fn component_weights(folder: &Path, stem: &str, prefer_fp16: bool) -> Result<PathBuf> {
    let full = folder.join(format!("{stem}.safetensors"));
    let half = folder.join(format!("{stem}.fp16.safetensors"));
    let candidates: &[&PathBuf] = if prefer_fp16 { &[&half, &full] } else { &[&full, &half] };
    for candidate in candidates {
        if candidate.is_file() {
            return Ok((*candidate).clone());
        }
    }
    Err(DiffusionError::config(
        "weights",
        format!("no {stem}.safetensors or {stem}.fp16.safetensors (only .safetensors are loaded)"),
        folder,
    ))
}

/// A `VarBuilder` over memory-mapped safetensors files, converting to `dtype` on `device`.
///
/// # Errors
/// Unreadable or malformed files.
#[allow(unsafe_code)]
pub fn mmap_var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    for file in files {
        if file.extension().and_then(|ext| ext.to_str()) != Some("safetensors") {
            return Err(DiffusionError::config(
                "weights",
                "only .safetensors files are loaded",
                file,
            ));
        }
    }
    // SAFETY: the files are mapped read-only; safetensors headers are validated by candle
    // before any tensor is read. The mapping is undefined behaviour only if another process
    // truncates or rewrites a model file while it is loaded, which model folders never expect.
    let builder = unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) };
    builder.map_err(|err| {
        DiffusionError::config(
            "weights",
            err.to_string(),
            files.first().map_or(Path::new(""), PathBuf::as_path),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_variant_is_preferred_only_when_asked_and_bin_files_are_never_picked() {
        let folder = tempfile::tempdir().expect("tempdir");
        std::fs::write(folder.path().join("diffusion_pytorch_model.bin"), b"pickle")
            .expect("write");
        let missing = component_weights(folder.path(), "diffusion_pytorch_model", false);
        assert!(missing.expect_err("no safetensors").to_string().contains("only .safetensors"));
        std::fs::write(folder.path().join("diffusion_pytorch_model.safetensors"), b"x")
            .expect("write");
        std::fs::write(folder.path().join("diffusion_pytorch_model.fp16.safetensors"), b"x")
            .expect("write");
        let full =
            component_weights(folder.path(), "diffusion_pytorch_model", false).expect("full");
        assert!(full.ends_with("diffusion_pytorch_model.safetensors"));
        let half = component_weights(folder.path(), "diffusion_pytorch_model", true).expect("half");
        assert!(half.ends_with("diffusion_pytorch_model.fp16.safetensors"));
    }
}
