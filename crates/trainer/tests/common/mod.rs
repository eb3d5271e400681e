//! Locating the golden fixtures for the trainer's integration tests, as the model crate's
//! tests do: `$RESNET_FIXTURES` if set, else `shared/fixtures` beside the workspace.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod tensorboard_reader;

/// The golden fixtures directory; panics with the path if it is missing.
pub fn fixtures_dir() -> PathBuf {
    let dir = match std::env::var_os("RESNET_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    assert!(
        dir.is_dir(),
        "golden fixtures directory {} is missing: place the shared/ folder beside the \
         workspace or set RESNET_FIXTURES",
        dir.display()
    );
    dir
}

/// Path of one fixture file; panics naming it if it is missing.
pub fn fixture_path(file: &str) -> PathBuf {
    let path = fixtures_dir().join(file);
    assert!(path.is_file(), "fixture {} is missing", path.display());
    path
}

/// The tiny synthetic datasets of the training-loop tests: 224 training images (7 steps of
/// 32 per epoch), 48 validation, 40 test.
pub fn tiny_data() -> trainer::Datasets {
    use cifar_data::{synthetic, Cifar10, SplitConfig};
    let d = Cifar10 {
        train: synthetic::generate(272, 5),
        test: synthetic::generate(40, 6),
        class_names: cifar_data::CLASS_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let cfg = trainer::config::DataConfig {
        split: SplitConfig {
            val_size: 48,
            ..SplitConfig::default()
        },
        ..Default::default()
    };
    trainer::Datasets::from_cifar(&d, &cfg).unwrap()
}
