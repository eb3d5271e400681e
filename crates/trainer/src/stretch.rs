//! The stretches of a run: one record per training session (a fresh start or a resume), kept
//! in the run directory as `stretches.jsonl` (one JSON object per line, appended) and
//! `stretches.md` (the same as a Markdown table, rewritten after every stretch).
//!
//! A long run is carried over several sessions, possibly on different machines. Each record
//! says which iterations that stretch trained, how long it took, on which CPU (model and
//! vector ISA) or device, with how many threads, which build (the `build` label the binary
//! passes in, e.g. the git commit it was built from) and a free-form `note` (e.g. "shared
//! the machine with builds"), so that the speed figures of a run can be read in context.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::run_dir::write_file;

/// File name of the appended JSON-lines log.
pub const STRETCHES_JSONL: &str = "stretches.jsonl";
/// File name of the Markdown table.
pub const STRETCHES_MD: &str = "stretches.md";

/// One training session of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Stretch {
    /// Iteration the stretch started at (0 for a fresh run).
    pub start_iteration: u64,
    /// Iteration it ended at.
    pub end_iteration: u64,
    /// How it ended: `finished`, `interrupted`, `iteration limit`, `time limit`.
    pub ended: String,
    /// Local time the stretch started (RFC 3339).
    pub started_at: String,
    /// Local time it ended (RFC 3339).
    pub ended_at: String,
    /// Wall time of the stretch, seconds (training, validation, checkpoints and, for the last
    /// stretch, the final test).
    pub wall_s: f64,
    /// Training images per second over the stretch's wall time.
    pub images_per_sec: f64,
    /// The compute device, e.g. `cpu (2 threads)`.
    pub device: String,
    /// The host's CPU, e.g. `AMD EPYC 9R14 (avx2, avx512f, avx512_bf16)`.
    pub cpu: String,
    /// What build trained the stretch (the binary's label, e.g. a git commit).
    pub build: Option<String>,
    /// A note given by whoever ran the stretch.
    pub note: Option<String>,
}

/// The CPU model name (from `/proc/cpuinfo` where there is one) and the x86 vector ISA
/// extensions that matter to the kernels, as detected at run time.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let isa = vector_isa();
    if isa.is_empty() {
        model
    } else {
        format!("{model} ({})", isa.join(", "))
    }
}

/// The vector ISA extensions of this CPU that the kernels can use (`avx2`, `fma`,
/// `avx512f`, `avx512_bf16`); empty off x86-64.
pub fn vector_isa() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            v.push("fma");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push("avx512f");
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            v.push("avx512_bf16");
        }
    }
    v
}

/// Appends `stretch` to `<run_dir>/stretches.jsonl` and rewrites `stretches.md` from all
/// records.
pub fn append(run_dir: &Path, stretch: &Stretch) -> Result<()> {
    let path = run_dir.join(STRETCHES_JSONL);
    let line = serde_json::to_string(stretch).expect("a stretch serializes");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| TrainError::io(&path, e))?;
    writeln!(f, "{line}")
        .and_then(|()| f.sync_all())
        .map_err(|e| TrainError::io(&path, e))?;
    let all = read(run_dir)?;
    write_file(&run_dir.join(STRETCHES_MD), to_markdown(&all).as_bytes())
}

/// Reads `<run_dir>/stretches.jsonl` (empty when the file does not exist).
pub fn read(run_dir: &Path) -> Result<Vec<Stretch>> {
    let path = run_dir.join(STRETCHES_JSONL);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::RunDir {
                path: path.clone(),
                reason: format!("line {}: not a stretch record: {e}", i + 1),
            })
        })
        .collect()
}

/// The records as a Markdown table, with a total row.
pub fn to_markdown(stretches: &[Stretch]) -> String {
    let mut s = String::from("# Stretches of this run\n\n");
    s.push_str(
        "| # | iterations | ended | started | wall | images/s | device | CPU | build | note |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, t) in stretches.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {}–{} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            i + 1,
            t.start_iteration,
            t.end_iteration,
            t.ended,
            t.started_at,
            hms(t.wall_s),
            t.images_per_sec,
            t.device,
            t.cpu,
            t.build.as_deref().unwrap_or("—"),
            t.note.as_deref().unwrap_or("").replace('|', "\\|"),
        );
    }
    let wall: f64 = stretches.iter().map(|t| t.wall_s).sum();
    let _ = writeln!(
        s,
        "\nTotal: {} stretch(es), {} of wall time.",
        stretches.len(),
        hms(wall)
    );
    s
}

/// `h:mm:ss`.
pub fn hms(secs: f64) -> String {
    let t = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(start: u64, end: u64) -> Stretch {
        Stretch {
            start_iteration: start,
            end_iteration: end,
            ended: "time limit".into(),
            started_at: "2026-11-29T19:00:00+00:00".into(),
            ended_at: "2026-11-29T20:00:00+00:00".into(),
            wall_s: 3600.4,
            images_per_sec: 512.3,
            device: "cpu (2 threads)".into(),
            cpu: "Test CPU (avx2)".into(),
            build: Some("abc1234".into()),
            note: Some("a | b".into()),
        }
    }

    #[test]
    fn appends_and_renders() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read(tmp.path()).unwrap().is_empty());
        append(tmp.path(), &sample(0, 100)).unwrap();
        append(tmp.path(), &sample(100, 250)).unwrap();
        let all = read(tmp.path()).unwrap();
        assert_eq!(all, vec![sample(0, 100), sample(100, 250)]);
        let md = std::fs::read_to_string(tmp.path().join(STRETCHES_MD)).unwrap();
        assert!(md.contains("| 2 | 100–250 | time limit |"), "{md}");
        assert!(md.contains("a \\| b"), "{md}");
        assert!(md.contains("2 stretch(es), 2:00:01 of wall time"), "{md}");
    }

    #[test]
    fn bad_line_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(STRETCHES_JSONL), "{}\n").unwrap();
        let e = read(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("stretches.jsonl") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn hms_formats() {
        assert_eq!(hms(0.0), "0:00:00");
        assert_eq!(hms(3723.0), "1:02:03");
    }
}
