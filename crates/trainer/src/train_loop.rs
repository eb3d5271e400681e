//! The training loop: by iteration, epochs derived from the training split, validation at
//! every epoch end, checkpoints, metrics, TensorBoard scalars, plots, and the final test of
//! the final and the best-on-validation model.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use cifar_data::{BatchLoader, Normalizer};
use resnet_model::ResNetModel;

use crate::checkpoint::{Checkpoint, CheckpointDir, CheckpointMeta, FORMAT_VERSION};
use crate::config::RunConfig;
use crate::data::Datasets;
use crate::error::{ModelContext, Result, TrainError};
use crate::evaluate::evaluate;
use crate::loss::{accuracy_count, cross_entropy};
use crate::metrics::{MetricsLog, MetricsRecord, RecordKind};
use crate::progress::{RunStart, StepInfo, TrainObserver};
use crate::run_dir::RunDir;
use crate::running_stats::RunningStats;
use crate::session::{StopReason, TrainOptions, TrainOutcome, TrainSession};

mod finish;
mod setup;
use crate::sgd::Sgd;
use crate::tensorboard::SummaryWriter;

/// Position and running statistics of the loop (what a checkpoint must restore).
#[derive(Clone, Debug, Default)]
struct LoopState {
    iteration: u64,
    best_val: Option<(f64, u64)>,
    epoch_stats: RunningStats,
    window_stats: RunningStats,
    elapsed_before: f64,
}

struct Trainer<'a> {
    cfg: RunConfig,
    data: Datasets,
    run: RunDir,
    device: Device,
    model: ResNetModel,
    sgd: Sgd,
    normalizer: Arc<Normalizer>,
    loader: BatchLoader,
    ckdir: CheckpointDir,
    metrics: MetricsLog,
    tb: SummaryWriter,
    state: LoopState,
    session_start: Instant,
    /// When this session (stretch) started, RFC 3339.
    session_started_at: String,
    /// Iteration this session started at.
    start_iteration: u64,
    /// Training images this session has stepped over.
    session_images: u64,
    /// Newest checkpoint written (or resumed from) and its iteration.
    last_checkpoint: Option<(PathBuf, u64)>,
    observer: &'a mut dyn TrainObserver,
}

pub(crate) fn run(
    session: TrainSession,
    data: Datasets,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let mut trainer = Trainer::new(session, data, observer)?;
    let outcome = trainer.train(options);
    trainer.observer.finished();
    if let Err(e) = trainer.tb.flush() {
        tracing::warn!("flushing TensorBoard events: {e}");
    }
    if outcome.is_err() && trainer.start_iteration == 0 && trainer.last_checkpoint.is_none() {
        // A new run that failed before its first checkpoint (e.g. a loss that turned NaN in
        // the first epoch) has nothing to resume from: leave no directory behind.
        let root = trainer.run.root().to_path_buf();
        drop(trainer);
        match std::fs::remove_dir_all(&root) {
            Ok(()) => tracing::warn!(
                "removed the run directory {} (the run failed before its first checkpoint)",
                root.display()
            ),
            Err(e) => tracing::warn!("could not remove {}: {e}", root.display()),
        }
        return outcome;
    }
    let outcome = outcome?;
    let ended = match &outcome {
        TrainOutcome::Finished { .. } => "finished",
        TrainOutcome::Stopped { reason, .. } => reason.describe(),
    };
    trainer.record_stretch(ended, options)?;
    Ok(outcome)
}

impl<'a> Trainer<'a> {
    fn bpe(&self) -> u64 {
        self.loader.batches_per_epoch() as u64
    }

    fn elapsed(&self) -> f64 {
        self.state.elapsed_before + self.session_start.elapsed().as_secs_f64()
    }

    fn train(&mut self, options: &TrainOptions) -> Result<TrainOutcome> {
        let bpe = self.bpe();
        let max = self.cfg.training.max_iterations;
        let resumed = self.last_checkpoint.is_some();
        self.observer.started(&RunStart {
            run_dir: self.run.root(),
            start_iteration: self.state.iteration,
            max_iterations: max,
            batches_per_epoch: bpe,
            resumed,
            device: crate::device::describe(&self.device),
        });
        tracing::info!(
            run_dir = %self.run.root().display(),
            "{} {} at iteration {} of {max} ({bpe} steps per epoch, {} training images)",
            if resumed { "resuming" } else { "starting" },
            self.cfg.model.name(),
            self.state.iteration,
            self.data.train.len()
        );
        while self.state.iteration < max {
            let epoch = self.state.iteration / bpe;
            let start = (self.state.iteration % bpe) as usize;
            let mut batches = self.loader.epoch(epoch, start);
            let mut t0 = Instant::now();
            while let Some(batch) = batches.next() {
                let lr = self.cfg.schedule.lr_at(self.state.iteration);
                self.step(&batch, lr, t0.elapsed().as_secs_f64(), epoch)?;
                let it = self.state.iteration;
                let done = it == max;
                let mut ckpt_here = None;
                if it.is_multiple_of(bpe) || done {
                    ckpt_here = self.end_of_epoch(lr, done)?;
                }
                if done {
                    break;
                }
                let reason = if options
                    .stop
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::SeqCst))
                {
                    Some(StopReason::Interrupted)
                } else if options.stop_after_iterations == Some(it) {
                    Some(StopReason::IterationLimit)
                } else if options
                    .stop_after_seconds
                    .is_some_and(|s| self.session_start.elapsed().as_secs_f64() >= s)
                {
                    Some(StopReason::TimeLimit)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    drop(batches);
                    let checkpoint = match ckpt_here {
                        Some(p) => p,
                        None => self.save_checkpoint(true, false)?,
                    };
                    return Ok(TrainOutcome::Stopped {
                        run_dir: self.run.root().to_path_buf(),
                        checkpoint,
                        iteration: it,
                        reason,
                    });
                }
                t0 = Instant::now();
            }
        }
        let report = self.final_report()?;
        Ok(TrainOutcome::Finished {
            run_dir: self.run.root().to_path_buf(),
            report: Box::new(report),
        })
    }

    /// Appends this session's record to the run's `stretches.jsonl` / `stretches.md`.
    fn record_stretch(&mut self, ended: &str, options: &TrainOptions) -> Result<()> {
        let wall = self.session_start.elapsed().as_secs_f64();
        let images = self.session_images;
        let stretch = crate::stretch::Stretch {
            start_iteration: self.start_iteration,
            end_iteration: self.state.iteration,
            ended: ended.to_string(),
            started_at: self.session_started_at.clone(),
            ended_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            wall_s: wall,
            images_per_sec: if wall > 0.0 {
                images as f64 / wall
            } else {
                0.0
            },
            device: crate::device::describe(&self.device),
            cpu: crate::stretch::cpu_description(),
            build: options.build.clone(),
            note: options.note.clone(),
        };
        crate::stretch::append(self.run.root(), &stretch)
    }

    /// One optimizer step on `batch`; `wait` is the time spent waiting for the batch.
    fn step(&mut self, batch: &cifar_data::Batch, lr: f64, wait: f64, epoch: u64) -> Result<()> {
        let t = Instant::now();
        let it = self.state.iteration + 1;
        let ctx = || format!("training step at iteration {it}");
        let (x, y) = batch.to_tensors(&self.device).ctx(ctx)?;
        let logits = self.model.forward_t(&x, true).ctx(ctx)?;
        let loss = cross_entropy(&logits, &y, self.cfg.training.label_smoothing).ctx(ctx)?;
        let loss_value = loss.to_scalar::<f32>().ctx(ctx)?;
        if !loss_value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                iteration: it,
                loss: loss_value,
                last_checkpoint: self.last_checkpoint.as_ref().map(|(p, _)| p.clone()),
            });
        }
        let correct = accuracy_count(&logits, &y).ctx(ctx)? as u64;
        let grads = loss.backward().ctx(ctx)?;
        self.sgd.step(&grads, lr).ctx(ctx)?;
        self.state.iteration = it;
        let n = batch.len() as u64;
        self.session_images += n;
        let secs = wait + t.elapsed().as_secs_f64();
        self.state.epoch_stats.add(loss_value, correct, n, secs);
        self.state.window_stats.add(loss_value, correct, n, secs);
        self.observer.step(&StepInfo {
            iteration: it,
            epoch,
            lr,
            loss: loss_value,
            accuracy: correct as f64 / n.max(1) as f64,
            images_per_sec: self.state.window_stats.images_per_sec(),
        });
        if it.is_multiple_of(self.cfg.training.log_every) {
            self.log_window(lr)?;
        }
        Ok(())
    }

    fn log_window(&mut self, lr: f64) -> Result<()> {
        let w = std::mem::take(&mut self.state.window_stats);
        let it = self.state.iteration;
        let record = MetricsRecord {
            kind: RecordKind::Step,
            iteration: it,
            epoch: it as f64 / self.bpe() as f64,
            lr,
            train_loss: w.loss(),
            train_acc: w.accuracy(),
            val_loss: None,
            val_acc: None,
            images_per_sec: w.images_per_sec(),
            wall_time_s: self.elapsed(),
        };
        self.scalars(&[
            ("train/loss", record.train_loss),
            ("train/accuracy", record.train_acc),
            ("train/lr", lr),
            ("train/images_per_sec", record.images_per_sec),
        ])?;
        self.metrics.append(record)
    }

    fn scalars(&mut self, values: &[(&str, f64)]) -> Result<()> {
        let it = self.state.iteration;
        for (tag, v) in values {
            self.tb
                .add_scalar(tag, *v as f32, it as i64)
                .map_err(|e| TrainError::io(self.run.tensorboard(), e))?;
        }
        Ok(())
    }

    /// Validation, the epoch's metrics row, plots, and the checkpoints due. Returns the
    /// periodic checkpoint written, if any.
    fn end_of_epoch(&mut self, lr: f64, done: bool) -> Result<Option<PathBuf>> {
        let it = self.state.iteration;
        let val = match self.data.val.clone() {
            Some(set) => {
                self.observer.phase("validating");
                Some(evaluate(
                    &self.model,
                    &set,
                    &self.normalizer,
                    self.cfg.training.eval_batch_size,
                    &self.data.class_names,
                )?)
            }
            None => None,
        };
        let e = std::mem::take(&mut self.state.epoch_stats);
        let record = MetricsRecord {
            kind: RecordKind::Epoch,
            iteration: it,
            epoch: it as f64 / self.bpe() as f64,
            lr,
            train_loss: e.loss(),
            train_acc: e.accuracy(),
            val_loss: val.as_ref().map(|v| v.loss),
            val_acc: val.as_ref().map(|v| v.accuracy),
            images_per_sec: e.images_per_sec(),
            wall_time_s: self.elapsed(),
        };
        let mut tags = vec![
            ("epoch/train_loss", record.train_loss),
            ("epoch/train_accuracy", record.train_acc),
        ];
        if let Some(v) = &val {
            tags.push(("val/loss", v.loss));
            tags.push(("val/accuracy", v.accuracy));
        }
        self.scalars(&tags)?;
        tracing::info!(
            "epoch {:.2} (iteration {it}): train loss {:.4} acc {:.4}{} lr {} {:.0} img/s",
            record.epoch,
            record.train_loss,
            record.train_acc,
            val.as_ref().map_or(String::new(), |v| format!(
                ", val loss {:.4} acc {:.4}",
                v.loss, v.accuracy
            )),
            (lr * 1e9).round() / 1e9,
            record.images_per_sec
        );
        self.observer.epoch(&record);
        self.metrics.append(record)?;
        self.tb
            .flush()
            .map_err(|e| TrainError::io(self.run.tensorboard(), e))?;
        crate::curves::draw(&self.run.plots(), self.metrics.records())?;
        let is_best = match (&val, self.state.best_val) {
            (Some(v), Some((best, _))) => v.accuracy > best,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if is_best {
            self.state.best_val = val.as_ref().map(|v| (v.accuracy, it));
        }
        let epochs_done = it / self.bpe();
        let periodic = done
            || (it.is_multiple_of(self.bpe())
                && epochs_done.is_multiple_of(self.cfg.training.checkpoint_every_epochs));
        if periodic || is_best {
            self.observer.phase("writing checkpoint");
            let p = self.save_checkpoint(periodic, is_best)?;
            return Ok(periodic.then_some(p));
        }
        Ok(None)
    }

    fn snapshot(&self) -> Result<Checkpoint> {
        let it = self.state.iteration;
        let bpe = self.bpe();
        let model = self.model.state_dict().ctx(|| "copying the model state")?;
        let momentum = self.sgd.momentum_buffers().into_iter().collect();
        Ok(Checkpoint {
            meta: CheckpointMeta {
                format_version: FORMAT_VERSION,
                iteration: it,
                epoch: it / bpe,
                batch_in_epoch: it % bpe,
                batches_per_epoch: bpe,
                seed: self.cfg.seed,
                best_val: self.state.best_val,
                epoch_stats: self.state.epoch_stats,
                window_stats: self.state.window_stats,
                elapsed_s: self.elapsed(),
                architecture: self.cfg.model.clone(),
                class_names: self.data.class_names.clone(),
                config_yaml: self.cfg.to_yaml(),
                config_digest: self.cfg.digest(),
                written_at: chrono::Local::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                data_crc32c: None,
            },
            model,
            momentum,
            normalizer: (*self.normalizer).clone(),
        })
    }

    /// Writes a periodic checkpoint (and `latest`), and/or `best`. Returns the path written
    /// (the periodic one when there is one).
    fn save_checkpoint(&mut self, periodic: bool, best: bool) -> Result<PathBuf> {
        let ckpt = self.snapshot()?;
        let path = if periodic {
            let p = self.ckdir.save(&ckpt, best)?;
            self.last_checkpoint = Some((p.clone(), ckpt.meta.iteration));
            p
        } else {
            let p = self.ckdir.best();
            ckpt.write(&p)?;
            p
        };
        tracing::debug!("checkpoint written: {}", path.display());
        Ok(path)
    }
}
