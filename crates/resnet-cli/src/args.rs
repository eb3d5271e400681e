//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Compute device: cpu, cuda or auto (overrides `training.device`).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Seed of initialization, data order and augmentation (overrides `seed`).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Stop (with a checkpoint, as on Ctrl-C) once this many iterations are done; resume
    /// later with --resume.
    #[arg(long, value_name = "N")]
    pub stop_after_iterations: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Dataset location and source.
    #[command(flatten)]
    pub data: DataArgs,
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
    /// The set to evaluate on: test, val or train.
    #[arg(long, default_value = "test", value_name = "SPLIT")]
    pub split: String,
    /// Print one JSON object (correct, total, accuracy, loss, per_class, confusion, …).
    #[arg(long)]
    pub json: bool,
    /// Compute device: cpu, cuda or auto.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
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
    #[arg(long, default_value_t = 3, value_name = "K")]
    pub top_k: usize,
    /// Config for bare weights (architecture and normalization).
    #[arg(long, value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
    /// Compute device: cpu, cuda or auto.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
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
