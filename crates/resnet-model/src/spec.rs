//! The list of tensors a [`ResNetConfig`] needs: names, shapes, init hints, kinds.
//!
//! Derived by building the network once against a recording `VarBuilder` backend, so the
//! layer code is the single source of truth for names and shapes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::config::ResNetConfig;
use crate::resnet::ResNet;

/// Whether a tensor is trained by the optimizer or is a BatchNorm running statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// A trainable parameter (gets gradients, weight decay, updates).
    Parameter,
    /// A running statistic (`running_mean`, `running_var`): never touched by an optimizer.
    Buffer,
}

impl TensorKind {
    /// The kind of a PyTorch `state_dict` name: buffers end in `.running_mean` or
    /// `.running_var`.
    pub fn of(name: &str) -> Self {
        if name.ends_with(".running_mean") || name.ends_with(".running_var") {
            Self::Buffer
        } else {
            Self::Parameter
        }
    }
}

/// One tensor of the model.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// How [`crate::ResNetModel::new`] initializes it.
    pub init: Init,
    /// Parameter or buffer.
    pub kind: TensorKind,
}

struct Recorder {
    entries: Arc<Mutex<BTreeMap<String, TensorSpec>>>,
}

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let spec = TensorSpec {
            shape: s.dims().to_vec(),
            init: h,
            kind: TensorKind::of(name),
        };
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| candle_core::Error::msg("spec recorder lock poisoned"))?;
        if entries.insert(name.to_string(), spec).is_some() {
            candle_core::bail!("tensor name `{name}` is used twice by the network");
        }
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("tensor `{name}` requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// All tensors of the network for `cfg`, keyed and sorted by PyTorch name.
pub fn model_spec(cfg: &ResNetConfig) -> Result<BTreeMap<String, TensorSpec>> {
    let entries = Arc::new(Mutex::new(BTreeMap::new()));
    let recorder = Recorder {
        entries: entries.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu);
    ResNet::new(cfg, vb)?;
    let entries = entries
        .lock()
        .map_err(|_| candle_core::Error::msg("spec recorder lock poisoned"))?;
    Ok(entries.clone())
}
