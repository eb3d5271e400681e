//! Project automation: `cargo xtask <command>` (alias in `.cargo/config.toml`).
#![forbid(unsafe_code)]

mod bench;
mod fetch;
mod full_run;
mod gpu_bundle;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Project automation for resnet-cifar.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download (or install from a local archive) and verify CIFAR-10.
    FetchCifar(fetch::FetchArgs),
    /// Side-by-side CPU benchmark of ResNet-20 against PyTorch eager (training and inference).
    Bench(bench::BenchArgs),
    /// One stretch of the paper's full 64,000-iteration run, kept in results/ and resumed
    /// bit-exactly by the next call (on any machine) until it finishes with its report.
    FullRun(full_run::FullRunArgs),
    /// Build the CUDA binaries (resnet-cli, the cuda tests, the throughput bench) and bundle
    /// them with the fixtures for `scripts/gpu-check.sh` on a GPU machine without Rust.
    GpuBundle(gpu_bundle::GpuBundleArgs),
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::FetchCifar(args) => fetch::run(args),
        Command::Bench(args) => bench::run(args, &workspace_root()),
        Command::FullRun(args) => full_run::run(args, &workspace_root()),
        Command::GpuBundle(args) => gpu_bundle::run(args, &workspace_root()),
    }
}
