//! The public side of the fused residual block: [`basic_block_train`], its parameters and
//! outputs, and the argument checks and packing in front of the kernel (`block/kernel.rs`).

mod kernel;

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{bail, Result, Tensor};

use super::reference::basic_block_train_slow;
use super::storage::{arg, fast_path};
#[cfg(doc)]
use super::{add_relu, batch_norm_train, conv2d, subsample_pad};

/// Detached per-channel batch statistics of one training-mode BatchNorm.
#[derive(Debug, Clone)]
pub struct BlockBnStats {
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
    pub bn1: BlockBnStats,
    /// Statistics of `bn2`.
    pub bn2: BlockBnStats,
    /// Statistics of the projection shortcut's BatchNorm, if it has one.
    pub shortcut_bn: Option<BlockBnStats>,
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
        BlockShortcut::Identity => kernel::Kind::Identity,
        BlockShortcut::SubsamplePad => kernel::Kind::SubsamplePad,
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
            kernel::Kind::Projection
        }
    };
    let saved = Arc::new(Mutex::new(None));
    let op = kernel::BlockTrain {
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
    let stats = |i: usize| -> Result<Option<BlockBnStats>> {
        s.bn.get(i)
            .map(|b| {
                Ok(BlockBnStats {
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
