//! The run directory `runs/<name>-<timestamp>/`:
//!
//! ```text
//! config.yaml          the resolved config (file + --set overrides)
//! metrics.jsonl        one JSON object per logged row (every log_every iterations, every epoch)
//! metrics.csv          the same rows as CSV
//! tensorboard/         TensorBoard event files (scalars: train/val loss and accuracy, lr, …)
//! plots/               loss.png, accuracy.png, lr.png (refreshed every epoch)
//! checkpoints/         iter-NNNNNNN.safetensors (last K), latest.safetensors, best.safetensors
//! final.safetensors    the final weights alone (PyTorch names, no optimizer state; at the end)
//! best.safetensors     the best-on-validation weights alone (at the end)
//! stretches.jsonl/.md  one record per training session: iterations, wall time, CPU, build
//! report.json          test accuracy, per-class accuracy, confusion matrix (final and best)
//! report.md            the same, as Markdown tables
//! ```

use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointDir};
use crate::error::{Result, TrainError};

/// Paths of a run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates a fresh `<runs_dir>/<name>-<YYYYmmdd-HHMMSS>` (with a numeric suffix if that
    /// exists already) and its subdirectories.
    pub fn create(runs_dir: &Path, name: &str) -> Result<Self> {
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        std::fs::create_dir_all(runs_dir).map_err(|e| TrainError::io(runs_dir, e))?;
        let mut k = 0;
        let root = loop {
            let candidate = if k == 0 {
                runs_dir.join(format!("{name}-{stamp}"))
            } else {
                runs_dir.join(format!("{name}-{stamp}-{k}"))
            };
            match std::fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => k += 1,
                Err(e) => return Err(TrainError::io(&candidate, e)),
            }
        };
        let dir = Self { root };
        dir.create_subdirs()?;
        Ok(dir)
    }

    /// Creates the run directory `root` itself (and its parents). It must not exist, or be an
    /// empty directory: a new run never writes into another run's files.
    pub fn create_at(root: &Path) -> Result<Self> {
        match std::fs::read_dir(root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(TrainError::RunDir {
                        path: root.to_path_buf(),
                        reason: "exists and is not empty; continue the run in it with \
                                 `train --resume`, or choose another directory"
                            .into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(root).map_err(|e| TrainError::io(root, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory || root.exists() => {
                return Err(TrainError::RunDir {
                    path: root.to_path_buf(),
                    reason: format!("exists and is not a directory ({e})"),
                });
            }
            Err(e) => return Err(TrainError::io(root, e)),
        }
        let dir = Self {
            root: root.to_path_buf(),
        };
        dir.create_subdirs()?;
        Ok(dir)
    }

    /// An existing run directory (for resuming).
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(TrainError::RunDir {
                path: root.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        let dir = Self {
            root: root.to_path_buf(),
        };
        dir.create_subdirs()?;
        Ok(dir)
    }

    fn create_subdirs(&self) -> Result<()> {
        for d in [self.checkpoints(), self.tensorboard(), self.plots()] {
            std::fs::create_dir_all(&d).map_err(|e| TrainError::io(&d, e))?;
        }
        Ok(())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.yaml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.yaml")
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `final.safetensors`: the final model's weights alone (PyTorch `state_dict` names, the
    /// architecture in the metadata; no optimizer state), written when the run finishes.
    pub fn final_weights(&self) -> PathBuf {
        self.root.join("final.safetensors")
    }

    /// `best.safetensors`: the best-on-validation model's weights alone, as
    /// [`final_weights`](Self::final_weights).
    pub fn best_weights(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }

    /// `tensorboard/`.
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join("tensorboard")
    }

    /// `plots/`.
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }
}

/// Writes a whole file of a run through [`resnet_model::io::write_atomic`] (temporary file,
/// `fsync`, rename): a reader never sees half of it.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    resnet_model::io::write_atomic(path, bytes).map_err(|e| TrainError::io(path, e))
}

/// Resolves `train --resume <path>`: a run directory (its newest checkpoint that verifies,
/// see [`CheckpointDir::newest_good`]) or a checkpoint file (its run directory is the parent
/// of `checkpoints/`). Returns the run directory, the checkpoint's path and the checkpoint,
/// read (once) onto the CPU.
pub fn resolve_resume(path: &Path) -> Result<(PathBuf, PathBuf, Checkpoint)> {
    if path.is_dir() {
        let ckdir = CheckpointDir::new(path.join("checkpoints"), usize::MAX)?;
        let (file, ckpt) = ckdir
            .newest_good_checkpoint()?
            .ok_or_else(|| TrainError::RunDir {
                path: path.to_path_buf(),
                reason: "no checkpoint in checkpoints/ to resume from".into(),
            })?;
        return Ok((path.to_path_buf(), file, ckpt));
    }
    let run = run_of_checkpoint(path)?;
    let ckpt = Checkpoint::read(path, &candle_core::Device::Cpu)?;
    Ok((run, path.to_path_buf(), ckpt))
}

/// The run directory a checkpoint file belongs to: the parent of its `checkpoints/`.
fn run_of_checkpoint(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        return Err(TrainError::RunDir {
            path: path.to_path_buf(),
            reason: "no such run directory or checkpoint file".into(),
        });
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    if parent.file_name().is_some_and(|n| n == "checkpoints") {
        Ok(parent.parent().unwrap_or(Path::new(".")).to_path_buf())
    } else {
        Err(TrainError::RunDir {
            path: path.to_path_buf(),
            reason: "a checkpoint to resume from must sit in a run's checkpoints/ directory \
                     (the run continues in that run directory)"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_unique_dirs_and_resolves_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let a = RunDir::create(tmp.path(), "x").unwrap();
        let b = RunDir::create(tmp.path(), "x").unwrap();
        assert_ne!(a, b);
        assert!(a.checkpoints().is_dir() && a.plots().is_dir() && a.tensorboard().is_dir());
        let e = resolve_resume(a.root()).unwrap_err().to_string();
        assert!(e.contains("no checkpoint"), "{e}");
        // A directory whose only checkpoint is garbage: the error names it. (Choosing among
        // real checkpoints is tested in checkpoint/tests.rs.)
        let ck = a.checkpoints().join("iter-0000010.safetensors");
        std::fs::write(&ck, b"x").unwrap();
        let e = resolve_resume(a.root()).unwrap_err().to_string();
        assert!(
            e.contains("no checkpoint can be resumed") && e.contains("iter-0000010"),
            "{e}"
        );
        // A checkpoint file given directly belongs to its run directory, and is read.
        assert_eq!(run_of_checkpoint(&ck).unwrap(), a.root().to_path_buf());
        let e = resolve_resume(&ck).unwrap_err().to_string();
        assert!(
            e.contains("iter-0000010") && e.contains("not a valid safetensors"),
            "{e}"
        );
        let fixed = tmp.path().join("results/run");
        let r = RunDir::create_at(&fixed).unwrap();
        assert_eq!(r.root(), fixed);
        assert!(r.checkpoints().is_dir());
        let e = RunDir::create_at(&fixed).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("--resume"), "{e}");
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = RunDir::create_at(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = resolve_resume(&tmp.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such run directory"), "{e}");
    }
}
