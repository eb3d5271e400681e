//! `cargo xtask bench`: the side-by-side ResNet-20 CPU benchmark (ours vs PyTorch eager).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measured iterations per workload (after warm-up).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Threads for both implementations (rayon / torch); default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Only run our implementation (skips creating the PyTorch venv, which downloads torch).
    #[arg(long)]
    no_pytorch: bool,
}

/// Runs `bench/compare.sh` (both implementations, then the ratios), or only our bench.
pub fn run(args: BenchArgs, root: &Path) -> Result<()> {
    let mut cmd = if args.no_pytorch {
        let mut c = Command::new("cargo");
        c.args([
            "bench",
            "--quiet",
            "-p",
            "resnet-model",
            "--bench",
            "throughput",
            "--",
            "--iters",
        ])
        .arg(args.iters.to_string());
        c
    } else {
        let mut c = Command::new("bash");
        c.arg(root.join("bench/compare.sh"))
            .env("ITERS", args.iters.to_string());
        c
    };
    if let Some(t) = args.threads {
        cmd.env("THREADS", t.to_string())
            .env("RAYON_NUM_THREADS", t.to_string());
    }
    cmd.current_dir(root);
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("benchmark failed ({status})");
    }
    Ok(())
}
