//! Data-parallel training under `mpirun` (the `mpi` feature), on one machine over loopback:
//! two ranks against one process.
//!
//! - synchronized BatchNorm: 2 ranks give the weights of 1 process (to f32 rounding);
//! - per-rank BatchNorm: 2 ranks give the weights of 1 process whose BatchNorm normalizes
//!   each half-batch separately (`training.batch_norm_groups: 2`);
//! - the ranks hold bit-identical weights (the trainer checks at every epoch end and fails
//!   otherwise); evaluation is sharded with exactly the counts of one process; a run stopped
//!   with 2 ranks resumes with 1; SIGTERM to one rank stops both after the same step with
//!   one checkpoint; an error on one rank ends the job.
//!
//! Needs Open MPI's `mpirun` on `PATH` (Debian: `openmpi-bin`); run with
//! `cargo test -p resnet-cli --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use resnet_e2e::{command, install_data_under, Run};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resnet-cli"))
}

fn shared_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| install_data_under(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("mpi-data")))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 paths in tests")
}

/// ResNet-8 on 256 training images, batches of 64 (4 steps per epoch), 6 iterations at lr
/// 0.02: the run crosses an epoch end (validation, checkpoint, the ranks' weight comparison).
/// A short run at a small learning rate keeps the rounding differences of the two ways of
/// summing from growing (after 10 steps at lr 0.1 they reach 1e-3).
fn args<'a>(run_dir: &'a str, data: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "configs/smoke.yaml",
        "--no-progress",
        "--data-dir",
        data,
        "--run-dir",
        run_dir,
        "--set",
        "data.train_limit=256",
        "--set",
        "data.val_limit=200",
        "--set",
        "data.test_limit=300",
        "--set",
        "training.batch_size=64",
        "--set",
        "training.eval_batch_size=100",
        "--set",
        "training.max_iterations=6",
        "--set",
        "schedule.base_lr=0.02",
        "--set",
        "training.threads=1",
    ];
    a.extend_from_slice(extra);
    a
}

/// `resnet-cli ARGS` in one process.
fn single(args: &[&str]) -> Run {
    command(exe(), args)
        .output()
        .expect("running resnet-cli")
        .into()
}

/// `mpirun -np 2 resnet-cli ARGS` (root allowed, oversubscribed: CI runs as root on 2 cores).
fn two_ranks(args: &[&str]) -> Run {
    mpirun(args)
        .output()
        .expect("running mpirun (install openmpi-bin)")
        .into()
}

fn mpirun(args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", "2"])
        .arg(exe())
        .args(args)
        .current_dir(resnet_e2e::workspace_root())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Docker-like sandboxes forbid the cross-memory-attach single copy.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env_remove("RUST_LOG")
        .env_remove("CIFAR10_DIR")
        .env_remove("CIFAR10_ARCHIVE")
        .env_remove("CIFAR10_URL");
    c
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).expect("weights");
    let mut v: Vec<(String, Vec<f32>)> = tensors
        .into_iter()
        .map(|(k, t): (String, Tensor)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Largest |a - b| / (1 + |b|) over every tensor, with the tensor's name.
fn max_diff(a: &Path, b: &Path) -> (f32, String) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    let mut worst = (0f32, String::new());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs() / (1.0 + y.abs());
            if d > worst.0 {
                worst = (d, na.clone());
            }
        }
    }
    worst
}

fn report(run_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run_dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).unwrap()
}

/// Test images correct in `report.json` for the final model.
fn final_correct(run_dir: &Path) -> u64 {
    report(run_dir)["final_model"]["test"]["correct"]
        .as_u64()
        .unwrap()
}

/// `resnet-cli eval` of a run's final weights in one process: the correct count it prints.
fn eval_correct(run_dir: &Path, data: &str) -> u64 {
    let out = single(&[
        "eval",
        s(&run_dir.join("final.safetensors")),
        "--config",
        s(&run_dir.join("config.yaml")),
        "--data-dir",
        data,
        "--json",
    ])
    .expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("eval --json");
    v["result"]["correct"]
        .as_u64()
        .or_else(|| v["correct"].as_u64())
        .expect("a correct count")
}

/// Tolerance on the weights (relative, `|a - b| / (1 + |b|)`) after 6 SGD steps: the sums
/// over ranks round differently from one process's sums (f32), and training amplifies
/// that. Seen on an AMD EPYC (AVX2): 3e-7 with synchronized BatchNorm, 2e-5 per-rank; one
/// process with whole-batch statistics differs from per-rank ones by 1e-2.
const TOL: f32 = 1e-4;

#[test]
fn synchronized_batch_norm_on_two_ranks_trains_like_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = s(shared_data());
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    single(&args(
        s(&one),
        data,
        &["--set", "training.sync_batch_norm=true"],
    ))
    .expect_code(0);
    let out = two_ranks(&args(
        s(&two),
        data,
        &["--set", "training.sync_batch_norm=true"],
    ))
    .expect_code(0);
    // Rank 0 speaks for the run; rank 1 prints no log lines (warnings only).
    assert!(
        out.stderr.contains("data parallel: 2 ranks"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stdout.trim(),
        s(&two),
        "only rank 0 prints the run directory"
    );
    let (d, name) = max_diff(
        &two.join("final.safetensors"),
        &one.join("final.safetensors"),
    );
    assert!(d < TOL, "2 ranks vs 1 process: {name} differs by {d}");
    // Sharded evaluation counts exactly what one process counts on the same weights.
    assert_eq!(final_correct(&two), eval_correct(&two, data));
    // The stretch record names the ranks.
    let stretches = std::fs::read_to_string(two.join("stretches.md")).unwrap();
    assert!(stretches.contains("× 2 MPI ranks"), "{stretches}");
}

#[test]
fn per_rank_batch_norm_on_two_ranks_equals_ghost_batch_norm_in_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = s(shared_data());
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    single(&args(
        s(&one),
        data,
        &["--set", "training.batch_norm_groups=2"],
    ))
    .expect_code(0);
    two_ranks(&args(s(&two), data, &[])).expect_code(0);
    let (d, name) = max_diff(
        &two.join("final.safetensors"),
        &one.join("final.safetensors"),
    );
    assert!(d < TOL, "2 ranks vs ghost BatchNorm: {name} differs by {d}");
    // And it is not what one process with whole-batch statistics computes.
    let plain = tmp.path().join("plain");
    single(&args(s(&plain), data, &[])).expect_code(0);
    let (d, _) = max_diff(
        &two.join("final.safetensors"),
        &plain.join("final.safetensors"),
    );
    assert!(
        d > 10.0 * TOL,
        "per-rank statistics should differ from whole-batch ones"
    );
    assert_eq!(final_correct(&two), eval_correct(&two, data));
}

#[test]
fn a_run_stopped_on_two_ranks_resumes_in_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = s(shared_data());
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let sync = ["--set", "training.sync_batch_norm=true"];
    single(&args(s(&whole), data, &sync)).expect_code(0);
    let mut first = args(s(&split), data, &sync);
    first.extend(["--stop-after-iterations", "3"]);
    let out = two_ranks(&first).expect_code(0);
    assert!(
        out.stderr.contains("stopped as asked"),
        "rank 0 reports the stop: {}",
        out.stderr
    );
    let ckpt = split.join("checkpoints/latest.safetensors");
    let meta = trainer::checkpoint::Checkpoint::read_meta(&ckpt).unwrap();
    assert_eq!(
        meta.iteration, 3,
        "one checkpoint, at the same iteration for both ranks"
    );
    single(&[
        "train",
        "--resume",
        s(&split),
        "--no-progress",
        "--data-dir",
        data,
    ])
    .expect_code(0);
    let (d, name) = max_diff(
        &split.join("final.safetensors"),
        &whole.join("final.safetensors"),
    );
    assert!(
        d < TOL,
        "2 ranks then 1 vs 1 throughout: {name} differs by {d}"
    );
    let stretches = std::fs::read_to_string(split.join("stretches.md")).unwrap();
    assert!(stretches.contains("× 2 MPI ranks"), "{stretches}");
}

#[test]
fn an_error_on_one_rank_ends_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let data = s(shared_data());
    let dir = tmp.path().join("bad");
    // Shards of 32 images cannot be cut into 3 BatchNorm groups: both ranks must exit
    // (the job is aborted) with the key named, instead of one waiting forever.
    let out = two_ranks(&args(
        s(&dir),
        data,
        &["--set", "training.batch_norm_groups=3"],
    ));
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("training.batch_norm_groups"),
        "{}",
        out.stderr
    );
}

/// The process ids of this test's ranks: `resnet-cli` processes whose command line names
/// `run_dir`, by `OMPI_COMM_WORLD_RANK`.
fn rank_pids(run_dir: &str) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains(run_dir) || !cmdline.contains("resnet-cli") {
            continue;
        }
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let rank = environ
            .split(|&b| b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .and_then(|r| r.parse().ok());
        if let Some(rank) = rank {
            found.push((rank, pid));
        }
    }
    found.sort_unstable();
    found
}

#[test]
fn sigterm_to_one_rank_stops_every_rank_after_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = s(shared_data());
    let dir = tmp.path().join("run");
    let run_dir = s(&dir);
    let a = args(run_dir, data, &["--set", "training.max_iterations=2000"]);
    let child = mpirun(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running mpirun");
    // Wait for training to be under way (a first metrics row), then SIGTERM rank 1 alone.
    let start = Instant::now();
    while !std::fs::metadata(dir.join("metrics.jsonl")).is_ok_and(|m| m.len() > 0) {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = rank_pids(run_dir);
    assert_eq!(pids.len(), 2, "two ranks running: {pids:?}");
    let status = Command::new("kill")
        .args(["-TERM", &pids[1].1.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out: Run = child.wait_with_output().unwrap().into();
    assert!(
        out.stderr.contains("interrupted at iteration"),
        "rank 0 reports the stop rank 1 asked for: {}",
        out.stderr
    );
    let meta =
        trainer::checkpoint::Checkpoint::read_meta(&dir.join("checkpoints/latest.safetensors"))
            .unwrap();
    assert!(
        meta.iteration > 0 && meta.iteration < 2000,
        "{}",
        meta.iteration
    );
    assert!(
        out.stderr
            .contains(&format!("interrupted at iteration {}", meta.iteration)),
        "{}",
        out.stderr
    );
    // Resumable: one more step with one process.
    let next = (meta.iteration + 1).to_string();
    single(&[
        "train",
        "--resume",
        run_dir,
        "--no-progress",
        "--data-dir",
        data,
        "--stop-after-iterations",
        &next,
    ])
    .expect_code(0);
}
