//! `cargo xtask gpu-bundle`: everything a GPU machine without Rust needs to check the `cuda`
//! feature, built here.
//!
//! Builds, in release mode with `--features cuda` (or `cudnn`), through
//! `scripts/cuda13-from-pypi.sh` unless `nvcc` is on the PATH:
//! - `resnet-cli` (the product: `train --device cuda`, `eval`, ...),
//! - the `cuda` test binary of the trainer (`crates/trainer/tests/cuda.rs`: the PyTorch
//!   fixtures on CUDA, `device: auto`, training on CUDA vs the CPU),
//! - the `throughput` benchmark of resnet-model (`--device cuda`),
//!
//! then writes into `--out` (default `target/gpu-bundle`) the three binaries stripped and
//! xz-compressed, a copy of the golden fixtures and a `MANIFEST` (commit, features, SHA-256
//! of each binary). `scripts/gpu-check.sh` runs the bundle on a GPU machine; the whole bundle
//! stays under the 64 MiB a device call carries beside the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;

/// Options of `cargo xtask gpu-bundle`.
#[derive(Debug, Args)]
pub struct GpuBundleArgs {
    /// Build with cuDNN (`--features cudnn`) instead of plain `cuda`.
    #[arg(long)]
    cudnn: bool,
    /// Build without CUDA: a bundle to rehearse `scripts/gpu-check.sh` on a CPU machine
    /// (`GPU_CHECK_DEVICE=cpu`; the cuda tests compile to an empty binary).
    #[arg(long, conflicts_with = "cudnn")]
    cpu: bool,
    /// Where to write the bundle (replaced).
    #[arg(long, default_value = "target/gpu-bundle")]
    out: PathBuf,
    /// The golden fixtures to include (default: $RESNET_FIXTURES, else ../shared/fixtures).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Build only (CI: keep the feature compiling), no bundle.
    #[arg(long)]
    build_only: bool,
    /// Fail when the compiler warns (as clippy's `-D warnings` does for the CPU build: the
    /// code behind `cfg(feature = "cuda")` is compiled only here).
    #[arg(long)]
    deny_warnings: bool,
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `cargo` command that can build the `cuda` feature: plain `cargo` when `nvcc` is on the
/// PATH (a CUDA toolkit is installed), else `cargo` under `scripts/cuda13-from-pypi.sh`
/// (a CUDA 13.0 toolkit from NVIDIA's PyPI wheels, cached under ~/.cache/resnet-cifar).
pub fn cuda_cargo(root: &Path) -> Command {
    let mut cmd = if runs("nvcc") {
        Command::new("cargo")
    } else {
        let mut c = Command::new(root.join("scripts/cuda13-from-pypi.sh"));
        c.arg("cargo");
        c
    };
    cmd.current_dir(root);
    cmd
}

/// Runs a cargo build with `--message-format=json`, prints the compiler's diagnostics, and
/// returns the executables it reports (by target name); with `deny_warnings` a warning fails
/// the build (dependencies' warnings are capped by cargo: only this workspace's show).
fn build(mut cmd: Command, what: &str, deny_warnings: bool) -> Result<Vec<(String, PathBuf)>> {
    cmd.arg("--message-format=json").stdout(Stdio::piped());
    eprintln!("xtask: building {what}");
    let out = cmd
        .spawn()
        .with_context(|| format!("starting the build of {what}"))?
        .wait_with_output()?;
    let mut exes = vec![];
    let mut warnings = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(rendered) = msg.pointer("/message/rendered").and_then(|r| r.as_str()) {
            eprint!("{rendered}");
            if msg.pointer("/message/level").and_then(|l| l.as_str()) == Some("warning") {
                warnings += 1;
            }
        }
        if let (Some(exe), Some(name)) = (
            msg.get("executable").and_then(|e| e.as_str()),
            msg.pointer("/target/name").and_then(|n| n.as_str()),
        ) {
            exes.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if !out.status.success() {
        bail!("building {what} failed ({})", out.status);
    }
    if deny_warnings && warnings > 0 {
        bail!("building {what}: {warnings} compiler warning(s) (--deny-warnings)");
    }
    Ok(exes)
}

fn find(exes: &[(String, PathBuf)], name: &str) -> Result<PathBuf> {
    exes.iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("the build reported no executable `{name}`"))
}

fn sh(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Builds the CUDA binaries and writes the bundle.
pub fn run(args: GpuBundleArgs, root: &Path) -> Result<()> {
    let feature = match (args.cpu, args.cudnn) {
        (true, _) => "none",
        (false, true) => "cudnn",
        (false, false) => "cuda",
    };
    // One cargo invocation, so that one feature set (dev-dependencies included) builds
    // candle & co. once: `cargo test --no-run` builds the selected test and bench targets and
    // the `resnet-cli` binary (the `shipped_weights` test of its package needs it).
    let mut cmd = if args.cpu {
        let mut c = Command::new("cargo");
        c.current_dir(root);
        c
    } else {
        cuda_cargo(root)
    };
    cmd.args(["test", "--release", "--locked", "--no-run"])
        .args(["-p", "resnet-cli", "-p", "trainer", "-p", "resnet-model"]);
    if !args.cpu {
        cmd.arg("--features").arg(format!(
            "resnet-cli/{feature},trainer/{feature},resnet-model/{feature}"
        ));
    }
    cmd.args(["--test", "cuda", "--test", "shipped_weights"])
        .args(["--bench", "throughput"]);
    let what = format!("resnet-cli, the cuda tests and the throughput bench ({feature})");
    let built = build(cmd, &what, args.deny_warnings)?;
    let binaries = [
        ("resnet-cli", find(&built, "resnet-cli")?),
        ("throughput", find(&built, "throughput")?),
        ("cuda-tests", find(&built, "cuda")?),
    ];
    if args.build_only {
        for (name, path) in &binaries {
            eprintln!("xtask: built {name}: {}", path.display());
        }
        return Ok(());
    }

    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(partial.join("bin"))
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut manifest = format!(
        "resnet-cifar GPU bundle: {} (features {feature}, CUDA_COMPUTE_CAP {})\n",
        commit(root),
        std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into())
    );
    if args.cpu {
        manifest.push_str("CPU rehearsal bundle: run with GPU_CHECK_DEVICE=cpu\n");
    }
    for (name, path) in &binaries {
        let dest = partial.join("bin").join(name);
        std::fs::copy(path, &dest)
            .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
        sh(
            Command::new("strip").arg("--strip-all").arg(&dest),
            &format!("strip {}", dest.display()),
        )?;
        let size = std::fs::metadata(&dest)?.len();
        let sha = Command::new("sha256sum").arg(&dest).output()?;
        let sha = String::from_utf8_lossy(&sha.stdout);
        let sha = sha.split_whitespace().next().unwrap_or("?").to_string();
        sh(
            Command::new("xz").args(["-6", "-T2", "-f"]).arg(&dest),
            &format!("xz {}", dest.display()),
        )?;
        manifest.push_str(&format!(
            "bin/{name}.xz  {size} bytes unpacked  sha256 {sha}\n"
        ));
    }

    let fixtures = args
        .fixtures
        .clone()
        .or_else(|| std::env::var_os("RESNET_FIXTURES").map(PathBuf::from))
        .unwrap_or_else(|| root.join("../shared/fixtures"));
    let fx_out = partial.join("fixtures");
    std::fs::create_dir_all(&fx_out)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(&fixtures)
        .with_context(|| format!("reading the fixtures directory {}", fixtures.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            std::fs::copy(&path, fx_out.join(path.file_name().unwrap()))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("no .safetensors fixtures in {}", fixtures.display());
    }
    std::fs::write(partial.join("MANIFEST"), &manifest)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&partial, &out)
        .with_context(|| format!("moving the bundle into {}", out.display()))?;

    let total = dir_size(&out)?;
    eprint!("{manifest}");
    eprintln!(
        "xtask: wrote {} ({:.1} MiB, {copied} fixtures); on a GPU machine: \
         scripts/gpu-check.sh {}",
        out.display(),
        total as f64 / (1 << 20) as f64,
        args.out.display()
    );
    if total > 56 << 20 {
        eprintln!("xtask: warning: over 56 MiB, near the 64 MiB a device call carries");
    }
    Ok(())
}

fn commit(root: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown commit".into())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
