//! The weights shipped in `results/` still score exactly what their runs recorded.
//!
//! For every finished run kept in the repository (`results/<run>/report.json`), the bare
//! weights `final.safetensors` and `best.safetensors` are evaluated on the real CIFAR-10
//! test set through the project's own eval path (`resnet-cli eval --json`, with the run's
//! `config.yaml`), and the number of correctly classified images must equal the count in
//! `report.json` exactly. A change to the model, the kernels, the data pipeline or the
//! normalization that moves a single prediction fails here.
//!
//! Needs `../shared/data/cifar-10-binary.tar.gz` beside the checkout. Without it the test
//! fails in CI (`CI` set) and is skipped, loudly, elsewhere.
//!
//! Run with `cargo test -p resnet-cli --test shipped_weights`.

use std::path::{Path, PathBuf};

use resnet_e2e::{run, workspace_root};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resnet-cli"))
}

/// Finished runs under `results/`, sorted by name.
fn shipped_runs() -> Vec<PathBuf> {
    let results = workspace_root().join("results");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap_or_else(|e| panic!("reading {}: {e}", results.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("report.json").is_file())
        .collect();
    runs.sort();
    runs
}

fn json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

#[test]
fn shipped_weights_score_their_recorded_test_counts() {
    let archive = workspace_root().join("../shared/data/cifar-10-binary.tar.gz");
    if !archive.is_file() {
        let msg = format!(
            "{} is missing: the shipped weights cannot be checked",
            archive.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (CI must have the real data)");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let runs = shipped_runs();
    assert!(
        !runs.is_empty(),
        "no finished run with report.json under results/: nothing shipped to check"
    );
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shipped-weights-data");
    let data_s = data.to_str().expect("UTF-8 path");
    let archive_s = archive.to_str().expect("UTF-8 path");
    let mut checked = 0;
    for dir in &runs {
        let report = json(&dir.join("report.json"));
        let config = dir.join("config.yaml");
        for (file, key) in [
            ("final.safetensors", "final_model"),
            ("best.safetensors", "best_model"),
        ] {
            let weights = dir.join(file);
            assert!(
                weights.is_file(),
                "{} has a report but no {file}",
                dir.display()
            );
            let expected = &report[key]["test"];
            let out = run(
                exe(),
                &[
                    "eval",
                    weights.to_str().expect("UTF-8 path"),
                    "--config",
                    config.to_str().expect("UTF-8 path"),
                    "--data-dir",
                    data_s,
                    "--from",
                    archive_s,
                    "--device",
                    "cpu",
                    "--json",
                ],
            )
            .expect_code(0);
            let got: serde_json::Value = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("eval --json output: {e}\n{}", out.stdout));
            assert_eq!(
                got["iteration"],
                serde_json::Value::Null,
                "{} must be bare weights (no checkpoint metadata)",
                weights.display()
            );
            assert_eq!(got["total"], expected["total"], "{}", weights.display());
            assert_eq!(
                got["correct"],
                expected["correct"],
                "{}: correct test images differ from {}",
                weights.display(),
                dir.join("report.json").display()
            );
            assert_eq!(
                got["confusion"],
                expected["confusion"],
                "{}",
                weights.display()
            );
            eprintln!(
                "{}: {} / {} correct, as recorded",
                weights.display(),
                got["correct"],
                got["total"]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * runs.len());
}
