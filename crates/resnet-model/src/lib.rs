//! The CIFAR-10 ResNets of He et al. (2016, "Deep Residual Learning for Image Recognition",
//! section 4.2) in [candle](https://github.com/huggingface/candle), weight-compatible with
//! PyTorch.
//!
//! # The network
//!
//! A 3x3 convolution with 16 filters, BatchNorm and ReLU; three stages of `n` basic blocks
//! with 16, 32 and 64 channels on 32x32, 16x16 and 8x8 maps (the first block of stages 2 and
//! 3 has stride 2); global average pooling; a linear layer. `depth = 6n + 2` (20, 32, 44, 56,
//! 110, ...), configured by [`ResNetConfig`], with the paper's three [`Shortcut`] options.
//! Convolutions have no bias; all conv/BatchNorm/residual math goes through the kernels in
//! [`ops`].
//!
//! # Pieces
//!
//! - [`ResNetConfig`], [`Shortcut`]: serde-(de)serializable configuration.
//! - [`ResNet`]: the module, built candle-nn style from any `VarBuilder` with PyTorch's
//!   `state_dict` names, implementing `candle_nn::ModuleT`; layers [`Conv2d`],
//!   [`BatchNorm`], [`BasicBlock`], [`ShortcutLayer`].
//! - [`BatchStats`]: how training-mode BatchNorm computes batch statistics for data-parallel
//!   training: per process (default), per group of the batch, or synchronized across
//!   processes through a [`StatsReducer`].
//! - [`ResNetModel`]: the network plus its tensors: seeded He initialization ([`init`]),
//!   trainable [`parameters`](ResNetModel::parameters) kept apart from BatchNorm
//!   [`buffers`](ResNetModel::buffers), strict `state_dict` loading ([`StateDictError`]),
//!   safetensors [`save`](ResNetModel::save)/[`load`](ResNetModel::load), and a
//!   Keras-style [`summary`](ResNetModel::summary) (output shapes, parameters and
//!   mult-adds per layer).
//! - [`ResNetModel::predict`]: inference without the autograd graph (PyTorch's `no_grad`),
//!   on the CPU in sub-batches of [`PREDICT_SUB_BATCH`] images that stay in cache; eval mode
//!   runs each convolution with its BatchNorm, ReLU and residual add as one op
//!   ([`ops::conv2d_batch_norm_eval`]).
//! - [`default_device`]: CUDA with the `cuda` feature when a GPU is there, else the CPU.
//!
//! Cargo features: `avx512` (default: the `gemm` crate may pick its AVX-512 micro-kernels at
//! run time; without it the CPU path uses its AVX2 ones everywhere, see
//! [`ops::gemm_kernels`]), `cuda`, `cudnn`.
//!
//! # Numerics
//!
//! BatchNorm follows PyTorch (eps `1e-5`, momentum `0.1`, running variance from the unbiased
//! batch variance). The tests reproduce PyTorch golden fixtures (logits, loss, every gradient
//! and the state after SGD steps) to `1e-4` of each tensor's largest magnitude.
//!
//! # PyTorch interchange
//!
//! Tensor names are exactly PyTorch's `state_dict` names (`conv1.weight`,
//! `layer2.0.bn1.running_var`, `layer3.0.shortcut.0.weight`, `linear.bias`, ...), so
//! `safetensors.torch.save_file(model.state_dict(), "w.safetensors")` loads here as is, and
//! a file from [`ResNetModel::save`] loads in PyTorch with
//! `model.load_state_dict(safetensors.torch.load_file("w.safetensors"))`. PyTorch's
//! `*.num_batches_tracked` counters are ignored on load and not written (PyTorch fills them
//! in when missing; they only matter for `momentum=None`).
//!
//! # Example
//!
//! Build a model, save it, load the weights back and classify a batch:
//!
//! ```
//! use candle_core::{DType, Device, Tensor, D};
//! use resnet_model::{ResNetConfig, ResNetModel, Shortcut};
//!
//! # fn main() -> candle_core::Result<()> {
//! let device = resnet_model::default_device()?;
//! let cfg = ResNetConfig::resnet20().with_shortcut(Shortcut::IdentityPad);
//! let model = ResNetModel::new(&cfg, &device, 42)?;
//! assert_eq!(model.num_parameters(), 269_722);
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("resnet20.safetensors");
//! model.save(&path)?;
//! let model = ResNetModel::load(&cfg, &path, &device)?;
//!
//! // A batch of 4 normalized 32x32 RGB images, [N, 3, 32, 32].
//! let images = Tensor::zeros((4, 3, 32, 32), DType::F32, &device)?;
//! let logits = model.forward_t(&images, false)?; // eval mode: running statistics
//! let probabilities = candle_nn::ops::softmax(&logits, D::Minus1)?;
//! let classes = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
//! assert_eq!(probabilities.dims(), [4, 10]);
//! assert!(classes.iter().all(|&c| c < 10));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod batch_norm;
pub mod batch_stats;
pub mod block;
pub mod config;
pub mod conv;
pub mod device;
pub mod init;
pub mod io;
pub mod model;
pub mod ops;
pub mod resnet;
pub mod shortcut;
pub mod spec;
pub mod state;
mod store;
pub mod summary;

pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use batch_stats::{BatchStats, SingleProcess, StatsReducer};
pub use block::BasicBlock;
pub use config::ResNetConfig;
pub use conv::{Conv2d, Conv2dConfig};
pub use device::default_device;
pub use model::{ResNetModel, PREDICT_SUB_BATCH};
pub use resnet::ResNet;
pub use shortcut::{Shortcut, ShortcutLayer};
pub use spec::{TensorKind, TensorSpec};
pub use state::{ShapeMismatch, StateDictError};
pub use summary::{Summary, SummaryRow};
