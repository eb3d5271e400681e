//! The basic residual block: conv3x3 → BN → ReLU → conv3x3 → BN, plus shortcut, then ReLU.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::batch_norm::{batch_norm, BatchNorm, BatchNormConfig};
use crate::conv::{conv2d, Conv2d, Conv2dConfig};
use crate::ops;
use crate::shortcut::{Shortcut, ShortcutLayer};

/// A basic block (He et al. 2016, figure 2 left) with PyTorch names `conv1`, `bn1`, `conv2`,
/// `bn2` and, for projection shortcuts, `shortcut.0` / `shortcut.1`.
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
}

impl candle_nn::ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.bn1.forward_t(&self.conv1.forward(x)?, train)?;
        let h = self.bn2.forward_t(&self.conv2.forward(&h)?, train)?;
        let s = self.shortcut.forward_t(x, train)?;
        ops::add_relu(&h, &s)
    }
}
