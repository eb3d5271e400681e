//! Picking the compute device.

use candle_core::{Device, Result};

/// CUDA device 0 when the crate is built with the `cuda` feature and a GPU is usable,
/// otherwise the CPU.
pub fn default_device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        if candle_core::utils::cuda_is_available() {
            if let Ok(device) = Device::new_cuda(0) {
                return Ok(device);
            }
        }
    }
    Ok(Device::Cpu)
}
