//! Batches of normalized, augmented images, prepared in the background.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::{augment_into, AugmentConfig, AugmentParams};
use crate::rng::{permutation, STREAM_SHUFFLE};
use crate::{DataError, ImageSet, Normalizer, IMAGE_BYTES};

/// Batching settings, usable inside a YAML run config.
///
/// ```yaml
/// loader: { batch_size: 128, shuffle: true, drop_last: false, augment: { pad: 4, crop: true, flip: true }, seed: 0, prefetch: 2 }
/// loader: { batch_size: 500, shuffle: false, augment: null }   # evaluation
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// Images per batch. Default: 128 (the paper's mini-batch size).
    pub batch_size: usize,
    /// Shuffle the order every epoch, from `(seed, epoch)`. Default: true.
    pub shuffle: bool,
    /// Drop the last, incomplete batch of an epoch. Default: false.
    pub drop_last: bool,
    /// Augmentation; `None` (YAML `null`) for none. Default: the paper's
    /// ([`AugmentConfig::default`]).
    pub augment: Option<AugmentConfig>,
    /// Seed of the shuffle and of the augmentation. Default: 0.
    pub seed: u64,
    /// Batches prepared ahead in a background thread; 0 prepares each batch in the consuming
    /// thread when it is asked for. Default: 2.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            shuffle: true,
            drop_last: false,
            augment: Some(AugmentConfig::default()),
            seed: 0,
            prefetch: 2,
        }
    }
}

impl LoaderConfig {
    /// Evaluation settings: file order, no augmentation, keep the last partial batch.
    pub fn eval(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            drop_last: false,
            augment: None,
            ..Self::default()
        }
    }

    /// Checks the values (`batch_size >= 1`).
    pub fn validate(&self) -> Result<(), DataError> {
        if self.batch_size == 0 {
            return Err(DataError::config("loader.batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// One batch: normalized (and possibly augmented) images and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `len() * 3 * 32 * 32` values, NCHW.
    pub images: Vec<f32>,
    /// Class labels, `0..10`.
    pub labels: Vec<u32>,
    /// Index of each sample in the loader's [`ImageSet`].
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Turns an [`ImageSet`] into batches, epoch by epoch.
///
/// The order of an epoch depends only on `(seed, epoch)` and each sample's augmentation only
/// on `(seed, epoch, sample index)`: results are identical whatever the number of threads,
/// and [`BatchLoader::epoch`] can restart exactly at any batch.
#[derive(Clone, Debug)]
pub struct BatchLoader {
    set: Arc<ImageSet>,
    normalizer: Arc<Normalizer>,
    cfg: LoaderConfig,
    shard: Shard,
}

/// Which part of every batch a loader yields: shard `rank` of `count` (data-parallel training,
/// one shard per process). [`Shard::WHOLE`] is the whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub rank: usize,
    /// Shards per batch, at least 1.
    pub count: usize,
}

impl Shard {
    /// The whole batch: shard 0 of 1.
    pub const WHOLE: Shard = Shard { rank: 0, count: 1 };

    /// The positions `start..end` of this shard within a batch of `len` samples: consecutive
    /// slices whose sizes differ by at most one (the first `len % count` shards get the extra
    /// sample), so that the shards of ranks `0..count`, in order, are exactly the batch.
    pub fn range(self, len: usize) -> std::ops::Range<usize> {
        let (q, r) = (len / self.count, len % self.count);
        let start = self.rank * q + self.rank.min(r);
        let size = q + usize::from(self.rank < r);
        start..start + size
    }
}

impl BatchLoader {
    /// A loader over `set`. Panics if `cfg.batch_size == 0` (check user input with
    /// [`LoaderConfig::validate`]).
    pub fn new(set: Arc<ImageSet>, normalizer: Arc<Normalizer>, cfg: LoaderConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        Self {
            set,
            normalizer,
            cfg,
            shard: Shard::WHOLE,
        }
    }

    /// This loader yielding only `shard` of every batch ([`Shard::range`]). Order and
    /// augmentation are those of the whole batch, so the shards of all ranks together are
    /// exactly what the unsharded loader yields. Panics if `shard.rank >= shard.count`.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        assert!(
            shard.rank < shard.count,
            "shard {} of {} does not exist",
            shard.rank,
            shard.count
        );
        self.shard = shard;
        self
    }

    /// The shard this loader yields.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Samples in batch `batch_index` of an epoch, all shards together (the last batch of an
    /// epoch may be partial).
    pub fn batch_len(&self, batch_index: usize) -> usize {
        let start = batch_index * self.cfg.batch_size;
        (start + self.cfg.batch_size).min(self.set.len()) - start.min(self.set.len())
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// The images batched.
    pub fn set(&self) -> &Arc<ImageSet> {
        &self.set
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.set.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch`: a seeded permutation, or `0..len` without shuffling.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        if self.cfg.shuffle {
            permutation(self.set.len(), self.cfg.seed, STREAM_SHUFFLE, epoch)
        } else {
            (0..self.set.len()).collect()
        }
    }

    /// Batches of `epoch`, starting at batch index `start_batch` (exact resume). Order and
    /// augmentation depend only on (seed, epoch, sample index), never on thread count.
    /// Prepared in a background thread with a bounded queue of `prefetch` batches.
    pub fn epoch(&self, epoch: u64, start_batch: usize) -> EpochIter {
        let job = Arc::new(Job {
            set: Arc::clone(&self.set),
            normalizer: Arc::clone(&self.normalizer),
            cfg: self.cfg,
            epoch,
            order: self.order(epoch),
            shard: self.shard,
        });
        let end = self.batches_per_epoch();
        let start = start_batch.min(end);
        let remaining = end - start;
        let inner = if self.cfg.prefetch == 0 || remaining == 0 {
            Inner::Inline { job, next: start }
        } else {
            let (tx, rx) = sync_channel(self.cfg.prefetch);
            let worker = Arc::clone(&job);
            let handle = std::thread::Builder::new()
                .name(format!("cifar-batches-e{epoch}"))
                .spawn(move || {
                    for b in start..end {
                        if tx.send(worker.build(b)).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawning the batch preparation thread");
            Inner::Background {
                rx: Some(rx),
                handle: Some(handle),
            }
        };
        EpochIter { inner, remaining }
    }

    /// Batch `batch_index` of `epoch`, built in the calling thread (uses the current rayon
    /// pool). Panics if `batch_index >= self.batches_per_epoch()`.
    pub fn batch(&self, epoch: u64, batch_index: usize) -> Batch {
        assert!(
            batch_index < self.batches_per_epoch(),
            "batch {batch_index} out of range: an epoch has {} batches",
            self.batches_per_epoch()
        );
        let job = Job {
            set: Arc::clone(&self.set),
            normalizer: Arc::clone(&self.normalizer),
            cfg: self.cfg,
            epoch,
            order: self.order(epoch),
            shard: self.shard,
        };
        job.build(batch_index)
    }
}

/// Everything needed to build the batches of one epoch.
struct Job {
    set: Arc<ImageSet>,
    normalizer: Arc<Normalizer>,
    cfg: LoaderConfig,
    epoch: u64,
    order: Vec<usize>,
    shard: Shard,
}

impl Job {
    fn build(&self, b: usize) -> Batch {
        let start = b * self.cfg.batch_size;
        let end = (start + self.cfg.batch_size).min(self.order.len());
        let part = self.shard.range(end - start);
        let indices = self.order[start + part.start..start + part.end].to_vec();
        make_batch(
            &self.set,
            &self.normalizer,
            &indices,
            self.cfg.augment.as_ref(),
            self.cfg.seed,
            self.epoch,
        )
    }
}

/// Builds the batch of samples `indices` of `set` (rayon-parallel across samples). With
/// `augment`, sample `i` gets [`AugmentParams::draw`]`(augment, seed, epoch, i)`.
pub fn make_batch(
    set: &ImageSet,
    normalizer: &Normalizer,
    indices: &[usize],
    augment: Option<&AugmentConfig>,
    seed: u64,
    epoch: u64,
) -> Batch {
    let mut images = vec![0f32; indices.len() * IMAGE_BYTES];
    images
        .par_chunks_mut(IMAGE_BYTES)
        .zip(indices.par_iter())
        .with_min_len(4)
        .for_each(|(out, &i)| match augment {
            Some(a) => {
                let p = AugmentParams::draw(a, seed, epoch, i as u64);
                augment_into(normalizer, set.image(i), p, a.pad, out);
            }
            None => normalizer.normalize_into(set.image(i), out),
        });
    Batch {
        images,
        labels: indices.iter().map(|&i| u32::from(set.label(i))).collect(),
        indices: indices.to_vec(),
    }
}

enum Inner {
    Inline {
        job: Arc<Job>,
        next: usize,
    },
    Background {
        rx: Option<Receiver<Batch>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch (see [`BatchLoader::epoch`]). Dropping it early stops the
/// background thread.
pub struct EpochIter {
    inner: Inner,
    remaining: usize,
}

impl Iterator for EpochIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        let batch = match &mut self.inner {
            Inner::Inline { job, next } => {
                let b = job.build(*next);
                *next += 1;
                b
            }
            Inner::Background { rx, handle } => {
                match rx.as_ref().expect("receiver lives until drop").recv() {
                    Ok(b) => b,
                    Err(_) => {
                        // The producer ended early: it can only have panicked.
                        if let Some(h) = handle.take() {
                            if let Err(p) = h.join() {
                                std::panic::resume_unwind(p);
                            }
                        }
                        panic!("batch preparation thread stopped early");
                    }
                }
            }
        };
        self.remaining -= 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for EpochIter {}

impl Drop for EpochIter {
    fn drop(&mut self) {
        if let Inner::Background { rx, handle } = &mut self.inner {
            // Closing the channel makes the producer's next send fail, so it stops.
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

impl std::fmt::Debug for EpochIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochIter")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}
