//! Training metrics: one row every `log_every` iterations and one per epoch, appended to
//! `metrics.jsonl` (one JSON object per line) and `metrics.csv` (same columns).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::run_dir::write_file;

/// What a metrics row summarizes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The last `log_every` iterations.
    Step,
    /// A whole epoch, with validation.
    Epoch,
}

/// One row of `metrics.jsonl` / `metrics.csv`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricsRecord {
    /// `step` or `epoch`.
    pub kind: RecordKind,
    /// Optimizer steps completed.
    pub iteration: u64,
    /// Epochs completed, fractional (`iteration / batches_per_epoch`).
    pub epoch: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss over the row's steps (train mode, augmented images).
    pub train_loss: f64,
    /// Training accuracy over the row's steps.
    pub train_acc: f64,
    /// Validation loss (epoch rows with a validation split).
    pub val_loss: Option<f64>,
    /// Validation accuracy (epoch rows with a validation split).
    pub val_acc: Option<f64>,
    /// Training images per second over the row's steps.
    pub images_per_sec: f64,
    /// Training wall time since the start of the run, seconds (evaluation included).
    pub wall_time_s: f64,
}

/// Column names of `metrics.csv`.
pub const CSV_HEADER: &str =
    "kind,iteration,epoch,lr,train_loss,train_acc,val_loss,val_acc,images_per_sec,wall_time_s";

impl MetricsRecord {
    /// The row in CSV (empty cells for absent values).
    pub fn to_csv(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x}"));
        let kind = match self.kind {
            RecordKind::Step => "step",
            RecordKind::Epoch => "epoch",
        };
        format!(
            "{kind},{},{},{},{},{},{},{},{},{}",
            self.iteration,
            self.epoch,
            self.lr,
            self.train_loss,
            self.train_acc,
            opt(self.val_loss),
            opt(self.val_acc),
            self.images_per_sec,
            self.wall_time_s
        )
    }
}

/// The metrics files of a run, and the rows written so far.
#[derive(Debug)]
pub struct MetricsLog {
    jsonl: PathBuf,
    csv: PathBuf,
    records: Vec<MetricsRecord>,
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl` and `dir/metrics.csv`. Existing rows with an iteration
    /// above `keep_up_to` are dropped (a resumed run repeats them) and both files are
    /// rewritten; with `keep_up_to = None` the files start empty.
    pub fn open(dir: &Path, keep_up_to: Option<u64>) -> Result<Self> {
        let jsonl = dir.join("metrics.jsonl");
        let csv = dir.join("metrics.csv");
        let records = match keep_up_to {
            Some(limit) if jsonl.is_file() => read_jsonl(&jsonl)?
                .into_iter()
                .filter(|r| r.iteration <= limit)
                .collect(),
            _ => Vec::new(),
        };
        let log = Self {
            jsonl,
            csv,
            records,
        };
        log.rewrite()?;
        Ok(log)
    }

    fn rewrite(&self) -> Result<()> {
        let mut j = String::new();
        let mut c = format!("{CSV_HEADER}\n");
        for r in &self.records {
            j.push_str(&serde_json::to_string(r).expect("records serialize"));
            j.push('\n');
            c.push_str(&r.to_csv());
            c.push('\n');
        }
        write_file(&self.jsonl, j.as_bytes())?;
        write_file(&self.csv, c.as_bytes())
    }

    /// Appends a row to both files.
    pub fn append(&mut self, record: MetricsRecord) -> Result<()> {
        let line = serde_json::to_string(&record).expect("records serialize");
        append_line(&self.jsonl, &line)?;
        append_line(&self.csv, &record.to_csv())?;
        self.records.push(record);
        Ok(())
    }

    /// All rows, in order.
    pub fn records(&self) -> &[MetricsRecord] {
        &self.records
    }

    /// Path of `metrics.jsonl`.
    pub fn jsonl_path(&self) -> &Path {
        &self.jsonl
    }

    /// Path of `metrics.csv`.
    pub fn csv_path(&self) -> &Path {
        &self.csv
    }
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

/// Reads a `metrics.jsonl` file.
pub fn read_jsonl(path: &Path) -> Result<Vec<MetricsRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::RunDir {
                path: path.to_path_buf(),
                reason: format!("line {}: not a metrics record: {e}", i + 1),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: RecordKind, iteration: u64) -> MetricsRecord {
        MetricsRecord {
            kind,
            iteration,
            epoch: iteration as f64 / 10.0,
            lr: 0.1,
            train_loss: 2.0,
            train_acc: 0.25,
            val_loss: (kind == RecordKind::Epoch).then_some(1.5),
            val_acc: (kind == RecordKind::Epoch).then_some(0.5),
            images_per_sec: 100.0,
            wall_time_s: 1.0,
        }
    }

    #[test]
    fn writes_both_files_and_truncates_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        log.append(rec(RecordKind::Step, 5)).unwrap();
        log.append(rec(RecordKind::Epoch, 10)).unwrap();
        log.append(rec(RecordKind::Step, 15)).unwrap();
        let csv = std::fs::read_to_string(log.csv_path()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "step,5,0.5,0.1,2,0.25,,,100,1");
        assert_eq!(lines[2], "epoch,10,1,0.1,2,0.25,1.5,0.5,100,1");
        assert_eq!(read_jsonl(log.jsonl_path()).unwrap().len(), 3);

        let log = MetricsLog::open(dir.path(), Some(10)).unwrap();
        assert_eq!(log.records().len(), 2);
        assert_eq!(read_jsonl(log.jsonl_path()).unwrap(), log.records());
        let csv = std::fs::read_to_string(log.csv_path()).unwrap();
        assert_eq!(csv.lines().count(), 3);
    }
}
