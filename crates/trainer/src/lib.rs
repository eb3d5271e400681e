//! Training loop, optimizer, schedules, metrics and checkpoints for CIFAR ResNets.
#![deny(missing_docs)]
