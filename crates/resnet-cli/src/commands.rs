//! The subcommands: argument handling and output; the work is done by `trainer`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use cifar_data::fetch::{fetch, is_present, FetchOptions, FetchOutcome};
use trainer::config::{DeviceChoice, DEFAULT_CONFIG_NAME, DEFAULT_CONFIG_YAML};
use trainer::device::Device;
use trainer::evaluate::{evaluate, EvalResult};
use trainer::inference::{model_summary, EvalReport, LoadedModel};
use trainer::overrides::Override;
use trainer::{
    Datasets, EvalSplit, RunConfig, StopReason, TrainOptions, TrainOutcome, TrainSession,
};

use crate::args::{
    DataArgs, EvalArgs, ExportArgs, PredictArgs, ReportArgs, SummaryArgs, TrainArgs,
};
use crate::progress::BarObserver;

fn parse_overrides(set: &[String]) -> Result<Vec<Override>> {
    set.iter()
        .map(|s| Override::parse(s).map_err(Into::into))
        .collect()
}

/// An override synthesized from a flag, e.g. `--seed 3` → `seed=3`.
fn flag_override(key: &str, value: &str) -> Result<Override> {
    Ok(Override::parse(&format!("{key}={value}"))?)
}

fn load_config(path: Option<&Path>, overrides: &[Override]) -> Result<RunConfig> {
    Ok(match path {
        Some(p) => RunConfig::from_file(p, overrides)?,
        None => RunConfig::from_yaml(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_NAME, overrides)?,
    })
}

/// Installs CIFAR-10 into `dir` unless it is there (same code and options as
/// `cargo xtask fetch-cifar`).
fn ensure_data(dir: &Path, args: &DataArgs) -> Result<()> {
    if is_present(dir) {
        return Ok(());
    }
    eprintln!("CIFAR-10 is not in {}; fetching it", dir.display());
    let opts = FetchOptions {
        url: args.url.clone(),
        from: args.from.clone(),
        progress: true,
        ..FetchOptions::new(dir)
    };
    match fetch(&opts).with_context(|| format!("installing CIFAR-10 into {}", dir.display()))? {
        FetchOutcome::Installed { dir, source, .. } => {
            eprintln!("installed CIFAR-10 from {source} into {}", dir.display());
        }
        FetchOutcome::AlreadyPresent { dir } => {
            eprintln!("CIFAR-10 already present in {}", dir.display());
        }
        other => eprintln!("{other:?}"),
    }
    Ok(())
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A config file given with `--resume`: the run keeps the checkpoint's config; the file must
/// describe the same network, and other differences are reported.
fn check_resume_config(file: &Path, overrides: &[Override], stored: &RunConfig) -> Result<()> {
    let given = RunConfig::from_file(file, overrides)?;
    if given.model != stored.model {
        bail!(
            "{} describes {}, but the run being resumed trains {}",
            file.display(),
            given.model.name(),
            stored.model.name()
        );
    }
    let mut same = given.clone();
    same.output = stored.output.clone();
    same.data.dir.clone_from(&stored.data.dir);
    if same != *stored {
        tracing::warn!(
            "{} differs from the config stored in the checkpoint; the run continues with the \
             stored one (change values with --set)",
            file.display()
        );
    }
    Ok(())
}

/// `train`.
pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let stop = trainer::signal::install_stop_handler()?;
    let mut overrides = parse_overrides(&args.set)?;
    if let Some(d) = &args.device {
        d.parse::<DeviceChoice>().map_err(anyhow::Error::msg)?;
        overrides.push(flag_override("training.device", d)?);
    }
    if let Some(s) = args.seed {
        overrides.push(flag_override("seed", &s.to_string())?);
    }
    if let Some(d) = &args.data.data_dir {
        let value = serde_json::to_string(&d.display().to_string())?;
        overrides.push(flag_override("data.dir", &value)?);
    }
    let session = match &args.resume {
        Some(path) => {
            let session = TrainSession::resume(path, &overrides)?;
            if let Some(file) = &args.config {
                check_resume_config(file, &overrides, session.config())?;
            }
            session
        }
        None => {
            let config = load_config(args.config.as_deref(), &overrides)?;
            match &args.run_dir {
                Some(dir) => TrainSession::in_dir(config, dir),
                None => TrainSession::new(config),
            }
        }
    };
    let config = session.config().clone();
    let data_dir = config.data_dir();
    ensure_data(&data_dir, &args.data)?;
    let data = Datasets::load(&data_dir, &config.data)
        .with_context(|| format!("loading CIFAR-10 from {}", data_dir.display()))?;
    let options = TrainOptions {
        stop: Some(stop),
        stop_after_iterations: args.stop_after_iterations,
        stop_after_seconds: args.stop_after_time.map(|d| d.as_secs_f64()),
        build: Some(env!("RESNET_CLI_BUILD").to_string()),
        note: args.note.clone(),
    };
    let mut observer = BarObserver::new(!args.no_progress);
    let outcome = session.run(data, &options, &mut observer)?;
    match outcome {
        TrainOutcome::Finished { run_dir, report } => {
            let f = &report.final_model;
            let b = &report.best_model;
            eprintln!(
                "finished {} iterations in {:.0} s: test accuracy {:.2}% (final model), \
                 {:.2}% (best on validation, iteration {})",
                report.iterations,
                report.wall_time_s,
                100.0 * f.test.accuracy,
                100.0 * b.test.accuracy,
                b.iteration
            );
            eprintln!("report: {}", run_dir.join("report.md").display());
            println!("{}", run_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        TrainOutcome::Stopped {
            run_dir,
            checkpoint,
            iteration,
            reason,
        } => {
            let why = match reason {
                StopReason::Interrupted => "interrupted",
                StopReason::IterationLimit => "stopped as asked (--stop-after-iterations)",
                StopReason::TimeLimit => "stopped as asked (--stop-after-time)",
            };
            eprintln!(
                "{why} at iteration {iteration}; checkpoint written to {}\n\
                 resume with: resnet-cli train --resume {}",
                checkpoint.display(),
                shell_quote(&run_dir)
            );
            println!("{}", run_dir.display());
            Ok(match reason {
                StopReason::Interrupted => ExitCode::from(130),
                StopReason::IterationLimit | StopReason::TimeLimit => ExitCode::SUCCESS,
            })
        }
    }
}

fn device(name: &str) -> Result<Device> {
    let choice: DeviceChoice = name.parse().map_err(anyhow::Error::msg)?;
    Ok(trainer::device::select_device(choice)?)
}

fn open_model(
    weights: &Path,
    config: Option<&Path>,
    set: &[String],
    data: &DataArgs,
    device_name: &str,
) -> Result<LoadedModel> {
    let mut overrides = parse_overrides(set)?;
    if let Some(d) = &data.data_dir {
        let value = serde_json::to_string(&d.display().to_string())?;
        overrides.push(flag_override("data.dir", &value)?);
    }
    let cfg = match config {
        Some(p) => Some(RunConfig::from_file(p, &overrides)?),
        None => None,
    };
    let dev = device(device_name)?;
    let mut loaded = LoadedModel::open(weights, cfg.as_ref(), &dev)?;
    if config.is_none() && !overrides.is_empty() {
        // Apply the overrides to the checkpoint's own config.
        let yaml = loaded.config.to_yaml();
        let name = format!("config of {}", weights.display());
        let cfg = RunConfig::from_yaml(&yaml, &name, &overrides)?;
        if cfg.model != loaded.config.model {
            bail!(
                "--set cannot change the architecture of {}",
                weights.display()
            );
        }
        loaded.config = cfg;
    }
    Ok(loaded)
}

/// `eval`.
pub fn eval(args: EvalArgs) -> Result<ExitCode> {
    let split: EvalSplit = args.split.parse().map_err(anyhow::Error::msg)?;
    let loaded = open_model(
        &args.weights,
        args.config.as_deref(),
        &args.set,
        &args.data,
        &args.device,
    )?;
    let dir = loaded.config.data_dir();
    ensure_data(&dir, &args.data)?;
    let data = Datasets::load(&dir, &loaded.config.data)
        .with_context(|| format!("loading CIFAR-10 from {}", dir.display()))?;
    let normalizer = std::sync::Arc::new(loaded.normalizer(Some(&data.train)));
    let set = data.get(split)?;
    let result = evaluate(
        &loaded.model,
        &set,
        &normalizer,
        loaded.config.training.eval_batch_size,
        &data.class_names,
    )?;
    let report = EvalReport {
        weights: args.weights.display().to_string(),
        architecture: loaded.model.config().name(),
        split: split.to_string(),
        iteration: loaded.iteration,
        result,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_eval(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_eval(r: &EvalReport) {
    let EvalResult {
        correct,
        total,
        accuracy,
        loss,
        per_class,
        confusion,
    } = &r.result;
    let at = r
        .iteration
        .map_or(String::new(), |i| format!(", iteration {i}"));
    println!(
        "{} ({}{at}) on the {} set:",
        r.weights, r.architecture, r.split
    );
    println!(
        "accuracy {:.2}% ({correct}/{total}), error {:.2}%, loss {loss:.4}",
        100.0 * accuracy,
        r.result.error_percent()
    );
    println!("\nper-class accuracy:");
    for c in per_class {
        println!(
            "  {:<12} {:6.2}%  ({}/{})",
            c.class,
            100.0 * c.accuracy,
            c.correct,
            c.total
        );
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted class):");
    let short: Vec<String> = per_class
        .iter()
        .map(|c| c.class.chars().take(5).collect())
        .collect();
    println!(
        "  {:<12} {}",
        "",
        short.iter().map(|s| format!("{s:>6}")).collect::<String>()
    );
    for (name, row) in per_class.iter().zip(confusion) {
        let cells: String = row.iter().map(|v| format!("{v:>6}")).collect();
        println!("  {:<12} {cells}", name.class);
    }
}

/// `predict`.
pub fn predict(args: PredictArgs) -> Result<ExitCode> {
    let loaded = open_model(
        &args.checkpoint,
        args.config.as_deref(),
        &[],
        &args.data,
        &args.device,
    )?;
    let normalizer = if loaded.needs_training_data() {
        let dir = loaded.config.data_dir();
        ensure_data(&dir, &args.data)?;
        let data = Datasets::load(&dir, &loaded.config.data)?;
        loaded.normalizer(Some(&data.train))
    } else {
        loaded.normalizer(None)
    };
    let results = trainer::predict::predict_files(&loaded, &normalizer, &args.images, args.top_k)?;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if args.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(p, r)| match r {
                Ok(preds) => serde_json::json!({"file": p, "predictions": preds}),
                Err(e) => serde_json::json!({"file": p, "error": e.to_string()}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (p, r) in &results {
            match r {
                Ok(preds) => {
                    let top: Vec<String> = preds
                        .iter()
                        .map(|q| format!("{} {:.1}%", q.class, 100.0 * q.probability))
                        .collect();
                    println!("{}: {}", p.display(), top.join(", "));
                }
                Err(e) => eprintln!("{}: error: {e}", p.display()),
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} file(s) could not be classified",
            results.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `summary`.
pub fn summary(args: SummaryArgs) -> Result<ExitCode> {
    let overrides = parse_overrides(&args.set)?;
    let cfg = load_config(args.config.as_deref(), &overrides)?;
    print!("{}", model_summary(&cfg.model)?);
    Ok(ExitCode::SUCCESS)
}

/// `export`.
pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let arch = trainer::export::export_weights(&args.checkpoint, &args.out)?;
    eprintln!(
        "wrote the weights of {} ({}) to {}",
        args.checkpoint.display(),
        arch.name(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `report`.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let table = trainer::runs_table::RunsTable::load(&args.runs)?;
    print!("{}", table.to_markdown());
    Ok(ExitCode::SUCCESS)
}
