//! Hot kernels of the network: conv2d and BatchNorm (forward and backward).
//!
//! Every fast op is a candle custom op with its own backward, so `loss.backward()` works
//! through it, and has a `_slow` twin built from plain candle ops; the tests compare the two
//! and both against the PyTorch fixtures. The fast kernels run for f32 tensors on the CPU;
//! on other devices or dtypes every op falls back to its `_slow` twin, so a CUDA build still
//! works.
//!
//! CPU design:
//! - conv2d: im2col / col2im on chunks of images plus one single-threaded GEMM (`gemm`
//!   crate) per chunk, rayon across chunks; stride-1 "same" convolutions on planes of at
//!   least 256 pixels read `K` horizontally shifted copies of each image instead of the
//!   `K * K` of im2col (`conv_same.rs`). The backward of a stride-1 convolution computes the
//!   input gradient as a convolution of `dy` and shares that convolution's copies of `dy`
//!   with the weight gradient. Chunk sizes depend only on the shapes and weight-gradient
//!   partials are summed in chunk order, so results are bit-identical for any number of
//!   threads.
//! - BatchNorm: two passes forward (statistics, normalise + ReLU) and two backward
//!   (reductions, input gradient), per-channel sums in a fixed order.
//! - `add_relu` and `subsample_pad`: single-pass kernels.
//! - [`basic_block_train`]: a whole residual block in training mode as one autograd node
//!   (the same kernels in the same order as the composed ops, so the same bits). candle's
//!   backward allocates a zero tensor and adds into it for every op argument, on the calling
//!   thread while the workers wait; with one activation-sized argument per block instead of
//!   six, most of that serial work disappears.
//! - [`no_grad`]: inference without recording the graph, so activations are freed as soon as
//!   they have been read.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use resnet_model::ops;
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &dev)?;
//! let w = Var::ones((4, 3, 3, 3), candle_core::DType::F32, &dev)?;
//! let gamma = Var::ones(4, candle_core::DType::F32, &dev)?;
//! let beta = Var::zeros(4, candle_core::DType::F32, &dev)?;
//! let y = ops::conv2d(&x, &w, 1, 1)?;
//! let bn = ops::batch_norm_train(&y, &gamma, &beta, 1e-5, true)?;
//! let grads = bn.y.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[4, 3, 3, 3]);
//! # Ok(())
//! # }
//! ```

mod alloc;
mod batch_norm;
mod block;
mod channel;
mod conv;
mod conv_backward;
mod conv_same;
mod elementwise;
mod gemm;
mod im2col;
mod reference;
mod storage;

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{bail, Result, Tensor};

pub use alloc::{tune_allocator, tune_runtime};
pub use reference::{
    add_relu_slow, basic_block_train_slow, batch_norm_eval_slow, batch_norm_train_slow,
    conv2d_slow, subsample_pad_slow,
};
use storage::{arg, fast_path};

/// Output of a training-mode BatchNorm: the normalized (and optionally ReLU'd) activations,
/// plus the per-channel batch statistics needed to update the running statistics.
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// `relu?(gamma * (x - mean) / sqrt(var + eps) + beta)`, differentiable w.r.t. x, gamma, beta.
    pub y: Tensor,
    /// Per-channel batch mean, shape `[C]`, detached from the graph.
    pub mean: Tensor,
    /// Per-channel *biased* batch variance (divided by N*H*W), shape `[C]`, detached.
    pub var: Tensor,
}

/// Runs `f` with every op of this module (forward and backward) replaced by its `_slow`
/// reference twin, on the current thread only; nests and restores the previous mode on exit.
///
/// Useful to check a whole model against golden values with the reference numerics: the
/// fast kernels sum in a different order, which moves f32 results by ~1e-7 relative, and a
/// pre-activation that lies closer than that to a ReLU kink can flip and change upstream
/// gradients visibly (see `bench/README.md`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use resnet_model::ops;
/// # fn main() -> candle_core::Result<()> {
/// let a = Tensor::new(&[-1f32, 2.0], &Device::Cpu)?;
/// let z = ops::with_reference_ops(|| ops::add_relu(&a, &a))?;
/// assert_eq!(z.to_vec1::<f32>()?, [0.0, 4.0]);
/// # Ok(())
/// # }
/// ```
pub fn with_reference_ops<R>(f: impl FnOnce() -> R) -> R {
    storage::with_reference(f)
}

/// Whether the current thread is inside [`with_reference_ops`] (this module's ops run their
/// `_slow` twins).
pub fn reference_ops_active() -> bool {
    storage::reference_active()
}

/// Runs `f` without recording the autograd graph through this module's ops on the current
/// thread, like PyTorch's `torch.no_grad()`: their inputs are detached, so their outputs
/// track nothing and every intermediate activation is freed as soon as the next op has read
/// it. Use it for inference; with parameters that are `Var`s, an eval-mode forward otherwise
/// keeps every activation alive until the output is dropped. Nests; restores the previous
/// mode on exit.
///
/// ```
/// use candle_core::{DType, Device, Tensor, Var};
/// use resnet_model::ops;
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::ones((1, 2, 4, 4), DType::F32, &Device::Cpu)?;
/// let w = Var::ones((2, 2, 3, 3), DType::F32, &Device::Cpu)?;
/// assert!(ops::conv2d(&x, &w, 1, 1)?.track_op());
/// assert!(!ops::no_grad(|| ops::conv2d(&x, &w, 1, 1))?.track_op());
/// # Ok(())
/// # }
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    storage::with_no_grad(f)
}

/// 2-D convolution without bias, square kernel, `padding` on every side, dilation 1, groups 1.
/// `x`: `[N, Cin, H, W]`, `w`: `[Cout, Cin, K, K]`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (x, w) = (&arg(x), &arg(w));
    if !fast_path(&[x, w]) {
        return conv2d_slow(x, w, stride, padding);
    }
    x.contiguous()?.apply_op2(
        &w.contiguous()?,
        conv::Conv2d {
            stride,
            pad: padding,
        },
    )
}

/// Training-mode BatchNorm2d over `[N, C, H, W]` with batch statistics, optionally fused with
/// a ReLU. `weight`/`bias` are `[C]`.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOutput> {
    let (x, weight, bias) = (&arg(x), &arg(weight), &arg(bias));
    if !fast_path(&[x, weight, bias]) {
        return batch_norm_train_slow(x, weight, bias, eps, relu);
    }
    let saved = Arc::new(Mutex::new(None));
    let op = batch_norm::BatchNormTrain {
        eps,
        relu,
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let guard = saved.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(s) = guard.as_ref() else {
        bail!("batch_norm_train: the forward kernel did not record its statistics")
    };
    let c = s.mean.len();
    Ok(BatchNormOutput {
        y,
        mean: Tensor::from_vec(s.mean.clone(), c, x.device())?,
        var: Tensor::from_vec(s.var.clone(), c, x.device())?,
    })
}

/// Eval-mode BatchNorm2d with running statistics, optionally fused with a ReLU.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (x, weight, bias) = (&arg(x), &arg(weight), &arg(bias));
    let (running_mean, running_var) = (&arg(running_mean), &arg(running_var));
    if !fast_path(&[x, weight, bias, running_mean, running_var]) {
        return batch_norm_eval_slow(x, weight, bias, running_mean, running_var, eps, relu);
    }
    // Fold the statistics into one per-channel affine map (tiny [C] ops, differentiable in
    // weight and bias), then apply it in a single pass.
    let scale = weight.mul(&(running_var + eps)?.sqrt()?.recip()?)?;
    let shift = bias.sub(&running_mean.mul(&scale)?)?;
    x.contiguous()?
        .apply_op3(&scale, &shift, batch_norm::ChannelAffine { relu })
}

/// `relu(a + b)`, the end of a residual block.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = (&arg(a), &arg(b));
    if !fast_path(&[a, b]) {
        return add_relu_slow(a, b);
    }
    a.contiguous()?
        .apply_op2(&b.contiguous()?, elementwise::AddRelu)
}

/// Option-A shortcut: `x[:, :, ::2, ::2]` zero-padded on the channel dimension with
/// `(out_channels - C) / 2` channels on each side (`out_channels - C` must be even).
pub fn subsample_pad(x: &Tensor, out_channels: usize) -> Result<Tensor> {
    let x = &arg(x);
    if !fast_path(&[x]) {
        return subsample_pad_slow(x, out_channels);
    }
    x.contiguous()?
        .apply_op1(elementwise::SubsamplePad { out_channels })
}

/// Detached per-channel batch statistics of one training-mode BatchNorm.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Batch mean, shape `[C]`.
    pub mean: Tensor,
    /// *Biased* batch variance (divided by N*H*W), shape `[C]`.
    pub var: Tensor,
}

/// The shortcut branch of a [`basic_block_train`] call.
#[derive(Debug, Clone, Copy)]
pub enum BlockShortcut<'a> {
    /// `x` itself (stride 1, same channels).
    Identity,
    /// Option A: [`subsample_pad`] to the block's output channels (stride 2).
    SubsamplePad,
    /// Options B/C: a 1x1 convolution with the block's stride, then a BatchNorm (no ReLU).
    Projection {
        /// `[Cout, Cin, 1, 1]`.
        conv: &'a Tensor,
        /// BatchNorm weight `[Cout]`.
        bn_weight: &'a Tensor,
        /// BatchNorm bias `[Cout]`.
        bn_bias: &'a Tensor,
    },
}

/// Parameters of one basic block for [`basic_block_train`].
#[derive(Debug, Clone, Copy)]
pub struct BasicBlockParams<'a> {
    /// `[Cout, Cin, 3, 3]`, applied with `stride` and padding 1.
    pub conv1: &'a Tensor,
    /// First BatchNorm's weight `[Cout]` (followed by a ReLU).
    pub bn1_weight: &'a Tensor,
    /// First BatchNorm's bias `[Cout]`.
    pub bn1_bias: &'a Tensor,
    /// `[Cout, Cout, 3, 3]`, stride 1, padding 1.
    pub conv2: &'a Tensor,
    /// Second BatchNorm's weight `[Cout]`.
    pub bn2_weight: &'a Tensor,
    /// Second BatchNorm's bias `[Cout]`.
    pub bn2_bias: &'a Tensor,
    /// The shortcut branch.
    pub shortcut: BlockShortcut<'a>,
    /// Stride of `conv1` and of the shortcut (1 or 2).
    pub stride: usize,
    /// BatchNorm epsilon (all of the block's BatchNorms).
    pub eps: f64,
}

impl<'a> BasicBlockParams<'a> {
    /// conv1, bn1 weight/bias, conv2, bn2 weight/bias, then the projection's conv and
    /// BatchNorm weight/bias (repeating conv1's tensors when there is no projection).
    fn tensors(&self) -> [Tensor; 9] {
        let (c, w, b) = match self.shortcut {
            BlockShortcut::Projection {
                conv,
                bn_weight,
                bn_bias,
            } => (conv, bn_weight, bn_bias),
            _ => (self.conv1, self.bn1_weight, self.bn1_bias),
        };
        [
            self.conv1,
            self.bn1_weight,
            self.bn1_bias,
            self.conv2,
            self.bn2_weight,
            self.bn2_bias,
            c,
            w,
            b,
        ]
        .map(Tensor::clone)
    }

    /// The same block over other tensors, in the order of [`Self::tensors`].
    fn with_tensors<'b>(&self, t: &'b [Tensor; 9]) -> BasicBlockParams<'b> {
        let shortcut = match self.shortcut {
            BlockShortcut::Identity => BlockShortcut::Identity,
            BlockShortcut::SubsamplePad => BlockShortcut::SubsamplePad,
            BlockShortcut::Projection { .. } => BlockShortcut::Projection {
                conv: &t[6],
                bn_weight: &t[7],
                bn_bias: &t[8],
            },
        };
        BasicBlockParams {
            conv1: &t[0],
            bn1_weight: &t[1],
            bn1_bias: &t[2],
            conv2: &t[3],
            bn2_weight: &t[4],
            bn2_bias: &t[5],
            shortcut,
            stride: self.stride,
            eps: self.eps,
        }
    }
}

/// Output of [`basic_block_train`]: the block's output and every BatchNorm's batch statistics
/// (for the running-statistics update).
#[derive(Debug, Clone)]
pub struct BasicBlockOutput {
    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
    pub y: Tensor,
    /// Statistics of `bn1`.
    pub bn1: BatchStats,
    /// Statistics of `bn2`.
    pub bn2: BatchStats,
    /// Statistics of the projection shortcut's BatchNorm, if it has one.
    pub shortcut_bn: Option<BatchStats>,
}

fn expect_dims(what: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        bail!(
            "basic_block_train: `{what}` has shape {:?}, expected {dims:?}",
            t.dims()
        )
    }
    Ok(())
}

/// A whole basic residual block in training mode (batch statistics) as one op:
/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, differentiable in `x` and every
/// parameter.
///
/// Same results as composing [`conv2d`], [`batch_norm_train`], [`subsample_pad`] and
/// [`add_relu`] (same kernels, same order, bit for bit), but candle's autograd sees one node
/// with one activation-sized argument instead of six, which removes most of its serial
/// gradient bookkeeping from a training step. Off the fast path it is
/// [`basic_block_train_slow`].
pub fn basic_block_train(x: &Tensor, p: &BasicBlockParams<'_>) -> Result<BasicBlockOutput> {
    // inside `no_grad`: the same call on detached copies
    let (x, own) = (&arg(x), p.tensors().map(|t| arg(&t)));
    let detached = p.with_tensors(&own);
    let p = &detached;
    let mut ts = vec![
        x,
        p.conv1,
        p.bn1_weight,
        p.bn1_bias,
        p.conv2,
        p.bn2_weight,
        p.bn2_bias,
    ];
    if let BlockShortcut::Projection {
        conv,
        bn_weight,
        bn_bias,
    } = p.shortcut
    {
        ts.extend([conv, bn_weight, bn_bias]);
    }
    if !fast_path(&ts) {
        return basic_block_train_slow(x, p);
    }
    let (_, cin, _, _) = x.dims4()?;
    let cout = p.conv1.dim(0)?;
    expect_dims("conv1", p.conv1, &[cout, cin, 3, 3])?;
    expect_dims("conv2", p.conv2, &[cout, cout, 3, 3])?;
    for (what, t) in [
        ("bn1_weight", p.bn1_weight),
        ("bn1_bias", p.bn1_bias),
        ("bn2_weight", p.bn2_weight),
        ("bn2_bias", p.bn2_bias),
    ] {
        expect_dims(what, t, &[cout])?;
    }
    let mut ws = vec![p.conv1.flatten_all()?, p.conv2.flatten_all()?];
    let mut ps = vec![
        p.bn1_weight.clone(),
        p.bn1_bias.clone(),
        p.bn2_weight.clone(),
        p.bn2_bias.clone(),
    ];
    let kind = match p.shortcut {
        BlockShortcut::Identity => block::Kind::Identity,
        BlockShortcut::SubsamplePad => block::Kind::SubsamplePad,
        BlockShortcut::Projection {
            conv,
            bn_weight,
            bn_bias,
        } => {
            expect_dims("shortcut conv", conv, &[cout, cin, 1, 1])?;
            expect_dims("shortcut bn_weight", bn_weight, &[cout])?;
            expect_dims("shortcut bn_bias", bn_bias, &[cout])?;
            ws.push(conv.flatten_all()?);
            ps.extend([bn_weight.clone(), bn_bias.clone()]);
            block::Kind::Projection
        }
    };
    let saved = Arc::new(Mutex::new(None));
    let op = block::BlockTrain {
        cout,
        stride: p.stride,
        kind,
        eps: p.eps,
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&Tensor::cat(&ws, 0)?, &Tensor::cat(&ps, 0)?, op)?;
    let guard = saved.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(s) = guard.as_ref() else {
        bail!("basic_block_train: the forward kernel did not record its statistics")
    };
    let stats = |i: usize| -> Result<Option<BatchStats>> {
        s.bn.get(i)
            .map(|b| {
                Ok(BatchStats {
                    mean: Tensor::from_slice(&b.mean, cout, x.device())?,
                    var: Tensor::from_slice(&b.var, cout, x.device())?,
                })
            })
            .transpose()
    };
    let (Some(bn1), Some(bn2)) = (stats(0)?, stats(1)?) else {
        bail!("basic_block_train: the forward kernel recorded too few statistics")
    };
    Ok(BasicBlockOutput {
        y,
        bn1,
        bn2,
        shortcut_bn: stats(2)?,
    })
}
