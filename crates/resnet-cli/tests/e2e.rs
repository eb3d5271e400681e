//! End-to-end tests of `resnet-cli`: smoke training → checkpoint → eval → predict, exact
//! resume after a stop and after SIGTERM, configuration errors, bad checkpoints.
//!
//! The tests run the `resnet-cli` binary users run (`CARGO_BIN_EXE_resnet-cli`, with its
//! process tuning) as child processes; shared helpers live in the `resnet-e2e` support crate
//! (`tests/lib.rs` at the workspace root).
//!
//! Run with `cargo test -p resnet-cli --test e2e`. Uses the real CIFAR-10 when
//! `../shared/data/cifar-10-binary.tar.gz` exists beside the checkout, synthetic data
//! otherwise.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use resnet_e2e::{assert_same_checkpoint, command, install_data_under, real_archive, run, Run};

#[path = "../../trainer/tests/common/tensorboard_reader.rs"]
mod tensorboard_reader;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resnet-cli"))
}

/// A dataset shared by the tests of this binary (installed once, kept under Cargo's
/// per-target temporary directory between runs).
fn shared_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| install_data_under(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-data")))
}

fn cli(args: &[&str]) -> Run {
    run(exe(), args)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 paths in tests")
}

const PER_CHANNEL: &str = "data.normalization={kind: per_channel, mean: [0.4914, 0.4822, 0.4465], \
                           std: [0.2470, 0.2435, 0.2616]}";

#[test]
fn smoke_train_then_eval_and_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let runs_set = format!("output.runs_dir={}", s(&runs));
    // With the real archive, let `train` fetch it into an empty directory (--from).
    let (data, from) = match real_archive() {
        Some(a) => (tmp.path().join("data"), Some(a)),
        None => (shared_data().to_path_buf(), None),
    };
    let mut args = vec![
        "train",
        "configs/smoke.yaml",
        "--no-progress",
        "--data-dir",
        s(&data),
        "--set",
        &runs_set,
        "--set",
        PER_CHANNEL,
    ];
    if let Some(a) = &from {
        args.extend(["--from", s(a)]);
    }
    let t = Instant::now();
    let out = cli(&args).expect_code(0);
    eprintln!("smoke training took {:.1} s", t.elapsed().as_secs_f64());
    if from.is_some() {
        assert!(out.stderr.contains("installed CIFAR-10"), "{}", out.stderr);
    }
    let run_dir = PathBuf::from(out.last_line());
    assert!(run_dir.starts_with(&runs), "{run_dir:?}");
    assert!(out.stderr.contains("test accuracy"), "{}", out.stderr);
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
        "checkpoints/iter-0000040.safetensors",
        "checkpoints/iter-0000032.safetensors",
    ] {
        assert!(
            run_dir.join(f).is_file(),
            "{f} missing in {}",
            run_dir.display()
        );
    }
    assert!(
        !run_dir
            .join("checkpoints/iter-0000016.safetensors")
            .exists(),
        "keep_last: 2"
    );

    // TensorBoard records read back with their CRCs checked.
    let events: Vec<PathBuf> = std::fs::read_dir(run_dir.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(events.len(), 1);
    let scalars = tensorboard_reader::read_scalars(&events[0]).unwrap();
    let steps = |tag: &str| -> Vec<i64> {
        scalars
            .iter()
            .filter(|e| e.tag == tag)
            .map(|e| e.step)
            .collect()
    };
    assert_eq!(steps("train/loss"), [5, 10, 15, 20, 25, 30, 35, 40]);
    assert_eq!(steps("val/accuracy"), [16, 32, 40]);
    assert_eq!(steps("test/accuracy_final"), [40]);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["iterations"], 40);
    assert_eq!(report["set_sizes"]["train"], 2000);
    assert_eq!(report["set_sizes"]["val"], 500);
    let final_test = &report["final_model"]["test"];
    assert_eq!(final_test["total"], 500);
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        md.contains("Confusion matrix") && md.contains("Per-class"),
        "{md}"
    );

    // eval --json on the checkpoint reproduces the report's test figures.
    let latest = run_dir.join("checkpoints/latest.safetensors");
    let ev = cli(&["eval", s(&latest), "--json", "--device", "cpu"]).expect_code(0);
    let ev: serde_json::Value = serde_json::from_str(&ev.stdout).unwrap();
    assert_eq!(ev["correct"], final_test["correct"]);
    assert_eq!(ev["total"], 500);
    assert_eq!(ev["accuracy"], final_test["accuracy"]);
    assert_eq!(ev["loss"], final_test["loss"]);
    assert_eq!(ev["per_class"].as_array().unwrap().len(), 10);
    let confusion: u64 = ev["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion, 500);
    let val = cli(&["eval", s(&latest), "--split", "val", "--json"]).expect_code(0);
    let val: serde_json::Value = serde_json::from_str(&val.stdout).unwrap();
    assert_eq!(val["total"], 500);
    assert_eq!(val["split"], "val");
    let text = cli(&["eval", s(&latest)]).expect_code(0);
    assert!(text.stdout.contains("accuracy") && text.stdout.contains("confusion matrix"));

    // The same weights as a bare PyTorch-style state dict (no prefix, no metadata, with
    // PyTorch's `num_batches_tracked` counters) evaluate identically when the config gives
    // the per-channel normalization they were trained with.
    let raw = tmp.path().join("exported.safetensors");
    export_state_dict(&latest, &raw);
    let cfg = tmp.path().join("per_channel.yaml");
    let smoke =
        std::fs::read_to_string(resnet_e2e::workspace_root().join("configs/smoke.yaml")).unwrap();
    std::fs::write(
        &cfg,
        smoke.replace(
            "    kind: per_pixel_mean",
            "    kind: per_channel\n    mean: [0.4914, 0.4822, 0.4465]\n    std: [0.2470, 0.2435, 0.2616]",
        ),
    )
    .unwrap();
    let rev = cli(&[
        "eval",
        s(&raw),
        "--config",
        s(&cfg),
        "--data-dir",
        s(&data),
        "--json",
    ])
    .expect_code(0);
    let rev: serde_json::Value = serde_json::from_str(&rev.stdout).unwrap();
    assert_eq!(rev["correct"], ev["correct"]);
    assert_eq!(rev["confusion"], ev["confusion"]);

    // Wrong architecture: clear errors for checkpoints and bare weights alike.
    for weights in [&latest, &raw] {
        let e = cli(&["eval", s(weights), "--config", "configs/resnet20.yaml"]).expect_code(1);
        assert!(
            e.stderr.contains("resnet8-a") && e.stderr.contains("resnet20-a"),
            "{}",
            e.stderr
        );
    }
    // A truncated checkpoint.
    let cut = run_dir.join("checkpoints/truncated.safetensors");
    let bytes = std::fs::read(&latest).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = cli(&["eval", s(&cut)]).expect_code(1);
    assert!(
        e.stderr.contains("truncated.safetensors") && e.stderr.contains("truncated or corrupt"),
        "{}",
        e.stderr
    );
    let e = cli(&["train", "--resume", s(&cut), "--data-dir", s(&data)]).expect_code(1);
    assert!(e.stderr.contains("truncated or corrupt"), "{}", e.stderr);

    // predict on PNG files made from test images, a larger JPEG, and a file that is no image.
    let images = write_test_images(&data, tmp.path(), 5);
    let bogus = tmp.path().join("not-an-image.png");
    std::fs::write(&bogus, "hello").unwrap();
    let mut args: Vec<&str> = vec!["predict", s(&latest), "--top-k", "3"];
    args.extend(images.iter().map(|p| s(p)));
    args.push(s(&bogus));
    let p = cli(&args).expect_code(1);
    assert!(
        p.stderr.contains("not-an-image.png") && p.stderr.contains("not a readable image"),
        "{}",
        p.stderr
    );
    assert!(
        p.stderr.contains("1 of 7 file(s) could not be classified"),
        "{}",
        p.stderr
    );
    let lines: Vec<&str> = p.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", p.stdout);
    for (line, img) in lines.iter().zip(&images) {
        assert!(line.starts_with(s(img)), "{line}");
        assert_eq!(line.matches('%').count(), 3, "{line}");
    }
    let mut args: Vec<&str> = vec!["predict", s(&latest), "--top-k", "10", "--json"];
    args.extend(images.iter().map(|p| s(p)));
    let p = cli(&args).expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        let probs: Vec<f64> = row["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["probability"].as_f64().unwrap())
            .collect();
        assert_eq!(probs.len(), 10);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{probs:?}");
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
    }
}

/// Writes `model.*` tensors of a checkpoint as a bare state dict, PyTorch style.
fn export_state_dict(checkpoint: &Path, out: &Path) {
    use candle_core::{Device, Tensor};
    let ckpt = trainer::checkpoint::Checkpoint::read(checkpoint, &Device::Cpu).unwrap();
    let mut state: std::collections::HashMap<String, Tensor> =
        ckpt.model.clone().into_iter().collect();
    let bn: Vec<String> = state
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean").map(str::to_string))
        .collect();
    for prefix in bn {
        state.insert(
            format!("{prefix}.num_batches_tracked"),
            Tensor::new(40i64, &Device::Cpu).unwrap(),
        );
    }
    candle_core::safetensors::save(&state, out).unwrap();
}

/// PNG files of the first `n` test images (32x32) plus one JPEG upscaled to 128x96.
fn write_test_images(data: &Path, dir: &Path, n: usize) -> Vec<PathBuf> {
    let set = cifar_data::load(data).unwrap().test;
    let mut paths = Vec::new();
    for i in 0..n {
        let px = set.image(i);
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let p = (y * 32 + x) as usize;
            image::Rgb([px[p], px[1024 + p], px[2048 + p]])
        });
        let path = dir.join(format!("test-{i}-{}.png", set.label(i)));
        img.save(&path).unwrap();
        paths.push(path);
        if i == 0 {
            let big = image::imageops::resize(&img, 128, 96, image::imageops::FilterType::Nearest);
            let jpg = dir.join("test-0-large.jpg");
            big.save(&jpg).unwrap();
            paths.push(jpg);
        }
    }
    paths
}

/// The run directory created under `runs` once its metrics have a first row.
fn wait_for_progress(runs: &Path, timeout: Duration) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Ok(rd) = std::fs::read_dir(runs) {
            for e in rd.flatten() {
                let metrics = e.path().join("metrics.jsonl");
                if std::fs::metadata(&metrics).is_ok_and(|m| m.len() > 0) {
                    return e.path();
                }
            }
        }
        assert!(
            start.elapsed() < timeout,
            "training made no progress in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn resume_after_a_stop_or_sigterm_ends_bit_identical() {
    let data = shared_data();
    let tmp = tempfile::tempdir().unwrap();
    let train = |name: &str, extra: &[&str]| -> Run {
        let set = format!("output.runs_dir={}", s(&tmp.path().join(name)));
        let mut args = vec![
            "train",
            "configs/smoke.yaml",
            "--no-progress",
            "--data-dir",
            s(data),
            "--set",
            &set,
        ];
        args.extend(extra);
        cli(&args)
    };
    let full = PathBuf::from(train("full", &[]).expect_code(0).last_line());

    // Stopped after iteration 9 (mid-epoch: 16 steps per epoch), then resumed.
    let first = train("stopped", &["--stop-after-iterations", "9"]).expect_code(0);
    assert!(first.stderr.contains("at iteration 9"), "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains("resume with: resnet-cli train --resume"),
        "{}",
        first.stderr
    );
    let stopped = PathBuf::from(first.last_line());
    let resumed = cli(&[
        "train",
        "--resume",
        s(&stopped),
        "--no-progress",
        "--data-dir",
        s(data),
    ])
    .expect_code(0);
    assert_eq!(PathBuf::from(resumed.last_line()), stopped);

    // SIGTERM at whatever point training has reached, then resumed.
    #[cfg(unix)]
    {
        let runs = tmp.path().join("killed");
        let set = format!("output.runs_dir={}", s(&runs));
        let child = command(
            exe(),
            &[
                "train",
                "configs/smoke.yaml",
                "--no-progress",
                "--data-dir",
                s(data),
                "--set",
                &set,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let run_dir = wait_for_progress(&runs, Duration::from_secs(120));
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out: Run = child.wait_with_output().unwrap().into();
        let out = out.expect_code(130);
        assert!(
            out.stderr.contains("interrupted at iteration"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("resume with: resnet-cli train --resume"),
            "{}",
            out.stderr
        );
        let meta = trainer::checkpoint::Checkpoint::read_meta(
            &run_dir.join("checkpoints/latest.safetensors"),
        )
        .unwrap();
        assert!(
            (5..40).contains(&meta.iteration),
            "stopped at {}",
            meta.iteration
        );
        cli(&[
            "train",
            "--resume",
            s(&run_dir),
            "--no-progress",
            "--data-dir",
            s(data),
        ])
        .expect_code(0);
        for f in ["latest", "best"] {
            let name = format!("checkpoints/{f}.safetensors");
            assert_same_checkpoint(&full.join(&name), &run_dir.join(&name));
        }
    }
    for f in ["latest", "best"] {
        let name = format!("checkpoints/{f}.safetensors");
        assert_same_checkpoint(&full.join(&name), &stopped.join(&name));
    }
    let rows = |p: &Path| -> Vec<(u64, u64)> {
        trainer::metrics::read_jsonl(&p.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|r| (r.iteration, r.train_loss.to_bits()))
            .collect()
    };
    assert_eq!(rows(&full), rows(&stopped));
}

#[test]
fn config_errors_name_the_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.yaml",
            "name: x\nmodel:\n  depth: 20\n  widht: 16\n",
            vec!["widht", "line 4"],
        ),
        (
            "type.yaml",
            "name: x\ntraining:\n  batch_size: many\n",
            vec!["training.batch_size", "line 3"],
        ),
        (
            "depth.yaml",
            "model:\n  depth: 21\n",
            vec!["line 2: invalid value for `model.depth`", "6n + 2"],
        ),
        (
            "lr.yaml",
            "schedule:\n  base_lr: -0.1\n",
            vec!["line 2: invalid value for `schedule.base_lr`"],
        ),
        (
            "batch.yaml",
            "training:\n  batch_size: 0\n",
            vec!["line 2: invalid value for `training.batch_size`"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        for cmd in ["summary", "train"] {
            let e = cli(&[cmd, s(&path)]).expect_code(1);
            assert!(e.stderr.contains(name), "{}", e.stderr);
            for n in &needles {
                assert!(
                    e.stderr.contains(n),
                    "{cmd} {name}: expected {n:?} in\n{}",
                    e.stderr
                );
            }
        }
    }
    let e = cli(&["summary", "--set", "model.depth=21"]).expect_code(1);
    assert!(
        e.stderr.contains("(set by `--set model.depth=21`)"),
        "{}",
        e.stderr
    );
    let e = cli(&["train", "--set", "training.max_iterations"]).expect_code(1);
    assert!(e.stderr.contains("expected key.path=value"), "{}", e.stderr);
    let e = cli(&["train", "no/such/config.yaml"]).expect_code(1);
    assert!(e.stderr.contains("no/such/config.yaml"), "{}", e.stderr);
    // A value clap knows the choices of is a usage error (status 2) that lists them.
    let e = cli(&["train", "--device", "tpu"]).expect_code(2);
    assert!(
        e.stderr
            .contains("invalid value 'tpu' for '--device <DEVICE>'")
            && e.stderr.contains("[possible values: auto, cpu, cuda]"),
        "{}",
        e.stderr
    );
    let e = cli(&["eval", "w.safetensors", "--split", "validation"]).expect_code(2);
    assert!(
        e.stderr.contains("[possible values: test, val, train]"),
        "{}",
        e.stderr
    );
}

#[test]
fn summary_and_missing_data_without_network() {
    let out = cli(&["summary"]).expect_code(0);
    assert!(out.stdout.contains("269,722"), "{}", out.stdout);
    let out = cli(&["summary", "configs/resnet110.yaml"]).expect_code(0);
    assert!(out.stdout.contains("resnet110"), "{}", out.stdout);

    // No dataset and an unreachable mirror: the error names the URL and the offline options.
    let tmp = tempfile::tempdir().unwrap();
    let e = cli(&[
        "train",
        "configs/smoke.yaml",
        "--data-dir",
        s(&tmp.path().join("data")),
        "--url",
        "http://127.0.0.1:9/cifar-10-binary.tar.gz",
    ])
    .expect_code(1);
    assert!(
        e.stderr.contains("127.0.0.1:9") && e.stderr.contains("--from"),
        "{}",
        e.stderr
    );
}

/// Every tensor of a safetensors file, by name, as raw bits (the metadata's key order is not
/// deterministic, so files are compared by their tensors).
fn tensor_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<u32>)> = map
        .into_iter()
        .map(|(k, t)| {
            let bits = t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect();
            (k, bits)
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{} holds no tensors", path.display());
    v
}

/// A run carried over three stretches in a fixed directory (`--run-dir`, a time limit, an
/// iteration limit, the end), recorded in stretches.jsonl, ends with the same weights as an
/// uninterrupted run; its bare weights evaluate to the report's counts; `export` and `report`
/// work on it.
#[test]
fn stretches_in_a_fixed_run_dir_then_export_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared_data();
    let run_dir = tmp.path().join("results/smoke-stretched");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if v[0] == "train" {
            v.push("--no-progress".into());
        }
        v.extend(["--data-dir".into(), s(data).into()]);
        v
    };
    let call = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&refs)
    };

    // Stretch 1: stops after the first step past 0 s.
    let out = call(base(&[
        "train",
        "configs/smoke.yaml",
        "--run-dir",
        s(&run_dir),
        "--stop-after-time",
        "0s",
        "--note",
        "first stretch",
    ]))
    .expect_code(0);
    assert!(
        out.stderr
            .contains("stopped as asked (--stop-after-time) at iteration 1"),
        "{}",
        out.stderr
    );
    assert_eq!(PathBuf::from(out.last_line()), run_dir);
    // A new run never writes into an existing run's directory.
    let out = call(base(&[
        "train",
        "configs/smoke.yaml",
        "--run-dir",
        s(&run_dir),
    ]))
    .expect_code(1);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    // Stretches 2 and 3.
    call(base(&[
        "train",
        "--resume",
        s(&run_dir),
        "--stop-after-iterations",
        "20",
    ]))
    .expect_code(0);
    call(base(&["train", "--resume", s(&run_dir)])).expect_code(0);

    let stretches = trainer::stretch::read(&run_dir).unwrap();
    let spans: Vec<(u64, u64, &str)> = stretches
        .iter()
        .map(|t| (t.start_iteration, t.end_iteration, t.ended.as_str()))
        .collect();
    assert_eq!(
        spans,
        [
            (0, 1, "time limit"),
            (1, 20, "iteration limit"),
            (20, 40, "finished")
        ]
    );
    assert_eq!(stretches[0].note.as_deref(), Some("first stretch"));
    for t in &stretches {
        let build = t.build.as_deref().unwrap_or("");
        assert!(build.starts_with("git ") || build == "unknown", "{build}");
        assert!(!t.cpu.is_empty() && t.images_per_sec > 0.0, "{t:?}");
    }
    let md = std::fs::read_to_string(run_dir.join("stretches.md")).unwrap();
    assert!(md.contains("| 3 | 20–40 | finished |"), "{md}");

    // The same run without interruption ends with the same bits.
    let straight = tmp.path().join("results/smoke-straight");
    call(base(&[
        "train",
        "configs/smoke.yaml",
        "--run-dir",
        s(&straight),
    ]))
    .expect_code(0);
    for f in ["final.safetensors", "best.safetensors"] {
        assert!(
            tensor_bits(&run_dir.join(f)) == tensor_bits(&straight.join(f)),
            "{f} differs between the stretched and the uninterrupted run"
        );
    }

    // The bare final weights score the report's count through eval.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    let config = run_dir.join("config.yaml");
    let out = call(base(&[
        "eval",
        s(&run_dir.join("final.safetensors")),
        "--config",
        s(&config),
        "--json",
    ]))
    .expect_code(0);
    let got: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["correct"], report["final_model"]["test"]["correct"]);

    // export: the checkpoint's weights alone, the same bytes the run wrote at its end.
    let exported = tmp.path().join("exported.safetensors");
    cli(&[
        "export",
        s(&run_dir.join("checkpoints/latest.safetensors")),
        s(&exported),
    ])
    .expect_code(0);
    assert!(tensor_bits(&exported) == tensor_bits(&run_dir.join("final.safetensors")));
    let out = cli(&["export", s(&exported), s(&exported)]).expect_code(1);
    assert!(out.stderr.contains("overwrite the input"), "{}", out.stderr);

    // report: one table, mean ± std over the runs.
    let out = cli(&["report", s(&run_dir), s(&straight)]).expect_code(0);
    assert!(
        out.stdout.contains("**mean ± std** (2 runs)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("± 0.00%"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("resnet-cli train {}", s(&config))),
        "{}",
        out.stdout
    );
    let out = cli(&["report", s(tmp.path())]).expect_code(1);
    assert!(out.stderr.contains("has no report.json"), "{}", out.stderr);
}
