//! Starting or resuming a training run: [`TrainSession`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::config::RunConfig;
use crate::data::{DataSource, Datasets};
use crate::distributed::{broadcast_string, Communicator, SingleProcess};
use crate::error::{Result, TrainError};
use crate::overrides::Override;
use crate::progress::TrainObserver;
use crate::report::Report;
use crate::run_dir::resolve_resume;

/// Runtime options of a training session (not part of the config).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// When this flag becomes true (Ctrl-C / SIGTERM, see [`crate::signal`]), the loop
    /// finishes its step, writes a checkpoint and returns [`TrainOutcome::Stopped`].
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop the same way once this many iterations are done (train in installments; tests
    /// of exact resume).
    pub stop_after_iterations: Option<u64>,
    /// Stop the same way after the first step that ends this many seconds after the session
    /// started (a stretch of a long run that must end before its machine is taken back).
    /// Where the run stops does not change its result: resume is exact from any iteration.
    pub stop_after_seconds: Option<f64>,
    /// What build trains this stretch (e.g. the git commit of the binary), recorded in the
    /// run's `stretches.jsonl` (see [`crate::stretch`]).
    pub build: Option<String>,
    /// A note recorded with this stretch (e.g. "the machine also ran builds").
    pub note: Option<String>,
    /// The ranks this process trains with (data parallel, see [`crate::distributed`]);
    /// `None`: one process.
    pub comm: Option<Arc<dyn Communicator>>,
}

impl TrainOptions {
    /// The communicator: [`TrainOptions::comm`], or [`SingleProcess`].
    pub fn communicator(&self) -> Arc<dyn Communicator> {
        self.comm
            .clone()
            .unwrap_or_else(|| Arc::new(SingleProcess) as Arc<dyn Communicator>)
    }
}

/// What `resnet-cli train` is asked for, as data: the run [`train`] starts or resumes.
#[derive(Clone, Debug, Default)]
pub struct TrainRequest {
    /// The run config file; `None` for the built-in paper recipe. With
    /// [`resume`](Self::resume) the run keeps the checkpoint's config, and a file given here
    /// is only checked against it ([`TrainSession::check_config_file`]).
    pub config: Option<PathBuf>,
    /// Continue this run: its directory (newest checkpoint that verifies) or a checkpoint.
    pub resume: Option<PathBuf>,
    /// A fixed directory for a new run ([`TrainSession::in_dir`]).
    pub run_dir: Option<PathBuf>,
    /// Config overrides (`--set key=value`, and the flags that stand for one).
    pub overrides: Vec<Override>,
    /// Where CIFAR-10 comes from when the data directory lacks it.
    pub data: DataSource,
}

/// Starts or resumes the run `request` describes, installs CIFAR-10 if it is missing, and
/// trains until the end or until `options` stop it, reporting progress to `observer`: the
/// whole of `resnet-cli train` but the printing.
pub fn train(
    request: &TrainRequest,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let comm = options.communicator();
    if comm.size() == 1 {
        let session = TrainSession::from_request(request)?;
        let cfg = session.config();
        let data = Datasets::load_or_fetch(&cfg.data_dir(), &cfg.data, &request.data)?;
        return session.run(data, options, observer);
    }
    // Several ranks: rank 0 reads the config (and the checkpoint, when resuming) and installs
    // the data first; the others take rank 0's config, then load the data (installed by
    // then when they share rank 0's file system). An error on any rank ends the job (the
    // binary aborts the MPI job), so no rank waits forever.
    if comm.rank() == 0 {
        let session = TrainSession::from_request(request)?;
        let cfg = session.config();
        let data = Datasets::load_or_fetch(&cfg.data_dir(), &cfg.data, &request.data)?;
        let mut yaml = cfg.to_yaml();
        broadcast_string(comm.as_ref(), &mut yaml);
        session.run(data, options, observer)
    } else {
        let mut yaml = String::new();
        broadcast_string(comm.as_ref(), &mut yaml);
        let cfg = RunConfig::from_yaml(&yaml, "the config rank 0 sent", &[])?;
        let data = Datasets::load_or_fetch(&cfg.data_dir(), &cfg.data, &request.data)?;
        let threads = cfg.training.threads;
        crate::device::with_threads(threads, move || {
            crate::train_loop::run_follower(cfg, data, options, observer)
        })?
    }
}

/// Why a run stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The stop flag was raised (Ctrl-C / SIGTERM).
    Interrupted,
    /// [`TrainOptions::stop_after_iterations`] was reached.
    IterationLimit,
    /// [`TrainOptions::stop_after_seconds`] was reached.
    TimeLimit,
}

impl StopReason {
    /// A few words for logs and the stretch record.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Interrupted => "interrupted",
            StopReason::IterationLimit => "iteration limit",
            StopReason::TimeLimit => "time limit",
        }
    }
}

/// How a training session ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TrainOutcome {
    /// The run reached `max_iterations`; the report is written.
    Finished {
        /// The run directory.
        run_dir: PathBuf,
        /// The final report (also in `report.json` / `report.md`).
        report: Box<Report>,
    },
    /// The run stopped early with a checkpoint; `train --resume <run_dir>` continues it.
    Stopped {
        /// The run directory.
        run_dir: PathBuf,
        /// The checkpoint written.
        checkpoint: PathBuf,
        /// Iterations done.
        iteration: u64,
        /// Why it stopped.
        reason: StopReason,
    },
}

impl TrainOutcome {
    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        match self {
            TrainOutcome::Finished { run_dir, .. } | TrainOutcome::Stopped { run_dir, .. } => {
                run_dir
            }
        }
    }
}

/// A run about to start or to continue.
#[derive(Debug)]
pub struct TrainSession {
    pub(crate) config: RunConfig,
    pub(crate) resume: Option<ResumePoint>,
    /// A fixed directory for a new run (default: `<runs_dir>/<name>-<timestamp>`).
    pub(crate) run_dir: Option<PathBuf>,
}

/// Where a resumed run continues.
#[derive(Debug)]
pub(crate) struct ResumePoint {
    pub(crate) run_dir: PathBuf,
    /// The checkpoint's path.
    pub(crate) path: PathBuf,
    /// The checkpoint, read once (on the CPU) when the session was created.
    pub(crate) checkpoint: Checkpoint,
}

impl TrainSession {
    /// A new run with `config` (already validated, e.g. by [`RunConfig::from_file`]).
    pub fn new(config: RunConfig) -> Self {
        Self {
            config,
            resume: None,
            run_dir: None,
        }
    }

    /// A new run in exactly `dir` instead of a fresh `<runs_dir>/<name>-<timestamp>`: e.g. a
    /// long run kept in the repository (`results/resnet20-paper`) and continued in later
    /// sessions with [`TrainSession::resume`]. `dir` must not exist or be empty, so that a
    /// run never mixes its files with another's.
    pub fn in_dir(config: RunConfig, dir: impl Into<PathBuf>) -> Self {
        Self {
            config,
            resume: None,
            run_dir: Some(dir.into()),
        }
    }

    /// Continues the run at `path` (a run directory or one of its checkpoints) with the
    /// config stored in the checkpoint, plus `overrides` (e.g. a larger
    /// `training.max_iterations`, another `data.dir`). Changing anything that shapes the
    /// computation (model, data order, batch size, optimizer, schedule before the current
    /// iteration) makes the result differ from an uninterrupted run.
    pub fn resume(path: &Path, overrides: &[Override]) -> Result<Self> {
        let (run_dir, path, checkpoint) = resolve_resume(path)?;
        let meta = &checkpoint.meta;
        let name = format!("config stored in {}", path.display());
        let config = RunConfig::from_yaml(&meta.config_yaml, &name, overrides)?;
        if config.model != meta.architecture {
            return Err(TrainError::ArchitectureMismatch {
                path,
                expected: config.model.name(),
                found: meta.architecture.name(),
            });
        }
        Ok(Self {
            config,
            run_dir: None,
            resume: Some(ResumePoint {
                run_dir,
                path,
                checkpoint,
            }),
        })
    }

    /// For a resumed session, checks a config file given beside `--resume` (with the same
    /// `overrides`): the run keeps the checkpoint's config, so the file must describe the
    /// same network (an error otherwise), and any other difference is reported with a
    /// warning. Output and data locations may differ silently. Does nothing for a new run.
    pub fn check_config_file(&self, file: &Path, overrides: &[Override]) -> Result<()> {
        let Some(point) = &self.resume else {
            return Ok(());
        };
        let given = RunConfig::from_file(file, overrides)?;
        let stored = &self.config;
        if given.model != stored.model {
            return Err(TrainError::ResumeConfigMismatch {
                file: file.to_path_buf(),
                checkpoint: point.path.clone(),
                given: given.model.name(),
                stored: stored.model.name(),
            });
        }
        let mut same = given;
        same.output = stored.output.clone();
        same.data.dir.clone_from(&stored.data.dir);
        if same != *stored {
            tracing::warn!(
                "{} differs from the config stored in {}; the run continues with the stored \
                 one (change values with --set)",
                file.display(),
                point.path.display()
            );
        }
        Ok(())
    }

    /// The session a [`TrainRequest`] describes: [`resume`](Self::resume) (checking a
    /// config file given beside it), or a new run from the config file (or the built-in
    /// recipe), in [`run_dir`](TrainRequest::run_dir) if given.
    pub fn from_request(request: &TrainRequest) -> Result<Self> {
        let overrides = &request.overrides;
        match &request.resume {
            Some(path) => {
                let session = Self::resume(path, overrides)?;
                if let Some(file) = &request.config {
                    session.check_config_file(file, overrides)?;
                }
                Ok(session)
            }
            None => {
                let config = RunConfig::from_file_or_default(request.config.as_deref(), overrides)?;
                Ok(match &request.run_dir {
                    Some(dir) => Self::in_dir(config, dir),
                    None => Self::new(config),
                })
            }
        }
    }

    /// The config the session runs with.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The run directory being continued, for a resumed session.
    pub fn resumed_run_dir(&self) -> Option<&Path> {
        self.resume.as_ref().map(|r| r.run_dir.as_path())
    }

    /// Iterations already done, for a resumed session.
    pub fn resumed_iteration(&self) -> Option<u64> {
        self.resume.as_ref().map(|r| r.checkpoint.meta.iteration)
    }

    /// Trains on `data` (prepared from [`config`](Self::config)`.data`, e.g. with
    /// [`Datasets::load`]) until `max_iterations` or a stop request, reporting progress to
    /// `observer`. Runs in a pool of `training.threads` threads when set.
    pub fn run(
        self,
        data: Datasets,
        options: &TrainOptions,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainOutcome> {
        let threads = self.config.training.threads;
        crate::device::with_threads(threads, move || {
            crate::train_loop::run(self, data, options, observer)
        })?
    }
}
