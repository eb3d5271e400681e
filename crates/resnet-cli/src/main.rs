//! `resnet-cli`: train, evaluate and inspect CIFAR ResNets.
fn main() {}
