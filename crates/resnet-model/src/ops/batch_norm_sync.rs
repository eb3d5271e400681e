//! Synchronized training-mode BatchNorm2d (+ optional ReLU) as a candle custom op: the
//! statistics, and the reductions of the backward, are summed over every process through a
//! [`StatsReducer`].
//!
//! Forward: a pass for the local per-channel sums (all-reduced with the local count into the
//! global mean), a pass for the local sums of squared deviations from the global mean
//! (all-reduced into the global biased variance), then the normalisation pass. Backward: a
//! reduction pass (`Σ dy`, `Σ dy * (x - mean)`, all-reduced) and the input-gradient pass.
//! The per-channel kernels are those of the local BatchNorm (`channel.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{bail, DType, Layout, Result, Shape, Tensor};

use super::batch_norm::params;
use super::channel::{affine, channel_moments, grad_input, grad_sums, GradCoef, Masked, Planes};
use super::custom::{custom_op, with_all, CpuOp};
use super::storage::arg;
use crate::batch_stats::StatsReducer;

/// Output of [`batch_norm_train_synced`]: the normalized activations and the global batch
/// statistics.
#[derive(Debug, Clone)]
pub struct SyncedBatchNormOutput {
    /// `relu?(gamma * (x - mean) / sqrt(var + eps) + beta)`, differentiable w.r.t. x, gamma,
    /// beta.
    pub y: Tensor,
    /// Per-channel mean over every process's batch, shape `[C]`, detached.
    pub mean: Tensor,
    /// Per-channel *biased* variance over every process's batch (divided by `count`), shape
    /// `[C]`, detached.
    pub var: Tensor,
    /// Values per channel over every process (`Σ N * H * W`).
    pub count: usize,
}

/// Training-mode BatchNorm2d over `[N, C, H, W]` with statistics over the batches of every
/// process that shares `reducer` (synchronized BatchNorm, like `torch.nn.SyncBatchNorm`),
/// optionally fused with a ReLU. `weight`/`bias` are `[C]`.
///
/// Forward: the global per-channel mean from the all-reduced local sums and counts, then the
/// global biased variance from the all-reduced local sums of squared deviations from that
/// mean (f64 accumulation); `y = relu?(weight * (x - mean) / sqrt(var + eps) + bias)`.
/// Backward, for a loss whose gradients summed over processes are the global gradient: with
/// `g = dy` (masked by the ReLU), `x̂ = (x - mean) / sqrt(var + eps)` and `M` the global
/// count, the per-channel `Σ g` and `Σ g * x̂` are all-reduced, and
/// `dx = weight / sqrt(var + eps) * (g - Σ g / M - x̂ * Σ (g * x̂) / M)`; `dweight` and
/// `dbias` are the *local* `Σ g * x̂` and `Σ g` (sum them across processes like any other
/// parameter gradient). The reducer is called twice in the forward and once in the backward.
///
/// CPU and f32 only (there is no `_slow` twin: the reducer has to run inside the backward),
/// also inside [`super::with_reference_ops`]; other devices or dtypes are an error. Fails
/// (on every process alike) when the global count is below 2.
pub fn batch_norm_train_synced(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
    reducer: &Arc<dyn StatsReducer>,
) -> Result<SyncedBatchNormOutput> {
    let (x, weight, bias) = (&arg(x), &arg(weight), &arg(bias));
    for t in [x, weight, bias] {
        if !t.device().is_cpu() {
            bail!(
                "batch_norm_train_synced: synchronized BatchNorm runs on the CPU only, got a \
                 tensor on {:?}",
                t.device().location()
            );
        }
        if t.dtype() != DType::F32 {
            bail!(
                "batch_norm_train_synced: synchronized BatchNorm supports f32 only, got {:?}",
                t.dtype()
            );
        }
    }
    let saved = Arc::new(Mutex::new(None));
    let op = SyncedBatchNormTrain {
        eps,
        relu,
        reducer: reducer.clone(),
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let guard = saved.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(s) = guard.as_ref() else {
        bail!("batch_norm_train_synced: the forward kernel did not record its statistics")
    };
    let c = s.mean.len();
    Ok(SyncedBatchNormOutput {
        y,
        mean: Tensor::from_vec(s.mean.clone(), c, x.device())?,
        var: Tensor::from_vec(s.var.clone(), c, x.device())?,
        count: s.count,
    })
}

/// What the forward keeps for its backward and for the running statistics (global).
#[derive(Debug, Clone)]
struct Saved {
    mean: Vec<f32>,
    /// Biased variance.
    var: Vec<f32>,
    invstd: Vec<f32>,
    /// `gamma * invstd` ...
    scale: Vec<f32>,
    /// ... and `beta - mean * scale`: the normalisation as one per-channel affine map.
    shift: Vec<f32>,
    /// Global count per channel.
    count: usize,
}

/// Synchronized training-mode BatchNorm over `(x, weight, bias)`.
struct SyncedBatchNormTrain {
    eps: f64,
    relu: bool,
    reducer: Arc<dyn StatsReducer>,
    saved: Arc<Mutex<Option<Saved>>>,
}

custom_op!(SyncedBatchNormTrain: CustomOp3);

impl CpuOp<3> for SyncedBatchNormTrain {
    const NAME: &'static str = "resnet-batch-norm-train-synced";
    const OP: &'static str = "batch_norm_train_synced";

    fn forward(
        &self,
        [x, gamma, beta]: [&[f32]; 3],
        [lx, lg, lb]: [&Layout; 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let p = Planes::from_dims(Self::OP, lx.dims())?;
        let gamma = params(Self::OP, p.c, gamma, lg)?;
        let beta = params(Self::OP, p.c, beta, lb)?;
        let s = self.stats(p, x, gamma, beta, lx.dims())?;
        let y = affine(p, x, &s.scale, &s.shift, self.relu);
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
        Ok((y, lx.shape().clone()))
    }

    fn backward(
        &self,
        [x, _gamma, _beta]: [&Tensor; 3],
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        const OP: &str = "batch_norm_train_synced backward";
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
            let mask = Masked {
                scale: &s.scale,
                shift: &s.shift,
                relu: self.relu,
            };
            // local Σ g and Σ g * (x - mean), then their sums over every process
            let (s1, s2) = grad_sums(p, xs, gs, mask, &s.mean);
            let mut sums = [s1.as_slice(), s2.as_slice()].concat();
            self.reducer.all_reduce_sum(&mut sums)?;
            let (g1, g2) = sums.split_at(p.c);
            let m = s.count as f64;
            let mut a = Vec::with_capacity(p.c);
            let mut b = Vec::with_capacity(p.c);
            let mut dgamma = Vec::with_capacity(p.c);
            for c in 0..p.c {
                let (sc, is) = (f64::from(s.scale[c]), f64::from(s.invstd[c]));
                a.push((-sc * is * is * g2[c] / m) as f32);
                b.push((-sc * g1[c] / m) as f32);
                dgamma.push((s2[c] * is) as f32);
            }
            let coef = GradCoef {
                k: &s.scale,
                center: &s.mean,
                a: &a,
                b: &b,
            };
            let dbeta: Vec<f32> = s1.iter().map(|&v| v as f32).collect();
            Ok::<_, candle_core::Error>((grad_input(p, xs, gs, mask, &coef), dgamma, dbeta))
        })??;
        let dev = x.device();
        Ok([
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dgamma, p.c, dev)?),
            Some(Tensor::from_vec(dbeta, p.c, dev)?),
        ])
    }
}

impl SyncedBatchNormTrain {
    /// Global statistics of `x` (local shape `dims`, for errors) and the per-channel affine
    /// map they give with `gamma`/`beta`.
    fn stats(
        &self,
        p: Planes,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        dims: &[usize],
    ) -> Result<Saved> {
        const OP: &str = SyncedBatchNormTrain::OP;
        let m = p.per_channel();
        // pass 1: local sums, shifted by each channel's first value against cancellation
        let first: Vec<f32> = (0..p.c)
            .map(|c| if m > 0 { x[c * p.hw] } else { 0.0 })
            .collect();
        let (d1, _) = channel_moments(p, x, &first);
        let mut sums: Vec<f64> = (0..p.c)
            .map(|c| m as f64 * f64::from(first[c]) + d1[c])
            .collect();
        sums.push(m as f64);
        self.reducer.all_reduce_sum(&mut sums)?;
        let total = sums[p.c];
        if total.is_nan() || total < 2.0 {
            bail!(
                "{OP}: BatchNorm in training mode needs more than one value per channel over \
                 all processes, got {total} (local input of shape {dims:?})"
            );
        }
        let mean: Vec<f64> = sums[..p.c].iter().map(|s| s / total).collect();
        // pass 2: local sums of squared deviations from the global mean, computed around its
        // f32 rounding `r`: Σ (x - μ)² = Σ (x - r)² - 2 (μ - r) Σ (x - r) + m (μ - r)²
        let center: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        let (d1, d2) = channel_moments(p, x, &center);
        let mut sq: Vec<f64> = (0..p.c)
            .map(|c| {
                let e = mean[c] - f64::from(center[c]);
                d2[c] - 2.0 * e * d1[c] + m as f64 * e * e
            })
            .collect();
        self.reducer.all_reduce_sum(&mut sq)?;
        let mut s = Saved {
            mean: center,
            var: Vec::with_capacity(p.c),
            invstd: Vec::with_capacity(p.c),
            scale: Vec::with_capacity(p.c),
            shift: Vec::with_capacity(p.c),
            count: total as usize,
        };
        for c in 0..p.c {
            let var = (sq[c] / total).max(0.0);
            let invstd = 1.0 / (var + self.eps).sqrt();
            let scale = f64::from(gamma[c]) * invstd;
            s.var.push(var as f32);
            s.invstd.push(invstd as f32);
            s.scale.push(scale as f32);
            s.shift.push((f64::from(beta[c]) - mean[c] * scale) as f32);
        }
        Ok(s)
    }
}
