//! Shared helpers of the integration tests: locating and reading the golden fixtures, and the
//! fixtures' agreement criterion.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// The golden fixtures directory: `$RESNET_FIXTURES` if set, else `shared/fixtures` beside the
/// workspace (`<crate>/../../../shared/fixtures`). Panics with the path if it is missing.
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
    assert!(
        path.is_file(),
        "golden fixture {} is missing",
        path.display()
    );
    path
}

/// All tensors of a fixture file.
pub fn load_fixture(file: &str) -> HashMap<String, Tensor> {
    let path = fixture_path(file);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The tensors whose name starts with `prefix`, with the prefix stripped.
pub fn with_prefix(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
        .collect()
}

/// `max|ours - ref|` and `max|ref|` of two same-shape tensors; the difference is NaN when
/// either side has a non-finite value (`f32::max` would silently skip a NaN).
pub fn max_diff(ours: &Tensor, reference: &Tensor) -> (f32, f32) {
    assert_eq!(ours.dims(), reference.dims(), "shape mismatch");
    let a = ours
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = reference
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let finite = a.iter().chain(&b).all(|x| x.is_finite());
    let diff = if finite {
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    } else {
        f32::NAN
    };
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    (diff, scale)
}

/// Collects fixture mismatches under the criterion `max|ours - ref| <= 1e-4 * max|ref|`.
#[derive(Default)]
pub struct Report {
    failures: Vec<String>,
    checked: usize,
}

impl Report {
    /// Compares one tensor.
    pub fn check(&mut self, what: &str, ours: &Tensor, reference: &Tensor) {
        self.checked += 1;
        if ours.dims() != reference.dims() {
            self.failures.push(format!(
                "{what}: shape {:?}, reference {:?}",
                ours.dims(),
                reference.dims()
            ));
            return;
        }
        let (diff, scale) = max_diff(ours, reference);
        if diff.is_nan() || diff > 1e-4 * scale {
            self.failures.push(format!(
                "{what}: max|ours-ref| = {diff:e} > 1e-4 * max|ref| = {:e}",
                1e-4 * scale
            ));
        }
    }

    /// Records a failure that is not a tensor comparison.
    pub fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    /// Panics listing every failure.
    pub fn finish(self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{context}: {} of {} checks failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
        assert!(self.checked > 0, "{context}: nothing was checked");
    }
}
