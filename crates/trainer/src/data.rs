//! The image sets of a run, prepared from the `data` section of its config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cifar_data::{Cifar10, DataError, ImageSet};

use crate::config::DataConfig;
use crate::error::{Result, TrainError};

/// Training, validation and test images of a run.
#[derive(Clone, Debug)]
pub struct Datasets {
    /// Images trained on.
    pub train: Arc<ImageSet>,
    /// Validation images (`None` without a validation split).
    pub val: Option<Arc<ImageSet>>,
    /// Test images.
    pub test: Arc<ImageSet>,
    /// Class names, in label order.
    pub class_names: Vec<String>,
}

/// Where CIFAR-10 comes from when it is not installed yet (`--from`, `--url`; with neither,
/// `$CIFAR10_ARCHIVE`, `$CIFAR10_URL`, then the official host: see
/// [`cifar_data::fetch::fetch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataSource {
    /// A local `cifar-10-binary.tar.gz`.
    pub from: Option<PathBuf>,
    /// A mirror URL of the archive.
    pub url: Option<String>,
    /// Show the download's progress bar and the repair report on stderr.
    pub progress: bool,
}

/// Installs CIFAR-10 into `dir` from `source` unless its files are there (same code and
/// checks as `cargo xtask fetch-cifar`); logs what it did.
pub fn ensure_installed(dir: &Path, source: &DataSource) -> Result<()> {
    if cifar_data::fetch::is_present(dir) {
        return Ok(());
    }
    tracing::info!("CIFAR-10 is not in {}; fetching it", dir.display());
    let opts = cifar_data::fetch::FetchOptions {
        url: source.url.clone(),
        from: source.from.clone(),
        progress: source.progress,
        ..cifar_data::fetch::FetchOptions::new(dir)
    };
    let outcome = cifar_data::fetch::fetch(&opts).map_err(|source| TrainError::Dataset {
        action: "installing",
        dir: dir.to_path_buf(),
        source: Box::new(source),
    })?;
    match outcome {
        cifar_data::fetch::FetchOutcome::Installed { dir, source, .. } => {
            tracing::info!("installed CIFAR-10 from {source} into {}", dir.display());
        }
        other => tracing::info!("{other:?}"),
    }
    Ok(())
}

impl Datasets {
    /// [`ensure_installed`] into `dir`, then [`load`](Self::load).
    pub fn load_or_fetch(dir: &Path, cfg: &DataConfig, source: &DataSource) -> Result<Self> {
        ensure_installed(dir, source)?;
        Self::load(dir, cfg).map_err(|e| match e {
            TrainError::Data(source) => TrainError::Dataset {
                action: "loading",
                dir: dir.to_path_buf(),
                source: Box::new(source),
            },
            other => other,
        })
    }

    /// Loads CIFAR-10 from `dir` and prepares it as `cfg` says.
    pub fn load(dir: &Path, cfg: &DataConfig) -> Result<Self> {
        let data = cifar_data::load(dir)?;
        Self::from_cifar(&data, cfg)
    }

    /// Splits `data` and applies the limits of `cfg`.
    pub fn from_cifar(data: &Cifar10, cfg: &DataConfig) -> Result<Self> {
        let splits = cifar_data::split(data, &cfg.split).map_err(|e| match e {
            DataError::InvalidConfig { field, reason } => TrainError::ConfigValue {
                source_name: "config".into(),
                key: format!("data.{field}"),
                line: None,
                set_by: None,
                reason,
            },
            other => TrainError::Data(other),
        })?;
        let limit = |set: ImageSet, n: Option<usize>| match n {
            Some(n) if n < set.len() => set.slice(0..n),
            _ => set,
        };
        Ok(Self {
            train: Arc::new(limit(splits.train, cfg.train_limit)),
            val: splits.val.map(|v| Arc::new(limit(v, cfg.val_limit))),
            test: Arc::new(limit(splits.test, cfg.test_limit)),
            class_names: data.class_names.clone(),
        })
    }

    /// The set `eval` is asked for.
    pub fn get(&self, split: EvalSplit) -> Result<Arc<ImageSet>> {
        match split {
            EvalSplit::Test => Ok(Arc::clone(&self.test)),
            EvalSplit::Val => self.val.clone().ok_or_else(|| TrainError::ConfigValue {
                source_name: "config".into(),
                key: "data.split.strategy".into(),
                line: None,
                set_by: None,
                reason: "there is no validation split (strategy `none`)".into(),
            }),
            EvalSplit::Train => Ok(Arc::clone(&self.train)),
        }
    }
}

/// Which set to evaluate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum EvalSplit {
    /// The test images.
    #[default]
    Test,
    /// The validation images.
    Val,
    /// The training images (unaugmented).
    Train,
}

impl std::str::FromStr for EvalSplit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "test" => Ok(Self::Test),
            "val" => Ok(Self::Val),
            "train" => Ok(Self::Train),
            other => Err(format!(
                "unknown split `{other}`, expected test, val or train"
            )),
        }
    }
}

impl std::fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Test => "test",
            Self::Val => "val",
            Self::Train => "train",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cifar_data::{synthetic, SplitConfig};

    #[test]
    fn limits_and_bad_split_size() {
        let data = Cifar10 {
            train: synthetic::generate(100, 1),
            test: synthetic::generate(30, 2),
            class_names: vec![],
        };
        let cfg = DataConfig {
            split: SplitConfig {
                val_size: 20,
                ..SplitConfig::default()
            },
            train_limit: Some(50),
            test_limit: Some(10),
            val_limit: Some(1000),
            ..DataConfig::default()
        };
        let d = Datasets::from_cifar(&data, &cfg).unwrap();
        assert_eq!(d.train.len(), 50);
        assert_eq!(d.val.as_ref().unwrap().len(), 20);
        assert_eq!(d.test.len(), 10);
        assert_eq!(*d.val.unwrap(), data.train.slice(80..100));
        let bad = DataConfig {
            split: SplitConfig {
                val_size: 100,
                ..SplitConfig::default()
            },
            ..DataConfig::default()
        };
        let e = Datasets::from_cifar(&data, &bad).unwrap_err().to_string();
        assert!(e.contains("data.split.val_size"), "{e}");
    }
}
