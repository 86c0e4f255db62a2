//! Which candle device and dtype a run uses: `auto|cpu|cuda:N|metal` (auto tries CUDA, then
//! Metal, then the CPU). Builds without the `cuda`/`metal` features still compile; asking for
//! such a device then fails with a message that names the missing feature.

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
                && let Ok(device) = Device::new_cuda(0)
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
            Device::new_cuda(ordinal)
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
    fn gpu_requests_without_the_feature_name_it() {
        if candle_core::utils::cuda_is_available() {
            return;
        }
        let err = select_device(DeviceChoice::Cuda(0)).expect_err("no cuda");
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}
