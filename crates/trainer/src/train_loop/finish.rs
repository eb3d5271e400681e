//! The end of a run: the final and the best-on-validation model on the test set, and the
//! report.

use super::Trainer;
use crate::checkpoint::Checkpoint;
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate, EvalResult};
use crate::metrics::{MetricsRecord, RecordKind};
use crate::report::{ModelReport, Report, SetSizes};

impl Trainer<'_> {
    fn test(&mut self, which: &str) -> Result<EvalResult> {
        self.observer.phase(&format!("testing the {which} model"));
        evaluate(
            &self.model,
            &self.data.test,
            &self.normalizer,
            self.cfg.training.eval_batch_size,
            &self.data.class_names,
        )
    }

    pub(super) fn final_report(&mut self) -> Result<Report> {
        let it = self.state.iteration;
        let last_val = self
            .metrics
            .records()
            .iter()
            .rev()
            .find(|r| r.kind == RecordKind::Epoch && r.iteration == it)
            .and_then(|r| r.val_acc);
        let final_test = self.test("final")?;
        let final_weights = self.run.final_weights();
        self.model
            .save(&final_weights)
            .map_err(|e| TrainError::model(format!("writing {}", final_weights.display()), e))?;
        let final_model = ModelReport {
            which: "final".into(),
            iteration: it,
            val_accuracy: last_val,
            checkpoint: self.ckdir.latest().display().to_string(),
            test: final_test,
        };
        let best_model = match self.state.best_val {
            Some((acc, best_it)) if best_it != it => {
                let best = Checkpoint::read(&self.ckdir.best(), &self.device)?;
                self.model
                    .load_state_dict(&best.model_state())
                    .map_err(|e| TrainError::checkpoint(self.ckdir.best(), e.to_string()))?;
                ModelReport {
                    which: "best".into(),
                    iteration: best_it,
                    val_accuracy: Some(acc),
                    checkpoint: self.ckdir.best().display().to_string(),
                    test: self.test("best")?,
                }
            }
            best => ModelReport {
                which: "best".into(),
                checkpoint: if best.is_some() {
                    self.ckdir.best().display().to_string()
                } else {
                    final_model.checkpoint.clone()
                },
                ..final_model.clone()
            },
        };
        // The best model's weights: the final ones when it is the final model, else the ones
        // just loaded from `best.safetensors`.
        let best_weights = self.run.best_weights();
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
        report.write(self.run.root())?;
        tracing::info!(
            "test accuracy: final {:.4}, best-on-validation {:.4}",
            report.final_model.test.accuracy,
            report.best_model.test.accuracy
        );
        Ok(report)
    }

    /// Mean of the epoch rows' training throughput.
    fn mean_images_per_sec(&self) -> f64 {
        let rows: Vec<&MetricsRecord> = self
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
