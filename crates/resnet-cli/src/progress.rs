//! The training progress bar, and a log writer that keeps log lines from tearing it.

use std::io::Write;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use trainer::metrics::MetricsRecord;
use trainer::progress::{RunStart, StepInfo, TrainObserver};

/// The bar currently on screen, if any (log lines are printed "around" it).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active() -> Option<ProgressBar> {
    ACTIVE.lock().ok().and_then(|g| g.clone())
}

/// A stderr writer for `tracing-subscriber` that suspends the progress bar while writing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match active() {
            Some(pb) => pb.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// Shows a progress bar on stderr (when it is a terminal): iterations, epoch, loss,
/// accuracy, learning rate and images/s.
#[derive(Debug)]
pub struct BarObserver {
    bar: Option<ProgressBar>,
    enabled: bool,
    phase: Option<String>,
    last: Option<StepInfo>,
    batches_per_epoch: u64,
}

impl BarObserver {
    /// A bar, or nothing when `enabled` is false.
    pub fn new(enabled: bool) -> Self {
        Self {
            bar: None,
            enabled,
            phase: None,
            last: None,
            batches_per_epoch: 1,
        }
    }

    fn refresh(&self) {
        let (Some(bar), Some(s)) = (&self.bar, &self.last) else {
            return;
        };
        let phase = self
            .phase
            .as_ref()
            .map_or(String::new(), |p| format!(" | {p}…"));
        bar.set_message(format!(
            "epoch {:>3} | loss {:.4} acc {:5.1}% | lr {:.4} | {:.0} img/s{phase}",
            s.iteration.saturating_sub(1) / self.batches_per_epoch + 1,
            s.loss,
            100.0 * s.accuracy,
            s.lr,
            s.images_per_sec
        ));
    }
}

impl TrainObserver for BarObserver {
    fn started(&mut self, start: &RunStart<'_>) {
        if !self.enabled {
            return;
        }
        self.batches_per_epoch = start.batches_per_epoch.max(1);
        let bar = ProgressBar::with_draw_target(
            Some(start.max_iterations),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} it (eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(start.start_iteration);
        bar.reset_eta();
        if let Ok(mut g) = ACTIVE.lock() {
            *g = Some(bar.clone());
        }
        self.bar = Some(bar);
    }

    fn step(&mut self, info: &StepInfo) {
        self.phase = None;
        self.last = Some(*info);
        if let Some(bar) = &self.bar {
            bar.set_position(info.iteration);
        }
        self.refresh();
    }

    fn epoch(&mut self, _record: &MetricsRecord) {}

    fn phase(&mut self, what: &str) {
        self.phase = Some(what.to_string());
        self.refresh();
    }

    fn finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Ok(mut g) = ACTIVE.lock() {
            *g = None;
        }
    }
}
