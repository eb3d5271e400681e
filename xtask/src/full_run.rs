//! `cargo xtask full-run`: the paper's full 64,000-iteration run on the best available device.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Options of `cargo xtask full-run`.
#[derive(Debug, Args)]
pub struct FullRunArgs {
    /// Run config (default: the paper's ResNet-20 recipe).
    #[arg(default_value = "configs/resnet20.yaml")]
    config: PathBuf,
    /// Device: `auto` builds with CUDA when `nvcc` is on the PATH and uses it, else the CPU.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    device: String,
    /// Extra arguments passed to `resnet-cli train` (e.g. `--resume runs/...`, `--from FILE`).
    #[arg(last = true)]
    train_args: Vec<String>,
}

fn has_nvcc() -> bool {
    Command::new("nvcc")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Builds `resnet-cli` in release mode (with `--features cuda` when CUDA is chosen) and runs
/// `train` on the config; the report lands in the run directory that `train` prints.
pub fn run(args: FullRunArgs, root: &Path) -> Result<()> {
    let cuda = match args.device.as_str() {
        "cuda" => true,
        "cpu" => false,
        _ => has_nvcc(),
    };
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["run", "--release", "-p", "resnet-cli"]);
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    cmd.args(["--", "train"])
        .arg(&args.config)
        .args(["--device", if cuda { "cuda" } else { "cpu" }])
        .args(&args.train_args);
    eprintln!(
        "full run: {} on {}",
        args.config.display(),
        if cuda { "CUDA" } else { "CPU" }
    );
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("training failed ({status})");
    }
    Ok(())
}
