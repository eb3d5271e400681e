//! The end of a run: the final and the best-on-validation model on the test set, and the
//! report.

use std::path::PathBuf;

use super::Trainer;
use crate::checkpoint::Checkpoint;
use crate::distributed::broadcast_string;
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate_sharded, EvalResult};
use crate::metrics::{MetricsRecord, RecordKind};
use crate::report::{ModelReport, Report, SetSizes};

impl Trainer<'_> {
    /// The current model on the test set (sharded across ranks, counts summed).
    fn test(&mut self, which: &str) -> Result<EvalResult> {
        self.observer.phase(&format!("testing the {which} model"));
        evaluate_sharded(
            &self.model,
            &self.data.test,
            &self.normalizer,
            self.cfg.training.eval_batch_size,
            &self.data.class_names,
            self.comm.as_ref(),
        )
    }

    /// Loads the best-on-validation checkpoint's weights into the model: rank 0 reads the
    /// file and sends its bytes to the other ranks.
    fn load_best(&mut self) -> Result<PathBuf> {
        let path = match &self.out {
            Some(out) => out.ckdir.best(),
            None => PathBuf::from("<the best checkpoint rank 0 sent>"),
        };
        let mut bytes = if self.out.is_some() {
            std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?
        } else {
            Vec::new()
        };
        self.comm.broadcast_bytes(&mut bytes);
        let best = Checkpoint::from_bytes(&bytes, &path, &self.device)?;
        self.model
            .load_state_dict(&best.model_state())
            .map_err(|e| TrainError::checkpoint(&path, e.to_string()))?;
        Ok(path)
    }

    pub(super) fn final_report(&mut self) -> Result<Report> {
        let it = self.state.iteration;
        let final_test = self.test("final")?;
        if let Some(out) = &self.out {
            let final_weights = out.run.final_weights();
            self.model.save(&final_weights).map_err(|e| {
                TrainError::model(format!("writing {}", final_weights.display()), e)
            })?;
        }
        let best_test = match self.state.best_val {
            Some((_, best_it)) if best_it != it => {
                self.load_best()?;
                Some(self.test("best")?)
            }
            _ => None,
        };
        let Some(out) = &self.out else {
            // Ranks > 0: the report rank 0 wrote.
            let mut json = String::new();
            broadcast_string(self.comm.as_ref(), &mut json);
            return serde_json::from_str(&json).map_err(|e| TrainError::Checkpoint {
                path: PathBuf::from("<the report rank 0 sent>"),
                reason: e.to_string(),
            });
        };
        let last_val = out
            .metrics
            .records()
            .iter()
            .rev()
            .find(|r| r.kind == RecordKind::Epoch && r.iteration == it)
            .and_then(|r| r.val_acc);
        let final_model = ModelReport {
            which: "final".into(),
            iteration: it,
            val_accuracy: last_val,
            checkpoint: out.ckdir.latest().display().to_string(),
            test: final_test,
        };
        let best_model = match (self.state.best_val, best_test) {
            (Some((acc, best_it)), Some(test)) => ModelReport {
                which: "best".into(),
                iteration: best_it,
                val_accuracy: Some(acc),
                checkpoint: out.ckdir.best().display().to_string(),
                test,
            },
            (best, _) => ModelReport {
                which: "best".into(),
                checkpoint: if best.is_some() {
                    out.ckdir.best().display().to_string()
                } else {
                    final_model.checkpoint.clone()
                },
                ..final_model.clone()
            },
        };
        // The best model's weights: the final ones when it is the final model, else the ones
        // just loaded from `best.safetensors`.
        let best_weights = out.run.best_weights();
        self.model
            .save(&best_weights)
            .map_err(|e| TrainError::model(format!("writing {}", best_weights.display()), e))?;
        self.scalars(&[
            ("test/accuracy_final", final_model.test.accuracy),
            ("test/loss_final", final_model.test.loss),
            ("test/accuracy_best", best_model.test.accuracy),
        ])?;
        let wall = self.elapsed();
        let report = Report {
            name: self.cfg.name.clone(),
            architecture: self.cfg.model.name(),
            parameters: self.model.num_parameters(),
            iterations: it,
            epochs: it as f64 / self.bpe() as f64,
            wall_time_s: wall,
            images_per_sec: self.mean_images_per_sec(),
            set_sizes: SetSizes {
                train: self.data.train.len(),
                val: self.data.val.as_ref().map_or(0, |v| v.len()),
                test: self.data.test.len(),
            },
            config_digest: self.cfg.digest(),
            final_model,
            best_model,
        };
        report.write(&self.run_root)?;
        tracing::info!(
            "test accuracy: final {:.4}, best-on-validation {:.4}",
            report.final_model.test.accuracy,
            report.best_model.test.accuracy
        );
        if self.comm.size() > 1 {
            let mut json = serde_json::to_string(&report).expect("a report serializes");
            broadcast_string(self.comm.as_ref(), &mut json);
        }
        Ok(report)
    }

    /// Mean of the epoch rows' training throughput.
    fn mean_images_per_sec(&self) -> f64 {
        let Some(out) = &self.out else {
            return 0.0;
        };
        let rows: Vec<&MetricsRecord> = out
            .metrics
            .records()
            .iter()
            .filter(|r| r.kind == RecordKind::Epoch)
            .collect();
        if rows.is_empty() {
            return 0.0;
        }
        rows.iter().map(|r| r.images_per_sec).sum::<f64>() / rows.len() as f64
    }
}
