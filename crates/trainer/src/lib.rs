//! Training loop, optimizer, schedules, metrics and checkpoints for CIFAR ResNets.
#![deny(missing_docs)]

pub mod loss;
pub mod plots;
pub mod schedule;
pub mod sgd;
pub mod tensorboard;
