//! [`CheckpointDir`]: a run's `checkpoints/` directory — periodic `iter-N` files (the last K
//! kept), `latest` and `best`, choosing the checkpoint to resume from, and cleaning up after
//! a run that was killed while writing.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::Checkpoint;
use crate::error::{Result, TrainError};
use crate::run_dir::write_file;

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
        write_file(&path, &bytes)?;
        write_file(&self.latest(), &bytes)?;
        if is_best {
            write_file(&self.best(), &bytes)?;
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
        Ok(self
            .newest_good_checkpoint()?
            .map(|(p, c)| (p, c.meta.iteration)))
    }

    /// [`newest_good`](Self::newest_good), with the checkpoint itself, read onto the CPU:
    /// the only full read of the file a resume needs (the other candidates' headers are
    /// read to order them).
    pub fn newest_good_checkpoint(&self) -> Result<Option<(PathBuf, Checkpoint)>> {
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
        for (_, _, p) in readable {
            match Checkpoint::read(&p, &Device::Cpu) {
                Ok(c) => {
                    chosen = Some((p, c));
                    break;
                }
                Err(e) => bad.push((p, e.to_string())),
            }
        }
        for (p, why) in &bad {
            tracing::warn!("skipping checkpoint {}: {why}", p.display());
        }
        match chosen {
            Some((p, c)) => {
                if !bad.is_empty() {
                    tracing::warn!(
                        "resuming from {} (iteration {}), the newest checkpoint that verifies",
                        p.display(),
                        c.meta.iteration
                    );
                }
                Ok(Some((p, c)))
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
