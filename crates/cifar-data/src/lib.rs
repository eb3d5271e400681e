//! CIFAR-10 data layer: download, parse, split, normalize, augment, batch.
#![deny(missing_docs)]
