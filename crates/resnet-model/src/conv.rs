//! Bias-free 2-D convolution layer on top of [`ops::conv2d`].

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::init;
use crate::ops;

/// Stride and padding of a [`Conv2d`] (square kernel, dilation 1, one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Stride in both directions. Default 1.
    pub stride: usize,
    /// Zero padding on every side. Default 0.
    pub padding: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
        }
    }
}

/// A convolution without bias, weight `[out, in, k, k]` named `weight`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    cfg: Conv2dConfig,
}

impl Conv2d {
    /// Wraps an existing weight `[out, in, k, k]`.
    pub fn new(weight: Tensor, cfg: Conv2dConfig) -> Self {
        Self { weight, cfg }
    }

    /// The weight `[out, in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Stride and padding.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.cfg.stride, self.cfg.padding)
    }
}

/// Builds a [`Conv2d`] whose `weight` (under `vb`) is He-initialized
/// (see [`init::kaiming_normal`]) when the builder creates it.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder<'_>,
) -> Result<Conv2d> {
    let fan_in = in_channels * kernel_size * kernel_size;
    let weight = vb.get_with_hints(
        (out_channels, in_channels, kernel_size, kernel_size),
        "weight",
        init::kaiming_normal(fan_in),
    )?;
    Ok(Conv2d::new(weight, cfg))
}
