//! `cargo xtask full-run`: the paper's full 64,000-iteration run, carried over as many
//! stretches (sessions, machines) as it takes, in a run directory kept in the repository.
//!
//! Each call trains one stretch: it starts the run in `--run-dir` (default
//! `results/resnet20-paper`) when that holds no checkpoint, else resumes it bit-exactly from
//! its newest checkpoint, and stops cleanly (checkpoint, metrics, plots, a record in
//! `stretches.md` naming the commit, CPU and wall time) after `--for` or at
//! `--stop-after-iterations`. Commit the directory after each stretch; any machine with the
//! repository continues it with the same command. When the run reaches its last iteration,
//! the report, `final.safetensors` and `best.safetensors` (bare weights, PyTorch names) are
//! written and the resumable checkpoints (with momentum buffers) are deleted, so that only
//! what a user needs stays in the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Options of `cargo xtask full-run`.
#[derive(Debug, Args)]
pub struct FullRunArgs {
    /// Run config of a new run (default: the paper's ResNet-20 recipe). A resumed run keeps
    /// the config stored in its checkpoint; this one must describe the same network.
    #[arg(default_value = "configs/resnet20.yaml")]
    config: PathBuf,
    /// The run directory, kept in the repository between stretches.
    #[arg(long, default_value = "results/resnet20-paper")]
    run_dir: PathBuf,
    /// Length of this stretch, e.g. 2h30m: stop cleanly after the first step past it.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Stop cleanly once this many iterations (in total) are done.
    #[arg(long, value_name = "N")]
    stop_after_iterations: Option<u64>,
    /// A note recorded with the stretch (e.g. what else ran on the machine).
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    /// Device: `auto` builds with CUDA (`--features cuda`, through
    /// `scripts/cuda13-from-pypi.sh` when no `nvcc` is on the PATH) and trains on the GPU when
    /// `nvidia-smi` finds one, else trains on the CPU.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    device: String,
    /// Extra arguments passed to `resnet-cli train` (e.g. `--from FILE`, `--no-progress`).
    #[arg(last = true)]
    train_args: Vec<String>,
}

/// Whether `nvidia-smi -L` lists a GPU (the NVIDIA driver is installed and sees one).
fn has_gpu() -> bool {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GPU"))
}

/// The GPU's compute capability as `CUDA_COMPUTE_CAP` wants it (`9.0` → `90`).
fn compute_cap() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output()
        .ok()?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .replace('.', "");
    (out.status.success() && !first.is_empty()).then_some(first)
}

/// Whether `dir/checkpoints` holds a checkpoint to resume from.
fn has_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("checkpoints")).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".safetensors") && !name.starts_with('.')
        })
    })
}

/// Builds `resnet-cli` in release mode (with `--features cuda` when CUDA is chosen) and
/// trains one stretch of the run.
pub fn run(args: FullRunArgs, root: &Path) -> Result<()> {
    let cuda = match args.device.as_str() {
        "cuda" => true,
        "cpu" => false,
        _ => has_gpu(),
    };
    if args.device == "auto" {
        eprintln!(
            "xtask: device auto: {}",
            if cuda {
                "nvidia-smi lists a GPU, building with --features cuda"
            } else {
                "no GPU (nvidia-smi), training on the CPU"
            }
        );
    }
    let run_dir = if args.run_dir.is_absolute() {
        args.run_dir.clone()
    } else {
        root.join(&args.run_dir)
    };
    if run_dir.join("report.json").is_file() {
        bail!(
            "{} has finished already (report.json is there); choose another --run-dir for a \
             new run",
            run_dir.display()
        );
    }
    let resume = has_checkpoint(&run_dir);
    let mut cmd = if cuda {
        let mut c = crate::gpu_bundle::cuda_cargo(root);
        if std::env::var_os("CUDA_COMPUTE_CAP").is_none() {
            if let Some(cap) = compute_cap() {
                c.env("CUDA_COMPUTE_CAP", cap);
            }
        }
        c
    } else {
        Command::new("cargo")
    };
    cmd.current_dir(root)
        .args(["run", "--release", "-p", "resnet-cli"]);
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    cmd.args(["--", "train"]).arg(&args.config);
    if resume {
        cmd.arg("--resume").arg(&run_dir);
    } else {
        cmd.arg("--run-dir").arg(&run_dir);
    }
    cmd.args(["--device", if cuda { "cuda" } else { "cpu" }]);
    if let Some(d) = &args.duration {
        cmd.args(["--stop-after-time", d]);
    }
    if let Some(n) = args.stop_after_iterations {
        cmd.args(["--stop-after-iterations", &n.to_string()]);
    }
    if let Some(note) = &args.note {
        cmd.args(["--note", note]);
    }
    cmd.args(&args.train_args);
    eprintln!(
        "full run: {} {} in {} on {}",
        if resume { "resuming" } else { "starting" },
        args.config.display(),
        run_dir.display(),
        if cuda { "CUDA" } else { "CPU" }
    );
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("training failed ({status})");
    }
    let rel = args.run_dir.display();
    if run_dir.join("report.json").is_file() {
        let ck = run_dir.join("checkpoints");
        std::fs::remove_dir_all(&ck).with_context(|| format!("removing {}", ck.display()))?;
        eprintln!(
            "the run has finished: report.md, final.safetensors and best.safetensors are in \
             {rel} (the resumable checkpoints were removed).\ncommit it: git add {rel} && \
             git commit -m 'results: {rel} finished'"
        );
    } else {
        eprintln!(
            "stretch done; commit it, then continue on any machine with the same command:\n  \
             git add {rel} && git commit -m 'results: {rel}, one more stretch'"
        );
    }
    Ok(())
}
