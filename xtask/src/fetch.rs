//! `cargo xtask fetch-cifar`: install a verified CIFAR-10 into the data directory.

use std::path::PathBuf;

use anyhow::Context;
use cifar_data::fetch::{self, FetchOptions, FetchOutcome, ENV_ARCHIVE, ENV_DIR, ENV_URL};

/// Options of `fetch-cifar`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Data directory; the dataset goes to DIR/cifar-10-batches-bin [default: data/cifar-10]
    #[arg(long, value_name = "DIR", env = ENV_DIR)]
    dir: Option<PathBuf>,
    /// Install from a local copy of cifar-10-binary.tar.gz instead of downloading
    #[arg(long, value_name = "FILE", env = ENV_ARCHIVE)]
    from: Option<PathBuf>,
    /// Download from this mirror instead of the official URL (--from takes precedence)
    #[arg(long, value_name = "URL", env = ENV_URL)]
    url: Option<String>,
    /// Reinstall even if the dataset is already present
    #[arg(long)]
    force: bool,
    /// No progress bar
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `fetch-cifar`.
pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let mut opts = FetchOptions::new(args.dir.unwrap_or_else(fetch::default_data_dir));
    opts.from = args.from;
    opts.url = args.url;
    opts.force = args.force;
    opts.progress = !args.quiet;
    let source = fetch::resolve_source(&opts);
    if !opts.force && !fetch::is_present(&opts.dir) {
        eprintln!(
            "installing CIFAR-10 from {source} into {}",
            opts.dir.display()
        );
    }
    let outcome = fetch::fetch(&opts)
        .with_context(|| format!("fetching CIFAR-10 into {}", opts.dir.display()))?;
    match outcome {
        FetchOutcome::AlreadyPresent { dir } => {
            println!(
                "CIFAR-10 already present in {} (checksums verified)",
                dir.display()
            );
        }
        FetchOutcome::Installed {
            dir,
            source,
            archive_md5,
            archive_md5_matches,
            downloaded_bytes,
            resumes,
        } => {
            if downloaded_bytes > 0 {
                eprintln!(
                    "downloaded {downloaded_bytes} bytes from {source} ({resumes} resumed requests)"
                );
            }
            if archive_md5_matches {
                eprintln!("archive MD5 {archive_md5}: the official archive");
            } else {
                eprintln!(
                    "archive MD5 {archive_md5} differs from the official archive's \
                     ({}), but every .bin file matches the official SHA-256",
                    fetch::OFFICIAL_ARCHIVE_MD5
                );
            }
            println!(
                "CIFAR-10 installed in {} (checksums verified)",
                dir.display()
            );
        }
        other => println!("{other:?}"),
    }
    Ok(())
}
