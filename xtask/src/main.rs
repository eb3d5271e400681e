//! Project automation: `cargo xtask <command>` (alias in `.cargo/config.toml`).

mod fetch;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::FetchCifar(args) => fetch::run(args),
    }
}
