//! Shared helpers for the end-to-end tests of the workspace (`crates/resnet-cli/tests/`:
//! `e2e.rs`, `shipped_weights.rs`), which run the real `resnet-cli` binary as child
//! processes (`CARGO_BIN_EXE_resnet-cli`): installing data, running commands, comparing
//! checkpoints.
//!
//! Data: when `<workspace>/../shared/data/cifar-10-binary.tar.gz` exists the tests install
//! the real CIFAR-10 from it (`--from`), otherwise (or with `RESNET_E2E_SYNTHETIC=1`) they
//! write a synthetic dataset in the same binary format — except in CI (`CI` set), where a
//! missing archive fails the tests.
//!
//! ```
//! let root = resnet_e2e::workspace_root();
//! assert!(root.join("configs/smoke.yaml").is_file());
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cifar_data::fetch::{fetch, FetchOptions};

/// The workspace root (parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace")
        .to_path_buf()
}

/// The real archive beside the checkout, if present (and `RESNET_E2E_SYNTHETIC` is not set,
/// which forces the synthetic-data path).
pub fn real_archive() -> Option<PathBuf> {
    if std::env::var_os("RESNET_E2E_SYNTHETIC").is_some() {
        return None;
    }
    let p = workspace_root().join("../shared/data/cifar-10-binary.tar.gz");
    p.is_file().then_some(p)
}

/// [`install_data`] into `base/real` or `base/synthetic` (whichever [`install_data`] will
/// install), so that a directory never holds the other kind; returns that directory. Test
/// binaries call it once (behind a `OnceLock`) and share the dataset between their tests.
pub fn install_data_under(base: &Path) -> PathBuf {
    let dir = base.join(if real_archive().is_some() {
        "real"
    } else {
        "synthetic"
    });
    install_data(&dir);
    dir
}

/// Installs a dataset into `dir`: the real CIFAR-10 from [`real_archive`] when present
/// (returns `true`), else a synthetic one of the same size (returns `false`). In CI (`CI`
/// set) a missing archive is a failure, not a silent switch to synthetic data, unless
/// `RESNET_E2E_SYNTHETIC` asks for synthetic data.
pub fn install_data(dir: &Path) -> bool {
    match real_archive() {
        Some(archive) => {
            let opts = FetchOptions {
                from: Some(archive),
                ..FetchOptions::new(dir)
            };
            fetch(&opts).expect("installing the real CIFAR-10 archive");
            true
        }
        None => {
            if std::env::var_os("RESNET_E2E_SYNTHETIC").is_none()
                && std::env::var_os("CI").is_some()
            {
                panic!(
                    "{} is missing: CI must run the end-to-end tests on the real CIFAR-10 \
                     (set RESNET_E2E_SYNTHETIC=1 to choose synthetic data explicitly)",
                    workspace_root()
                        .join("../shared/data/cifar-10-binary.tar.gz")
                        .display()
                );
            }
            eprintln!(
                "note: ../shared/data/cifar-10-binary.tar.gz not found, using synthetic data"
            );
            if !cifar_data::fetch::is_present(dir) {
                // Full-size files (10,000 records each, as `cifar_data::load` requires),
                // written beside `dir` and renamed into place.
                let partial = dir.with_extension("partial");
                let _ = std::fs::remove_dir_all(&partial);
                cifar_data::synthetic::write_dataset(&partial, cifar_data::RECORDS_PER_FILE, 7)
                    .expect("writing synthetic data");
                std::fs::rename(&partial, dir).expect("installing synthetic data");
            }
            false
        }
    }
}

/// The outcome of a CLI run, with its output decoded.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics with the output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The last non-empty line of stdout (where `train` prints the run directory).
    pub fn last_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A command for the CLI binary `exe`, run in the workspace root with logs at `info` and
/// without the dataset environment variables.
pub fn command(exe: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(exe);
    c.args(args)
        .current_dir(workspace_root())
        .env("RUST_LOG", "info")
        .env_remove("CIFAR10_DIR")
        .env_remove("CIFAR10_ARCHIVE")
        .env_remove("CIFAR10_URL");
    c
}

/// Runs the CLI to completion.
pub fn run(exe: &Path, args: &[&str]) -> Run {
    command(exe, args)
        .output()
        .expect("starting the CLI binary")
        .into()
}

/// The bit patterns of every tensor of a checkpoint (model, momentum, normalizer), by name.
pub fn checkpoint_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let ckpt = trainer::checkpoint::Checkpoint::read(path, &candle_core::Device::Cpu)
        .expect("reading a checkpoint");
    let bits = |t: &candle_core::Tensor| -> Vec<u32> {
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("f32 tensor")
            .into_iter()
            .map(f32::to_bits)
            .collect()
    };
    let mut out: Vec<(String, Vec<u32>)> = Vec::new();
    for (k, t) in &ckpt.model {
        out.push((format!("model.{k}"), bits(t)));
    }
    for (k, t) in &ckpt.momentum {
        out.push((format!("momentum.{k}"), bits(t)));
    }
    out.push((
        "data.mean".into(),
        ckpt.normalizer.mean().iter().map(|x| x.to_bits()).collect(),
    ));
    out.push((
        "data.std".into(),
        ckpt.normalizer.std().iter().map(|x| x.to_bits()).collect(),
    ));
    out
}

/// Asserts that two checkpoints hold bitwise identical tensors.
#[track_caller]
pub fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (x, y) = (checkpoint_bits(a), checkpoint_bits(b));
    assert_eq!(
        x.iter().map(|p| &p.0).collect::<Vec<_>>(),
        y.iter().map(|p| &p.0).collect::<Vec<_>>(),
        "tensor names differ"
    );
    for ((name, u), (_, v)) in x.iter().zip(&y) {
        assert!(
            u == v,
            "tensor {name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}
