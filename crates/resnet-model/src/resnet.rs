//! [`ResNet`]: the network as a candle-nn style module built from a `VarBuilder`.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::batch_norm::{batch_norm, BatchNorm, BatchNormConfig};
use crate::batch_stats::BatchStats;
use crate::block::BasicBlock;
use crate::config::ResNetConfig;
use crate::conv::{conv2d, Conv2d, Conv2dConfig};
use crate::init;
use crate::ops;

/// Number of input channels (RGB).
pub const IN_CHANNELS: usize = 3;

/// The CIFAR ResNet: `conv1` (3x3) → `bn1` + ReLU → `layer1..3` (n basic blocks each,
/// stride 2 at the first block of stages 2 and 3) → global average pool → `linear`.
///
/// Built from any `VarBuilder` with PyTorch's `state_dict` names (`vb.pp("layer1").pp(0)
/// .pp("conv1")` is `layer1.0.conv1`). [`crate::ResNetModel`] owns the tensors and adds
/// initialization, (de)serialization and the parameter/buffer split.
#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    stages: Vec<Vec<BasicBlock>>,
    linear: Linear,
    cfg: ResNetConfig,
}

impl ResNet {
    /// Builds the network for `cfg` (validated first) from `vb`.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.validate()?;
        let w = cfg.base_width;
        let conv1 = conv2d(
            IN_CHANNELS,
            w,
            3,
            Conv2dConfig {
                stride: 1,
                padding: 1,
            },
            vb.pp("conv1"),
        )?;
        let bn1 = batch_norm(
            w,
            BatchNormConfig {
                relu: true,
                ..Default::default()
            },
            vb.pp("bn1"),
        )?;
        let mut stages = Vec::with_capacity(3);
        let mut in_channels = w;
        for stage in 0..3 {
            let out_channels = cfg.stage_width(stage);
            let vb_stage = vb.pp(format!("layer{}", stage + 1));
            let mut blocks = Vec::with_capacity(cfg.n());
            for i in 0..cfg.n() {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    in_channels,
                    out_channels,
                    stride,
                    cfg.shortcut,
                    vb_stage.pp(i),
                )?);
                in_channels = out_channels;
            }
            stages.push(blocks);
        }
        let vb_lin = vb.pp("linear");
        let weight = vb_lin.get_with_hints(
            (cfg.num_classes, in_channels),
            "weight",
            init::kaiming_normal(in_channels),
        )?;
        let bias = vb_lin.get_with_hints(
            cfg.num_classes,
            "bias",
            init::linear_bias_uniform(in_channels),
        )?;
        Ok(Self {
            conv1,
            bn1,
            stages,
            linear: Linear::new(weight, Some(bias)),
            cfg: cfg.clone(),
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Sets how every BatchNorm of the network computes training-mode batch statistics; see
    /// [`BatchStats`].
    pub fn set_batch_stats(&mut self, stats: BatchStats) {
        for block in self.stages.iter_mut().flatten() {
            block.set_batch_stats(stats.clone());
        }
        self.bn1.set_batch_stats(stats);
    }

    /// How training mode computes batch statistics (the mode of the stem BatchNorm `bn1`,
    /// which [`set_batch_stats`](Self::set_batch_stats) gives every BatchNorm).
    pub fn batch_stats(&self) -> &BatchStats {
        self.bn1.batch_stats()
    }

    /// The blocks of stage `stage` (0, 1 or 2).
    pub fn stage(&self, stage: usize) -> &[BasicBlock] {
        self.stages.get(stage).map_or(&[], |s| s.as_slice())
    }

    /// The stem as [`ops::stem_and_blocks_train`]'s parameters, when its BatchNorm computes
    /// local batch statistics (otherwise it runs as its own layers).
    fn fused_stem(&self) -> Option<ops::StemParams<'_>> {
        let (cfg, bn) = (self.conv1.config(), self.bn1.config());
        (self.bn1.batch_stats().is_local() && bn.relu && cfg.stride == 1 && cfg.padding == 1).then(
            || ops::StemParams {
                conv: self.conv1.weight(),
                bn_weight: self.bn1.weight(),
                bn_bias: self.bn1.bias(),
                eps: bn.eps,
            },
        )
    }

    /// Global-average-pooled features `[N, 4 * base_width]` before the linear layer.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != IN_CHANNELS {
            candle_core::bail!(
                "ResNet input must have shape [N, {IN_CHANNELS}, H, W], got {dims:?}"
            );
        }
        let blocks: Vec<&BasicBlock> = self.stages.iter().flatten().collect();
        // training: the stem and every block in one autograd node when all can be fused
        let fused: Option<Vec<_>> = if train {
            blocks.iter().map(|b| b.fused_params()).collect()
        } else {
            None
        };
        let h = match fused {
            Some(params) if !params.is_empty() => {
                let out = match self.fused_stem() {
                    Some(stem) => ops::stem_and_blocks_train(x, &stem, &params)?,
                    None => {
                        let h = self.bn1.forward_t(&self.conv1.forward(x)?, train)?;
                        ops::basic_blocks_train(&h, &params)?
                    }
                };
                // checked before any running statistics change (no block has more values
                // per channel than the stem: strides only shrink the planes)
                if let Some(b) = out.blocks.iter().find(|b| b.count < 2) {
                    candle_core::bail!(
                        "BatchNorm in training mode needs more than one value per channel, \
                         got a block output with {} per channel (input of shape {dims:?})",
                        b.count
                    );
                }
                if let Some(s) = &out.stem {
                    let (n, _, h, w) = x.dims4()?;
                    self.bn1.update_running_stats(&s.mean, &s.var, n * h * w)?;
                }
                for (block, stats) in blocks.iter().zip(&out.blocks) {
                    block.update_running_stats(stats)?;
                }
                out.y
            }
            _ => {
                let mut h = if train {
                    self.bn1.forward_t(&self.conv1.forward(x)?, train)?
                } else {
                    self.bn1.eval_after_conv(&self.conv1, x, None)?
                };
                for block in blocks {
                    h = block.forward_t(&h, train)?;
                }
                h
            }
        };
        h.mean((2, 3))
    }
}

impl ModuleT for ResNet {
    /// Logits `[N, num_classes]` for images `[N, 3, H, W]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.linear.forward(&self.features_t(x, train)?)
    }
}
