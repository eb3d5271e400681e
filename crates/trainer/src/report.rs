//! The final report of a run: `report.json` and `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::evaluate::EvalResult;
use crate::run_dir::write_file;

/// Test results of one model of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelReport {
    /// Which model: `final` or `best`.
    pub which: String,
    /// Iteration whose weights were tested.
    pub iteration: u64,
    /// Validation accuracy of those weights (if there is a validation split).
    pub val_accuracy: Option<f64>,
    /// The checkpoint holding those weights.
    pub checkpoint: String,
    /// Test-set evaluation.
    pub test: EvalResult,
}

/// The whole report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    /// Run name.
    pub name: String,
    /// Architecture, e.g. `resnet20-a`.
    pub architecture: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Iterations trained.
    pub iterations: u64,
    /// Epochs trained (fractional).
    pub epochs: f64,
    /// Wall time of the run, seconds, summed over its sessions: training, validation,
    /// checkpoints and the final test.
    pub wall_time_s: f64,
    /// Mean training throughput over the run's epoch rows, images per second: time in
    /// training steps (waiting for data included, evaluation excluded).
    pub images_per_sec: f64,
    /// Images in the training, validation and test sets.
    pub set_sizes: SetSizes,
    /// SHA-256 of the resolved config.
    pub config_digest: String,
    /// The model at the end of training.
    pub final_model: ModelReport,
    /// The model with the best validation accuracy (the paper's selection); equal to the
    /// final model without a validation split.
    pub best_model: ModelReport,
}

/// Sizes of the sets a run used.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetSizes {
    /// Training images.
    pub train: usize,
    /// Validation images (0 without a validation split).
    pub val: usize,
    /// Test images.
    pub test: usize,
}

impl Report {
    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("report serializes");
        write_file(&dir.join("report.json"), json.as_bytes())?;
        write_file(&dir.join("report.md"), self.to_markdown().as_bytes())
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        let _ = writeln!(s, "# Run `{}`\n", self.name);
        let _ = writeln!(
            s,
            "{} ({} parameters), {} iterations ({:.1} epochs), {:.0} s of wall time \
             (validation and test included); training steps at {:.0} images/s (waiting \
             for data included). Train / val / test images: {} / {} / {}. Config digest \
             `{}`.\n",
            self.architecture,
            self.parameters,
            self.iterations,
            self.epochs,
            self.wall_time_s,
            self.images_per_sec,
            self.set_sizes.train,
            self.set_sizes.val,
            self.set_sizes.test,
            &self.config_digest[..self.config_digest.len().min(12)],
        );
        let _ = writeln!(
            s,
            "| model | iteration | val accuracy | test accuracy | test error | test loss |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for m in [&self.final_model, &self.best_model] {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2}% | {:.4} |",
                m.which,
                m.iteration,
                m.val_accuracy.map_or("-".to_string(), pct),
                pct(m.test.accuracy),
                m.test.error_percent(),
                m.test.loss
            );
        }
        let _ = writeln!(s, "\n## Per-class test accuracy\n");
        let _ = writeln!(s, "| class | final | best |");
        let _ = writeln!(s, "|---|---:|---:|");
        for (f, b) in self
            .final_model
            .test
            .per_class
            .iter()
            .zip(&self.best_model.test.per_class)
        {
            let _ = writeln!(
                s,
                "| {} | {} ({}/{}) | {} ({}/{}) |",
                f.class,
                pct(f.accuracy),
                f.correct,
                f.total,
                pct(b.accuracy),
                b.correct,
                b.total
            );
        }
        for m in [&self.final_model, &self.best_model] {
            let _ = writeln!(
                s,
                "\n## Confusion matrix, {} model (rows: true class, columns: predicted)\n",
                m.which
            );
            let names: Vec<&str> = m.test.per_class.iter().map(|c| c.class.as_str()).collect();
            let _ = writeln!(s, "| true \\ predicted | {} |", names.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(names.len()));
            for (name, row) in names.iter().zip(&m.test.confusion) {
                let cells: Vec<String> = row.iter().map(u64::to_string).collect();
                let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::summarize;

    #[test]
    fn markdown_has_tables() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        let test = summarize(vec![vec![9, 1], vec![2, 8]], 10.0, &names);
        let m = |which: &str| ModelReport {
            which: which.into(),
            iteration: 10,
            val_accuracy: Some(0.5),
            checkpoint: "c".into(),
            test: test.clone(),
        };
        let r = Report {
            name: "x".into(),
            architecture: "resnet8-a".into(),
            parameters: 1,
            iterations: 10,
            epochs: 1.0,
            wall_time_s: 2.0,
            images_per_sec: 3.0,
            set_sizes: SetSizes {
                train: 1,
                val: 2,
                test: 20,
            },
            config_digest: "abcdef0123456789".into(),
            final_model: m("final"),
            best_model: m("best"),
        };
        let md = r.to_markdown();
        assert!(
            md.contains("| final | 10 | 50.00% | 85.00% | 15.00% | 0.5000 |"),
            "{md}"
        );
        assert!(
            md.contains("| cat | 90.00% (9/10) | 90.00% (9/10) |"),
            "{md}"
        );
        assert!(md.contains("| dog | 2 | 8 |"), "{md}");
        let dir = tempfile::tempdir().unwrap();
        r.write(dir.path()).unwrap();
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(back, r);
    }
}
