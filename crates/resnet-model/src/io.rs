//! Safetensors files: reading tensors, writing the model state atomically, and the config
//! stored in a file's metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Result, Tensor};

use crate::config::ResNetConfig;

/// Metadata key holding the [`ResNetConfig`] as JSON in files written by
/// [`crate::ResNetModel::save`].
pub const CONFIG_METADATA_KEY: &str = "resnet_config";

/// Reads every tensor of a safetensors file onto `device`; errors name the file.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| e.with_path(path))
}

/// The config recorded in a safetensors file's metadata by [`crate::ResNetModel::save`], or
/// `None` when the file has none (e.g. a PyTorch export).
pub fn read_config(path: &Path) -> Result<Option<ResNetConfig>> {
    let bytes = std::fs::read(path).map_err(|e| candle_core::Error::from(e).with_path(path))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| candle_core::Error::from(e).with_path(path))?;
    let Some(json) = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_METADATA_KEY))
    else {
        return Ok(None);
    };
    let cfg: ResNetConfig = serde_json::from_str(json).map_err(|e| {
        candle_core::Error::msg(format!(
            "metadata `{CONFIG_METADATA_KEY}` is not a valid ResNet config: {e}"
        ))
        .with_path(path)
    })?;
    Ok(Some(cfg))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.safetensors".to_string());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `state` with the config in the metadata to `path`: first to a temporary file in
/// the same directory, then renamed over `path`, so a failure never leaves a partial file.
pub fn write_state(
    cfg: &ResNetConfig,
    state: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let cfg_json = serde_json::to_string(cfg).map_err(candle_core::Error::wrap)?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (CONFIG_METADATA_KEY.to_string(), cfg_json),
    ]);
    let tmp = temp_path(path);
    let written = safetensors::serialize_to_file(state.iter(), Some(metadata), &tmp)
        .map_err(candle_core::Error::from)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(candle_core::Error::from));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.with_path(path));
    }
    Ok(())
}
