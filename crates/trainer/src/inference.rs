//! Loading a trained model for `eval` and `predict`: from a training checkpoint (which
//! carries its config and normalizer) or from a bare weights file (e.g. exported from
//! PyTorch), whose preprocessing comes from a config.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use cifar_data::Normalizer;
use resnet_model::{ResNetConfig, ResNetModel, Shortcut};
use serde::Serialize;

use crate::checkpoint::WeightsFile;
use crate::config::{RunConfig, DEFAULT_CONFIG_NAME};
use crate::data::{Datasets, EvalSplit};
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate, EvalResult};

/// A model ready for inference, with the preprocessing it expects.
#[derive(Debug)]
pub struct LoadedModel {
    /// The network, on its device.
    pub model: ResNetModel,
    /// The run config: the checkpoint's own, the one given, or the built-in default.
    pub config: RunConfig,
    /// The normalizer from the checkpoint; `None` for bare weights (fit it with
    /// [`LoadedModel::normalizer`]).
    pub stored_normalizer: Option<Normalizer>,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// Iteration of the checkpoint (`None` for bare weights).
    pub iteration: Option<u64>,
}

/// The architecture a bare state dict describes, read from its tensor names and shapes:
/// `n` from the blocks of `layer1`, the shortcut option from the projection tensors, the
/// widths from `conv1.weight` and `linear.weight`.
pub fn infer_architecture(tensors: &HashMap<String, Tensor>) -> Option<ResNetConfig> {
    let n = (0..)
        .take_while(|i| tensors.contains_key(&format!("layer1.{i}.conv1.weight")))
        .count();
    if n == 0 {
        return None;
    }
    let shortcut = if tensors.contains_key("layer1.0.shortcut.0.weight") {
        Shortcut::AllProjection
    } else if tensors.contains_key("layer2.0.shortcut.0.weight") {
        Shortcut::Projection
    } else {
        Shortcut::IdentityPad
    };
    let base_width = *tensors.get("conv1.weight")?.dims().first()?;
    let num_classes = *tensors.get("linear.weight")?.dims().first()?;
    Some(ResNetConfig {
        depth: 6 * n + 2,
        shortcut,
        num_classes,
        base_width,
    })
}

impl LoadedModel {
    /// Loads `path` onto `device`. With a checkpoint, `config` (if given) must describe the
    /// same architecture; without one the checkpoint's own config is used. With bare
    /// weights, the architecture is `config`'s, else the file's `resnet_config` metadata,
    /// else inferred from the tensor names; the preprocessing is `config`'s (default: the
    /// built-in paper config, per-pixel mean of the training split).
    pub fn open(path: &Path, config: Option<&RunConfig>, device: &Device) -> Result<Self> {
        match WeightsFile::open(path, device)? {
            WeightsFile::Checkpoint(ckpt) => {
                let arch = ckpt.meta.architecture.clone();
                let config = match config {
                    Some(c) => c.clone(),
                    None => {
                        let name = format!("config stored in {}", path.display());
                        RunConfig::from_yaml(&ckpt.meta.config_yaml, &name, &[])?
                    }
                };
                if config.model != arch {
                    return Err(TrainError::ArchitectureMismatch {
                        path: path.to_path_buf(),
                        expected: config.model.name(),
                        found: arch.name(),
                    });
                }
                let model = ResNetModel::from_tensors(&arch, &ckpt.model_state(), device)
                    .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
                Ok(Self {
                    model,
                    config,
                    stored_normalizer: Some(ckpt.normalizer),
                    class_names: ckpt.meta.class_names,
                    iteration: Some(ckpt.meta.iteration),
                })
            }
            WeightsFile::Raw {
                tensors,
                architecture,
            } => {
                let inferred = infer_architecture(&tensors);
                let config = match config {
                    Some(c) => c.clone(),
                    None => {
                        let mut c = RunConfig::from_yaml(
                            crate::config::DEFAULT_CONFIG_YAML,
                            DEFAULT_CONFIG_NAME,
                            &[],
                        )?;
                        if let Some(a) = architecture.clone().or_else(|| inferred.clone()) {
                            c.model = a;
                        }
                        c
                    }
                };
                let found = architecture.or(inferred);
                if let Some(found) = &found {
                    if *found != config.model {
                        return Err(TrainError::ArchitectureMismatch {
                            path: path.to_path_buf(),
                            expected: config.model.name(),
                            found: found.name(),
                        });
                    }
                }
                let model = ResNetModel::from_tensors(&config.model, &tensors, device)
                    .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
                Ok(Self {
                    model,
                    config,
                    stored_normalizer: None,
                    class_names: cifar_data::synthetic::CLASS_NAMES
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    iteration: None,
                })
            }
        }
    }

    /// The normalizer: the checkpoint's, else the config's fitted on `train` (not needed
    /// when the config gives per-channel mean and std).
    pub fn normalizer(&self, train: Option<&cifar_data::ImageSet>) -> Normalizer {
        match &self.stored_normalizer {
            Some(n) => n.clone(),
            None => {
                let empty = cifar_data::ImageSet::default();
                Normalizer::fit(&self.config.data.normalization, train.unwrap_or(&empty))
            }
        }
    }

    /// Whether [`normalizer`](Self::normalizer) needs the training images.
    pub fn needs_training_data(&self) -> bool {
        self.stored_normalizer.is_none()
            && !matches!(
                self.config.data.normalization,
                cifar_data::NormalizationConfig::PerChannel {
                    mean: Some(_),
                    std: Some(_)
                }
            )
    }
}

/// What `eval --json` prints.
#[derive(Serialize, Clone, Debug)]
pub struct EvalReport {
    /// The weights evaluated.
    pub weights: String,
    /// Architecture, e.g. `resnet20-a`.
    pub architecture: String,
    /// The set evaluated on.
    pub split: String,
    /// Iteration of the checkpoint, if it is one.
    pub iteration: Option<u64>,
    /// Loss, accuracy, per-class accuracy and confusion matrix.
    #[serde(flatten)]
    pub result: EvalResult,
}

/// Evaluates the weights at `path` on `split` of the data `config` designates (see
/// [`LoadedModel::open`] for how `config` is used).
pub fn evaluate_weights(
    path: &Path,
    config: Option<&RunConfig>,
    split: EvalSplit,
    device: &Device,
) -> Result<EvalReport> {
    let loaded = LoadedModel::open(path, config, device)?;
    let data = Datasets::load(&loaded.config.data_dir(), &loaded.config.data)?;
    let normalizer = Arc::new(loaded.normalizer(Some(&data.train)));
    let set = data.get(split)?;
    let names = if data.class_names.is_empty() {
        loaded.class_names.clone()
    } else {
        data.class_names.clone()
    };
    let result = evaluate(
        &loaded.model,
        &set,
        &normalizer,
        loaded.config.training.eval_batch_size,
        &names,
    )?;
    Ok(EvalReport {
        weights: path.display().to_string(),
        architecture: loaded.model.config().name(),
        split: split.to_string(),
        iteration: loaded.iteration,
        result,
    })
}

/// The Keras-style summary table of the network `config` describes.
pub fn model_summary(config: &ResNetConfig) -> Result<String> {
    let model = ResNetModel::new(config, &Device::Cpu, 0)
        .map_err(|e| TrainError::model(format!("building {}", config.name()), e))?;
    Ok(model.summary().to_string())
}
