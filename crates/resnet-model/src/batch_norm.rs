//! BatchNorm2d with PyTorch semantics on top of [`ops::batch_norm_train`] /
//! [`ops::batch_norm_eval`].

use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::batch_stats::{self, BatchStats};
use crate::conv::Conv2d;
use crate::ops;

/// Hyper-parameters of a [`BatchNorm`] (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root. Default `1e-5`.
    pub eps: f64,
    /// Weight of the new batch statistic in the running average. Default `0.1`.
    pub momentum: f64,
    /// Apply a ReLU to the output, fused into the kernel. Default `false`.
    pub relu: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            relu: false,
        }
    }
}

/// BatchNorm2d over `[N, C, H, W]` (optionally followed by a fused ReLU).
///
/// Tensors under its builder: `weight` (init 1), `bias` (init 0), and the running statistics
/// `running_mean` (init 0) and `running_var` (init 1), which are not trainable.
///
/// Training mode normalizes with the batch mean and biased variance, and updates the running
/// statistics like PyTorch: `running = (1 - momentum) * running + momentum * batch`, where the
/// batch variance is the unbiased one (`var * m / (m - 1)`, `m = N * H * W`). Eval mode
/// normalizes with the running statistics.
///
/// That is the default [`BatchStats::Local`] mode; [`set_batch_stats`](Self::set_batch_stats)
/// selects per-group statistics or statistics synchronized across processes instead (for
/// data-parallel training).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    cfg: BatchNormConfig,
    stats: BatchStats,
}

impl BatchNorm {
    /// Wraps existing tensors, all of shape `[C]`. If the running statistics are variables
    /// (as those of a `VarMap` or a [`crate::ResNetModel`] are), updates write through to them.
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        cfg: BatchNormConfig,
    ) -> Result<Self> {
        let c = weight.dims1()?;
        for (name, t) in [
            ("bias", &bias),
            ("running_mean", &running_mean),
            ("running_var", &running_var),
        ] {
            if t.dims() != [c] {
                candle_core::bail!(
                    "BatchNorm: `{name}` has shape {:?}, expected [{c}] like `weight`",
                    t.dims()
                );
            }
        }
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            cfg,
            stats: BatchStats::Local,
        })
    }

    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    /// The configuration.
    pub fn config(&self) -> BatchNormConfig {
        self.cfg
    }

    /// How training mode computes batch statistics.
    pub fn batch_stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Sets how training mode computes batch statistics (see [`BatchStats`]; eval mode is
    /// unaffected).
    pub fn set_batch_stats(&mut self, stats: BatchStats) {
        self.stats = stats;
    }

    /// The weight (γ) `[C]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (β) `[C]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The running mean `[C]`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running variance `[C]`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// Eval mode after `conv`: `self.forward_t(&conv.forward(x)?, false)`, and with
    /// `residual` `relu(that + residual)` (this BatchNorm must not have a ReLU of its own
    /// then), as one op, [`ops::conv2d_batch_norm_eval`]: each output image is normalised
    /// right after its convolution, without another pass over the output.
    pub(crate) fn eval_after_conv(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let after = match (residual, self.cfg.relu) {
            (Some(r), false) => ops::AfterBatchNorm::AddRelu(r),
            (Some(r), true) => {
                let h = self.eval_after_conv(conv, x, None)?;
                return ops::add_relu(&h, r);
            }
            (None, true) => ops::AfterBatchNorm::Relu,
            (None, false) => ops::AfterBatchNorm::Nothing,
        };
        let bn = ops::EvalBatchNorm {
            weight: &self.weight,
            bias: &self.bias,
            running_mean: self.running_mean.as_tensor(),
            running_var: self.running_var.as_tensor(),
            eps: self.cfg.eps,
        };
        let c = conv.config();
        ops::conv2d_batch_norm_eval(x, conv.weight(), c.stride, c.padding, &bn, after)
    }

    /// Normalizes `x` `[N, C, H, W]`; `train` uses and records batch statistics, computed as
    /// [`batch_stats`](Self::batch_stats) says.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return ops::batch_norm_eval(
                x,
                &self.weight,
                &self.bias,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                self.cfg.eps,
                self.cfg.relu,
            );
        }
        let out = match &self.stats {
            BatchStats::Synced(r) => {
                batch_stats::synced_train(x, &self.weight, &self.bias, self.cfg, r)?
            }
            BatchStats::Groups(g) if *g != 1 => {
                batch_stats::groups_train(x, &self.weight, &self.bias, self.cfg, *g)?
            }
            BatchStats::Local | BatchStats::Groups(_) => return self.forward_local(x),
        };
        self.update_running_stats(&out.mean, &out.var, out.count)?;
        Ok(out.y)
    }

    /// Training mode with [`BatchStats::Local`].
    fn forward_local(&self, x: &Tensor) -> Result<Tensor> {
        let (n, _c, h, w) = x.dims4()?;
        let m = n * h * w;
        if m < 2 {
            candle_core::bail!(
                "BatchNorm in training mode needs more than one value per channel, \
                 got input of shape {:?}",
                x.dims()
            );
        }
        let out = ops::batch_norm_train(x, &self.weight, &self.bias, self.cfg.eps, self.cfg.relu)?;
        self.update_running_stats(&out.mean, &out.var, m)?;
        Ok(out.y)
    }

    /// PyTorch's running-statistics update from a batch mean and *biased* variance over `m`
    /// values per channel (what [`BatchNorm::forward_t`] does in training mode; for callers
    /// that run the normalisation inside a fused op such as [`ops::basic_block_train`]).
    pub fn update_running_stats(&self, mean: &Tensor, biased_var: &Tensor, m: usize) -> Result<()> {
        let mom = self.cfg.momentum;
        let keep = 1.0 - mom;
        let unbiased = (m as f64) / ((m - 1) as f64);
        let rm = self.running_mean.as_tensor().detach();
        let rv = self.running_var.as_tensor().detach();
        let new_mean = ((rm * keep)? + (mean.detach() * mom)?)?;
        let new_var = ((rv * keep)? + (biased_var.detach() * (mom * unbiased))?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)
    }
}

impl candle_nn::ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        BatchNorm::forward_t(self, x, train)
    }
}

/// Builds a [`BatchNorm`] over `num_features` channels under `vb`.
pub fn batch_norm(
    num_features: usize,
    cfg: BatchNormConfig,
    vb: VarBuilder<'_>,
) -> Result<BatchNorm> {
    let weight = vb.get_with_hints(num_features, "weight", Init::Const(1.0))?;
    let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.0))?;
    let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.0))?;
    let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.0))?;
    BatchNorm::new(weight, bias, running_mean, running_var, cfg)
}
