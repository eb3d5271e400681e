//! The basic residual block: conv3x3 → BN → ReLU → conv3x3 → BN, plus shortcut, then ReLU.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::batch_norm::{batch_norm, BatchNorm, BatchNormConfig};
use crate::batch_stats::BatchStats;
use crate::conv::{conv2d, Conv2d, Conv2dConfig};
use crate::ops;
use crate::shortcut::{Shortcut, ShortcutLayer};

/// A basic block (He et al. 2016, figure 2 left) with PyTorch names `conv1`, `bn1`, `conv2`,
/// `bn2` and, for projection shortcuts, `shortcut.0` / `shortcut.1`.
///
/// In training mode the whole block runs as one op, [`ops::basic_block_train`] (same results
/// as the layers one by one, with far less autograd bookkeeping), and then updates the
/// BatchNorms' running statistics; in eval mode each convolution runs with its BatchNorm
/// (and the ReLU, or the shortcut's add and the ReLU) as one op,
/// [`ops::conv2d_batch_norm_eval`]. With a
/// [`BatchStats`] mode other than [`BatchStats::Local`] (see
/// [`set_batch_stats`](Self::set_batch_stats)) training mode runs the layers one by one
/// too.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: ShortcutLayer,
}

impl BasicBlock {
    /// Builds a block from `in_channels` to `out_channels`; `stride` applies to `conv1` and
    /// the shortcut.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        shortcut: Shortcut,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let conv1 = conv2d(
            in_channels,
            out_channels,
            3,
            Conv2dConfig { stride, padding: 1 },
            vb.pp("conv1"),
        )?;
        let bn1 = batch_norm(
            out_channels,
            BatchNormConfig {
                relu: true,
                ..Default::default()
            },
            vb.pp("bn1"),
        )?;
        let conv2 = conv2d(
            out_channels,
            out_channels,
            3,
            Conv2dConfig {
                stride: 1,
                padding: 1,
            },
            vb.pp("conv2"),
        )?;
        let bn2 = batch_norm(out_channels, BatchNormConfig::default(), vb.pp("bn2"))?;
        let shortcut = ShortcutLayer::new(shortcut, in_channels, out_channels, stride, vb)?;
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut,
        })
    }

    /// The shortcut branch.
    pub fn shortcut(&self) -> &ShortcutLayer {
        &self.shortcut
    }

    /// Sets how every BatchNorm of the block (`bn1`, `bn2` and a projection shortcut's)
    /// computes training-mode batch statistics; see [`BatchStats`].
    pub fn set_batch_stats(&mut self, stats: BatchStats) {
        self.bn1.set_batch_stats(stats.clone());
        self.bn2.set_batch_stats(stats.clone());
        self.shortcut.set_batch_stats(stats);
    }
}

impl BasicBlock {
    /// The parameters of [`ops::basic_block_train`] / [`ops::basic_blocks_train`] (the whole
    /// block as one autograd node). `None` when the block's BatchNorms do not share one
    /// epsilon (the fused op takes one) or do not all compute local batch statistics, in
    /// which case the layers run one by one.
    pub(crate) fn fused_params(&self) -> Option<ops::BasicBlockParams<'_>> {
        let eps = self.bn1.config().eps;
        if !self.bn1.batch_stats().is_local()
            || !self.bn2.batch_stats().is_local()
            || self.bn2.config().eps != eps
        {
            return None;
        }
        let shortcut = match &self.shortcut {
            ShortcutLayer::Identity => ops::BlockShortcut::Identity,
            ShortcutLayer::SubsamplePad { .. } => ops::BlockShortcut::SubsamplePad,
            ShortcutLayer::Projection { conv, bn } => {
                if bn.config().eps != eps || !bn.batch_stats().is_local() {
                    return None;
                }
                ops::BlockShortcut::Projection {
                    conv: conv.weight(),
                    bn_weight: bn.weight(),
                    bn_bias: bn.bias(),
                }
            }
        };
        Some(ops::BasicBlockParams {
            conv1: self.conv1.weight(),
            bn1_weight: self.bn1.weight(),
            bn1_bias: self.bn1.bias(),
            conv2: self.conv2.weight(),
            bn2_weight: self.bn2.weight(),
            bn2_bias: self.bn2.bias(),
            shortcut,
            stride: self.conv1.config().stride,
            eps,
        })
    }

    /// The running-statistics updates after a fused training-mode forward.
    pub(crate) fn update_running_stats(&self, s: &ops::BlockStats) -> Result<()> {
        let m = s.count;
        if m < 2 {
            candle_core::bail!(
                "BatchNorm in training mode needs more than one value per channel, \
                 got a block output with {m} per channel"
            );
        }
        self.bn1.update_running_stats(&s.bn1.mean, &s.bn1.var, m)?;
        self.bn2.update_running_stats(&s.bn2.mean, &s.bn2.var, m)?;
        if let (ShortcutLayer::Projection { bn, .. }, Some(st)) = (&self.shortcut, &s.shortcut_bn) {
            bn.update_running_stats(&st.mean, &st.var, m)?;
        }
        Ok(())
    }

    /// Training mode through [`ops::basic_blocks_train`] (a chain of this one block), then
    /// the running-statistics updates; `None` where [`Self::fused_params`] is.
    fn forward_fused(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(params) = self.fused_params() else {
            return Ok(None);
        };
        let out = ops::basic_blocks_train(x, std::slice::from_ref(&params))?;
        for stats in &out.blocks {
            self.update_running_stats(stats)?;
        }
        Ok(Some(out.y))
    }
}

impl candle_nn::ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            if let Some(y) = self.forward_fused(x)? {
                return Ok(y);
            }
        }
        if !train {
            // conv + BatchNorm (+ ReLU, + shortcut + ReLU) as one op per convolution
            let h = self.bn1.eval_after_conv(&self.conv1, x, None)?;
            let s = self.shortcut.forward_t(x, false)?;
            return self.bn2.eval_after_conv(&self.conv2, &h, Some(&s));
        }
        let h = self.bn1.forward_t(&self.conv1.forward(x)?, train)?;
        let h = self.bn2.forward_t(&self.conv2.forward(&h)?, train)?;
        let s = self.shortcut.forward_t(x, train)?;
        ops::add_relu(&h, &s)
    }
}
