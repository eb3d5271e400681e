//! Deterministic He initialization from our own seeded RNG.
//!
//! Layers declare how each tensor is initialized with a `candle_nn::Init` hint (candle-nn
//! style); [`initialize`] realizes those hints from a [`ChaCha8Rng`] seeded with the model
//! seed, visiting the tensors in sorted name order, so the same seed and config give
//! bit-identical weights on every platform (candle's own CPU RNG cannot be seeded).
//!
//! The variants, matching the PyTorch reproduction of the paper's CIFAR models
//! (akamaster/pytorch_resnet_cifar10):
//! - convolution weights: PyTorch's `kaiming_normal_` (normal, mode `fan_in`, gain
//!   `sqrt(2)`): `N(0, 2 / fan_in)`, `fan_in = in_channels * k * k`;
//! - linear weight: `kaiming_normal_` as well, `N(0, 2 / in_features)`;
//! - linear bias: PyTorch's default `U(-1/sqrt(in_features), 1/sqrt(in_features))`;
//! - BatchNorm: weight 1, bias 0, running mean 0, running variance 1.

use std::collections::BTreeMap;

use candle_core::{Device, Result, Tensor};
use candle_nn::Init;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::spec::TensorSpec;

/// PyTorch's `kaiming_normal_(mode="fan_in", nonlinearity="relu")`: `N(0, 2 / fan_in)`.
pub fn kaiming_normal(fan_in: usize) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: (2.0 / fan_in.max(1) as f64).sqrt(),
    }
}

/// PyTorch's default `nn.Linear` bias init: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
pub fn linear_bias_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Draws every tensor of `spec` (in its sorted name order) from `ChaCha8Rng::seed_from_u64(seed)`.
pub fn initialize(
    spec: &BTreeMap<String, TensorSpec>,
    seed: u64,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for (name, s) in spec {
        let count = s.shape.iter().product::<usize>();
        let values: Vec<f32> = match s.init {
            Init::Const(v) => vec![v as f32; count],
            Init::Randn { mean, stdev } => (0..count)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (mean + stdev * z) as f32
                })
                .collect(),
            Init::Uniform { lo, up } => (0..count)
                .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
                .collect(),
            other => candle_core::bail!(
                "tensor `{name}`: unsupported init {other:?} (expected Const, Randn or Uniform)"
            ),
        };
        out.insert(
            name.clone(),
            Tensor::from_vec(values, s.shape.as_slice(), device)?,
        );
    }
    Ok(out)
}
