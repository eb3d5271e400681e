//! Building a [`Trainer`]: a fresh run, or a run restored from its checkpoint.

use std::sync::Arc;
use std::time::Instant;

use cifar_data::{BatchLoader, Normalizer};
use resnet_model::ResNetModel;

use super::{LoopState, Trainer};
use crate::checkpoint::CheckpointDir;
use crate::data::Datasets;
use crate::error::{ModelContext, Result, TrainError};
use crate::metrics::MetricsLog;
use crate::progress::TrainObserver;
use crate::run_dir::{write_file, RunDir};
use crate::session::TrainSession;
use crate::sgd::Sgd;
use crate::tensorboard::SummaryWriter;

impl<'a> Trainer<'a> {
    pub(super) fn new(
        session: TrainSession,
        data: Datasets,
        observer: &'a mut dyn TrainObserver,
    ) -> Result<Self> {
        let cfg = session.config;
        let device = crate::device::select_device(cfg.training.device)?;
        let (run, model, sgd, normalizer, state, last_checkpoint) = match session.resume {
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
                (run, model, sgd, normalizer, LoopState::default(), None)
            }
            Some(point) => {
                let run = RunDir::open(&point.run_dir)?;
                let ckpt = point.checkpoint;
                let model = ResNetModel::from_tensors(&cfg.model, &ckpt.model_state(), &device)
                    .map_err(|e| TrainError::checkpoint(&point.path, e.to_string()))?;
                let mut sgd =
                    Sgd::new(model.parameters(), cfg.optimizer).ctx(|| "creating the optimizer")?;
                let momentum = ckpt
                    .momentum
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_device(&device)?)))
                    .collect::<candle_core::Result<_>>()
                    .map_err(|e| TrainError::checkpoint(&point.path, e.to_string()))?;
                sgd.load_momentum_buffers(&momentum)
                    .map_err(|e| TrainError::checkpoint(&point.path, e.to_string()))?;
                let m = &ckpt.meta;
                let state = LoopState {
                    iteration: m.iteration,
                    best_val: m.best_val,
                    epoch_stats: m.epoch_stats,
                    window_stats: m.window_stats,
                    elapsed_before: m.elapsed_s,
                };
                let last = Some((point.path, m.iteration, m.batches_per_epoch));
                (run, model, sgd, ckpt.normalizer, state, last)
            }
        };
        write_file(&run.config(), cfg.to_yaml().as_bytes())?;
        let normalizer = Arc::new(normalizer);
        let loader = BatchLoader::new(
            Arc::clone(&data.train),
            Arc::clone(&normalizer),
            cfg.loader_config(),
        );
        if loader.batches_per_epoch() == 0 {
            return Err(TrainError::ConfigValue {
                source_name: "config".into(),
                key: "training.batch_size".into(),
                line: None,
                set_by: None,
                reason: format!(
                    "{} is larger than the training set ({} images) with drop_last",
                    cfg.training.batch_size,
                    data.train.len()
                ),
            });
        }
        let last_checkpoint = match last_checkpoint {
            Some((path, iteration, run_bpe)) => {
                let bpe = loader.batches_per_epoch() as u64;
                if run_bpe != bpe {
                    return Err(TrainError::checkpoint(
                        &path,
                        format!(
                            "the run had {run_bpe} steps per epoch, this config and data give \
                             {bpe} (were data limits, the split or the batch size changed?)"
                        ),
                    ));
                }
                Some((path, iteration))
            }
            None => None,
        };
        let ckdir = CheckpointDir::new(run.checkpoints(), cfg.training.keep_last)?;
        ckdir.clean_up(&[run.root()])?;
        let metrics = MetricsLog::open(run.root(), Some(state.iteration))?;
        let mut tb = SummaryWriter::new(&run.tensorboard())
            .map_err(|e| TrainError::io(run.tensorboard(), e))?;
        if last_checkpoint.is_some() {
            // Steps after the checkpoint that an earlier session logged are redone now.
            tb.add_session_start(state.iteration as i64 + 1)
                .map_err(|e| TrainError::io(run.tensorboard(), e))?;
        }
        Ok(Self {
            cfg,
            data,
            run,
            device,
            model,
            sgd,
            normalizer,
            loader,
            ckdir,
            metrics,
            tb,
            state: state.clone(),
            session_start: Instant::now(),
            session_started_at: chrono::Local::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            start_iteration: state.iteration,
            session_images: 0,
            last_checkpoint,
            observer,
        })
    }
}
