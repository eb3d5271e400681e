//! CIFAR-10 data layer: download, parse, split, normalize, augment, batch.
//!
//! * [`fetch`] downloads (or copies from a local archive) the official binary archive,
//!   verifies the SHA-256 of every `.bin` file and installs into `cifar-10-batches-bin/` each
//!   dataset file that is missing or corrupt, atomically, leaving everything else there
//!   untouched (`cargo xtask fetch-cifar`).
//! * [`load`] reads the six `.bin` files strictly into compact [`ImageSet`]s (`u8` CHW pixels,
//!   `u8` labels) — all 60,000 images in well under a second.
//! * [`split`] makes the paper's 45,000/5,000 train/validation split (by default the last
//!   5,000 training images are the validation set), a seeded random split, or none.
//! * [`Normalizer`] scales to `[0, 1]` and subtracts the per-pixel mean image (the paper's
//!   choice) or applies per-channel mean/std.
//! * [`BatchLoader`] yields shuffled, augmented (pad 4, random crop, flip), normalized NCHW
//!   `f32` batches, prepared in parallel in the background; everything random is a pure
//!   function of `(seed, epoch, sample index)`.
//!
//! With the `candle` feature, `Batch::to_tensors` converts a batch to candle tensors.
//!
//! ```
//! use std::sync::Arc;
//! use cifar_data::{split, synthetic, BatchLoader, LoaderConfig, NormalizationConfig,
//!                  Normalizer, SplitConfig};
//!
//! # fn main() -> Result<(), cifar_data::DataError> {
//! // A tiny synthetic dataset in the real on-disk format (real data: `cifar_data::load`).
//! let dir = tempfile::tempdir().unwrap();
//! synthetic::write_dataset(dir.path(), 20, 0)?;
//! let data = cifar_data::load_with_records(dir.path(), Some(20))?;
//! assert_eq!((data.train.len(), data.test.len()), (100, 20));
//!
//! let splits = split(&data, &SplitConfig { val_size: 10, ..SplitConfig::default() })?;
//! let train = Arc::new(splits.train);
//! let norm = Arc::new(Normalizer::fit(&NormalizationConfig::PerPixelMean, &train));
//! let loader = BatchLoader::new(train, norm, LoaderConfig { batch_size: 32, ..Default::default() });
//! assert_eq!(loader.batches_per_epoch(), 3);
//! let sizes: Vec<usize> = loader.epoch(0, 0).map(|b| b.len()).collect();
//! assert_eq!(sizes, [32, 32, 26]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod augment;
mod error;
pub mod fetch;
mod image_set;
mod loader;
mod normalize;
mod parse;
mod rng;
mod split;
pub mod synthetic;
#[cfg(feature = "candle")]
mod tensors;

pub use augment::{augment_into, augment_into_slow, AugmentConfig, AugmentParams};
pub use error::DataError;
pub use image_set::ImageSet;
pub use loader::{make_batch, Batch, BatchLoader, EpochIter, LoaderConfig, Shard};
pub use normalize::{NormalizationConfig, Normalizer};
pub use parse::{
    load, load_with_records, parse_batch, read_batch_file, read_class_names, BATCHES_DIR,
    META_FILE, RECORDS_PER_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES,
};
pub use split::{split, split_indices, SplitConfig, SplitStrategy, Splits};

/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// The official class names, in label order (as `batches.meta.txt` lists them).
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Height and width of an image.
pub const IMAGE_SIDE: usize = 32;
/// Colour channels (R, G, B).
pub const CHANNELS: usize = 3;
/// Bytes per image: CHW, the R plane, then G, then B, each row-major 32x32.
pub const IMAGE_BYTES: usize = CHANNELS * IMAGE_SIDE * IMAGE_SIDE;

/// The CIFAR-10 dataset in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cifar10 {
    /// The 50,000 training images, in file order (`data_batch_1` .. `data_batch_5`).
    pub train: ImageSet,
    /// The 10,000 test images, in file order.
    pub test: ImageSet,
    /// The ten class names from `batches.meta.txt`, in label order.
    pub class_names: Vec<String>,
}
