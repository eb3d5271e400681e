//! Embeds the git commit this binary is built from (`RESNET_CLI_BUILD`, e.g. `git 1a2b3c4d5e6f`
//! or `git 1a2b3c4d5e6f+dirty`; `unknown` outside a git checkout), which `train` records in
//! the run's `stretches.jsonl` so that every stretch of a long run names the code that
//! trained it.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let label = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            // Tracked files that differ from HEAD make the build "dirty".
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("git {commit}{}", if dirty { "+dirty" } else { "" })
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=RESNET_CLI_BUILD={label}");
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/index");
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
    // Edits to the workspace's sources change the dirty flag.
    for dir in [
        "../../crates",
        "../../configs",
        "../../Cargo.toml",
        "../../Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
