//! Strict checking of a state dict (name → tensor) against the network's tensors.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use candle_core::{DType, Tensor};

use crate::spec::TensorSpec;

/// Suffix of the BatchNorm batch counter PyTorch exports; ignored on load (this crate uses a
/// fixed momentum, so the counter has no effect) and not written on save (PyTorch's
/// `load_state_dict` fills it in when missing).
pub const NUM_BATCHES_TRACKED: &str = ".num_batches_tracked";

/// A tensor whose shape differs from what the network expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// PyTorch name of the tensor.
    pub name: String,
    /// The shape the network needs.
    pub expected: Vec<usize>,
    /// The shape that was given.
    pub found: Vec<usize>,
}

/// Why a state dict does not fit a network: every offending tensor, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[non_exhaustive]
pub struct StateDictError {
    /// The model, e.g. `resnet20-a`.
    pub model: String,
    /// Tensors the network needs that were not given.
    pub missing: Vec<String>,
    /// Given tensors the network does not have (`*.num_batches_tracked` excepted).
    pub unexpected: Vec<String>,
    /// Tensors with the wrong shape.
    pub wrong_shape: Vec<ShapeMismatch>,
    /// Tensors that are not floating point (name, dtype found).
    pub wrong_dtype: Vec<(String, DType)>,
}

impl StateDictError {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_shape.is_empty()
            && self.wrong_dtype.is_empty()
    }

    /// Compares `tensors` with the network's `spec`.
    pub(crate) fn compare(
        model: &str,
        spec: &BTreeMap<String, TensorSpec>,
        tensors: &HashMap<String, Tensor>,
    ) -> Self {
        let mut err = Self {
            model: model.to_string(),
            ..Default::default()
        };
        for (name, s) in spec {
            match tensors.get(name) {
                None => err.missing.push(name.clone()),
                Some(t) => {
                    if t.dims() != s.shape.as_slice() {
                        err.wrong_shape.push(ShapeMismatch {
                            name: name.clone(),
                            expected: s.shape.clone(),
                            found: t.dims().to_vec(),
                        });
                    }
                    if !t.dtype().is_float() {
                        err.wrong_dtype.push((name.clone(), t.dtype()));
                    }
                }
            }
        }
        let mut unexpected: Vec<String> = tensors
            .keys()
            .filter(|k| !spec.contains_key(*k) && !k.ends_with(NUM_BATCHES_TRACKED))
            .cloned()
            .collect();
        unexpected.sort();
        err.unexpected = unexpected;
        err
    }
}

const MAX_LISTED: usize = 20;

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "; {} {what}: ", items.len())?;
    let shown: Vec<String> = items.iter().take(MAX_LISTED).map(show).collect();
    write!(f, "{}", shown.join(", "))?;
    if items.len() > MAX_LISTED {
        write!(f, ", ... and {} more", items.len() - MAX_LISTED)?;
    }
    Ok(())
}

impl fmt::Display for StateDictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state dict does not match {}", self.model)?;
        write_list(f, "missing tensor(s)", &self.missing, |n| format!("`{n}`"))?;
        write_list(f, "unexpected tensor(s)", &self.unexpected, |n| {
            format!("`{n}`")
        })?;
        write_list(f, "tensor(s) with wrong shape", &self.wrong_shape, |m| {
            format!("`{}` expected {:?} found {:?}", m.name, m.expected, m.found)
        })?;
        write_list(f, "non-float tensor(s)", &self.wrong_dtype, |(n, d)| {
            format!("`{n}` has dtype {d:?}")
        })
    }
}
