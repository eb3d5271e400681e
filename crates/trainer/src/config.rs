//! The run configuration: a YAML document with `deny_unknown_fields` everywhere, documented
//! defaults (the paper's recipe), `--set key.path=value` overrides and validation errors that
//! name the key and its line.
//!
//! ```yaml
//! name: resnet20                 # run directory prefix (default "resnet20")
//! seed: 0                        # model init, data order and augmentation (default 0)
//! model: { depth: 20, shortcut: identity_pad, num_classes: 10, base_width: 16 }
//! data:
//!   dir: null                    # default: $CIFAR10_DIR, else data/cifar-10
//!   split: { strategy: last, val_size: 5000 }
//!   normalization: { kind: per_pixel_mean }
//!   augment: { pad: 4, crop: true, flip: true }   # null: no augmentation
//!   train_limit: null            # use only the first N images of each split
//!   val_limit: null
//!   test_limit: null
//! optimizer: { momentum: 0.9, weight_decay: 0.0001, dampening: 0.0, nesterov: false }
//! schedule:
//!   base_lr: 0.1
//!   kind: { type: piecewise, milestones: [32000, 48000], gamma: 0.1 }
//!   warmup: null
//! training:
//!   batch_size: 128
//!   max_iterations: 64000
//!   ...
//! output: { runs_dir: runs }
//! ```

use std::path::PathBuf;

use cifar_data::{AugmentConfig, NormalizationConfig, SplitConfig};
use resnet_model::ResNetConfig;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::overrides::Override;
use crate::schedule::LrScheduleConfig;
use crate::sgd::SgdConfig;

/// The paper's ResNet-20 recipe, `configs/resnet20.yaml`, built into the binary: what
/// `resnet-cli train` runs without a config file.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../../configs/resnet20.yaml");

/// Name used in messages for [`DEFAULT_CONFIG_YAML`].
pub const DEFAULT_CONFIG_NAME: &str = "<built-in configs/resnet20.yaml>";

/// A complete run configuration. Every section and field has a default (the paper's
/// ResNet-20 recipe); unknown keys are errors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Name of the run; the run directory is `<runs_dir>/<name>-<timestamp>`. Default
    /// `resnet20`.
    pub name: String,
    /// Seed of the model initialization, the data order and the augmentation. Default 0.
    pub seed: u64,
    /// The network. Default ResNet-20, option A.
    pub model: ResNetConfig,
    /// Dataset location, split, normalization and augmentation.
    pub data: DataConfig,
    /// SGD settings. Default momentum 0.9, weight decay 1e-4 on every parameter.
    pub optimizer: SgdConfig,
    /// Learning-rate schedule by iteration. Default 0.1, ÷10 at 32k and 48k.
    pub schedule: LrScheduleConfig,
    /// Loop settings.
    pub training: TrainingConfig,
    /// Where runs are written.
    pub output: OutputConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "resnet20".to_string(),
            seed: 0,
            model: ResNetConfig::resnet20(),
            data: DataConfig::default(),
            optimizer: SgdConfig::default(),
            schedule: LrScheduleConfig::paper(),
            training: TrainingConfig::default(),
            output: OutputConfig::default(),
        }
    }
}

/// The `data` section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory holding (or to receive) `cifar-10-batches-bin/`. Default `null`:
    /// `$CIFAR10_DIR`, else `data/cifar-10` under the current directory.
    pub dir: Option<PathBuf>,
    /// Train/validation split. Default: the last 5,000 training images are the validation
    /// set (the paper's 45k/5k).
    pub split: SplitConfig,
    /// Pixel normalization. Default: subtract the per-pixel mean image of the training split.
    pub normalization: NormalizationConfig,
    /// Training augmentation; `null` for none. Default: pad 4, random crop, horizontal flip.
    #[serde(default = "default_augment")]
    pub augment: Option<AugmentConfig>,
    /// Train on only the first N images of the training split. Default `null` (all).
    pub train_limit: Option<usize>,
    /// Validate on only the first N validation images. Default `null` (all).
    pub val_limit: Option<usize>,
    /// Test on only the first N test images. Default `null` (all 10,000).
    pub test_limit: Option<usize>,
}

fn default_augment() -> Option<AugmentConfig> {
    Some(AugmentConfig::default())
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: None,
            split: SplitConfig::default(),
            normalization: NormalizationConfig::default(),
            augment: default_augment(),
            train_limit: None,
            val_limit: None,
            test_limit: None,
        }
    }
}

/// Where a run computes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DeviceChoice {
    /// CUDA device 0 when built with the `cuda` feature and a GPU is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device 0 (an error if unavailable).
    Cuda,
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device `{other}`, expected cpu, cuda or auto"
            )),
        }
    }
}

/// The `training` section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Images per training step. Default 128.
    pub batch_size: usize,
    /// Length of the run in optimizer steps. Default 64,000. Epochs follow from the size of
    /// the training split (45,000 / 128 → 352 steps per epoch, the last one partial).
    pub max_iterations: u64,
    /// Label smoothing of the cross-entropy, in `[0, 1)`. Default 0.
    pub label_smoothing: f64,
    /// Drop the last incomplete batch of each epoch. Default false (PyTorch's default).
    pub drop_last: bool,
    /// Images per evaluation batch. Default 500.
    pub eval_batch_size: usize,
    /// Write a metrics row (and TensorBoard scalars) every N iterations. Default 100.
    pub log_every: u64,
    /// Write a checkpoint every N epochs (and always at the end). Default 1.
    pub checkpoint_every_epochs: u64,
    /// Keep the last K periodic checkpoints (besides `latest` and `best`). Default 3.
    pub keep_last: usize,
    /// `cpu`, `cuda` or `auto`. Default `auto`.
    pub device: DeviceChoice,
    /// Worker threads for the CPU kernels and the data pipeline. Default `null`: rayon's
    /// default (`$RAYON_NUM_THREADS`, else the number of cores).
    pub threads: Option<usize>,
    /// Batches prepared ahead in the background. Default 2.
    pub prefetch: usize,
    /// With several ranks (`mpirun -np K`, the `mpi` feature): BatchNorm statistics over the
    /// whole global batch, all-reduced in the forward and the backward (like
    /// `torch.nn.SyncBatchNorm`), so K ranks compute what one process does. Default false:
    /// per-rank statistics (the paper's two-GPU setup, DDP's default). Ignored with one rank.
    #[serde(skip_serializing_if = "is_false")]
    pub sync_batch_norm: bool,
    /// Normalize each of this many equal consecutive slices of every batch (of every rank's
    /// shard, with several ranks) with its own statistics ("ghost" BatchNorm): one process
    /// with `G` computes what `G` ranks with per-rank BatchNorm compute. The batch (shard)
    /// must divide evenly. Default 1 (the whole batch).
    #[serde(skip_serializing_if = "is_one")]
    pub batch_norm_groups: usize,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            max_iterations: 64_000,
            label_smoothing: 0.0,
            drop_last: false,
            eval_batch_size: 500,
            log_every: 100,
            checkpoint_every_epochs: 1,
            keep_last: 3,
            device: DeviceChoice::Auto,
            threads: None,
            prefetch: 2,
            sync_batch_norm: false,
            batch_norm_groups: 1,
        }
    }
}

/// The `output` section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Parent directory of run directories. Default `runs` (relative to the current
    /// directory).
    pub runs_dir: PathBuf,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            runs_dir: PathBuf::from("runs"),
        }
    }
}

impl RunConfig {
    /// The built-in paper config ([`DEFAULT_CONFIG_YAML`]).
    pub fn paper_default() -> Self {
        Self::from_yaml(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_NAME, &[])
            .expect("the built-in configs/resnet20.yaml is valid")
    }

    /// Reads, overrides and validates a config file.
    pub fn from_file(path: &std::path::Path, overrides: &[Override]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        // An empty or comment-only file is almost surely a mistake (a truncated copy, the
        // wrong file); it would otherwise start the full default run.
        let empty = text.trim().is_empty()
            || matches!(serde_yaml::from_str::<Value>(&text), Ok(Value::Null));
        if empty {
            return Err(TrainError::ConfigParse {
                source_name: path.display().to_string(),
                message: "the file holds no settings (it is empty or only comments); a run \
                          config needs at least one key (keys left out keep their documented \
                          defaults). To train the paper's ResNet-20, give no CONFIG: the \
                          built-in configs/resnet20.yaml is used"
                    .into(),
            });
        }
        Self::from_yaml(&text, &path.display().to_string(), overrides)
    }

    /// Parses `text` (named `source_name` in errors), applies `overrides` in order, and
    /// validates. Parse errors carry serde_yaml's key path, line and column; validation
    /// errors name the key and its line (or the `--set` that gave the value).
    pub fn from_yaml(text: &str, source_name: &str, overrides: &[Override]) -> Result<Self> {
        let parse_err = |name: &str, e: serde_yaml::Error| {
            let mut message = e.to_string();
            // serde_yaml leaves out the location when it is line 1, column 1.
            if let Some(loc) = e.location() {
                if !message.contains(" at line ") {
                    message.push_str(&format!(" at line {} column {}", loc.line(), loc.column()));
                }
            }
            TrainError::ConfigParse {
                source_name: name.to_string(),
                message,
            }
        };
        // Deserializing the text itself keeps serde_yaml's locations in the errors.
        let from_text: RunConfig = if text.trim().is_empty() {
            RunConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| parse_err(source_name, e))?
        };
        let cfg = if overrides.is_empty() {
            from_text
        } else {
            let mut tree: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_yaml::from_str(text).map_err(|e| parse_err(source_name, e))?
            };
            let base = tree.clone();
            for o in overrides {
                o.apply(&mut tree)?;
            }
            match serde_yaml::from_value(tree) {
                Ok(cfg) => cfg,
                Err(e) => {
                    // serde_yaml's errors on a Value carry no key path: find the first
                    // override that makes the config unreadable and name its key.
                    let mut partial = base;
                    for o in overrides {
                        o.apply(&mut partial)?;
                        if let Err(e) = serde_yaml::from_value::<RunConfig>(partial.clone()) {
                            return Err(TrainError::ConfigValue {
                                source_name: source_name.to_string(),
                                key: o.key(),
                                line: None,
                                set_by: Some(o.arg.clone()),
                                reason: e.to_string(),
                            });
                        }
                    }
                    let args: Vec<&str> = overrides.iter().map(|o| o.arg.as_str()).collect();
                    let name = format!("{source_name} with --set {}", args.join(" --set "));
                    return Err(parse_err(&name, e));
                }
            }
        };
        cfg.validate_with(&Source {
            name: source_name,
            text,
            overrides,
        })?;
        Ok(cfg)
    }

    /// Checks every value; the error names the dotted key.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&Source {
            name: "config",
            text: "",
            overrides: &[],
        })
    }

    /// The config as YAML (what `config.yaml` in a run directory and checkpoints hold).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a run config always serializes")
    }

    /// SHA-256 (hex) of [`to_yaml`](Self::to_yaml): identifies the resolved config.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_yaml().as_bytes()))
    }

    /// The config at `path` with `overrides`; without a path, the built-in paper recipe
    /// ([`DEFAULT_CONFIG_YAML`]) with `overrides`.
    pub fn from_file_or_default(
        path: Option<&std::path::Path>,
        overrides: &[Override],
    ) -> Result<Self> {
        match path {
            Some(p) => Self::from_file(p, overrides),
            None => Self::from_yaml(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_NAME, overrides),
        }
    }

    /// The dataset directory: `data.dir`, else `$CIFAR10_DIR`, else `data/cifar-10`.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .dir
            .clone()
            .unwrap_or_else(cifar_data::fetch::default_data_dir)
    }

    /// The training loader's config, gathered from where the YAML keeps its keys (kept there
    /// so that existing configs and checkpoints read unchanged): `training.batch_size`,
    /// `training.drop_last`, `training.prefetch`, `data.augment` and `seed`; the training
    /// data is always shuffled (per epoch, from the seed).
    pub fn loader_config(&self) -> cifar_data::LoaderConfig {
        cifar_data::LoaderConfig {
            batch_size: self.training.batch_size,
            shuffle: true,
            drop_last: self.training.drop_last,
            augment: self.data.augment,
            seed: self.seed,
            prefetch: self.training.prefetch,
        }
    }
}

mod validate;

use validate::Source;
pub use validate::{MAX_BASE_WIDTH, MAX_BATCH, MAX_DEPTH};

#[cfg(test)]
mod tests;
