//! The training loop on tiny synthetic data: run directory contents, exact resume (bitwise),
//! stop requests, NaN detection and wrong-architecture resumes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::tiny_data as data;
use trainer::checkpoint::Checkpoint;
use trainer::metrics::{read_jsonl, RecordKind};
use trainer::overrides::Override;
use trainer::progress::NoProgress;
use trainer::{RunConfig, StopReason, TrainOptions, TrainOutcome, TrainSession};

fn config(runs: &Path, max_iterations: u64) -> RunConfig {
    let yaml = format!(
        "name: tiny\nseed: 3\nmodel: {{depth: 8, base_width: 4}}\n\
         schedule: {{base_lr: 0.05, kind: {{type: piecewise, milestones: [9], gamma: 0.1}}}}\n\
         training: {{batch_size: 32, max_iterations: {max_iterations}, eval_batch_size: 64, \
         log_every: 3, keep_last: 2, device: cpu, prefetch: 1}}\n\
         output: {{runs_dir: {}}}\n",
        runs.display()
    );
    RunConfig::from_yaml(&yaml, "tiny.yaml", &[]).unwrap()
}

fn run(session: TrainSession, opts: &TrainOptions) -> TrainOutcome {
    session.run(data(), opts, &mut NoProgress).unwrap()
}

fn stop_after(n: u64) -> TrainOptions {
    TrainOptions {
        stop_after_iterations: Some(n),
        ..Default::default()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Every tensor of two checkpoints (model, momentum, normalizer) is bitwise equal.
fn assert_same_state(a: &Path, b: &Path) {
    let a = Checkpoint::read(a, &Device::Cpu).unwrap();
    let b = Checkpoint::read(b, &Device::Cpu).unwrap();
    assert_eq!(a.meta.iteration, b.meta.iteration);
    assert_eq!(a.model.len(), b.model.len());
    for (k, t) in &a.model {
        assert_eq!(bits(t), bits(&b.model[k]), "model tensor {k} differs");
    }
    assert_eq!(a.momentum.len(), b.momentum.len());
    for (k, t) in &a.momentum {
        assert_eq!(bits(t), bits(&b.momentum[k]), "momentum buffer {k} differs");
    }
    assert_eq!(a.normalizer, b.normalizer);
    assert_eq!(a.meta.best_val, b.meta.best_val);
    assert_eq!(a.meta.epoch_stats, b.meta.epoch_stats);
}

fn latest(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints/latest.safetensors")
}

#[test]
fn a_run_leaves_a_complete_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        TrainSession::new(config(tmp.path(), 17)),
        &TrainOptions::default(),
    );
    let TrainOutcome::Finished { run_dir, report } = out else {
        panic!("the run should finish");
    };
    assert!(run_dir.starts_with(tmp.path()));
    assert!(run_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("tiny-"));
    for f in [
        "config.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "report.json",
        "report.md",
        "plots/loss.png",
        "plots/accuracy.png",
        "plots/lr.png",
        "checkpoints/latest.safetensors",
        "checkpoints/best.safetensors",
        "checkpoints/iter-0000017.safetensors",
        "checkpoints/iter-0000014.safetensors",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} is missing");
    }
    // keep_last: 2 — the epoch-1 checkpoint is gone.
    assert!(!run_dir
        .join("checkpoints/iter-0000007.safetensors")
        .exists());
    let saved = RunConfig::from_file(&run_dir.join("config.yaml"), &[]).unwrap();
    assert_eq!(saved, config(tmp.path(), 17));

    let rows = read_jsonl(&run_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = rows
        .iter()
        .filter(|r| r.kind == RecordKind::Step)
        .map(|r| r.iteration)
        .collect();
    let epochs: Vec<u64> = rows
        .iter()
        .filter(|r| r.kind == RecordKind::Epoch)
        .map(|r| r.iteration)
        .collect();
    assert_eq!(steps, [3, 6, 9, 12, 15]);
    assert_eq!(epochs, [7, 14, 17]);
    for r in &rows {
        assert!(r.train_loss.is_finite() && r.train_loss > 0.0);
        assert!((0.0..=1.0).contains(&r.train_acc));
        assert!(r.images_per_sec > 0.0);
        let lr = if r.iteration <= 9 { 0.05 } else { 0.005 };
        assert!((r.lr - lr).abs() < 1e-12, "{r:?}");
        assert_eq!(r.kind == RecordKind::Epoch, r.val_acc.is_some());
    }
    assert!((rows.last().unwrap().epoch - 17.0 / 7.0).abs() < 1e-12);
    let csv = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), rows.len() + 1);

    // TensorBoard scalars read back (CRC-checked) with the expected tags and steps.
    let tb: Vec<PathBuf> = std::fs::read_dir(run_dir.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tb.len(), 1);
    let scalars = common::tensorboard_reader::read_scalars(&tb[0]).unwrap();
    let tagged = |tag: &str| -> Vec<(i64, f32)> {
        scalars
            .iter()
            .filter(|s| s.tag == tag)
            .map(|s| (s.step, s.value))
            .collect()
    };
    assert_eq!(tagged("train/loss").len(), 5);
    assert_eq!(
        tagged("val/accuracy")
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        [7, 14, 17]
    );
    assert_eq!(tagged("train/lr")[0], (3, 0.05));
    let final_acc = tagged("test/accuracy_final");
    assert_eq!(final_acc.len(), 1);
    assert_eq!(final_acc[0].1, report.final_model.test.accuracy as f32);

    // The report: both models tested on the 40 test images.
    assert_eq!(report.iterations, 17);
    assert_eq!(report.set_sizes.train, 224);
    assert_eq!(report.set_sizes.val, 48);
    assert_eq!(report.final_model.test.total, 40);
    assert_eq!(report.best_model.test.total, 40);
    let best_it = report.best_model.iteration;
    assert!([7, 14, 17].contains(&best_it));
    let best_val = rows
        .iter()
        .filter(|r| r.kind == RecordKind::Epoch)
        .map(|r| r.val_acc.unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(report.best_model.val_accuracy, Some(best_val));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["final_model"]["test"]["total"], 40);
    assert_eq!(
        json["final_model"]["test"]["confusion"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn resumed_runs_end_bit_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let TrainOutcome::Finished { run_dir: full, .. } = run(
        TrainSession::new(config(&tmp.path().join("a"), 17)),
        &TrainOptions::default(),
    ) else {
        panic!("the run should finish");
    };
    // Stopped mid-epoch (iteration 10 of 7-step epochs), and again at an epoch boundary.
    let first = run(
        TrainSession::new(config(&tmp.path().join("b"), 17)),
        &stop_after(10),
    );
    let TrainOutcome::Stopped {
        run_dir,
        checkpoint,
        iteration: 10,
        reason: StopReason::IterationLimit,
    } = first
    else {
        panic!("expected a stop at iteration 10, got {first:?}");
    };
    assert_eq!(
        checkpoint,
        run_dir.join("checkpoints/iter-0000010.safetensors")
    );
    let meta = Checkpoint::read_meta(&checkpoint).unwrap();
    assert_eq!((meta.epoch, meta.batch_in_epoch), (1, 3));
    let second = run(
        TrainSession::resume(&run_dir, &[]).unwrap(),
        &stop_after(14),
    );
    assert!(
        matches!(second, TrainOutcome::Stopped { iteration: 14, .. }),
        "{second:?}"
    );
    let third = run(
        TrainSession::resume(&latest(&run_dir), &[]).unwrap(),
        &TrainOptions::default(),
    );
    let TrainOutcome::Finished {
        run_dir: resumed, ..
    } = third
    else {
        panic!("should finish")
    };
    assert_eq!(resumed, run_dir);
    assert_same_state(&latest(&full), &latest(&resumed));
    assert_same_state(
        &full.join("checkpoints/best.safetensors"),
        &resumed.join("checkpoints/best.safetensors"),
    );
    // The metrics of the resumed run are those of the uninterrupted one (wall time aside).
    let strip = |p: &Path| -> Vec<(u64, u64, u64)> {
        read_jsonl(&p.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.iteration,
                    r.train_loss.to_bits(),
                    r.val_loss.unwrap_or(-1.0).to_bits(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&full), strip(&resumed));
    let report = |p: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("report.json")).unwrap()).unwrap();
        for m in ["final_model", "best_model"] {
            v[m]["checkpoint"] = serde_json::Value::Null;
        }
        serde_json::json!([v["final_model"], v["best_model"]])
    };
    assert_eq!(report(&full), report(&resumed));
}

#[test]
fn a_stop_request_writes_a_checkpoint_after_the_current_step() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = Arc::new(AtomicBool::new(true));
    let opts = TrainOptions {
        stop: Some(flag),
        ..Default::default()
    };
    let out = run(TrainSession::new(config(tmp.path(), 17)), &opts);
    let TrainOutcome::Stopped {
        checkpoint,
        iteration,
        reason,
        ..
    } = out
    else {
        panic!("expected a stop");
    };
    assert_eq!((iteration, reason), (1, StopReason::Interrupted));
    assert_eq!(Checkpoint::read_meta(&checkpoint).unwrap().iteration, 1);
}

#[test]
fn a_diverging_run_names_the_iteration_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let TrainOutcome::Stopped { run_dir, .. } =
        run(TrainSession::new(config(tmp.path(), 17)), &stop_after(7))
    else {
        panic!("expected a stop");
    };
    let before = std::fs::read(latest(&run_dir)).unwrap();
    let huge = [Override::parse("schedule.base_lr=1e30").unwrap()];
    let err = TrainSession::resume(&run_dir, &huge)
        .unwrap()
        .run(data(), &TrainOptions::default(), &mut NoProgress)
        .unwrap_err();
    let msg = err.to_string();
    let trainer::TrainError::NonFiniteLoss {
        iteration,
        last_checkpoint,
        ..
    } = &err
    else {
        panic!("expected a non-finite loss error, got {msg}");
    };
    assert!(*iteration > 7 && *iteration <= 17, "{msg}");
    assert!(msg.contains(&format!("at iteration {iteration}")), "{msg}");
    assert_eq!(last_checkpoint.as_deref(), Some(latest(&run_dir).as_path()));
    assert!(msg.contains("latest.safetensors"), "{msg}");
    assert_eq!(
        std::fs::read(latest(&run_dir)).unwrap(),
        before,
        "the good checkpoint was kept"
    );
}

#[test]
fn resuming_with_another_architecture_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let TrainOutcome::Stopped { run_dir, .. } =
        run(TrainSession::new(config(tmp.path(), 17)), &stop_after(2))
    else {
        panic!("expected a stop");
    };
    let deeper = [Override::parse("model.depth=14").unwrap()];
    let e = TrainSession::resume(&run_dir, &deeper)
        .unwrap_err()
        .to_string();
    assert!(e.contains("resnet8-a") && e.contains("resnet14-a"), "{e}");
    assert!(e.contains("latest.safetensors"), "{e}");
}

/// A new run that diverges before its first checkpoint leaves no run directory behind
/// (it used to leave a directory with nothing to resume from).
#[test]
fn a_run_that_fails_before_its_first_checkpoint_leaves_no_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let huge = Override::parse("schedule.base_lr=1e30").unwrap();
    let mut cfg = config(&runs, 17);
    cfg = RunConfig::from_yaml(&cfg.to_yaml(), "tiny.yaml", &[huge]).unwrap();
    let err = TrainSession::new(cfg)
        .run(data(), &TrainOptions::default(), &mut NoProgress)
        .unwrap_err();
    let trainer::TrainError::NonFiniteLoss {
        last_checkpoint, ..
    } = &err
    else {
        panic!("expected a non-finite loss, got {err}");
    };
    assert!(last_checkpoint.is_none());
    let left: Vec<_> = std::fs::read_dir(&runs).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A resumed run marks its restart in TensorBoard (SessionLog START at the first redone
/// step), so TensorBoard drops the steps an earlier session logged past the checkpoint.
#[test]
fn a_resumed_run_writes_a_tensorboard_restart_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let TrainOutcome::Stopped { run_dir, .. } =
        run(TrainSession::new(config(tmp.path(), 12)), &stop_after(5))
    else {
        panic!("expected a stop");
    };
    run(
        TrainSession::resume(&run_dir, &[]).unwrap(),
        &TrainOptions::default(),
    );
    let mut files: Vec<_> = std::fs::read_dir(run_dir.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let first = common::tensorboard_reader::read_events(&files[0]).unwrap();
    assert!(first.iter().all(|e| !e.session_start));
    let second = common::tensorboard_reader::read_events(&files[1]).unwrap();
    let starts: Vec<i64> = second
        .iter()
        .filter(|e| e.session_start)
        .map(|e| e.step)
        .collect();
    assert_eq!(starts, [6]);
}

/// The largest `max|a - b| / max|b|` over the tensors of two models, and its tensor.
fn worst_relative_difference(
    a: &std::collections::BTreeMap<String, Tensor>,
    b: &std::collections::BTreeMap<String, Tensor>,
) -> (f32, String) {
    let mut worst = (0f32, String::new());
    for (name, r) in b {
        let vals = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (x, y) = (vals(&a[name]), vals(r));
        let diff = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        let scale = y.iter().map(|q| q.abs()).fold(0f32, f32::max).max(1e-12);
        assert!(diff.is_finite(), "`{name}` is not finite");
        if diff / scale > worst.0 {
            worst = (diff / scale, name.clone());
        }
    }
    worst
}

/// The fast CPU kernels and candle's plain ops (`resnet_model::ops::with_reference_ops`, what
/// a CUDA device runs) train alike: the whole loop (loss, SGD, running statistics), where
/// resnet-model's tests compare op by op. They sum in different orders, so they part by f32
/// rounding that training amplifies: on this tiny net (width 4, batch 32, lr 0.05) the worst
/// tensor (a BatchNorm bias, small numbers) is ~8e-5 apart after one step, ~1.5e-3 after
/// three, ~1.5e-2 after nine. The bounds leave ~10x and ~3x of room; this also sizes the
/// tolerances of the CUDA-vs-CPU training test (`tests/cuda.rs`).
#[test]
fn fast_kernels_train_like_the_reference_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let final_model = |runs: &Path, steps: u64, reference: bool| {
        let session = TrainSession::new(config(runs, steps));
        let out = if reference {
            resnet_model::ops::with_reference_ops(|| run(session, &TrainOptions::default()))
        } else {
            run(session, &TrainOptions::default())
        };
        let TrainOutcome::Finished { run_dir, .. } = out else {
            panic!("the run should finish");
        };
        Checkpoint::read(&latest(&run_dir), &Device::Cpu)
            .unwrap()
            .model
    };
    for (steps, bound) in [(1, 1e-3), (9, 5e-2)] {
        let runs = tmp.path().join(steps.to_string());
        let fast = final_model(&runs.join("fast"), steps, false);
        let reference = final_model(&runs.join("reference"), steps, true);
        let (worst, name) = worst_relative_difference(&fast, &reference);
        eprintln!(
            "fast kernels vs reference ops after {steps} steps: worst max|d|/max|ref| = \
             {worst:e} (`{name}`)"
        );
        assert!(worst > 0.0, "the two paths should not be bit-identical");
        assert!(
            worst < bound,
            "after {steps} steps `{name}` differs by {worst:e}"
        );
    }
}
