//! Building a [`Trainer`]: a fresh run, a run restored from its checkpoint, or (ranks > 0 of
//! a data-parallel run) the state rank 0 sends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use cifar_data::{BatchLoader, Normalizer, Shard};
use resnet_model::{BatchStats, ResNetModel};

use super::{LoopState, Outputs, Trainer};
use crate::checkpoint::{Checkpoint, CheckpointDir};
use crate::config::RunConfig;
use crate::data::Datasets;
use crate::distributed::{broadcast_string, CommReducer, Communicator};
use crate::error::{ModelContext, Result, TrainError};
use crate::metrics::MetricsLog;
use crate::progress::TrainObserver;
use crate::run_dir::{write_file, RunDir};
use crate::session::TrainSession;
use crate::sgd::Sgd;
use crate::tensorboard::SummaryWriter;

/// Model, optimizer, normalizer and loop position restored from a checkpoint.
type Restored = (ResNetModel, Sgd, Normalizer, LoopState);

fn restore(cfg: &RunConfig, ckpt: Checkpoint, path: &Path, device: &Device) -> Result<Restored> {
    let model = ResNetModel::from_tensors(&cfg.model, &ckpt.model_state(), device)
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    let mut sgd = Sgd::new(model.parameters(), cfg.optimizer).ctx(|| "creating the optimizer")?;
    let momentum = ckpt
        .momentum
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(device)?)))
        .collect::<candle_core::Result<_>>()
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    sgd.load_momentum_buffers(&momentum)
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    let m = &ckpt.meta;
    let state = LoopState {
        iteration: m.iteration,
        best_val: m.best_val,
        epoch_stats: m.epoch_stats,
        window_stats: m.window_stats,
        elapsed_before: m.elapsed_s,
    };
    Ok((model, sgd, ckpt.normalizer, state))
}

impl<'a> Trainer<'a> {
    /// The trainer of a single process, or of rank 0 of several (which owns the run
    /// directory and sends the starting state to the other ranks).
    pub(super) fn new(
        session: TrainSession,
        data: Datasets,
        comm: Arc<dyn Communicator>,
        observer: &'a mut dyn TrainObserver,
    ) -> Result<Self> {
        let cfg = session.config;
        let device = crate::device::select_device(cfg.training.device)?;
        let (run, restored, last_checkpoint) = match session.resume {
            None => {
                let run = match &session.run_dir {
                    Some(dir) => RunDir::create_at(dir)?,
                    None => RunDir::create(&cfg.output.runs_dir, &cfg.name)?,
                };
                let model = ResNetModel::new(&cfg.model, &device, cfg.seed)
                    .ctx(|| format!("building {}", cfg.model.name()))?;
                let sgd =
                    Sgd::new(model.parameters(), cfg.optimizer).ctx(|| "creating the optimizer")?;
                let normalizer = Normalizer::fit(&cfg.data.normalization, &data.train);
                (run, (model, sgd, normalizer, LoopState::default()), None)
            }
            Some(point) => {
                let run = RunDir::open(&point.run_dir)?;
                let iteration = point.checkpoint.meta.iteration;
                let run_bpe = point.checkpoint.meta.batches_per_epoch;
                let restored = restore(&cfg, point.checkpoint, &point.path, &device)?;
                (run, restored, Some((point.path, iteration, run_bpe)))
            }
        };
        write_file(&run.config(), cfg.to_yaml().as_bytes())?;
        let run_root = run.root().to_path_buf();
        let out = Outputs {
            ckdir: CheckpointDir::new(run.checkpoints(), cfg.training.keep_last)?,
            metrics: MetricsLog::open(run.root(), Some(restored.3.iteration))?,
            tb: SummaryWriter::new(&run.tensorboard())
                .map_err(|e| TrainError::io(run.tensorboard(), e))?,
            run,
        };
        out.ckdir.clean_up(&[out.run.root()])?;
        let mut trainer = Self::assemble(
            cfg,
            data,
            device,
            restored,
            Some(out),
            run_root,
            comm,
            observer,
        )?;
        if let Some((path, iteration, run_bpe)) = last_checkpoint {
            let bpe = trainer.bpe();
            if run_bpe != bpe {
                return Err(TrainError::checkpoint(
                    &path,
                    format!(
                        "the run had {run_bpe} steps per epoch, this config and data give \
                         {bpe} (were data limits, the split or the batch size changed?)"
                    ),
                ));
            }
            trainer.last_checkpoint = Some((path, iteration));
            // Steps after the checkpoint that an earlier session logged are redone now.
            let out = trainer.out.as_mut().expect("rank 0 writes");
            out.tb
                .add_session_start(iteration as i64 + 1)
                .map_err(|e| TrainError::io(out.run.tensorboard(), e))?;
        }
        if trainer.comm.size() > 1 {
            let mut bytes = trainer.snapshot()?.to_bytes()?;
            trainer.comm.broadcast_bytes(&mut bytes);
            let mut root = trainer.run_root.display().to_string();
            broadcast_string(trainer.comm.as_ref(), &mut root);
        }
        Ok(trainer)
    }

    /// Rank `k > 0` of a data-parallel run: starts from the state rank 0 sends (its fresh
    /// initial weights, or the checkpoint it resumed from), writes nothing.
    pub(super) fn follower(
        cfg: RunConfig,
        data: Datasets,
        comm: Arc<dyn Communicator>,
        observer: &'a mut dyn TrainObserver,
    ) -> Result<Self> {
        let device = crate::device::select_device(cfg.training.device)?;
        let mut bytes = Vec::new();
        comm.broadcast_bytes(&mut bytes);
        let mut root = String::new();
        broadcast_string(comm.as_ref(), &mut root);
        let name = PathBuf::from(format!(
            "<the starting state rank 0 sent to rank {}>",
            comm.rank()
        ));
        let ckpt = Checkpoint::from_bytes(&bytes, &name, &device)?;
        let restored = restore(&cfg, ckpt, &name, &device)?;
        Self::assemble(
            cfg,
            data,
            device,
            restored,
            None,
            PathBuf::from(root),
            comm,
            observer,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: RunConfig,
        data: Datasets,
        device: Device,
        (mut model, sgd, normalizer, state): Restored,
        out: Option<Outputs>,
        run_root: PathBuf,
        comm: Arc<dyn Communicator>,
        observer: &'a mut dyn TrainObserver,
    ) -> Result<Self> {
        let normalizer = Arc::new(normalizer);
        let shard = Shard {
            rank: comm.rank(),
            count: comm.size(),
        };
        let loader = BatchLoader::new(
            Arc::clone(&data.train),
            Arc::clone(&normalizer),
            cfg.loader_config(),
        )
        .with_shard(shard);
        let bpe = loader.batches_per_epoch();
        let invalid = |key: &str, reason: String| TrainError::ConfigValue {
            source_name: "config".into(),
            key: key.into(),
            line: None,
            set_by: None,
            reason,
        };
        if bpe == 0 {
            return Err(invalid(
                "training.batch_size",
                format!(
                    "{} is larger than the training set ({} images) with drop_last",
                    cfg.training.batch_size,
                    data.train.len()
                ),
            ));
        }
        // Every rank needs at least one image of every batch, and the BatchNorm groups must
        // cut every shard evenly: check the full batches and the last (partial) one.
        let groups = cfg.training.batch_norm_groups;
        for len in [loader.batch_len(0), loader.batch_len(bpe - 1)] {
            if len < shard.count {
                return Err(invalid(
                    "training.batch_size",
                    format!(
                        "a batch of {len} images cannot be shared by {} ranks (the epoch's \
                         last batch is partial: set training.drop_last: true or use fewer ranks)",
                        shard.count
                    ),
                ));
            }
            for rank in 0..shard.count {
                let part = Shard { rank, ..shard }.range(len).len();
                if !part.is_multiple_of(groups) {
                    return Err(invalid(
                        "training.batch_norm_groups",
                        format!(
                            "{groups} groups do not divide a shard of {part} images (batch of \
                             {len} over {} ranks)",
                            shard.count
                        ),
                    ));
                }
            }
        }
        let sync_bn = cfg.training.sync_batch_norm && comm.size() > 1;
        if sync_bn {
            model.set_batch_stats(BatchStats::Synced(Arc::new(CommReducer(Arc::clone(&comm)))));
        } else if groups > 1 {
            model.set_batch_stats(BatchStats::Groups(groups));
        }
        Ok(Self {
            cfg,
            data,
            out,
            run_root,
            device,
            model,
            sgd,
            normalizer,
            loader,
            state: state.clone(),
            session_start: Instant::now(),
            session_started_at: chrono::Local::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            start_iteration: state.iteration,
            session_images: 0,
            last_checkpoint: None,
            comm,
            sync_bn,
            comm_time: (0.0, 0),
            observer,
        })
    }
}
