//! The subcommands: argument handling and output; the work is done by `trainer`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use trainer::evaluate::EvalResult;
use trainer::inference::{evaluate_weights, model_summary, EvalReport, ModelRequest};
use trainer::overrides::Override;
use trainer::{DataSource, RunConfig, StopReason, TrainOptions, TrainOutcome, TrainRequest};

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

/// `--set` values plus `--data-dir` as the override `data.dir` it stands for.
fn overrides_with_data_dir(set: &[String], data: &DataArgs) -> Result<Vec<Override>> {
    let mut overrides = parse_overrides(set)?;
    if let Some(d) = &data.data_dir {
        let value = serde_json::to_string(&d.display().to_string())?;
        overrides.push(flag_override("data.dir", &value)?);
    }
    Ok(overrides)
}

fn data_source(args: &DataArgs) -> DataSource {
    DataSource {
        from: args.from.clone(),
        url: args.url.clone(),
        progress: true,
    }
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

/// `train`: one process, or one rank of `mpirun -np K resnet-cli train` (the `mpi` feature).
pub fn train(args: TrainArgs) -> Result<ExitCode> {
    crate::ranks::with_ranks(|comm| train_with(args, comm))
}

fn train_with(
    args: TrainArgs,
    comm: Option<std::sync::Arc<dyn trainer::distributed::Communicator>>,
) -> Result<ExitCode> {
    let rank = comm.as_ref().map_or(0, |c| c.rank());
    let stop = trainer::signal::install_stop_handler()?;
    let mut overrides = overrides_with_data_dir(&args.set, &args.data)?;
    if let Some(d) = args.device {
        overrides.push(flag_override("training.device", &d.to_string())?);
    }
    if let Some(s) = args.seed {
        overrides.push(flag_override("seed", &s.to_string())?);
    }
    let request = TrainRequest {
        config: args.config.clone(),
        resume: args.resume.clone(),
        run_dir: args.run_dir.clone(),
        overrides,
        data: data_source(&args.data),
    };
    let options = TrainOptions {
        stop: Some(stop),
        stop_after_iterations: args.stop_after_iterations,
        stop_after_seconds: args.stop_after_time.map(|d| d.as_secs_f64()),
        build: Some(env!("RESNET_CLI_BUILD").to_string()),
        note: args.note.clone(),
        comm,
    };
    let mut observer = BarObserver::new(!args.no_progress && rank == 0);
    let outcome = trainer::train(&request, &options, &mut observer)?;
    if rank > 0 {
        // Rank 0 reports the outcome.
        return Ok(match &outcome {
            TrainOutcome::Stopped {
                reason: StopReason::Interrupted,
                ..
            } => ExitCode::from(130),
            _ => ExitCode::SUCCESS,
        });
    }
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
                _ => reason.describe(),
            };
            eprintln!(
                "{why} at iteration {iteration}; checkpoint written to {}\n\
                 resume with: resnet-cli train --resume {}",
                checkpoint.display(),
                shell_quote(&run_dir)
            );
            println!("{}", run_dir.display());
            Ok(if reason == StopReason::Interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            })
        }
        other => {
            eprintln!("training ended: {other:?}");
            println!("{}", other.run_dir().display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `eval`.
pub fn eval(args: EvalArgs) -> Result<ExitCode> {
    let request = ModelRequest {
        weights: args.weights.clone(),
        config: args.config.clone(),
        overrides: overrides_with_data_dir(&args.set, &args.data)?,
        device: args.device,
        data: data_source(&args.data),
    };
    let report = evaluate_weights(&request, args.split)?;
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
    let request = ModelRequest {
        weights: args.checkpoint.clone(),
        config: args.config.clone(),
        overrides: overrides_with_data_dir(&[], &args.data)?,
        device: args.device,
        data: data_source(&args.data),
    };
    let results = trainer::predict::predict(&request, &args.images, args.top_k)?;
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
    let cfg = RunConfig::from_file_or_default(args.config.as_deref(), &overrides)?;
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
