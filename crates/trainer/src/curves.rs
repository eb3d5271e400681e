//! The run's PNG curves, drawn from its metrics rows: `loss.png`, `accuracy.png`, `lr.png`.

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::metrics::{MetricsRecord, RecordKind};
use crate::plots::{line_chart, Series};

fn series(
    name: &str,
    records: &[MetricsRecord],
    kind: Option<RecordKind>,
    y: impl Fn(&MetricsRecord) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_string(),
        points: records
            .iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .filter_map(|r| y(r).map(|v| (r.iteration as f64, v)))
            .collect(),
    }
}

/// Draws the three charts into `dir`; returns their paths. Series without points are left
/// out; with no rows at all nothing is drawn.
pub fn draw(dir: &Path, records: &[MetricsRecord]) -> Result<Vec<PathBuf>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let nonempty = |v: Vec<Series>| -> Vec<Series> {
        v.into_iter().filter(|s| !s.points.is_empty()).collect()
    };
    let step = Some(RecordKind::Step);
    let epoch = Some(RecordKind::Epoch);
    let charts = [
        (
            "loss.png",
            "Cross-entropy loss",
            "loss",
            nonempty(vec![
                series("train (every N iterations)", records, step, |r| {
                    Some(r.train_loss)
                }),
                series("train (epoch mean)", records, epoch, |r| Some(r.train_loss)),
                series("validation", records, epoch, |r| r.val_loss),
            ]),
            false,
        ),
        (
            "accuracy.png",
            "Accuracy",
            "accuracy",
            nonempty(vec![
                series("train (every N iterations)", records, step, |r| {
                    Some(r.train_acc)
                }),
                series("train (epoch mean)", records, epoch, |r| Some(r.train_acc)),
                series("validation", records, epoch, |r| r.val_acc),
            ]),
            false,
        ),
        (
            "lr.png",
            "Learning rate",
            "learning rate",
            nonempty(vec![{
                let mut s = series("lr", records, None, |r| Some(r.lr));
                s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
                s
            }]),
            true,
        ),
    ];
    let mut written = Vec::new();
    for (file, title, ylabel, data, log_y) in charts {
        if data.is_empty() {
            continue;
        }
        let path = dir.join(file);
        line_chart(&path, title, "iteration", ylabel, &data, log_y).map_err(|e| {
            TrainError::RunDir {
                path: path.clone(),
                reason: format!("cannot draw the chart: {e}"),
            }
        })?;
        written.push(path);
    }
    Ok(written)
}
