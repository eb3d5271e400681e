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
use crate::distributed::{broadcast_string, check_identical, Communicator};
use crate::error::{ModelContext, Result, TrainError};
use crate::evaluate::evaluate_sharded;
use crate::metrics::{MetricsLog, MetricsRecord, RecordKind};
use crate::progress::{RunStart, TrainObserver};
use crate::run_dir::RunDir;
use crate::running_stats::RunningStats;
use crate::session::{StopReason, TrainOptions, TrainOutcome, TrainSession};

mod finish;
mod setup;
mod step;
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

/// What the run writes: held by a single process, or by rank 0 of several.
struct Outputs {
    run: RunDir,
    ckdir: CheckpointDir,
    metrics: MetricsLog,
    tb: SummaryWriter,
}

struct Trainer<'a> {
    cfg: RunConfig,
    data: Datasets,
    /// The run directory's files; `None` on ranks > 0 of a data-parallel run.
    out: Option<Outputs>,
    /// The run directory (rank 0's path on every rank).
    run_root: PathBuf,
    device: Device,
    model: ResNetModel,
    sgd: Sgd,
    normalizer: Arc<Normalizer>,
    /// This rank's shard of every training batch.
    loader: BatchLoader,
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
    /// The ranks training this model (one process: [`crate::distributed::SingleProcess`]).
    comm: Arc<dyn Communicator>,
    /// BatchNorm statistics are synchronized across ranks (the running statistics then agree
    /// without averaging).
    sync_bn: bool,
    /// Seconds spent in the gradient and running-statistics all-reduces since the last
    /// epoch line, and the steps they cover (several ranks only).
    comm_time: (f64, u64),
    observer: &'a mut dyn TrainObserver,
}

pub(crate) fn run(
    session: TrainSession,
    data: Datasets,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let comm = options.communicator();
    let trainer = Trainer::new(session, data, comm, observer)?;
    finish_session(trainer, options)
}

/// Rank `k > 0` of a data-parallel run (see [`crate::distributed`]): trains with rank 0,
/// writes nothing.
pub(crate) fn run_follower(
    cfg: RunConfig,
    data: Datasets,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let trainer = Trainer::follower(cfg, data, options.communicator(), observer)?;
    finish_session(trainer, options)
}

fn finish_session(mut trainer: Trainer<'_>, options: &TrainOptions) -> Result<TrainOutcome> {
    let outcome = trainer.train(options);
    trainer.observer.finished();
    let Some(out) = trainer.out.as_mut() else {
        return outcome;
    };
    if let Err(e) = out.tb.flush() {
        tracing::warn!("flushing TensorBoard events: {e}");
    }
    if outcome.is_err() && trainer.start_iteration == 0 && trainer.last_checkpoint.is_none() {
        // A new run that failed before its first checkpoint (e.g. a loss that turned NaN in
        // the first epoch) has nothing to resume from: leave no directory behind.
        let root = trainer.run_root.clone();
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
        let device = match self.comm.size() {
            1 => crate::device::describe(&self.device),
            k => format!("{} × {k} ranks", crate::device::describe(&self.device)),
        };
        if self.comm.size() > 1 {
            tracing::info!("data parallel: {}", self.comm.describe());
        }
        self.observer.started(&RunStart {
            run_dir: &self.run_root,
            start_iteration: self.state.iteration,
            max_iterations: max,
            batches_per_epoch: bpe,
            resumed,
            device,
        });
        tracing::info!(
            run_dir = %self.run_root.display(),
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
                let global_len = self.loader.batch_len((self.state.iteration % bpe) as usize);
                self.step(&batch, global_len, lr, t0.elapsed().as_secs_f64(), epoch)?;
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
                let reason = self.agree_on_stop(reason);
                if let Some(reason) = reason {
                    drop(batches);
                    let mut checkpoint = match (ckpt_here, self.out.is_some()) {
                        (Some(p), _) => p,
                        (None, true) => self.save_checkpoint(true, false)?,
                        (None, false) => PathBuf::new(),
                    };
                    if self.comm.size() > 1 {
                        let mut s = checkpoint.display().to_string();
                        broadcast_string(self.comm.as_ref(), &mut s);
                        checkpoint = PathBuf::from(s);
                    }
                    return Ok(TrainOutcome::Stopped {
                        run_dir: self.run_root.clone(),
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
            run_dir: self.run_root.clone(),
            report: Box::new(report),
        })
    }

    /// Appends this session's record to the run's `stretches.jsonl` / `stretches.md`.
    fn record_stretch(&mut self, ended: &str, options: &TrainOptions) -> Result<()> {
        if self.out.is_none() {
            return Ok(());
        }
        let device = match self.comm.size() {
            1 => crate::device::describe(&self.device),
            k => format!("{} × {k} MPI ranks", crate::device::describe(&self.device)),
        };
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
            device,
            cpu: crate::stretch::cpu_description(),
            build: options.build.clone(),
            note: options.note.clone(),
        };
        crate::stretch::append(&self.run_root, &stretch)
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
        match &mut self.out {
            Some(out) => out.metrics.append(record),
            None => Ok(()),
        }
    }

    /// TensorBoard scalars at the current iteration (rank 0 only).
    fn scalars(&mut self, values: &[(&str, f64)]) -> Result<()> {
        let it = self.state.iteration;
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        for (tag, v) in values {
            out.tb
                .add_scalar(tag, *v as f32, it as i64)
                .map_err(|e| TrainError::io(out.run.tensorboard(), e))?;
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
                Some(evaluate_sharded(
                    &self.model,
                    &set,
                    &self.normalizer,
                    self.cfg.training.eval_batch_size,
                    &self.data.class_names,
                    self.comm.as_ref(),
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
        let (comm_s, comm_steps) = std::mem::take(&mut self.comm_time);
        let comm = if self.comm.size() > 1 && comm_steps > 0 {
            format!(
                ", all-reduce {:.1} ms/step",
                1e3 * comm_s / comm_steps as f64
            )
        } else {
            String::new()
        };
        tracing::info!(
            "epoch {:.2} (iteration {it}): train loss {:.4} acc {:.4}{} lr {} {:.0} img/s{comm}",
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
        if let Some(out) = &mut self.out {
            out.metrics.append(record)?;
            out.tb
                .flush()
                .map_err(|e| TrainError::io(out.run.tensorboard(), e))?;
            crate::curves::draw(&out.run.plots(), out.metrics.records())?;
        }
        if self.comm.size() > 1 {
            let model = self.model.state_dict().ctx(|| "copying the model state")?;
            let tensors: Vec<&candle_core::Tensor> = model.values().collect();
            let same = check_identical(self.comm.as_ref(), &tensors)
                .ctx(|| "comparing the ranks' weights")?;
            if !same {
                return Err(TrainError::RanksDiverged { iteration: it });
            }
        }
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
        if (periodic || is_best) && self.out.is_some() {
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
    /// Rank 0 only (a single process is rank 0).
    fn save_checkpoint(&mut self, periodic: bool, best: bool) -> Result<PathBuf> {
        let ckpt = self.snapshot()?;
        let ckdir = &self
            .out
            .as_ref()
            .expect("only rank 0 writes checkpoints")
            .ckdir;
        let path = if periodic {
            let p = ckdir.save(&ckpt, best)?;
            self.last_checkpoint = Some((p.clone(), ckpt.meta.iteration));
            p
        } else {
            let p = ckdir.best();
            ckpt.write(&p)?;
            p
        };
        tracing::debug!("checkpoint written: {}", path.display());
        Ok(path)
    }
}
