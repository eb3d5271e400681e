//! The paper's three shortcut options and the shortcut layer of a basic block.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::batch_norm::{batch_norm, BatchNorm, BatchNormConfig};
use crate::batch_stats::BatchStats;
use crate::conv::{conv2d, Conv2d, Conv2dConfig};
use crate::ops;

/// Shortcut connection type (He et al. 2016, sections 3.3 and 4.1).
///
/// Serialized in snake case (`identity_pad`, `projection`, `all_projection`); the paper's
/// letters `a`/`A`, `b`/`B`, `c`/`C` are accepted as aliases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Shortcut {
    /// Option A (default, the paper's CIFAR choice): identity, and where the shape changes
    /// `x[:, :, ::2, ::2]` zero-padded on channels. No parameters.
    #[default]
    #[serde(alias = "a", alias = "A")]
    IdentityPad,
    /// Option B: a 1x1 convolution (stride 2) + BatchNorm where the shape changes, identity
    /// elsewhere.
    #[serde(alias = "b", alias = "B")]
    Projection,
    /// Option C: a 1x1 convolution + BatchNorm on every block.
    #[serde(alias = "c", alias = "C")]
    AllProjection,
}

impl Shortcut {
    /// The paper's letter for this option: `'a'`, `'b'` or `'c'`.
    pub fn letter(self) -> char {
        match self {
            Shortcut::IdentityPad => 'a',
            Shortcut::Projection => 'b',
            Shortcut::AllProjection => 'c',
        }
    }
}

/// The shortcut branch of one basic block, as chosen by [`Shortcut`] for its shape.
#[derive(Debug, Clone)]
pub enum ShortcutLayer {
    /// `x` unchanged.
    Identity,
    /// Option A where the shape changes: [`ops::subsample_pad`] to `out_channels`.
    SubsamplePad {
        /// Channels after padding.
        out_channels: usize,
    },
    /// Options B/C: `shortcut.0` (1x1 conv) then `shortcut.1` (BatchNorm).
    Projection {
        /// The 1x1 convolution, `shortcut.0`.
        conv: Conv2d,
        /// Its BatchNorm, `shortcut.1`.
        bn: BatchNorm,
    },
}

impl ShortcutLayer {
    /// Builds the shortcut of a block from `in_channels` to `out_channels` with `stride`;
    /// `vb` is the block's builder (the layer lives under `vb.pp("shortcut")`).
    pub fn new(
        kind: Shortcut,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let reshapes = stride != 1 || in_channels != out_channels;
        let projection = match kind {
            Shortcut::IdentityPad => false,
            Shortcut::Projection => reshapes,
            Shortcut::AllProjection => true,
        };
        if projection {
            let vb = vb.pp("shortcut");
            let conv = conv2d(
                in_channels,
                out_channels,
                1,
                Conv2dConfig { stride, padding: 0 },
                vb.pp(0),
            )?;
            let bn = batch_norm(out_channels, BatchNormConfig::default(), vb.pp(1))?;
            Ok(Self::Projection { conv, bn })
        } else if reshapes {
            if stride != 2
                || out_channels < in_channels
                || !(out_channels - in_channels).is_multiple_of(2)
            {
                candle_core::bail!(
                    "option-A shortcut needs stride 2 and an even channel increase, \
                     got {in_channels} -> {out_channels} channels with stride {stride}"
                );
            }
            Ok(Self::SubsamplePad { out_channels })
        } else {
            Ok(Self::Identity)
        }
    }

    /// Sets how the projection's BatchNorm computes training-mode batch statistics (no-op
    /// for the parameter-free shortcuts).
    pub fn set_batch_stats(&mut self, stats: BatchStats) {
        if let Self::Projection { bn, .. } = self {
            bn.set_batch_stats(stats);
        }
    }

    /// Applies the shortcut; `train` selects batch statistics for the projection's BatchNorm.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Identity => Ok(x.clone()),
            Self::SubsamplePad { out_channels } => ops::subsample_pad(x, *out_channels),
            Self::Projection { conv, bn } if !train => bn.eval_after_conv(conv, x, None),
            Self::Projection { conv, bn } => bn.forward_t(&conv.forward(x)?, train),
        }
    }
}
