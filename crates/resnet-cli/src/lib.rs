//! The `resnet-cli` command line: argument parsing ([`args`]), the progress bar
//! ([`progress`]) and the subcommands ([`commands`]), which hand the work to the `trainer`
//! crate. `main` is [`main_entry`]; the workspace's end-to-end tests build the same entry
//! point into their own binary.
//!
//! ```no_run
//! // What src/main.rs does:
//! let code = resnet_cli::main_entry(["resnet-cli", "summary", "configs/smoke.yaml"]);
//! ```
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

pub mod args;
pub mod commands;
pub mod progress;
pub mod ranks;
pub mod tune;

use args::{Cli, Command};

/// Parses `args` (program name first), sets up logging (`RUST_LOG`; default `info` for this
/// project's crates, `warn` for dependencies), runs
/// the command and returns its exit status; an error is printed with its chain of causes
/// and gives status 1.
pub fn main_entry<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let mut shown = e.to_string();
            eprintln!("error: {shown}");
            // Causes whose text the messages above already include are not repeated.
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push_str(&text);
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(a) => commands::train(a),
        Command::Eval(a) => commands::eval(a),
        Command::Predict(a) => commands::predict(a),
        Command::Summary(a) => commands::summary(a),
        Command::Export(a) => commands::export(a),
        Command::Report(a) => commands::report(a),
    }
}

fn init_logging() {
    // Under mpirun, ranks > 0 log only warnings and errors: rank 0 speaks for the run.
    let default = if ranks::rank_from_env() > 0 {
        "warn"
    } else {
        "warn,trainer=info,resnet_cli=info,cifar_data=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
