//! The public side of the fused residual block: [`basic_block_train`], its parameters and
//! outputs, and the argument checks and packing in front of the kernel (`block/kernel.rs`).

mod images;
mod kernel;

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{bail, Result, Tensor};

use super::batch_norm::Saved;
use super::reference::{basic_block_train_slow, batch_norm_train_slow, conv2d_slow};
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

/// Batch statistics of one block of a [`basic_blocks_train`] chain.
#[derive(Debug, Clone)]
pub struct BlockStats {
    /// Statistics of `bn1`.
    pub bn1: BlockBnStats,
    /// Statistics of `bn2`.
    pub bn2: BlockBnStats,
    /// Statistics of the projection shortcut's BatchNorm, if it has one.
    pub shortcut_bn: Option<BlockBnStats>,
    /// Values per channel the statistics were taken over (`N * H_out * W_out`).
    pub count: usize,
}

/// The stem in front of [`stem_and_blocks_train`]'s blocks: a 3x3 convolution (stride 1,
/// padding 1, no bias), then a training-mode BatchNorm with a ReLU.
#[derive(Debug, Clone, Copy)]
pub struct StemParams<'a> {
    /// Convolution weight `[C_out, C_in, 3, 3]`.
    pub conv: &'a Tensor,
    /// BatchNorm γ `[C_out]`.
    pub bn_weight: &'a Tensor,
    /// BatchNorm β `[C_out]`.
    pub bn_bias: &'a Tensor,
    /// BatchNorm epsilon.
    pub eps: f64,
}

/// Output of [`basic_blocks_train`] and [`stem_and_blocks_train`].
#[derive(Debug, Clone)]
pub struct BasicBlocksOutput {
    /// The last block's output.
    pub y: Tensor,
    /// The stem BatchNorm's statistics (over `N * H * W` values per channel of the input's
    /// planes), if there is a stem.
    pub stem: Option<BlockBnStats>,
    /// Every block's batch statistics, in order.
    pub blocks: Vec<BlockStats>,
}

fn expect_dims(who: &str, what: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        bail!(
            "{who}: `{what}` has shape {:?}, expected {dims:?}",
            t.dims()
        )
    }
    Ok(())
}

/// Checks one block's parameters against its input channels `cin` and packs them: the
/// kernel's block description, the flattened conv weights and the BatchNorm parameters.
fn pack(
    who: &str,
    cin: usize,
    p: &BasicBlockParams<'_>,
) -> Result<(kernel::BlockSpec, Vec<Tensor>, Vec<Tensor>)> {
    let cout = p.conv1.dim(0)?;
    expect_dims(who, "conv1", p.conv1, &[cout, cin, 3, 3])?;
    expect_dims(who, "conv2", p.conv2, &[cout, cout, 3, 3])?;
    for (what, t) in [
        ("bn1_weight", p.bn1_weight),
        ("bn1_bias", p.bn1_bias),
        ("bn2_weight", p.bn2_weight),
        ("bn2_bias", p.bn2_bias),
    ] {
        expect_dims(who, what, t, &[cout])?;
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
            expect_dims(who, "shortcut conv", conv, &[cout, cin, 1, 1])?;
            expect_dims(who, "shortcut bn_weight", bn_weight, &[cout])?;
            expect_dims(who, "shortcut bn_bias", bn_bias, &[cout])?;
            ws.push(conv.flatten_all()?);
            ps.extend([bn_weight.clone(), bn_bias.clone()]);
            kernel::Kind::Projection
        }
    };
    let spec = kernel::BlockSpec {
        cout,
        stride: p.stride,
        kind,
        eps: p.eps,
    };
    Ok((spec, ws, ps))
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
    let o = chain("basic_block_train", x, None, std::slice::from_ref(p))?;
    let Some(s) = o.blocks.into_iter().next() else {
        bail!("basic_block_train: the forward kernel recorded no statistics")
    };
    Ok(BasicBlockOutput {
        y: o.y,
        bn1: s.bn1,
        bn2: s.bn2,
        shortcut_bn: s.shortcut_bn,
    })
}

/// A chain of basic residual blocks in training mode as one op, each block's output the next
/// one's input (a whole ResNet stage, or all of them): the same numbers as
/// [`basic_block_train`] block after block, differentiable in `x` and every parameter.
///
/// Between two [`basic_block_train`] nodes candle's autograd allocates a zero tensor the size
/// of the activations and adds the later block's input gradient into it, on the calling
/// thread while the worker threads wait; inside one chain that gradient goes to the block
/// before directly. The only difference to block-by-block calls: where candle's `0 + g`
/// would have turned a `-0.0` gradient into `0.0`, it stays `-0.0`. Off the fast path it is
/// [`basic_block_train_slow`] block after block. An empty `blocks` is an error.
pub fn basic_blocks_train(
    x: &Tensor,
    blocks: &[BasicBlockParams<'_>],
) -> Result<BasicBlocksOutput> {
    chain("basic_blocks_train", x, None, blocks)
}

/// [`basic_blocks_train`] behind a stem, `relu(bn(conv3x3(x)))`, in the same op: a whole
/// ResNet trunk in training mode as one autograd node. The stem's output gradient goes to
/// it directly, and when `x` needs no gradient (the images) none is computed. The same
/// numbers as [`conv2d`] + [`batch_norm_train`] in front of [`basic_blocks_train`] (up to
/// the sign of zero gradients); off the fast path, [`conv2d_slow`] +
/// [`batch_norm_train_slow`] in front of [`basic_block_train_slow`] block after block.
pub fn stem_and_blocks_train(
    x: &Tensor,
    stem: &StemParams<'_>,
    blocks: &[BasicBlockParams<'_>],
) -> Result<BasicBlocksOutput> {
    chain("stem_and_blocks_train", x, Some(stem), blocks)
}

fn chain(
    who: &str,
    x: &Tensor,
    stem: Option<&StemParams<'_>>,
    blocks: &[BasicBlockParams<'_>],
) -> Result<BasicBlocksOutput> {
    if blocks.is_empty() {
        bail!("{who}: no blocks to run")
    }
    // inside `no_grad`: the same call on detached copies
    let x = &arg(x);
    let stem_own = stem.map(|s| [s.conv, s.bn_weight, s.bn_bias].map(arg));
    let stem = stem
        .zip(stem_own.as_ref())
        .map(|(s, [c, w, b])| StemParams {
            conv: c,
            bn_weight: w,
            bn_bias: b,
            eps: s.eps,
        });
    let own: Vec<[Tensor; 9]> = blocks
        .iter()
        .map(|p| p.tensors().map(|t| arg(&t)))
        .collect();
    let ps: Vec<BasicBlockParams<'_>> = blocks
        .iter()
        .zip(&own)
        .map(|(p, t)| p.with_tensors(t))
        .collect();
    // every tensor of the call (a block without a projection lists conv1 / bn1 twice)
    let ts: Vec<&Tensor> = std::iter::once(x)
        .chain(stem_own.iter().flatten())
        .chain(own.iter().flatten())
        .collect();
    if !fast_path(&ts) {
        return chain_slow(x, stem.as_ref(), &ps);
    }
    let (n, mut cin, mut h, mut w) = x.dims4()?;
    let (mut specs, mut ws, mut bs) = (vec![], vec![], vec![]);
    let stem_spec = match &stem {
        Some(s) => {
            let cout = s.conv.dim(0)?;
            expect_dims(who, "stem conv", s.conv, &[cout, cin, 3, 3])?;
            expect_dims(who, "stem bn_weight", s.bn_weight, &[cout])?;
            expect_dims(who, "stem bn_bias", s.bn_bias, &[cout])?;
            ws.push(s.conv.flatten_all()?);
            bs.extend([s.bn_weight.clone(), s.bn_bias.clone()]);
            cin = cout;
            Some(kernel::StemSpec { cout, eps: s.eps })
        }
        None => None,
    };
    for (i, p) in ps.iter().enumerate() {
        let who = if ps.len() == 1 && stem.is_none() {
            who.to_string()
        } else {
            format!("{who}: block {i}")
        };
        let (spec, w, b) = pack(&who, cin, p)?;
        cin = spec.cout;
        specs.push(spec);
        ws.extend(w);
        bs.extend(b);
    }
    let saved = Arc::new(Mutex::new(None));
    let op = kernel::BlockTrain {
        stem: stem_spec,
        blocks: specs.clone(),
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&Tensor::cat(&ws, 0)?, &Tensor::cat(&bs, 0)?, op)?;
    let guard = saved.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(saved) = guard.as_ref() else {
        bail!("{who}: the forward kernel did not record its statistics")
    };
    let bn_stats = |b: &Saved, c: usize| -> Result<BlockBnStats> {
        Ok(BlockBnStats {
            mean: Tensor::from_slice(&b.mean, c, x.device())?,
            var: Tensor::from_slice(&b.var, c, x.device())?,
        })
    };
    let stem_stats = match (&saved.stem, stem_spec) {
        (Some(s), Some(spec)) => Some(bn_stats(&s.bn, spec.cout)?),
        (None, None) => None,
        _ => bail!("{who}: the forward kernel did not record the stem's statistics"),
    };
    if saved.blocks.len() != specs.len() {
        bail!(
            "{who}: the forward kernel recorded {} blocks, expected {}",
            saved.blocks.len(),
            specs.len()
        )
    }
    let mut stats = Vec::with_capacity(specs.len());
    for (spec, s) in specs.iter().zip(&saved.blocks) {
        // a 3x3 convolution with padding 1
        (h, w) = ((h - 1) / spec.stride + 1, (w - 1) / spec.stride + 1);
        let st = |i: usize| s.bn.get(i).map(|b| bn_stats(b, spec.cout)).transpose();
        let (Some(bn1), Some(bn2)) = (st(0)?, st(1)?) else {
            bail!("{who}: the forward kernel recorded too few statistics")
        };
        stats.push(BlockStats {
            bn1,
            bn2,
            shortcut_bn: st(2)?,
            count: n * h * w,
        });
    }
    Ok(BasicBlocksOutput {
        y,
        stem: stem_stats,
        blocks: stats,
    })
}

/// The reference twin of [`chain`]: the `_slow` ops layer by layer.
fn chain_slow(
    x: &Tensor,
    stem: Option<&StemParams<'_>>,
    blocks: &[BasicBlockParams<'_>],
) -> Result<BasicBlocksOutput> {
    let (mut y, mut stem_stats) = (x.clone(), None);
    if let Some(s) = stem {
        let conv = conv2d_slow(x, s.conv, 1, 1)?;
        let o = batch_norm_train_slow(&conv, s.bn_weight, s.bn_bias, s.eps, true)?;
        y = o.y;
        stem_stats = Some(BlockBnStats {
            mean: o.mean,
            var: o.var,
        });
    }
    let mut stats = Vec::with_capacity(blocks.len());
    for p in blocks {
        let o = basic_block_train_slow(&y, p)?;
        let (n, _, ho, wo) = o.y.dims4()?;
        y = o.y;
        stats.push(BlockStats {
            bn1: o.bn1,
            bn2: o.bn2,
            shortcut_bn: o.shortcut_bn,
            count: n * ho * wo,
        });
    }
    Ok(BasicBlocksOutput {
        y,
        stem: stem_stats,
        blocks: stats,
    })
}
