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
//! * [`stretch`]: the sessions a long run was trained in (commit, CPU, wall time);
//!   [`runs_table`]: several runs (seeds) in one table, mean ± std.
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

pub mod checkpoint;
pub mod config;
mod curves;
pub mod data;
pub mod device;
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
pub mod runs_table;
pub mod schedule;
pub mod session;
pub mod sgd;
pub mod signal;
pub mod stretch;
pub mod tensorboard;
mod train_loop;

pub use config::RunConfig;
pub use data::{Datasets, EvalSplit};
pub use error::TrainError;
pub use session::{StopReason, TrainOptions, TrainOutcome, TrainSession};

/// Tunes the process for training speed; call it first thing in `main`, before any other
/// thread exists. Raises glibc's allocator thresholds so the multi-MB activation buffers of a
/// training step are reused instead of returned to the kernel and page-faulted in again, and
/// sets `CANDLE_NUM_THREADS=1` (unless set) so candle's own thread pool does not compete with
/// the kernels' rayon pool. See `resnet_model::ops::tune_runtime`.
pub fn tune_process() {
    resnet_model::ops::tune_runtime();
}
