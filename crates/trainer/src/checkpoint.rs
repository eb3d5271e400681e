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
use crate::run_dir::write_file;
use crate::running_stats::RunningStats;

mod retention;
mod weights_file;

pub use retention::{CheckpointDir, BEST, LATEST};
pub use weights_file::WeightsFile;

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

/// The metadata of a safetensors file, read from its header only.
fn read_header(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    /// safetensors' own limit on the header size.
    const MAX_HEADER: u64 = 100_000_000;
    let corrupt = |why: String| {
        TrainError::checkpoint(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {why}"),
        )
    };
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| corrupt(format!("reading the header length: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(corrupt(format!("header length {n} is implausible")));
    }
    let mut bytes = len.to_vec();
    bytes.resize(8 + n as usize, 0);
    f.read_exact(&mut bytes[8..])
        .map_err(|e| corrupt(format!("reading the {n}-byte header: {e}")))?;
    // The header is JSON: `{"__metadata__": {..}, "<tensor>": {..}, ..}`. (safetensors'
    // own parser also checks the tensors' offsets against the data, which is not read here.)
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: Option<HashMap<String, String>>,
    }
    let header: Header = serde_json::from_slice(&bytes[8..])
        .map_err(|e| corrupt(format!("unreadable safetensors header: {e}")))?;
    Ok(header.metadata.unwrap_or_default())
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
        write_file(path, &self.to_bytes()?)
    }

    /// Reads the metadata of a checkpoint written by this crate from the file's header alone
    /// (a few kB, whatever the file's size): enough to order checkpoints or describe a run,
    /// but the tensors are not verified; [`Checkpoint::read`] does that.
    pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
        parse_meta(path, &read_header(path)?)?.ok_or_else(|| {
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

    /// A checkpoint from the bytes [`Checkpoint::to_bytes`] gave (e.g. sent by rank 0 of a
    /// data-parallel run), verified like a file; `name` labels it in errors.
    pub fn from_bytes(bytes: &[u8], name: &Path, device: &Device) -> Result<Self> {
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            TrainError::checkpoint(name, format!("not a valid safetensors buffer: {e}"))
        })?;
        match WeightsFile::parse(name, bytes, device)? {
            WeightsFile::Checkpoint(c) => Ok(*c),
            WeightsFile::Raw { .. } => Err(TrainError::checkpoint(
                name,
                "a plain weights buffer, not a training checkpoint",
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

#[cfg(test)]
mod tests;
