//! Inference: an eval-mode convolution, its BatchNorm and what follows (a ReLU, or a residual
//! add and a ReLU) in one op, each image finished right after its convolution GEMMs.
//!
//! In eval mode a BatchNorm is one per-channel affine map, so running it as its own op costs
//! a pass over the convolution's output (out of cache at inference batch sizes: ResNet-20's
//! first stage is 32 MiB at batch 512) and a fresh output tensor (page faults); the residual
//! add + ReLU costs another. Here both are applied in place per image while the image is in
//! cache ([`super::conv::forward_affine`]), with the same arithmetic, so the same bits, as
//! [`super::conv2d`], [`super::batch_norm_eval`] and [`super::add_relu`] one after the other.

use candle_core::{bail, Result, Tensor};

use super::channel::AffineEpilogue;
use super::conv::forward_affine;
use super::custom::with_all;
use super::im2col::ConvGeom;
use super::storage::{arg, fast_path};
use super::{add_relu, batch_norm_eval, conv2d};

/// An eval-mode BatchNorm2d as [`conv2d_batch_norm_eval`] takes it: its parameters and
/// running statistics (all `[C]`) and its epsilon.
#[derive(Debug, Clone, Copy)]
pub struct EvalBatchNorm<'a> {
    /// `gamma`.
    pub weight: &'a Tensor,
    /// `beta`.
    pub bias: &'a Tensor,
    /// The running mean.
    pub running_mean: &'a Tensor,
    /// The running (unbiased) variance.
    pub running_var: &'a Tensor,
    /// Added to the variance.
    pub eps: f64,
}

/// What follows the BatchNorm in [`conv2d_batch_norm_eval`].
#[derive(Debug, Clone, Copy)]
pub enum AfterBatchNorm<'a> {
    /// Nothing: `bn(conv(x))`.
    Nothing,
    /// `relu(bn(conv(x)))`.
    Relu,
    /// `relu(bn(conv(x)) + residual)`, the end of a residual block; `residual` has the
    /// output's shape.
    AddRelu(&'a Tensor),
}

/// Eval-mode `bn(conv2d(x, w))` followed by `after`: the same values, bit for bit, as
/// [`conv2d`], [`batch_norm_eval`] (with `relu` for [`AfterBatchNorm::Relu`]) and, for
/// [`AfterBatchNorm::AddRelu`], [`add_relu`] one after the other, but each output image is
/// normalised (and added to its residual, and rectified) in place right after its
/// convolution, while it is in cache: no further pass over the output, no intermediate
/// tensor.
///
/// Meant for inference (under [`super::no_grad`], as `ResNetModel::predict` runs). Where any
/// input tracks gradients (say, fine-tuning with frozen BatchNorm statistics) or the
/// reference ops are on, it runs the three ops one after the other instead, so gradients
/// flow as usual.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use resnet_model::ops::{self, AfterBatchNorm, EvalBatchNorm};
/// # fn main() -> candle_core::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev)?;
/// let w = Tensor::randn(0f32, 0.2, (4, 4, 3, 3), &dev)?;
/// let (gamma, beta) = (Tensor::ones(4, DType::F32, &dev)?, Tensor::zeros(4, DType::F32, &dev)?);
/// let (mean, var) = (Tensor::zeros(4, DType::F32, &dev)?, Tensor::ones(4, DType::F32, &dev)?);
/// let bn = EvalBatchNorm { weight: &gamma, bias: &beta, running_mean: &mean, running_var: &var, eps: 1e-5 };
/// let fused = ops::conv2d_batch_norm_eval(&x, &w, 1, 1, &bn, AfterBatchNorm::AddRelu(&x))?;
/// let h = ops::batch_norm_eval(&ops::conv2d(&x, &w, 1, 1)?, &gamma, &beta, &mean, &var, 1e-5, false)?;
/// let composed = ops::add_relu(&h, &x)?;
/// assert_eq!(fused.flatten_all()?.to_vec1::<f32>()?, composed.flatten_all()?.to_vec1::<f32>()?);
/// # Ok(())
/// # }
/// ```
pub fn conv2d_batch_norm_eval(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    bn: &EvalBatchNorm<'_>,
    after: AfterBatchNorm<'_>,
) -> Result<Tensor> {
    const OP: &str = "conv2d_batch_norm_eval";
    let (x, w) = (&arg(x), &arg(w));
    let (gamma, beta) = (&arg(bn.weight), &arg(bn.bias));
    let (mean, var) = (&arg(bn.running_mean), &arg(bn.running_var));
    let residual = match after {
        AfterBatchNorm::AddRelu(r) => Some(arg(r)),
        AfterBatchNorm::Nothing | AfterBatchNorm::Relu => None,
    };
    let mut inputs = vec![x, w, gamma, beta, mean, var];
    inputs.extend(residual.as_ref());
    if !fast_path(&inputs) || inputs.iter().any(|t| t.track_op()) {
        let relu = matches!(after, AfterBatchNorm::Relu);
        let y = batch_norm_eval(
            &conv2d(x, w, stride, padding)?,
            gamma,
            beta,
            mean,
            var,
            bn.eps,
            relu,
        )?;
        return match &residual {
            Some(r) => add_relu(&y, r),
            None => Ok(y),
        };
    }
    let g = ConvGeom::new(x.dims(), w.dims(), stride, padding)?;
    for (name, t) in [
        ("weight", gamma),
        ("bias", beta),
        ("running_mean", mean),
        ("running_var", var),
    ] {
        if t.dims() != [g.cout] {
            bail!(
                "{OP}: BatchNorm {name} must have shape [{}] (the convolution's output \
                 channels), got {:?}",
                g.cout,
                t.dims()
            );
        }
    }
    let out_dims = [g.n, g.cout, g.ho, g.wo];
    if let Some(r) = &residual {
        if r.dims() != out_dims {
            bail!(
                "{OP}: residual must have the output's shape {out_dims:?}, got {:?}",
                r.dims()
            );
        }
    }
    // The folding of `batch_norm_eval`, op for op (so the same scale and shift bits).
    let scale = gamma.mul(&(var + bn.eps)?.sqrt()?.recip()?)?;
    let shift = beta.sub(&mean.mul(&scale)?)?;
    let relu = !matches!(after, AfterBatchNorm::Nothing);
    let y = match &residual {
        Some(r) => with_all(OP, [x, w, &scale, &shift, r], |[xs, ws, scale, shift, r]| {
            let a = AffineEpilogue {
                scale,
                shift,
                relu,
                residual: Some(r),
            };
            forward_affine(&g, xs, ws, a)
        })?,
        None => with_all(OP, [x, w, &scale, &shift], |[xs, ws, scale, shift]| {
            let a = AffineEpilogue {
                scale,
                shift,
                relu,
                residual: None,
            };
            forward_affine(&g, xs, ws, a)
        })?,
    };
    Tensor::from_vec(y, out_dims.as_slice(), x.device())
}
