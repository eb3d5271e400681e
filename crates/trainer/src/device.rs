//! Choosing the compute device and the CPU thread count.

pub use candle_core::Device;

use crate::config::DeviceChoice;
use crate::error::{Result, TrainError};

/// The device `choice` designates. `auto` is CUDA device 0 when this build has the `cuda`
/// feature and a GPU is usable (logged at `info`, as is a CUDA build falling back to the CPU
/// because device 0 cannot be opened), else the CPU; `cuda` without CUDA support is an error.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => {
            #[cfg(feature = "cuda")]
            match Device::new_cuda(0) {
                Ok(device) => {
                    tracing::info!("device auto: CUDA device 0 (this build has the cuda feature)");
                    return Ok(device);
                }
                Err(e) => tracing::info!(
                    "device auto: CUDA device 0 is not usable ({e}); running on the CPU"
                ),
            }
            Ok(Device::Cpu)
        }
        DeviceChoice::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                return Err(TrainError::Device {
                    requested: "cuda".into(),
                    reason: "this build has no CUDA support (rebuild with `--features cuda` \
                             on a machine with the CUDA toolkit) or no GPU is visible"
                        .into(),
                });
            }
            Device::new_cuda(0).map_err(|e| TrainError::Device {
                requested: "cuda".into(),
                reason: e.to_string(),
            })
        }
    }
}

/// Runs `f` in a rayon pool of `threads` threads (the CPU kernels and the batch preparation
/// use the current pool), or in the global pool when `threads` is `None`.
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T> {
    match threads {
        None => Ok(f()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| TrainError::Device {
                    requested: format!("{n} CPU threads"),
                    reason: e.to_string(),
                })?;
            Ok(pool.install(f))
        }
    }
}

/// A short description of `device` for logs and reports.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => "cuda:0".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}
