//! [`ResNetModel`]: the network together with the store of all its tensors.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, ModuleT, Result, Tensor, Var};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::batch_stats::BatchStats;
use crate::config::ResNetConfig;
use crate::init;
use crate::resnet::ResNet;
use crate::spec::{model_spec, TensorKind, TensorSpec};
use crate::state::StateDictError;
use crate::store::VarStore;

/// Images per sub-batch of [`ResNetModel::predict`] on the CPU. 64 images keep ResNet-20's
/// largest activation at 4 MiB (in a 2-core AMD EPYC's caches; 32 and 64 measured alike,
/// both ~25% faster than one pass over 512, see bench/README.md) while still giving every
/// core several images.
pub const PREDICT_SUB_BATCH: usize = 64;

/// A CIFAR ResNet that owns its tensors: trainable parameters and BatchNorm running
/// statistics ("buffers"), all `f32`, named like PyTorch's `state_dict`.
///
/// Parameters ([`parameters`](Self::parameters)) are what an optimizer updates; buffers
/// ([`buffers`](Self::buffers)) change only through training-mode forward passes.
pub struct ResNetModel {
    cfg: ResNetConfig,
    device: Device,
    spec: BTreeMap<String, TensorSpec>,
    params: Vec<(String, Var)>,
    buffers: Vec<(String, Var)>,
    net: ResNet,
}

impl std::fmt::Debug for ResNetModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResNetModel")
            .field("config", &self.cfg)
            .field("device", &self.device)
            .field("parameters", &self.num_parameters())
            .finish_non_exhaustive()
    }
}

/// A variable holding a copy of `t` (never sharing storage with it).
fn fresh_var(t: &Tensor) -> Result<Var> {
    if t.is_variable() {
        Var::from_tensor(&t.copy()?)
    } else {
        Var::from_tensor(t)
    }
}

impl ResNetModel {
    /// A freshly initialized model (see [`crate::init`] for the He initialization), drawn
    /// from a `ChaCha8Rng` seeded with `seed`: the same seed gives identical weights.
    pub fn new(cfg: &ResNetConfig, device: &Device, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let spec = model_spec(cfg)?;
        let tensors = init::initialize(&spec, seed, device)?;
        Self::build(cfg, spec, tensors, device)
    }

    /// A model holding copies of `tensors` (PyTorch `state_dict` names, any float dtype,
    /// converted to `f32` on `device`). Strict: an error names every missing, unexpected,
    /// wrong-shape or non-float tensor (see [`StateDictError`]); `*.num_batches_tracked`
    /// entries are ignored.
    pub fn from_tensors(
        cfg: &ResNetConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let spec = model_spec(cfg)?;
        let converted = Self::checked(cfg, &spec, tensors, device)?;
        Self::build(cfg, spec, converted, device)
    }

    /// Checks `tensors` against `spec` and converts them to `f32` on `device`.
    fn checked(
        cfg: &ResNetConfig,
        spec: &BTreeMap<String, TensorSpec>,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<BTreeMap<String, Tensor>> {
        let err = StateDictError::compare(&cfg.name(), spec, tensors);
        if !err.is_empty() {
            // No backtrace: the message already names every offending tensor.
            return Err(candle_core::Error::Wrapped(Box::new(err)));
        }
        spec.keys()
            .map(|name| {
                let t = tensors[name].to_dtype(DType::F32)?.to_device(device)?;
                Ok((name.clone(), t))
            })
            .collect()
    }

    fn build(
        cfg: &ResNetConfig,
        spec: BTreeMap<String, TensorSpec>,
        tensors: BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let vars = tensors
            .iter()
            .map(|(name, t)| Ok((name.clone(), fresh_var(t)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let store = VarStore { vars: vars.clone() };
        let vb = VarBuilder::from_backend(Box::new(store), DType::F32, device.clone());
        let net = ResNet::new(cfg, vb)?;
        let (params, buffers) = vars
            .into_iter()
            .partition(|(name, _)| spec[name].kind == TensorKind::Parameter);
        Ok(Self {
            cfg: cfg.clone(),
            device: device.clone(),
            spec,
            params,
            buffers,
            net,
        })
    }

    /// Loads a safetensors file (e.g. one written by [`save`](Self::save) or exported from
    /// PyTorch with `safetensors.torch.save_file(model.state_dict(), path)`). Strict like
    /// [`from_tensors`](Self::from_tensors); errors name the file.
    pub fn load(cfg: &ResNetConfig, path: &Path, device: &Device) -> Result<Self> {
        let tensors = crate::io::read_tensors(path, device)?;
        Self::from_tensors(cfg, &tensors, device).map_err(|e| e.with_path(path))
    }

    /// The configuration.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// The device holding the tensors.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network module (shares this model's tensors).
    pub fn net(&self) -> &ResNet {
        &self.net
    }

    /// Sets how every BatchNorm computes batch statistics in training mode: per process
    /// ([`BatchStats::Local`], the default), per group of the batch, or synchronized across
    /// the processes of a data-parallel run. Eval mode is unaffected.
    pub fn set_batch_stats(&mut self, stats: BatchStats) {
        self.net.set_batch_stats(stats);
    }

    /// How training mode computes batch statistics (see
    /// [`set_batch_stats`](Self::set_batch_stats)).
    pub fn batch_stats(&self) -> &BatchStats {
        self.net.batch_stats()
    }

    /// Logits `[N, num_classes]` for images `[N, 3, H, W]` (`f32`, on [`device`](Self::device)).
    /// `train = true` normalizes with batch statistics and updates the running statistics;
    /// `train = false` uses the running statistics and changes nothing.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.net.forward_t(x, train)
    }

    /// Inference: eval-mode logits `[N, num_classes]` without recording the autograd graph
    /// (PyTorch's `model.eval()` under `torch.no_grad()`), so each activation is freed as soon
    /// as the next layer has read it. The result is detached; use
    /// [`forward_t`](Self::forward_t) when gradients are needed.
    ///
    /// On the CPU a batch of more than [`PREDICT_SUB_BATCH`] images runs through the whole
    /// network that many images at a time (eval mode treats every image on its own, so the
    /// logits are those of one pass over the batch: bit for bit for full sub-batches, up to
    /// the last bits for a shorter last one, whose final matmul candle runs with other
    /// kernels): each layer's activations
    /// then stay in cache for the next one instead of going out to memory (ResNet-20's
    /// first-stage activations are 32 MiB at batch 512, 4 MiB at 64), and buffers that small
    /// are reused by the allocator rather than mapped afresh (page faults) for every layer.
    /// The sub-batches run in parallel on rayon's pool (each op still splits its own work
    /// when a thread is idle), so the threads rarely wait for each other between layers; the
    /// ops' results do not depend on the number of threads, so neither do the logits.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let run = |x: &Tensor| crate::ops::no_grad(|| self.net.forward_t(x, false));
        let n = x.dims().first().copied().unwrap_or(0);
        if !x.device().is_cpu() || n <= PREDICT_SUB_BATCH {
            return Ok(run(x)?.detach());
        }
        let parts = (0..n)
            .into_par_iter()
            .step_by(PREDICT_SUB_BATCH)
            .map(|start| run(&x.narrow(0, start, PREDICT_SUB_BATCH.min(n - start))?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?.detach())
    }

    /// Trainable parameters `(name, variable)`, sorted by name. The variables share storage
    /// with the model: `Var::set` on them updates it.
    pub fn parameters(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }

    /// BatchNorm running statistics `(name, variable)`, sorted by name. Not trainable.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.buffers.clone()
    }

    /// A snapshot (deep copy) of every tensor, parameters and buffers, by PyTorch name.
    pub fn state_dict(&self) -> Result<BTreeMap<String, Tensor>> {
        self.params
            .iter()
            .chain(&self.buffers)
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?)))
            .collect()
    }

    /// Overwrites every tensor from `tensors`, strictly like
    /// [`from_tensors`](Self::from_tensors). All tensors are checked and converted before
    /// any is written, so on error the model is unchanged.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let converted = Self::checked(&self.cfg, &self.spec, tensors, &self.device)?;
        for (name, var) in self.params.iter().chain(&self.buffers) {
            var.set(&converted[name])?;
        }
        Ok(())
    }

    /// Writes the whole state to a safetensors file (PyTorch names, `f32`, the config in the
    /// metadata), via a temporary file in the same directory renamed into place.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_state(&self.cfg, &self.state_dict()?, path)
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Number of running-statistic scalars.
    pub fn num_buffer_elements(&self) -> usize {
        self.buffers.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// A layer-by-layer table (Keras `model.summary()` style) for 32x32 inputs.
    pub fn summary(&self) -> crate::Summary {
        crate::Summary::new(&self.cfg, &self.spec)
    }
}

impl ModuleT for ResNetModel {
    /// Same as [`ResNetModel::forward_t`].
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.net.forward_t(x, train)
    }
}
