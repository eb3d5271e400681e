//! [`WeightsFile`]: what `eval`, `predict` and `export` are given — a training checkpoint or
//! a bare state dict — sniffed from its metadata, with the checkpoint's checks (data
//! checksum, finite tensors, normalizer shape).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use cifar_data::{Normalizer, CHANNELS, IMAGE_SIDE};
use resnet_model::ResNetConfig;

use super::{
    data_section, metadata, parse_meta, read_file, tensors, Checkpoint, DATA_MEAN, DATA_STD,
    MODEL_PREFIX, MOMENTUM_PREFIX,
};
use crate::error::{Result, TrainError};

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
        Self::parse(path, &bytes, device)
    }

    /// [`WeightsFile::open`] on the bytes of a file already read (and validated as
    /// safetensors by `read_file`); `path` names it in errors.
    pub(crate) fn parse(path: &Path, bytes: &[u8], device: &Device) -> Result<Self> {
        let md = metadata(path, bytes)?;
        let mut all = tensors(path, bytes, device)?;
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
            let got = crc32c::crc32c(data_section(bytes));
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
