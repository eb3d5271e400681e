//! The `resnet-cli` binary, for the end-to-end tests (see Cargo.toml).

fn main() -> std::process::ExitCode {
    resnet_cli::main_entry(std::env::args_os())
}
