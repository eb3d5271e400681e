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
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar_var(v: f32) -> Var {
        Var::new(&[v], &Device::Cpu).unwrap()
    }

    fn grads_for(vars: &[(&Var, f32)]) -> GradStore {
        let mut g = GradStore::default();
        for (v, x) in vars {
            g.insert(v.as_tensor(), Tensor::new(&[*x], &Device::Cpu).unwrap());
        }
        g
    }

    fn val(v: &Var) -> f64 {
        v.as_tensor().to_vec1::<f32>().unwrap()[0] as f64
    }

    /// Reference implementation on f64 scalars, transcribed from torch.optim.SGD.
    fn reference(p0: f64, grads: &[f64], lr: f64, c: SgdConfig) -> Vec<f64> {
        let (mut p, mut buf, mut out) = (p0, None::<f64>, vec![]);
        for &g in grads {
            let mut d = g + c.weight_decay * p;
            if c.momentum != 0.0 {
                let b = match buf {
                    None => d,
                    Some(b) => c.momentum * b + (1.0 - c.dampening) * d,
                };
                buf = Some(b);
                d = if c.nesterov { d + c.momentum * b } else { b };
            }
            p -= lr * d;
            out.push(p);
        }
        out
    }

    #[test]
    fn hand_computed_nesterov_and_dampening() -> Result<()> {
        // Nesterov, momentum 0.9, wd 0.1, p0 = 1, lr 0.5, grads 2 then -1:
        // step 1: d = 2 + 0.1 = 2.1, buf = 2.1, d = 2.1 + 0.9*2.1 = 3.99, p = 1 - 1.995 = -0.995
        // step 2: d = -1 - 0.0995 = -1.0995, buf = 1.89 - 1.0995 = 0.7905,
        //         d = -1.0995 + 0.71145 = -0.38805, p = -0.995 + 0.194025 = -0.800975
        let c = SgdConfig {
            momentum: 0.9,
            weight_decay: 0.1,
            dampening: 0.0,
            nesterov: true,
            decay_bn_and_bias: true,
        };
        let p = scalar_var(1.0);
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], c)?;
        opt.step(&grads_for(&[(&p, 2.0)]), 0.5)?;
        assert!((val(&p) + 0.995).abs() < 1e-6, "{}", val(&p));
        opt.step(&grads_for(&[(&p, -1.0)]), 0.5)?;
        assert!((val(&p) + 0.800975).abs() < 1e-6, "{}", val(&p));

        // Dampening 0.5, momentum 0.5, no decay, p0 = 0, lr 1, grads 1, 1, 1:
        // buf: 1, 0.5 + 0.5 = 1, 1; p: -1, -2, -3 (the first step is undampened).
        let c = SgdConfig {
            momentum: 0.5,
            weight_decay: 0.0,
            dampening: 0.5,
            nesterov: false,
            decay_bn_and_bias: true,
        };
        let p = scalar_var(0.0);
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], c)?;
        for want in [-1.0, -2.0, -3.0] {
            opt.step(&grads_for(&[(&p, 1.0)]), 1.0)?;
            assert!((val(&p) - want).abs() < 1e-6, "{} vs {want}", val(&p));
        }
        Ok(())
    }

    #[test]
    fn matches_reference_for_config_grid() -> Result<()> {
        let grads = [0.3, -1.2, 0.7, 2.0, -0.1];
        for momentum in [0.0, 0.9] {
            for dampening in [0.0, 0.3] {
                for nesterov in [false, true] {
                    let c = SgdConfig {
                        momentum,
                        weight_decay: 5e-2,
                        dampening,
                        nesterov,
                        decay_bn_and_bias: true,
                    };
                    if c.validate().is_err() {
                        continue;
                    }
                    let p = scalar_var(0.8);
                    let mut opt = Sgd::new(vec![("p".into(), p.clone())], c)?;
                    for (g, want) in grads.iter().zip(reference(0.8, &grads, 0.05, c)) {
                        opt.step(&grads_for(&[(&p, *g as f32)]), 0.05)?;
                        assert!(
                            (val(&p) - want).abs() < 1e-5,
                            "{c:?}: {} vs {want}",
                            val(&p)
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn no_decay_for_1d_params_when_disabled() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[[1f32, 1.0], [1.0, 1.0]], &dev)?;
        let b = Var::new(&[1f32, 1.0], &dev)?;
        let c = SgdConfig {
            momentum: 0.0,
            weight_decay: 0.5,
            decay_bn_and_bias: false,
            ..SgdConfig::default()
        };
        let mut opt = Sgd::new(vec![("b".into(), b.clone()), ("w".into(), w.clone())], c)?;
        let mut g = GradStore::default();
        g.insert(
            w.as_tensor(),
            Tensor::zeros((2, 2), candle_core::DType::F32, &dev)?,
        );
        g.insert(
            b.as_tensor(),
            Tensor::zeros(2, candle_core::DType::F32, &dev)?,
        );
        opt.step(&g, 1.0)?;
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, vec![1.0, 1.0]);
        assert_eq!(
            w.as_tensor().to_vec2::<f32>()?,
            vec![vec![0.5, 0.5], vec![0.5, 0.5]]
        );
        // With the default, the bias decays too.
        let b2 = Var::new(&[1f32, 1.0], &dev)?;
        let mut opt = Sgd::new(
            vec![("b".into(), b2.clone())],
            SgdConfig {
                decay_bn_and_bias: true,
                ..c
            },
        )?;
        let mut g = GradStore::default();
        g.insert(
            b2.as_tensor(),
            Tensor::zeros(2, candle_core::DType::F32, &dev)?,
        );
        opt.step(&g, 1.0)?;
        assert_eq!(b2.as_tensor().to_vec1::<f32>()?, vec![0.5, 0.5]);
        Ok(())
    }

    #[test]
    fn param_without_grad_is_untouched() -> Result<()> {
        let (a, b) = (scalar_var(1.0), scalar_var(1.0));
        let mut opt = Sgd::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            SgdConfig::default(),
        )?;
        opt.step(&grads_for(&[(&a, 1.0)]), 0.1)?;
        assert_eq!(val(&b), 1.0);
        assert_ne!(val(&a), 1.0);
        let names: Vec<String> = opt.momentum_buffers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a"]);
        Ok(())
    }

    #[test]
    fn momentum_buffers_round_trip() -> Result<()> {
        let grads = [0.5f32, -0.25, 1.0, 0.125];
        let run = |split: Option<usize>| -> Result<f64> {
            let p = scalar_var(2.0);
            let q = Var::new(&[[0.5f32, -0.5]], &Device::Cpu)?;
            let mk = |p: &Var, q: &Var| {
                Sgd::new(
                    vec![("q".into(), q.clone()), ("p".into(), p.clone())],
                    SgdConfig::default(),
                )
            };
            let mut opt = mk(&p, &q)?;
            for (i, g) in grads.iter().enumerate() {
                if Some(i) == split {
                    // Simulate a checkpoint: fresh optimizer, restore buffers from a map.
                    let saved: HashMap<String, Tensor> =
                        opt.momentum_buffers().into_iter().collect();
                    assert_eq!(saved.len(), 2);
                    opt = mk(&p, &q)?;
                    opt.load_momentum_buffers(&saved)?;
                }
                let mut gs = grads_for(&[(&p, *g)]);
                gs.insert(q.as_tensor(), Tensor::new(&[[*g, -*g]], &Device::Cpu)?);
                opt.step(&gs, 0.1)?;
            }
            Ok(val(&p))
        };
        let straight = run(None)?;
        assert_eq!(straight, run(Some(2))?);
        // Without restoring, the result differs (the buffers matter).
        assert_ne!(straight, {
            let p = scalar_var(2.0);
            let mut opt = Sgd::new(vec![("p".into(), p.clone())], SgdConfig::default())?;
            for (i, g) in grads.iter().enumerate() {
                if i == 2 {
                    opt = Sgd::new(vec![("p".into(), p.clone())], SgdConfig::default())?;
                }
                opt.step(&grads_for(&[(&p, *g)]), 0.1)?;
            }
            val(&p)
        });
        Ok(())
    }

    #[test]
    fn strict_buffer_loading() -> Result<()> {
        let p = scalar_var(1.0);
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], SgdConfig::default())?;
        let unknown = HashMap::from([("zz".to_string(), Tensor::new(&[1f32], &Device::Cpu)?)]);
        let e = opt.load_momentum_buffers(&unknown).unwrap_err().to_string();
        assert!(e.contains("`zz`"), "{e}");
        let wrong = HashMap::from([("p".to_string(), Tensor::new(&[1f32, 2.0], &Device::Cpu)?)]);
        let e = opt.load_momentum_buffers(&wrong).unwrap_err().to_string();
        assert!(e.contains("`p`") && e.contains("shape"), "{e}");
        assert!(opt.momentum_buffers().is_empty());
        Ok(())
    }

    #[test]
    fn config_validation_names_field() {
        let f = |c: SgdConfig| c.validate().unwrap_err().field;
        let d = SgdConfig::default();
        d.validate().unwrap();
        assert_eq!(
            f(SgdConfig {
                momentum: -0.1,
                ..d
            }),
            "momentum"
        );
        assert_eq!(
            f(SgdConfig {
                weight_decay: -1e-4,
                ..d
            }),
            "weight_decay"
        );
        assert_eq!(
            f(SgdConfig {
                dampening: 1.5,
                ..d
            }),
            "dampening"
        );
        assert_eq!(
            f(SgdConfig {
                nesterov: true,
                momentum: 0.0,
                ..d
            }),
            "nesterov"
        );
        assert_eq!(
            f(SgdConfig {
                nesterov: true,
                dampening: 0.1,
                ..d
            }),
            "nesterov"
        );
        let dup = Sgd::new(
            vec![("p".into(), scalar_var(0.0)), ("p".into(), scalar_var(0.0))],
            d,
        );
        assert!(dup.err().unwrap().to_string().contains("`p`"));
    }
}
