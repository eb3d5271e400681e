//! Training loop, optimizer, schedules, metrics and checkpoints for CIFAR ResNets.
//!
//! The paper's CIFAR-10 recipe (He et al. 2016, sec. 4.2) end to end:
//!
//! * [`config::RunConfig`]: the YAML run config (`configs/*.yaml`), with `--set` overrides
//!   ([`overrides::Override`]) and errors that name the key and its line;
//! * [`session::TrainSession`]: a new or resumed run — the loop by iteration with SGD
//!   ([`sgd`]), the learning-rate schedule ([`schedule`]), validation every epoch, metrics
//!   ([`metrics`]), TensorBoard scalars ([`tensorboard`]), PNG curves ([`plots`]),
//!   checkpoints with exact resume ([`checkpoint`]) and the final [`report`];
//! * [`inference`] and [`predict`]: evaluate a checkpoint (or PyTorch weights) and classify
//!   image files; [`export`]: a checkpoint's weights alone, for PyTorch or for shipping;
//! * [`distributed`]: one model trained by K processes (`mpirun -np K`, the `mpi` feature),
//!   each on a shard of every batch, gradients all-reduced;
//! * [`stretch`]: the sessions a long run was trained in (commit, CPU, wall time);
//!   [`runs_table`]: several runs (seeds) in one table, mean ± std.
//!
//! The config-driven path, as `resnet-cli train configs/resnet20.yaml` takes it (installs
//! CIFAR-10 if missing, trains, checkpoints, tests, writes the report):
//!
//! ```no_run
//! use trainer::{progress::NoProgress, TrainOptions, TrainRequest};
//!
//! let request = TrainRequest { config: Some("configs/resnet20.yaml".into()), ..Default::default() };
//! let outcome = trainer::train(&request, &TrainOptions::default(), &mut NoProgress)?;
//! println!("run directory: {}", outcome.run_dir().display());
//! # Ok::<(), trainer::TrainError>(())
//! ```
//!
//! `examples/train.rs` writes the loop by hand instead, from the public pieces (data loader,
//! model, [`sgd::Sgd`], [`schedule`], [`loss`], [`evaluate`]) in under 60 lines.
//!
//! Configs parse with errors that name the key and line:
//!
//! ```
//! use trainer::config::RunConfig;
//! use trainer::overrides::Override;
//!
//! // The paper's ResNet-20 recipe is built in; override a key like `--set` does.
//! let set = Override::parse("training.max_iterations=400").unwrap();
//! let cfg = RunConfig::from_yaml(trainer::config::DEFAULT_CONFIG_YAML, "resnet20.yaml", &[set])
//!     .unwrap();
//! assert_eq!(cfg.model.depth, 20);
//! assert_eq!(cfg.training.max_iterations, 400);
//!
//! // Invalid values are named by key and line.
//! let err = RunConfig::from_yaml("model:\n  depth: 21\n", "bad.yaml", &[]).unwrap_err();
//! assert!(err.to_string().contains("bad.yaml line 2: invalid value for `model.depth`"));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
mod curves;
pub mod data;
pub mod device;
pub mod distributed;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod inference;
pub mod loss;
pub mod metrics;
pub mod overrides;
pub mod plots;
pub mod predict;
pub mod progress;
pub mod report;
pub mod run_dir;
pub mod running_stats;
pub mod runs_table;
pub mod schedule;
pub mod session;
pub mod sgd;
pub mod signal;
pub mod stretch;
pub mod tensorboard;
mod train_loop;

pub use config::RunConfig;
pub use data::{DataSource, Datasets, EvalSplit};
pub use error::TrainError;
pub use session::{train, StopReason, TrainOptions, TrainOutcome, TrainRequest, TrainSession};
