//! The CIFAR-10 ResNets of He et al. (2016) in candle.
#![deny(missing_docs)]

pub mod ops;
