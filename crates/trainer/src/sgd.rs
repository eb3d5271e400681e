//! Stochastic gradient descent with momentum, weight decay, dampening and Nesterov, with the
//! exact update rule of PyTorch's `torch.optim.SGD`.
//!
//! For each parameter `p` with gradient `g` (parameters without a gradient are skipped and keep
//! their momentum buffer unchanged, as in PyTorch):
//!
//! ```text
//! d = g + weight_decay * p
//! if momentum != 0:
//!     buf = d                                        (first step of this parameter)
//!     buf = momentum * buf + (1 - dampening) * d     (later steps)
//!     d   = nesterov ? d + momentum * buf : buf
//! p -= lr * d
//! ```
//!
//! Parameters are kept and updated in sorted name order. Only the variables handed to
//! [`Sgd::new`] are touched, so BatchNorm running statistics (which are not trainable
//! variables) are never updated here.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use trainer::sgd::{Sgd, SgdConfig};
//!
//! let w = Var::new(&[1f32, 2.0], &Device::Cpu)?;
//! let mut opt = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::default())?;
//! let loss = (w.as_tensor() * 3.0)?.sum_all()?;
//! opt.step(&loss.backward()?, 0.1)?;
//! // 1 - 0.1 * (3 + 1e-4 * 1)
//! assert!((w.as_tensor().to_vec1::<f32>()?[0] - 0.69999).abs() < 1e-6);
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{bail, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// SGD hyper-parameters (the learning rate comes from the schedule at each step).
///
/// Defaults (used for omitted fields): `momentum: 0.9`, `weight_decay: 1e-4`, `dampening: 0`,
/// `nesterov: false`, `decay_bn_and_bias: true` — the paper's recipe.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    /// Momentum factor, `>= 0` (default 0.9). 0 disables the momentum buffer.
    pub momentum: f64,
    /// L2 penalty added to the gradient, `>= 0` (default 1e-4).
    pub weight_decay: f64,
    /// Dampening of the gradient in the momentum update, in `[0, 1]` (default 0).
    pub dampening: f64,
    /// Nesterov momentum (default false); requires `momentum > 0` and `dampening == 0`.
    pub nesterov: bool,
    /// Apply weight decay to every trainable parameter (default true, as the paper and
    /// PyTorch do). When false, 1-D parameters (BatchNorm weight/bias, linear bias) are not
    /// decayed.
    pub decay_bn_and_bias: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            weight_decay: 1e-4,
            dampening: 0.0,
            nesterov: false,
            decay_bn_and_bias: true,
        }
    }
}

/// An invalid value in an [`SgdConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid optimizer `{field}`: {message}")]
#[non_exhaustive]
pub struct SgdConfigError {
    /// Name of the offending field, e.g. `momentum`.
    pub field: &'static str,
    /// What was wrong and what was expected.
    pub message: String,
}

impl SgdConfig {
    /// Checks every value; the error names the offending field.
    pub fn validate(&self) -> std::result::Result<(), SgdConfigError> {
        let nonneg = |field: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(SgdConfigError {
                    field,
                    message: format!("expected a finite number >= 0, got {v}"),
                })
            }
        };
        nonneg("momentum", self.momentum)?;
        nonneg("weight_decay", self.weight_decay)?;
        nonneg("dampening", self.dampening)?;
        if self.dampening > 1.0 {
            return Err(SgdConfigError {
                field: "dampening",
                message: format!("expected a number in [0, 1], got {}", self.dampening),
            });
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(SgdConfigError {
                field: "nesterov",
                message: format!(
                    "Nesterov momentum requires momentum > 0 and dampening 0, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            });
        }
        Ok(())
    }
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    buf: Option<Tensor>,
}

/// The optimizer: owns handles to the trainable variables and their momentum buffers.
pub struct Sgd {
    params: Vec<Param>,
    cfg: SgdConfig,
}

impl Sgd {
    /// Creates the optimizer over `params` (name, variable); names must be unique. The config
    /// is validated.
    pub fn new(mut params: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = params.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("optimizer: parameter `{}` is given twice", w[0].0);
        }
        let params = params
            .into_iter()
            .map(|(name, var)| {
                let decay = cfg.weight_decay != 0.0 && (cfg.decay_bn_and_bias || var.rank() > 1);
                Param {
                    name,
                    var,
                    decay,
                    buf: None,
                }
            })
            .collect();
        Ok(Self { params, cfg })
    }

    /// One update with learning rate `lr` using the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let SgdConfig {
            momentum,
            weight_decay,
            dampening,
            nesterov,
            ..
        } = self.cfg;
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let w = p.var.as_tensor().detach();
            let g = g.detach();
            if g.shape() != w.shape() {
                bail!(
                    "optimizer: gradient of `{}` has shape {:?}, parameter has {:?}",
                    p.name,
                    g.shape(),
                    w.shape()
                );
            }
            let mut d = if p.decay {
                (&g + (&w * weight_decay)?)?
            } else {
                g
            };
            if momentum != 0.0 {
                let buf = match p.buf.take() {
                    None => d.clone(),
                    Some(b) => ((b * momentum)? + (&d * (1.0 - dampening))?)?,
                };
                d = if nesterov {
                    (&d + (&buf * momentum)?)?
                } else {
                    buf.clone()
                };
                p.buf = Some(buf);
            }
            p.var.set(&(&w - (d * lr)?)?)?;
        }
        Ok(())
    }

    /// The existing momentum buffers, sorted by parameter name (for checkpoints).
    pub fn momentum_buffers(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .filter_map(|p| p.buf.as_ref().map(|b| (p.name.clone(), b.clone())))
            .collect()
    }

    /// Replaces all momentum buffers by `bufs` (as saved by [`Sgd::momentum_buffers`]).
    ///
    /// Strict: a name that is not a parameter, or a shape that differs from the parameter's, is
    /// an error naming the tensor, and nothing is changed. Parameters absent from `bufs` get no
    /// buffer (their next step is a first step). Buffers are converted to the parameter's dtype
    /// and device.
    pub fn load_momentum_buffers(&mut self, bufs: &HashMap<String, Tensor>) -> Result<()> {
        let mut names: Vec<&String> = bufs.keys().collect();
        names.sort();
        for name in names {
            let Some(p) = self.params.iter().find(|p| &p.name == name) else {
                bail!("momentum buffer `{name}` does not match any trainable parameter");
            };
            let (got, want) = (bufs[name].shape(), p.var.shape());
            if got != want {
                bail!("momentum buffer `{name}` has shape {got:?}, parameter has {want:?}");
            }
        }
        let mut new = Vec::with_capacity(self.params.len());
        for p in &self.params {
            new.push(match bufs.get(&p.name) {
                Some(b) => Some(
                    b.to_dtype(p.var.dtype())?
                        .to_device(p.var.device())?
                        .detach(),
                ),
                None => None,
            });
        }
        for (p, b) in self.params.iter_mut().zip(new) {
            p.buf = b;
        }
        Ok(())
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// Names of the optimized parameters, sorted.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests;
