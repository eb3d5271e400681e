//! Train / validation / test splits.

use serde::{Deserialize, Serialize};

use crate::rng::{permutation, STREAM_SPLIT};
use crate::{Cifar10, DataError, ImageSet};

/// How validation images are chosen from the 50,000 training images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitStrategy {
    /// The last `val_size` training images (file order) are the validation set. The default:
    /// with `val_size = 5000` this is the paper's 45k/5k split, and it is deterministic
    /// without a seed (`data_batch_5.bin`'s last 5,000 records).
    #[default]
    Last,
    /// `val_size` images drawn without replacement by a permutation seeded by `seed`. Both
    /// parts keep the original file order.
    Random,
    /// No validation set: train on all 50,000 images.
    None,
}

/// Split configuration, usable inside a YAML run config.
///
/// ```yaml
/// split: { strategy: last, val_size: 5000 }   # default
/// split: { strategy: random, val_size: 5000, seed: 7 }
/// split: { strategy: none }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    /// How validation images are chosen. Default: [`SplitStrategy::Last`].
    pub strategy: SplitStrategy,
    /// Number of validation images. Default: 5000. Ignored for [`SplitStrategy::None`].
    pub val_size: usize,
    /// Seed of [`SplitStrategy::Random`]. Default: 0. Ignored otherwise.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            strategy: SplitStrategy::Last,
            val_size: 5000,
            seed: 0,
        }
    }
}

impl SplitConfig {
    /// Train on all training images, no validation set.
    pub fn none() -> Self {
        Self {
            strategy: SplitStrategy::None,
            ..Self::default()
        }
    }
}

/// The sets a run works with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    /// Images to train on.
    pub train: ImageSet,
    /// Held-out validation images (`None` with [`SplitStrategy::None`]).
    pub val: Option<ImageSet>,
    /// The 10,000 test images.
    pub test: ImageSet,
}

/// Indices `(train, val)` into `data.train` chosen by `cfg`, both ascending.
pub fn split_indices(n: usize, cfg: &SplitConfig) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if cfg.strategy == SplitStrategy::None {
        return Ok(((0..n).collect(), Vec::new()));
    }
    if cfg.val_size == 0 || cfg.val_size >= n {
        return Err(DataError::config(
            "split.val_size",
            format!(
                "{} is out of range: must be between 1 and {} (the training set has {n} images; \
                 use strategy `none` for no validation set)",
                cfg.val_size,
                n.saturating_sub(1)
            ),
        ));
    }
    Ok(match cfg.strategy {
        SplitStrategy::Last => (
            (0..n - cfg.val_size).collect(),
            (n - cfg.val_size..n).collect(),
        ),
        SplitStrategy::Random => {
            let perm = permutation(n, cfg.seed, STREAM_SPLIT, 0);
            let mut is_val = vec![false; n];
            for &i in &perm[..cfg.val_size] {
                is_val[i] = true;
            }
            (0..n).partition(|&i| !is_val[i])
        }
        SplitStrategy::None => unreachable!("handled above"),
    })
}

/// Splits `data.train` into training and validation sets as `cfg` says; the test set is
/// `data.test`.
pub fn split(data: &Cifar10, cfg: &SplitConfig) -> Result<Splits, DataError> {
    let (train_idx, val_idx) = split_indices(data.train.len(), cfg)?;
    let (train, val) = match cfg.strategy {
        SplitStrategy::None => (data.train.clone(), None),
        SplitStrategy::Last => {
            let cut = train_idx.len();
            (
                data.train.slice(0..cut),
                Some(data.train.slice(cut..data.train.len())),
            )
        }
        SplitStrategy::Random => (
            data.train.subset(&train_idx),
            Some(data.train.subset(&val_idx)),
        ),
    };
    Ok(Splits {
        train,
        val,
        test: data.test.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::generate;

    fn data(n: usize) -> Cifar10 {
        Cifar10 {
            train: generate(n, 1),
            test: generate(7, 2),
            class_names: Vec::new(),
        }
    }

    #[test]
    fn last_split_takes_the_tail() {
        let d = data(50);
        let cfg = SplitConfig {
            val_size: 5,
            ..Default::default()
        };
        let s = split(&d, &cfg).unwrap();
        assert_eq!(s.train, d.train.slice(0..45));
        assert_eq!(s.val.unwrap(), d.train.slice(45..50));
        assert_eq!(s.test, d.test);
    }

    #[test]
    fn random_split_is_seeded_disjoint_and_complete() {
        let d = data(40);
        let cfg = SplitConfig {
            strategy: SplitStrategy::Random,
            val_size: 10,
            seed: 3,
        };
        let (t, v) = split_indices(40, &cfg).unwrap();
        assert_eq!((t.len(), v.len()), (30, 10));
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        assert_ne!(v, (30..40).collect::<Vec<_>>());
        assert_eq!(split_indices(40, &cfg).unwrap(), (t.clone(), v.clone()));
        let other = split_indices(40, &SplitConfig { seed: 4, ..cfg }).unwrap();
        assert_ne!(other.1, v);
        let s = split(&d, &cfg).unwrap();
        assert_eq!(s.val.unwrap(), d.train.subset(&v));
    }

    #[test]
    fn none_and_bad_sizes() {
        let d = data(10);
        let s = split(&d, &SplitConfig::none()).unwrap();
        assert_eq!(s.train, d.train);
        assert!(s.val.is_none());
        for bad in [0, 10, 11] {
            let cfg = SplitConfig {
                val_size: bad,
                ..Default::default()
            };
            let e = split(&d, &cfg).unwrap_err();
            assert!(e.to_string().contains("split.val_size"), "{e}");
        }
    }
}
