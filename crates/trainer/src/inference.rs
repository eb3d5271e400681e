//! Loading a trained model for `eval` and `predict`: from a training checkpoint (which
//! carries its config and normalizer) or from a bare weights file (e.g. exported from
//! PyTorch), whose preprocessing comes from a config.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use cifar_data::Normalizer;
use resnet_model::{ResNetConfig, ResNetModel, Shortcut};
use serde::Serialize;

use crate::checkpoint::WeightsFile;
use crate::config::{DeviceChoice, RunConfig, DEFAULT_CONFIG_NAME};
use crate::data::{DataSource, Datasets, EvalSplit};
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate, EvalResult};
use crate::overrides::Override;

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
                    class_names: cifar_data::CLASS_NAMES
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

/// What to load for inference, as `resnet-cli eval`/`predict` are asked for it.
#[derive(Clone, Debug, Default)]
pub struct ModelRequest {
    /// A training checkpoint or a bare weights file.
    pub weights: PathBuf,
    /// A run config file (see [`LoadedModel::open`] for how it is used).
    pub config: Option<PathBuf>,
    /// Overrides, applied to `config` if given, else to the checkpoint's own config (or,
    /// for bare weights, to the built-in one); they cannot change the architecture.
    pub overrides: Vec<Override>,
    /// Where to compute.
    pub device: DeviceChoice,
    /// Where CIFAR-10 comes from when it is needed and missing.
    pub data: DataSource,
}

impl LoadedModel {
    /// Loads what `request` names: the config file parsed once (with the overrides), or
    /// the overrides applied to the weights' own config.
    pub fn load(request: &ModelRequest) -> Result<Self> {
        let path = &request.weights;
        let overrides = &request.overrides;
        let device = crate::device::select_device(request.device)?;
        let given = request
            .config
            .as_deref()
            .map(|p| RunConfig::from_file(p, overrides))
            .transpose()?;
        let mut loaded = Self::open(path, given.as_ref(), &device)?;
        if given.is_none() && !overrides.is_empty() {
            let name = format!("config of {}", path.display());
            let cfg = RunConfig::from_yaml(&loaded.config.to_yaml(), &name, overrides)?;
            if cfg.model != loaded.config.model {
                return Err(TrainError::ArchitectureMismatch {
                    path: path.clone(),
                    expected: format!("{} (set with --set)", cfg.model.name()),
                    found: loaded.config.model.name(),
                });
            }
            loaded.config = cfg;
        }
        Ok(loaded)
    }

    /// The normalizer, loading the training images (installed from `source` if missing)
    /// only when it has to be fitted on them.
    pub fn prepare_normalizer(&self, source: &DataSource) -> Result<Normalizer> {
        if !self.needs_training_data() {
            return Ok(self.normalizer(None));
        }
        let data = Datasets::load_or_fetch(&self.config.data_dir(), &self.config.data, source)?;
        Ok(self.normalizer(Some(&data.train)))
    }

    /// Evaluates the model on `split` of `data` (prepared from its config's data section).
    pub fn evaluate(&self, data: &Datasets, split: EvalSplit) -> Result<EvalResult> {
        let normalizer = Arc::new(self.normalizer(Some(&data.train)));
        let set = data.get(split)?;
        let names = if data.class_names.is_empty() {
            self.class_names.clone()
        } else {
            data.class_names.clone()
        };
        evaluate(
            &self.model,
            &set,
            &normalizer,
            self.config.training.eval_batch_size,
            &names,
        )
    }
}

/// Evaluates the weights `request` names on `split` of the data their config designates,
/// installing CIFAR-10 if it is missing: the whole of `resnet-cli eval` but the printing.
pub fn evaluate_weights(request: &ModelRequest, split: EvalSplit) -> Result<EvalReport> {
    let loaded = LoadedModel::load(request)?;
    let cfg = &loaded.config;
    let data = Datasets::load_or_fetch(&cfg.data_dir(), &cfg.data, &request.data)?;
    let result = loaded.evaluate(&data, split)?;
    Ok(EvalReport {
        weights: request.weights.display().to_string(),
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
