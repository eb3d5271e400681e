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

/// The temporary file [`write_atomic`] writes `path` through: `.NAME.tmp-PID` in the same
/// directory (so a crashed writer's leftovers are recognisable and removable).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".to_string(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` so that `path` holds either its old content or all of the new,
/// never part of it, even across a crash or power loss: the bytes go to [`temp_path`],
/// are flushed to disk (`fsync`), the file is renamed over `path`, and the directory entry
/// is flushed too. On error the temporary file is removed. Every file this project writes
/// whole (weights, checkpoints, configs, metrics, reports, plots) goes through here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_parent(path);
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Flushes the directory entry of `path` (best effort: some file systems refuse to open a
/// directory for syncing, and the data itself is already on disk).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Writes `state` with the config in the metadata to `path` through [`write_atomic`], so a
/// failure never leaves a partial file.
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
    let bytes = safetensors::serialize(state.iter(), Some(metadata))
        .map_err(|e| candle_core::Error::from(e).with_path(path))?;
    write_atomic(path, &bytes).map_err(|e| candle_core::Error::from(e).with_path(path))
}
