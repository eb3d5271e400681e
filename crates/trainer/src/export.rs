//! Exporting the weights of a training checkpoint as a bare safetensors file: PyTorch
//! `state_dict` names (`conv1.weight`, `layer1.0.bn1.running_mean`, …), `f32`, the
//! architecture in the metadata, no optimizer state — about half the checkpoint's size, and
//! loadable by `safetensors.torch.load_file` + `model.load_state_dict` as it is.

use std::path::Path;

use candle_core::Device;
use resnet_model::{ResNetConfig, ResNetModel};

use crate::checkpoint::WeightsFile;
use crate::error::{Result, TrainError};

/// Writes the model weights of `src` (a checkpoint, or a bare weights file, which is then
/// checked and rewritten) to `dst` through a temporary file. Returns the architecture.
/// The weights are validated first: complete, well-shaped and finite.
pub fn export_weights(src: &Path, dst: &Path) -> Result<ResNetConfig> {
    if dst == src {
        return Err(TrainError::checkpoint(
            dst,
            "the output would overwrite the input; choose another file",
        ));
    }
    let device = Device::Cpu;
    let (arch, tensors) = match WeightsFile::open(src, &device)? {
        WeightsFile::Checkpoint(c) => (c.meta.architecture.clone(), c.model_state()),
        WeightsFile::Raw {
            tensors,
            architecture,
        } => {
            let arch = architecture
                .or_else(|| crate::inference::infer_architecture(&tensors))
                .ok_or_else(|| {
                    TrainError::checkpoint(
                        src,
                        "not a ResNet state dict (no `layer1.0.conv1.weight`, no architecture \
                         in the metadata)",
                    )
                })?;
            (arch, tensors)
        }
    };
    let model = ResNetModel::from_tensors(&arch, &tensors, &device)
        .map_err(|e| TrainError::checkpoint(src, e.to_string()))?;
    model
        .save(dst)
        .map_err(|e| TrainError::model(format!("writing {}", dst.display()), e))?;
    Ok(arch)
}
