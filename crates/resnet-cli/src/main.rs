//! `resnet-cli`: train, evaluate and inspect CIFAR-10 ResNets. See `resnet-cli --help`.

fn main() -> std::process::ExitCode {
    resnet_cli::tune::tune_process();
    resnet_cli::main_entry(std::env::args_os())
}
