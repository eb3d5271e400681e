//! Progress events of a training run, for a progress bar or a log.

use std::path::Path;

use crate::metrics::MetricsRecord;

/// Where a run starts.
#[derive(Clone, Debug)]
pub struct RunStart<'a> {
    /// The run directory.
    pub run_dir: &'a Path,
    /// Iterations already done (non-zero when resuming).
    pub start_iteration: u64,
    /// Iterations the run ends at.
    pub max_iterations: u64,
    /// Optimizer steps per epoch.
    pub batches_per_epoch: u64,
    /// Whether this continues an earlier run.
    pub resumed: bool,
    /// The compute device, described.
    pub device: String,
}

/// One optimizer step.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Iterations completed, this one included.
    pub iteration: u64,
    /// Epoch of this step (0-based).
    pub epoch: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Loss of this batch.
    pub loss: f32,
    /// Accuracy on this batch.
    pub accuracy: f64,
    /// Training images per second over the current logging window.
    pub images_per_sec: f64,
}

/// Receives progress events. Every method has an empty default.
pub trait TrainObserver: Send {
    /// The loop is about to start.
    fn started(&mut self, _start: &RunStart<'_>) {}
    /// A step finished.
    fn step(&mut self, _info: &StepInfo) {}
    /// An epoch finished (the row also went to the metrics files).
    fn epoch(&mut self, _record: &MetricsRecord) {}
    /// A longer phase began (validation, testing, writing a checkpoint…).
    fn phase(&mut self, _what: &str) {}
    /// The loop ended (finished or stopped).
    fn finished(&mut self) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl TrainObserver for NoProgress {}
