//! Which candle device and dtype a run uses: `auto|cpu|cuda:N|metal` (auto tries CUDA, then
//! Metal, then the CPU). Builds without the `cuda`/`metal` features still compile; asking for
//! such a device then fails with a message that names the missing feature.
//!
//! CUDA builds made by `scripts/build-cuda` open the CUDA libraries (driver, cuBLAS, cuRAND) at
//! run time, when the first device is created; cudarc panics when one cannot be loaded. That
//! panic is caught here (silently, on this thread only) and becomes an error that names the
//! missing library, so the same binary runs on machines without CUDA.

use std::cell::Cell;
use std::sync::Once;

use candle_core::{DType, Device};

use super::error::{DiffusionError, Result};
use crate::vocab::{DeviceChoice, Precision};

/// Opens the device the user chose.
///
/// # Errors
/// The device is absent or this build lacks its feature.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => {
            if candle_core::utils::cuda_is_available()
                && let Ok(device) = open_cuda(0)
            {
                return Ok(device);
            }
            if candle_core::utils::metal_is_available()
                && let Ok(device) = Device::new_metal(0)
            {
                return Ok(device);
            }
            Ok(Device::Cpu)
        }
        DeviceChoice::Cuda(ordinal) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(DiffusionError::Unsupported(format!(
                    "cuda:{ordinal} requested but this build has no CUDA support (build with --features cuda)"
                )));
            }
            open_cuda(ordinal)
                .map_err(|err| DiffusionError::Unsupported(format!("cuda:{ordinal}: {err}")))
        }
        DeviceChoice::Metal => {
            if !candle_core::utils::metal_is_available() {
                return Err(DiffusionError::Unsupported(
                    "metal requested but this build has no Metal support (build with --features metal)".to_owned(),
                ));
            }
            Device::new_metal(0).map_err(|err| DiffusionError::Unsupported(format!("metal: {err}")))
        }
    }
}

thread_local! {
    /// Set while this thread opens a CUDA device: its panics are the library probe's, not bugs.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Opens CUDA device `ordinal`; a library that cannot be loaded is an error naming it.
fn open_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    PROBING.with(|probing| probing.set(true));
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    PROBING.with(|probing| probing.set(false));
    match opened {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(err)) => Err(err.to_string()),
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("the CUDA libraries could not be loaded");
            Err(missing_library_message(text))
        }
    }
}

/// cudarc's "Unable to dynamically load the \"cublas\" shared library - searched for …" as a
/// short sentence naming the file and where it comes from.
fn missing_library_message(panic_text: &str) -> String {
    let library = panic_text
        .split_once("load the \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name);
    let Some(library) = library else {
        return format!("CUDA is unavailable: {panic_text}");
    };
    let (file, from) = match library {
        "cuda" => ("libcuda.so.1", "the NVIDIA driver"),
        "cublas" => ("libcublas.so.13", "CUDA 13 cuBLAS, e.g. the nvidia-cublas wheel"),
        "cublasLt" => ("libcublasLt.so.13", "CUDA 13 cuBLAS, e.g. the nvidia-cublas wheel"),
        "curand" => ("libcurand.so.10", "CUDA 13 cuRAND, e.g. the nvidia-curand wheel"),
        "nvrtc" => ("libnvrtc.so.13", "CUDA 13 NVRTC, e.g. the nvidia-cuda-nvrtc wheel"),
        other => (other, "the CUDA toolkit"),
    };
    format!(
        "CUDA is unavailable: {file} ({from}) could not be loaded; install it or add its folder \
         to LD_LIBRARY_PATH"
    )
}

/// The dtype of the UNet and text encoders: the user's choice, else f32 on the CPU and f16 on
/// a GPU. Half precision on the CPU is refused (candle's CPU kernels are f32-first and slow).
///
/// # Errors
/// f16/bf16 requested on the CPU.
pub fn select_dtype(device: &Device, precision: Option<Precision>) -> Result<DType> {
    match (device.is_cpu(), precision) {
        (_, Some(Precision::F32)) | (true, None) => Ok(DType::F32),
        (true, Some(other)) => Err(DiffusionError::InvalidRequest(format!(
            "{other:?} on the CPU is not supported; use f32"
        ))),
        (false, None | Some(Precision::F16)) => Ok(DType::F16),
        (false, Some(Precision::Bf16)) => Ok(DType::BF16),
    }
}

/// A short label for metadata and logs: `cpu`, `cuda:0`, `metal`.
pub fn device_label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Threads candle's CPU kernels use: `RAYON_NUM_THREADS` when set, else the physical cores
/// (or the CPUs this process may run on, when fewer).
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// The dtype's label (`f32`, `f16`, `bf16`).
pub fn dtype_label(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_runs_f32_and_refuses_half_precision() {
        let cpu = select_device(DeviceChoice::Cpu).expect("cpu");
        assert_eq!(device_label(&cpu), "cpu");
        assert_eq!(select_dtype(&cpu, None).expect("default"), DType::F32);
        assert!(select_dtype(&cpu, Some(Precision::F16)).is_err());
        // Auto always yields a device (the CPU when no GPU is present or compiled in).
        assert!(select_device(DeviceChoice::Auto).is_ok());
    }

    #[test]
    fn missing_cuda_libraries_are_named() {
        let text = "Unable to dynamically load the \"cublas\" shared library - searched for \
                    library names: [\"libcublas.so\"]. Ensure that `LD_LIBRARY_PATH` has the path";
        let message = missing_library_message(text);
        assert!(
            message.contains("libcublas.so.13") && message.contains("LD_LIBRARY_PATH"),
            "{message}"
        );
        let driver =
            missing_library_message("Unable to dynamically load the \"cuda\" shared library");
        assert!(driver.contains("libcuda.so.1") && driver.contains("NVIDIA driver"), "{driver}");
        assert!(missing_library_message("odd").contains("CUDA is unavailable: odd"));
    }

    #[test]
    fn gpu_requests_without_the_feature_name_it() {
        if candle_core::utils::cuda_is_available() {
            return;
        }
        let err = select_device(DeviceChoice::Cuda(0)).expect_err("no cuda");
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}
