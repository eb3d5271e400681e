//! Fused BatchNorm2d (+ optional ReLU) as candle custom ops.
//!
//! Training forward: one statistics pass and one normalisation pass over `x` (inside the
//! fused residual block the statistics come from the convolution instead, see
//! [`train_forward_moments`]). Backward: one reduction pass and one input-gradient pass over
//! `(x, dy)`; the ReLU mask is recomputed from `x` with the forward's arithmetic instead of
//! being stored.
//! Eval mode folds the running statistics into a per-channel affine map.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{bail, Layout, Result, Shape, Tensor};

use super::channel::{
    affine, combine_moments, grad_input, grad_sums, mean_var, GradCoef, Masked, PlaneMoments,
    Planes,
};
use super::custom::{custom_op, with_all, CpuOp};
use super::storage::to_vec;

/// What the training forward keeps for its backward and for the running statistics.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    pub(crate) mean: Vec<f32>,
    /// Biased batch variance.
    pub(crate) var: Vec<f32>,
    invstd: Vec<f32>,
    /// `gamma * invstd`: the normalisation as one per-channel affine map ...
    pub(crate) scale: Vec<f32>,
    /// ... `beta - mean * scale`.
    pub(crate) shift: Vec<f32>,
}

/// Training-mode BatchNorm over `(x, weight, bias)` with batch statistics.
pub(crate) struct BatchNormTrain {
    pub(crate) eps: f64,
    pub(crate) relu: bool,
    pub(crate) saved: Arc<Mutex<Option<Saved>>>,
}

/// A per-channel parameter `v` laid out as `l`: checked to be `[c]`.
pub(crate) fn params<'a>(op: &str, c: usize, v: &'a [f32], l: &Layout) -> Result<&'a [f32]> {
    if v.len() != c || l.dims().len() != 1 {
        bail!(
            "{op}: expected a per-channel parameter of shape [{c}], got {:?}",
            l.dims()
        )
    }
    Ok(v)
}

custom_op!(BatchNormTrain: CustomOp3);

impl CpuOp<3> for BatchNormTrain {
    const NAME: &'static str = "resnet-batch-norm-train";
    const OP: &'static str = "batch_norm_train";

    fn forward(
        &self,
        [x, gamma, beta]: [&[f32]; 3],
        [lx, lg, lb]: [&Layout; 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let p = Planes::from_dims(Self::OP, lx.dims())?;
        let gamma = params(Self::OP, p.c, gamma, lg)?;
        let beta = params(Self::OP, p.c, beta, lb)?;
        let (y, s) = train_forward(p, x, gamma, beta, self.eps, self.relu);
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
        Ok((y, lx.shape().clone()))
    }

    fn backward(
        &self,
        [x, _gamma, _beta]: [&Tensor; 3],
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        const OP: &str = "batch_norm_train backward";
        let Some(s) = self
            .saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            bail!("{OP}: no saved statistics (forward did not run on the CPU)")
        };
        let p = Planes::from_dims(OP, x.dims())?;
        let (dx, dgamma, dbeta) = with_all(OP, [x, dy], |[xs, gs]| {
            train_backward(p, xs, gs, &s, self.relu)
        })?;
        let dev = x.device();
        Ok([
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dgamma, p.c, dev)?),
            Some(Tensor::from_vec(dbeta, p.c, dev)?),
        ])
    }
}

/// Training-mode forward on raw data: batch statistics, then `relu?(x * scale + shift)`.
pub(crate) fn train_forward(
    p: Planes,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Saved) {
    let s = train_stats(p, x, gamma, beta, eps);
    (affine(p, x, &s.scale, &s.shift, relu), s)
}

/// [`train_forward`] with the batch statistics combined from the per-plane moments `m` of
/// `x` (`[n][c]`, e.g. from `conv::forward_stats`): the same bits, one pass fewer.
pub(crate) fn train_forward_moments(
    p: Planes,
    x: &[f32],
    m: &[PlaneMoments],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Saved) {
    let s = train_stats_moments(p, m, gamma, beta, eps);
    (affine(p, x, &s.scale, &s.shift, relu), s)
}

/// Batch statistics of `x` and the per-channel affine map they give with `gamma`/`beta`.
pub(crate) fn train_stats(p: Planes, x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> Saved {
    saved(p, mean_var(p, x), gamma, beta, eps)
}

/// [`train_stats`] from the per-plane moments of `x` (see [`train_forward_moments`]).
pub(crate) fn train_stats_moments(
    p: Planes,
    m: &[PlaneMoments],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Saved {
    saved(p, combine_moments(p, m), gamma, beta, eps)
}

/// What the forward keeps, from the batch mean and biased variance.
fn saved(
    p: Planes,
    (mean, var): (Vec<f64>, Vec<f64>),
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Saved {
    let mut s = Saved {
        mean: Vec::with_capacity(p.c),
        var: Vec::with_capacity(p.c),
        invstd: Vec::with_capacity(p.c),
        scale: Vec::with_capacity(p.c),
        shift: Vec::with_capacity(p.c),
    };
    for c in 0..p.c {
        let invstd = 1.0 / (var[c] + eps).sqrt();
        let scale = f64::from(gamma[c]) * invstd;
        s.mean.push(mean[c] as f32);
        s.var.push(var[c] as f32);
        s.invstd.push(invstd as f32);
        s.scale.push(scale as f32);
        s.shift.push((f64::from(beta[c]) - mean[c] * scale) as f32);
    }
    s
}

/// Training-mode backward on raw data: `(dx, dgamma, dbeta)` from the forward's input `x`,
/// the output gradient `dy` and the forward's statistics.
pub(crate) fn train_backward(
    p: Planes,
    xs: &[f32],
    gs: &[f32],
    s: &Saved,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let sums = grad_sums(p, xs, gs, masked(s, relu), &s.mean);
    train_backward_sums(p, xs, gs, s, relu, sums)
}

/// The gradient mask of a training-mode BatchNorm (+ ReLU) with the statistics `s`.
pub(crate) fn masked(s: &Saved, relu: bool) -> Masked<'_> {
    Masked {
        scale: &s.scale,
        shift: &s.shift,
        relu,
    }
}

/// [`train_backward`] given the per-channel sums `(Σ g, Σ g * (x - mean))` of the masked
/// gradient (`channel::grad_sums`, or `channel::relu_mask_grad_sums` when `dy` is itself
/// computed in the same pass).
pub(crate) fn train_backward_sums(
    p: Planes,
    xs: &[f32],
    gs: &[f32],
    s: &Saved,
    relu: bool,
    sums: (Vec<f64>, Vec<f64>),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = BackwardCoef::new(p, s, sums);
    let dx = grad_input(p, xs, gs, masked(s, relu), &c.grad_coef(s));
    (dx, c.dgamma, c.dbeta)
}

/// The training-mode backward once the per-channel sums `(Σ g, Σ g * (x - mean))` of the
/// masked gradient are known: `dγ`, `dβ` and the coefficients of the input gradient, which
/// [`train_backward_sums`] applies to the whole batch and the fused convolution backward
/// ([`super::block`]) image by image.
pub(crate) struct BackwardCoef {
    a: Vec<f32>,
    b: Vec<f32>,
    pub(crate) dgamma: Vec<f32>,
    pub(crate) dbeta: Vec<f32>,
}

impl BackwardCoef {
    /// The coefficients for the statistics `s` and the sums `(s1, s2)` over the `p` planes.
    pub(crate) fn new(p: Planes, s: &Saved, (s1, s2): (Vec<f64>, Vec<f64>)) -> Self {
        let m = p.per_channel().max(1) as f64;
        let mut a = Vec::with_capacity(p.c);
        let mut b = Vec::with_capacity(p.c);
        let mut dgamma = Vec::with_capacity(p.c);
        for c in 0..p.c {
            let (sc, is) = (f64::from(s.scale[c]), f64::from(s.invstd[c]));
            a.push((-sc * is * is * s2[c] / m) as f32);
            b.push((-sc * s1[c] / m) as f32);
            dgamma.push((s2[c] * is) as f32);
        }
        let dbeta = s1.iter().map(|&v| v as f32).collect();
        Self {
            a,
            b,
            dgamma,
            dbeta,
        }
    }

    /// `dx = g * scale[c] + (x - mean[c]) * a[c] + b[c]` for the masked gradient `g`.
    pub(crate) fn grad_coef<'a>(&'a self, s: &'a Saved) -> GradCoef<'a> {
        GradCoef {
            k: &s.scale,
            center: &s.mean,
            a: &self.a,
            b: &self.b,
        }
    }
}

/// `relu?(x * scale[c] + shift[c])` over `(x, scale, shift)`: the eval-mode BatchNorm once
/// the running statistics are folded into `scale` and `shift`.
pub(crate) struct ChannelAffine {
    pub(crate) relu: bool,
}

custom_op!(ChannelAffine: CustomOp3);

impl CpuOp<3> for ChannelAffine {
    const NAME: &'static str = "resnet-channel-affine";
    const OP: &'static str = "batch_norm_eval";

    fn forward(
        &self,
        [x, scale, shift]: [&[f32]; 3],
        [lx, ls, lt]: [&Layout; 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let p = Planes::from_dims(Self::OP, lx.dims())?;
        let scale = params(Self::OP, p.c, scale, ls)?;
        let shift = params(Self::OP, p.c, shift, lt)?;
        Ok((affine(p, x, scale, shift, self.relu), lx.shape().clone()))
    }

    fn backward(
        &self,
        [x, scale, shift]: [&Tensor; 3],
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        const OP: &str = "batch_norm_eval backward";
        let p = Planes::from_dims(OP, x.dims())?;
        let (sc, sh) = (to_vec(OP, scale)?, to_vec(OP, shift)?);
        let mask = Masked {
            scale: &sc,
            shift: &sh,
            relu: self.relu,
        };
        let zeros = vec![0f32; p.c];
        let (dx, dscale, dshift) = with_all(OP, [x, dy], |[xs, gs]| {
            let (s1, s2) = grad_sums(p, xs, gs, mask, &zeros);
            let coef = GradCoef {
                k: &sc,
                center: &zeros,
                a: &zeros,
                b: &zeros,
            };
            let dx = grad_input(p, xs, gs, mask, &coef);
            let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
            (dx, f(s2), f(s1))
        })?;
        let dev = x.device();
        Ok([
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dscale, p.c, dev)?),
            Some(Tensor::from_vec(dshift, p.c, dev)?),
        ])
    }
}
