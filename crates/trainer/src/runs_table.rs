//! One table over several finished runs (seeds of a recipe): each run's test accuracy of the
//! final and of the best-on-validation model, then their mean ± sample standard deviation.
//!
//! The paper reports the best of 5 runs; this table reports every run and the mean ± std,
//! which says more about what a user should expect from one run.
//!
//! ```no_run
//! use std::path::PathBuf;
//! let runs = [PathBuf::from("results/resnet20-16k-seed0"), PathBuf::from("results/resnet20-16k-seed1")];
//! let table = trainer::runs_table::RunsTable::load(&runs).unwrap();
//! print!("{}", table.to_markdown());
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::report::Report;

/// Config fields that may differ between seeds of one recipe: naming, where data and runs
/// live, and how the loop is run (logging, checkpoints, device, threads, evaluation batch).
/// Every other field (model, data split/normalisation/augmentation/limits, optimizer,
/// schedule, batch size, iterations, label smoothing, BatchNorm statistics) is the recipe.
const NOT_RECIPE: &[&str] = &[
    "name",
    "seed",
    "data.dir",
    "output",
    "training.eval_batch_size",
    "training.log_every",
    "training.checkpoint_every_epochs",
    "training.keep_last",
    "training.device",
    "training.threads",
    "training.prefetch",
];

/// The dotted paths of the recipe fields (all but names, seeds, paths and loop settings such
/// as logging, checkpoints, device and threads) in which `a` and `b` differ,
/// sorted.
pub fn recipe_differences(a: &RunConfig, b: &RunConfig) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        if NOT_RECIPE.contains(&path) || a == b {
            return;
        }
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        &sub,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ => out.push(path.to_string()),
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return vec!["(config not serialisable)".to_string()];
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out
}

/// What the table needs from one run directory.
#[derive(Clone, Debug)]
pub struct RunRow {
    /// The run directory.
    pub dir: PathBuf,
    /// Its `report.json`.
    pub report: Report,
    /// Its seed (from `config.yaml`).
    pub seed: u64,
    /// Its `config.yaml`.
    pub config: RunConfig,
}

/// Several runs.
#[derive(Clone, Debug)]
pub struct RunsTable {
    /// The runs, in the order given.
    pub rows: Vec<RunRow>,
}

/// Mean and sample standard deviation (`n - 1` in the denominator; `None` for fewer than 2
/// values).
pub fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let std = (values.len() >= 2).then(|| {
        let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        (ss / (n - 1.0)).sqrt()
    });
    (mean, std)
}

impl RunRow {
    /// Reads `dir/report.json` and `dir/config.yaml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let report_path = dir.join("report.json");
        let text = std::fs::read_to_string(&report_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TrainError::RunDir {
                    path: dir.to_path_buf(),
                    reason: "has no report.json (the run has not finished)".into(),
                }
            } else {
                TrainError::io(&report_path, e)
            }
        })?;
        let report: Report = serde_json::from_str(&text).map_err(|e| TrainError::RunDir {
            path: report_path.clone(),
            reason: format!("not a run report: {e}"),
        })?;
        let config = RunConfig::from_file(&dir.join("config.yaml"), &[])?;
        Ok(Self {
            dir: dir.to_path_buf(),
            report,
            seed: config.seed,
            config,
        })
    }
}

impl RunsTable {
    /// Loads every run directory in `dirs` (each must have finished).
    pub fn load(dirs: &[PathBuf]) -> Result<Self> {
        let rows = dirs
            .iter()
            .map(|d| RunRow::load(d))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { rows })
    }

    /// The recipe fields in which some run differs from the first (see
    /// [`recipe_differences`]); empty when all runs are seeds of one recipe.
    pub fn recipe_differences(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .rows
            .iter()
            .skip(1)
            .flat_map(|r| recipe_differences(&self.rows[0].config, &r.config))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The table as Markdown: one row per run, the mean ± sample std of the final and
    /// best-on-validation test accuracy, and the command that re-trains each run. Runs
    /// that are not seeds of one recipe get no mean row but a line naming the fields in
    /// which they differ: a mean over different recipes would describe none of them.
    pub fn to_markdown(&self) -> String {
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        let mut s = String::new();
        s.push_str(
            "| run | seed | architecture | iterations | test acc., final | test acc., best on val (iteration) | wall time |\n\
             |---|---:|---|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let rep = &r.report;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} ({}/{}) | {} ({}/{}) ({}) | {} |",
                r.dir.display(),
                r.seed,
                rep.architecture,
                rep.iterations,
                pct(rep.final_model.test.accuracy),
                rep.final_model.test.correct,
                rep.final_model.test.total,
                pct(rep.best_model.test.accuracy),
                rep.best_model.test.correct,
                rep.best_model.test.total,
                rep.best_model.iteration,
                crate::stretch::hms(rep.wall_time_s),
            );
        }
        let finals: Vec<f64> = self
            .rows
            .iter()
            .map(|r| r.report.final_model.test.accuracy)
            .collect();
        let bests: Vec<f64> = self
            .rows
            .iter()
            .map(|r| r.report.best_model.test.accuracy)
            .collect();
        let show = |v: &[f64]| {
            let (m, sd) = mean_std(v);
            match sd {
                Some(sd) => format!("{:.2} ± {:.2}%", 100.0 * m, 100.0 * sd),
                None => format!("{:.2}% (one run, no std)", 100.0 * m),
            }
        };
        let differ = self.recipe_differences();
        if differ.is_empty() {
            let _ = writeln!(
                s,
                "| **mean ± std** ({} run{}) | | | | {} | {} | |",
                self.rows.len(),
                if self.rows.len() == 1 { "" } else { "s" },
                show(&finals),
                show(&bests)
            );
            s.push_str("\nmean ± sample standard deviation (n − 1) over the runs.\n");
        } else {
            let fields: Vec<String> = differ.iter().map(|f| format!("`{f}`")).collect();
            let _ = writeln!(
                s,
                "\nNo mean: these runs are not seeds of one recipe (their configs differ in {}).",
                fields.join(", ")
            );
        }
        s.push_str("\nRe-train:\n\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "- `resnet-cli train {}`",
                r.dir.join("config.yaml").display()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[0.9, 0.92]);
        assert!((m - 0.91).abs() < 1e-12);
        assert!((s.unwrap() - 0.02f64 / 2f64.sqrt()).abs() < 1e-12);
        let (m, s) = mean_std(&[0.5]);
        assert_eq!((m, s), (0.5, None));
    }

    #[test]
    fn recipe_differences_ignore_names_seeds_and_loop_settings() {
        let a = RunConfig::default();
        let mut b = a.clone();
        b.name = "other".into();
        b.seed = 7;
        b.data.dir = Some(PathBuf::from("/elsewhere"));
        b.training.threads = Some(3);
        b.training.log_every = 1;
        assert!(recipe_differences(&a, &b).is_empty());
        b.training.max_iterations = 16_000;
        b.optimizer.momentum = 0.8;
        b.data.augment = None;
        assert_eq!(
            recipe_differences(&a, &b),
            [
                "data.augment",
                "optimizer.momentum",
                "training.max_iterations"
            ]
        );
    }

    #[test]
    fn unfinished_run_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = RunsTable::load(&[tmp.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no report.json"), "{e}");
    }
}
