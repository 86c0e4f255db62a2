//! NVML, opened at run time: `nvml-wrapper` loads `libnvidia-ml.so.1` with `dlopen` when
//! [`NvmlSource::open`] runs, so nothing NVIDIA is needed to build or start the lab, and a
//! machine without the driver gets an error value, not a failed start.

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;

use super::{GpuError, GpuInfo, GpuProcess, GpuSource, mib};

/// The NVIDIA Management Library.
pub struct NvmlSource {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource").finish_non_exhaustive()
    }
}

impl NvmlSource {
    /// Opens and initialises NVML.
    ///
    /// # Errors
    /// The library is missing or the driver is not loaded, as NVML says it.
    pub fn open() -> Result<Self, String> {
        Nvml::init().map(|nvml| Self { nvml }).map_err(|err| err.to_string())
    }
}

impl GpuSource for NvmlSource {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn query(&mut self) -> Result<Vec<GpuInfo>, GpuError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|err| GpuError::Unreadable(format!("NVML device count: {err}")))?;
        let mut gpus = Vec::new();
        for index in 0..count {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(|err| GpuError::Unreadable(format!("NVML device {index}: {err}")))?;
            // A value one board does not report (MIG, consumer cards) leaves the rest usable.
            let memory = device.memory_info().ok();
            let processes = device
                .running_compute_processes()
                .unwrap_or_default()
                .into_iter()
                .map(|process| GpuProcess {
                    pid: process.pid,
                    used_memory_mib: match process.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(mib(bytes)),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect();
            gpus.push(GpuInfo {
                index: device.index().unwrap_or(index),
                uuid: device.uuid().unwrap_or_default(),
                name: device.name().unwrap_or_else(|_| "NVIDIA GPU".to_owned()),
                memory_total_mib: memory.as_ref().map(|m| mib(m.total)),
                memory_used_mib: memory.as_ref().map(|m| mib(m.used)),
                utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
                processes,
                cuda_index: None,
            });
        }
        gpus.sort_by_key(|gpu| gpu.index);
        Ok(gpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the driver (CI), opening NVML is an error value, never a crash;
    /// where a driver exists, the list it gives is well-formed.
    #[test]
    fn opening_without_a_driver_is_an_error_not_a_crash() {
        match NvmlSource::open() {
            Err(message) => assert!(!message.is_empty()),
            Ok(mut source) => {
                let gpus = source.query().expect("a driver that opened answers");
                for gpu in gpus {
                    assert!(gpu.uuid.starts_with("GPU-") || gpu.uuid.is_empty(), "{gpu:?}");
                }
            }
        }
    }
}
