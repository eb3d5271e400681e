//! Training checkpoints: one safetensors file holding everything a run needs to continue
//! bit-identically, and everything `eval`/`predict` need to reproduce its preprocessing.
//!
//! | tensor | content |
//! |---|---|
//! | `model.<name>` | every parameter and BatchNorm running statistic, PyTorch `state_dict` names |
//! | `optim.momentum_buffer.<name>` | SGD momentum buffers (absent before the first step) |
//! | `data.mean`, `data.std` | the fitted normalizer, `[3, 32, 32]` each |
//!
//! The safetensors metadata holds `format: pt`, `resnet_config` (the architecture as JSON,
//! like [`resnet_model::ResNetModel::save`]) and [`METADATA_KEY`]: a [`CheckpointMeta`] as
//! JSON (format version, iteration, position in the epoch, seed, best validation accuracy,
//! the resolved config YAML and its digest, …).
//!
//! Files are written to a temporary file in the same directory and renamed into place.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cifar_data::{Normalizer, CHANNELS, IMAGE_SIDE};
use resnet_model::ResNetConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Metadata key of the [`CheckpointMeta`] JSON.
pub const METADATA_KEY: &str = "resnet_cifar_checkpoint";
/// Current checkpoint format version.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of model tensors.
pub const MODEL_PREFIX: &str = "model.";
/// Prefix of SGD momentum buffers.
pub const MOMENTUM_PREFIX: &str = "optim.momentum_buffer.";
/// Name of the normalizer's per-pixel mean.
pub const DATA_MEAN: &str = "data.mean";
/// Name of the normalizer's per-pixel std.
pub const DATA_STD: &str = "data.std";

/// Sums over a stretch of training steps (an epoch, or a logging window).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct RunningStats {
    /// Sum over steps of `loss * batch size`.
    pub loss_sum: f64,
    /// Correctly classified training images (top-1, before the step's update).
    pub correct: u64,
    /// Images seen.
    pub images: u64,
    /// Steps taken.
    pub steps: u64,
    /// Seconds spent in those steps (data wait included, evaluation excluded).
    pub seconds: f64,
}

impl RunningStats {
    /// Adds one step.
    pub fn add(&mut self, loss: f32, correct: u64, images: u64, seconds: f64) {
        self.loss_sum += f64::from(loss) * images as f64;
        self.correct += correct;
        self.images += images;
        self.steps += 1;
        self.seconds += seconds;
    }

    /// Mean loss per image.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    /// Top-1 accuracy.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }

    /// Training images per second.
    pub fn images_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.images as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Everything about a checkpoint besides its tensors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Optimizer steps completed.
    pub iteration: u64,
    /// Epoch the next step belongs to (0-based).
    pub epoch: u64,
    /// Index of the next batch within that epoch (exact resume restarts the data order
    /// there; order and augmentation are functions of `(seed, epoch, sample)`).
    pub batch_in_epoch: u64,
    /// Steps per epoch of this run.
    pub batches_per_epoch: u64,
    /// The run's seed.
    pub seed: u64,
    /// Best validation accuracy so far and the iteration it was reached at.
    pub best_val: Option<(f64, u64)>,
    /// Statistics of the current, unfinished epoch.
    pub epoch_stats: RunningStats,
    /// Statistics of the current, unfinished logging window.
    pub window_stats: RunningStats,
    /// Training wall time so far, in seconds.
    pub elapsed_s: f64,
    /// The architecture (also in the `resnet_config` metadata entry).
    pub architecture: ResNetConfig,
    /// Class names, in label order.
    pub class_names: Vec<String>,
    /// The resolved run config, YAML.
    pub config_yaml: String,
    /// SHA-256 of `config_yaml`.
    pub config_digest: String,
    /// When the checkpoint was written (RFC 3339).
    pub written_at: String,
    /// CRC-32C of the file's data section (every tensor's bytes), checked on reading: a
    /// checkpoint damaged after it was written is refused instead of resumed. Filled in by
    /// [`Checkpoint::to_bytes`]; absent in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_crc32c: Option<u32>,
}

/// A checkpoint in memory.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Run position and provenance.
    pub meta: CheckpointMeta,
    /// Model state by PyTorch name (no prefix).
    pub model: BTreeMap<String, Tensor>,
    /// Momentum buffers by parameter name (no prefix).
    pub momentum: BTreeMap<String, Tensor>,
    /// The normalizer of the run.
    pub normalizer: Normalizer,
}

/// What a weights file given to `eval` or `predict` turned out to be.
#[derive(Debug)]
pub enum WeightsFile {
    /// A checkpoint written by this crate.
    Checkpoint(Box<Checkpoint>),
    /// A bare state dict (e.g. exported from PyTorch, or written by
    /// [`resnet_model::ResNetModel::save`]): tensors by name, an optional `model.` prefix
    /// removed, and the architecture if its metadata records one.
    Raw {
        /// The tensors.
        tensors: HashMap<String, Tensor>,
        /// The `resnet_config` metadata entry, if any.
        architecture: Option<ResNetConfig>,
    },
}

fn image_shape() -> (usize, usize, usize) {
    (CHANNELS, IMAGE_SIDE, IMAGE_SIDE)
}

/// Reads and parses a safetensors file; truncated or corrupt files give a clear error.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        TrainError::checkpoint(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    Ok(bytes)
}

/// The data section of a safetensors buffer (after the 8-byte length and the JSON header);
/// empty if the buffer is too short (callers validated it with [`read_file`]).
fn data_section(bytes: &[u8]) -> &[u8] {
    let Some(len) = bytes.get(..8) else {
        return &[];
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    bytes.get(8usize.saturating_add(n)..).unwrap_or(&[])
}

fn metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| TrainError::checkpoint(path, format!("unreadable safetensors header: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

fn tensors(path: &Path, bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| TrainError::checkpoint(path, format!("cannot read tensors: {e}")))
}

impl Checkpoint {
    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut all: BTreeMap<String, Tensor> = BTreeMap::new();
        for (k, t) in &self.model {
            all.insert(format!("{MODEL_PREFIX}{k}"), t.clone());
        }
        for (k, t) in &self.momentum {
            all.insert(format!("{MOMENTUM_PREFIX}{k}"), t.clone());
        }
        let dev = self
            .model
            .values()
            .next()
            .map_or(Device::Cpu, |t| t.device().clone());
        let norm = |v: &[f32], name: &str| {
            Tensor::from_slice(v, image_shape(), &dev)
                .map_err(|e| TrainError::model(format!("storing {name}"), e))
        };
        all.insert(DATA_MEAN.into(), norm(self.normalizer.mean(), DATA_MEAN)?);
        all.insert(DATA_STD.into(), norm(self.normalizer.std(), DATA_STD)?);
        // safetensors needs host memory; move everything to the CPU.
        let all = all
            .into_iter()
            .map(|(k, t)| {
                let t = t
                    .to_device(&Device::Cpu)
                    .map_err(|e| TrainError::model(format!("copying {k} to the CPU"), e))?;
                Ok((k, t))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let arch_json =
            serde_json::to_string(&self.meta.architecture).expect("architecture serializes");
        let serialize = |meta: &CheckpointMeta| {
            let meta_json = serde_json::to_string(meta).expect("metadata serializes");
            let metadata = HashMap::from([
                ("format".to_string(), "pt".to_string()),
                (METADATA_KEY.to_string(), meta_json),
                (
                    resnet_model::io::CONFIG_METADATA_KEY.to_string(),
                    arch_json.clone(),
                ),
            ]);
            safetensors::serialize(all.iter(), Some(metadata)).map_err(|e| TrainError::Checkpoint {
                path: PathBuf::from("<memory>"),
                reason: format!("serialization failed: {e}"),
            })
        };
        // The data section does not depend on the metadata: serialize once to checksum it,
        // then again with the checksum in the metadata.
        let mut meta = self.meta.clone();
        meta.data_crc32c = None;
        let first = serialize(&meta)?;
        meta.data_crc32c = Some(crc32c::crc32c(data_section(&first)));
        serialize(&meta)
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads only the metadata of a checkpoint written by this crate.
    pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
        let bytes = read_file(path)?;
        parse_meta(path, &metadata(path, &bytes)?)?.ok_or_else(|| {
            TrainError::checkpoint(
                path,
                "this is a plain weights file, not a training checkpoint (no run metadata); \
                 it can be evaluated but not resumed",
            )
        })
    }

    /// Reads a checkpoint written by this crate onto `device`.
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        match WeightsFile::open(path, device)? {
            WeightsFile::Checkpoint(c) => Ok(*c),
            WeightsFile::Raw { .. } => Err(TrainError::checkpoint(
                path,
                "this is a plain weights file, not a training checkpoint (no run metadata); \
                 it can be evaluated but not resumed",
            )),
        }
    }

    /// The model state as a `HashMap`, for [`resnet_model::ResNetModel::load_state_dict`].
    pub fn model_state(&self) -> HashMap<String, Tensor> {
        self.model
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn parse_meta(path: &Path, md: &HashMap<String, String>) -> Result<Option<CheckpointMeta>> {
    let Some(json) = md.get(METADATA_KEY) else {
        return Ok(None);
    };
    let meta: CheckpointMeta = serde_json::from_str(json).map_err(|e| {
        TrainError::checkpoint(path, format!("metadata `{METADATA_KEY}` is malformed: {e}"))
    })?;
    if meta.format_version != FORMAT_VERSION {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "checkpoint format version {} is not supported (this build reads version \
                 {FORMAT_VERSION})",
                meta.format_version
            ),
        ));
    }
    Ok(Some(meta))
}

/// Rejects weights that hold NaN or ±Inf (a diverged run, a corrupted export): they would
/// evaluate to a meaningless accuracy and predict one class for everything. Names the first
/// bad tensor in name order.
fn check_finite(path: &Path, all: &HashMap<String, Tensor>) -> Result<()> {
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    for name in names {
        let t = &all[name];
        if !t.dtype().is_float() {
            continue;
        }
        let values = t
            .flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| TrainError::checkpoint(path, format!("tensor `{name}`: {e}")))?;
        if let Some((i, x)) = values.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "tensor `{name}` holds {x} at flat index {i}: weights must be finite \
                     (did the run diverge?)"
                ),
            ));
        }
    }
    Ok(())
}

impl WeightsFile {
    /// Opens a checkpoint or a bare weights file. Weights holding NaN or ±Inf are refused,
    /// naming the first such tensor.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let bytes = read_file(path)?;
        let md = metadata(path, &bytes)?;
        let mut all = tensors(path, &bytes, device)?;
        check_finite(path, &all)?;
        let Some(meta) = parse_meta(path, &md)? else {
            let architecture = md
                .get(resnet_model::io::CONFIG_METADATA_KEY)
                .and_then(|j| serde_json::from_str(j).ok());
            let prefixed = !all.is_empty() && all.keys().all(|k| k.starts_with(MODEL_PREFIX));
            let tensors = if prefixed {
                all.into_iter()
                    .map(|(k, v)| (k[MODEL_PREFIX.len()..].to_string(), v))
                    .collect()
            } else {
                all
            };
            return Ok(WeightsFile::Raw {
                tensors,
                architecture,
            });
        };
        if let Some(want) = meta.data_crc32c {
            let got = crc32c::crc32c(data_section(&bytes));
            if got != want {
                return Err(TrainError::checkpoint(
                    path,
                    format!(
                        "the tensor data does not match the checksum recorded when the file \
                         was written (CRC-32C {got:08x}, expected {want:08x}): the file is \
                         damaged"
                    ),
                ));
            }
        }
        let take = |all: &mut HashMap<String, Tensor>, name: &str| -> Result<Vec<f32>> {
            let t = all.remove(name).ok_or_else(|| {
                TrainError::checkpoint(path, format!("tensor `{name}` is missing"))
            })?;
            if t.dims() != [CHANNELS, IMAGE_SIDE, IMAGE_SIDE] {
                return Err(TrainError::checkpoint(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}, expected [3, 32, 32]",
                        t.dims()
                    ),
                ));
            }
            t.flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| TrainError::checkpoint(path, format!("tensor `{name}`: {e}")))
        };
        let mean = take(&mut all, DATA_MEAN)?;
        let std = take(&mut all, DATA_STD)?;
        let normalizer = Normalizer::from_parts(mean, std)
            .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
        let mut model = BTreeMap::new();
        let mut momentum = BTreeMap::new();
        for (k, v) in all {
            if let Some(name) = k.strip_prefix(MOMENTUM_PREFIX) {
                momentum.insert(name.to_string(), v);
            } else if let Some(name) = k.strip_prefix(MODEL_PREFIX) {
                model.insert(name.to_string(), v);
            } else {
                return Err(TrainError::checkpoint(
                    path,
                    format!("unexpected tensor `{k}` (expected `model.*`, `optim.*`, `data.*`)"),
                ));
            }
        }
        Ok(WeightsFile::Checkpoint(Box::new(Checkpoint {
            meta,
            model,
            momentum,
            normalizer,
        })))
    }
}

/// Removes `.NAME.tmp-PID` files in `dir` whose process `PID` is not running (checked
/// through `/proc`; nothing is removed where there is no `/proc`).
fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let proc_fs = Path::new("/proc/self").exists();
    let mut removed = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(TrainError::io(dir, e)),
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive =
            pid == std::process::id() || !proc_fs || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_file()) {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| TrainError::io(&p, e))?;
            tracing::info!(
                "removed {} (left by process {pid}, which is gone)",
                p.display()
            );
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TrainError::io(path, e)
    })
}

/// The checkpoints directory of a run: `iter-NNNNNNN.safetensors` files (the last K kept),
/// `latest.safetensors` and `best.safetensors`.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
    keep_last: usize,
}

/// File name of the newest checkpoint.
pub const LATEST: &str = "latest.safetensors";
/// File name of the best-on-validation checkpoint.
pub const BEST: &str = "best.safetensors";

impl CheckpointDir {
    /// Manages `dir` (created if missing), keeping `keep_last` periodic checkpoints.
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        Ok(Self { dir, keep_last })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the periodic checkpoint at `iteration`.
    pub fn iteration_path(&self, iteration: u64) -> PathBuf {
        self.dir.join(format!("iter-{iteration:07}.safetensors"))
    }

    /// Path of `latest.safetensors`.
    pub fn latest(&self) -> PathBuf {
        self.dir.join(LATEST)
    }

    /// Path of `best.safetensors`.
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// Writes `ckpt` as the periodic checkpoint of its iteration and as `latest` (and as
    /// `best` when `is_best`), then deletes periodic checkpoints beyond the last K. Returns
    /// the periodic checkpoint's path.
    pub fn save(&self, ckpt: &Checkpoint, is_best: bool) -> Result<PathBuf> {
        let bytes = ckpt.to_bytes()?;
        let path = self.iteration_path(ckpt.meta.iteration);
        write_atomic(&path, &bytes)?;
        write_atomic(&self.latest(), &bytes)?;
        if is_best {
            write_atomic(&self.best(), &bytes)?;
        }
        self.prune()?;
        Ok(path)
    }

    /// Periodic checkpoints, oldest first.
    pub fn periodic(&self) -> Result<Vec<(u64, PathBuf)>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        let mut v = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| TrainError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("iter-")
                .and_then(|s| s.strip_suffix(".safetensors"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                v.push((n, entry.path()));
            }
        }
        v.sort();
        Ok(v)
    }

    fn prune(&self) -> Result<()> {
        let all = self.periodic()?;
        let excess = all.len().saturating_sub(self.keep_last);
        for (_, p) in &all[..excess] {
            std::fs::remove_file(p).map_err(|e| TrainError::io(p, e))?;
        }
        Ok(())
    }

    /// The newest checkpoint by name: `latest.safetensors`, else the newest periodic one.
    /// Use [`newest_good`](Self::newest_good) to resume.
    pub fn newest(&self) -> Result<Option<PathBuf>> {
        if self.latest().is_file() {
            return Ok(Some(self.latest()));
        }
        Ok(self.periodic()?.pop().map(|(_, p)| p))
    }

    /// The checkpoint to resume from: among `latest` and the periodic checkpoints, the one
    /// with the highest iteration that reads and verifies (valid safetensors, run metadata,
    /// data checksum, finite tensors). A truncated `latest`, or a `latest` older than an
    /// `iter-N` written just before a kill, is skipped with a warning that says why.
    /// `Ok(None)` when there is no checkpoint at all; an error listing every file and its
    /// defect when none is usable.
    pub fn newest_good(&self) -> Result<Option<(PathBuf, u64)>> {
        let mut candidates: Vec<PathBuf> = self.periodic()?.into_iter().map(|(_, p)| p).collect();
        if self.latest().is_file() {
            candidates.push(self.latest());
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut bad: Vec<(PathBuf, String)> = Vec::new();
        let mut readable: Vec<(u64, bool, PathBuf)> = Vec::new();
        for p in candidates {
            match Checkpoint::read_meta(&p) {
                Ok(m) => {
                    let is_latest = p == self.latest();
                    readable.push((m.iteration, is_latest, p));
                }
                Err(e) => bad.push((p, e.to_string())),
            }
        }
        // Highest iteration first; `latest` before an `iter-N` of the same iteration.
        readable.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        let mut chosen = None;
        for (it, _, p) in readable {
            match Checkpoint::read(&p, &Device::Cpu) {
                Ok(_) => {
                    chosen = Some((p, it));
                    break;
                }
                Err(e) => bad.push((p, e.to_string())),
            }
        }
        for (p, why) in &bad {
            tracing::warn!("skipping checkpoint {}: {why}", p.display());
        }
        match chosen {
            Some((p, it)) => {
                if !bad.is_empty() {
                    tracing::warn!(
                        "resuming from {} (iteration {it}), the newest checkpoint that verifies",
                        p.display()
                    );
                }
                Ok(Some((p, it)))
            }
            None => Err(TrainError::RunDir {
                path: self.dir.clone(),
                reason: format!(
                    "no checkpoint can be resumed from: {}",
                    bad.iter()
                        .map(|(p, why)| format!("{}: {why}", p.display()))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }),
        }
    }

    /// Removes temporary files (`.NAME.tmp-PID`) that processes no longer running left in
    /// `dir` (a run killed while writing), then re-applies the `keep_last` rule (a kill
    /// during clean-up can leave one periodic checkpoint too many). Returns the files
    /// removed. Temporaries of live processes (and, where process liveness cannot be
    /// checked, all of them) are left alone.
    pub fn clean_up(&self, dir_extra: &[&Path]) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for d in std::iter::once(self.dir.as_path()).chain(dir_extra.iter().copied()) {
            removed.extend(remove_stale_temporaries(d)?);
        }
        let before = self.periodic()?.len();
        self.prune()?;
        let after = self.periodic()?.len();
        if before > after {
            tracing::info!(
                "removed {} periodic checkpoint(s) beyond keep_last = {}",
                before - after,
                self.keep_last
            );
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
