//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use trainer::config::DeviceChoice;
use trainer::EvalSplit;

/// Train, evaluate and inspect the CIFAR-10 ResNets of He et al. (2016).
///
/// Logs go to stderr (filter with RUST_LOG, e.g. RUST_LOG=debug); results go to stdout.
#[derive(Parser, Debug)]
#[command(name = "resnet-cli", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (default: the paper's ResNet-20 recipe) and print the run directory.
    Train(TrainArgs),
    /// Evaluate a checkpoint or a weights file: accuracy, loss, per-class accuracy,
    /// confusion matrix.
    Eval(EvalArgs),
    /// Classify image files with a checkpoint (top-k classes with probabilities).
    Predict(PredictArgs),
    /// Print the layer-by-layer summary of a config's network.
    Summary(SummaryArgs),
    /// Write a checkpoint's weights alone as safetensors with PyTorch names (no optimizer
    /// state): for PyTorch's load_state_dict, or to ship a trained model.
    Export(ExportArgs),
    /// One Markdown table of several finished runs (e.g. seeds): test accuracy of the final
    /// and best-on-validation models, mean ± sample std, and the commands that re-train them.
    Report(ReportArgs),
}

/// `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A training checkpoint (or a bare weights file, checked and rewritten).
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// The safetensors file to write.
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
}

/// `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Finished run directories (each with report.json and config.yaml).
    #[arg(value_name = "RUN_DIR", required = true)]
    pub runs: Vec<PathBuf>,
}

/// Where CIFAR-10 is, and where to get it when it is missing.
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Dataset directory (holding cifar-10-batches-bin/); overrides `data.dir`.
    /// Default: $CIFAR10_DIR, else data/cifar-10.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Install CIFAR-10 from this local cifar-10-binary.tar.gz if it is missing
    /// (also $CIFAR10_ARCHIVE).
    #[arg(long, value_name = "ARCHIVE")]
    pub from: Option<PathBuf>,
    /// Download CIFAR-10 from this mirror URL if it is missing (also $CIFAR10_URL).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Run config (YAML). Default: the built-in configs/resnet20.yaml (the paper's recipe).
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Continue a run: its directory (newest checkpoint) or one of its checkpoints. The run
    /// continues in the same directory with the config stored in the checkpoint (plus any
    /// --set); a CONFIG given as well must describe the same network.
    #[arg(long, value_name = "RUN_DIR|CHECKPOINT")]
    pub resume: Option<PathBuf>,
    /// Override a config value, e.g. --set training.max_iterations=400 (repeatable; the
    /// value is YAML: a number, true/false, null, a list or a map).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Compute device (overrides `training.device`).
    #[arg(long, value_enum, value_name = "DEVICE")]
    pub device: Option<DeviceChoice>,
    /// Seed of initialization, data order and augmentation (overrides `seed`).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Stop (with a checkpoint, as on Ctrl-C) once this many iterations are done; resume
    /// later with --resume.
    #[arg(long, value_name = "N")]
    pub stop_after_iterations: Option<u64>,
    /// Stop (with a checkpoint, as on Ctrl-C) after the first step that ends this long after
    /// the start, e.g. 2h30m, 90m, 45s: one stretch of a run longer than a machine is held.
    /// Where it stops does not change the result: resume is exact from any iteration.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stop_after_time: Option<std::time::Duration>,
    /// Create the new run in exactly this directory (it must not exist or be empty) instead
    /// of `<output.runs_dir>/<name>-<timestamp>`, e.g. results/resnet20-paper.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub run_dir: Option<PathBuf>,
    /// A note recorded with this stretch in the run's stretches.jsonl/.md (e.g. what else
    /// ran on the machine).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Dataset location and source.
    #[command(flatten)]
    pub data: DataArgs,
}

/// Parses a duration: a number with a unit, or several (`2h30m`, `90m`, `45s`, `1.5h`); a bare
/// number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{s}` is not a duration (expected e.g. 2h30m, 90m, 45s or 1.5h)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| std::time::Duration::from_secs_f64(secs))
            .ok_or_else(bad);
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" | "min" => 60.0,
            "s" => 1.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = next;
    }
    if !total.is_finite() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// Parses `--top-k`: at least 1 (there are 10 classes; more than that shows all of them).
pub fn parse_top_k(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1 (the number of classes to show per image)".into()),
        Ok(k) => Ok(k),
        Err(_) => Err(format!("`{s}` is not a whole number of classes (e.g. 3)")),
    }
}

/// `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A training checkpoint (carries its config and normalization) or a bare weights file
    /// (PyTorch state_dict names, e.g. exported with safetensors.torch.save_file).
    #[arg(value_name = "CHECKPOINT|WEIGHTS")]
    pub weights: PathBuf,
    /// Run config giving the data and, for bare weights, the architecture and the
    /// normalization the weights were trained with. Default: the checkpoint's own config;
    /// for bare weights the built-in ResNet-20 config with the architecture read from the
    /// tensor names.
    #[arg(long, value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// Override a config value (repeatable), as for `train`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The set to evaluate on.
    #[arg(long, value_enum, default_value_t = EvalSplit::Test, value_name = "SPLIT")]
    pub split: EvalSplit,
    /// Print one JSON object (correct, total, accuracy, loss, per_class, confusion, …).
    #[arg(long)]
    pub json: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto, value_name = "DEVICE")]
    pub device: DeviceChoice,
    /// Dataset location and source.
    #[command(flatten)]
    pub data: DataArgs,
}

/// `predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A training checkpoint (or bare weights with --config).
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Image files (PNG, JPEG, GIF, BMP, WebP, TIFF; any size: the shorter side is resized
    /// to 32 pixels with a triangle filter and the centre 32x32 is cropped).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3, value_name = "K", value_parser = parse_top_k)]
    pub top_k: usize,
    /// Config for bare weights (architecture and normalization).
    #[arg(long, value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto, value_name = "DEVICE")]
    pub device: DeviceChoice,
    /// Dataset location (only needed to fit the normalization of bare weights).
    #[command(flatten)]
    pub data: DataArgs,
}

/// `summary`.
#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// Run config (YAML). Default: the built-in configs/resnet20.yaml.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Override a config value (repeatable), e.g. --set model.depth=56.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use clap::Parser;
    use std::time::Duration;

    #[test]
    fn top_k() {
        assert_eq!(super::parse_top_k("3"), Ok(3));
        assert!(super::parse_top_k("0").unwrap_err().contains("at least 1"));
        assert!(super::parse_top_k("x").is_err());
        let e = super::Cli::try_parse_from(["resnet-cli", "predict", "w", "a.png", "--top-k", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--top-k") && e.contains("at least 1"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        for bad in ["", "h", "2x", "-5", "1h-2m", "nan", "2hh", "m5"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
    }
}
