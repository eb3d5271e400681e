//! [`BatchStats`]: how training-mode BatchNorm computes its batch statistics, for
//! data-parallel training (one model trained by several processes, each on a shard of the
//! global batch), without depending on any particular communication library.
//!
//! - [`BatchStats::Local`] (default): statistics over the batch this process sees, like
//!   PyTorch's `BatchNorm2d` (per-rank statistics under data parallelism).
//! - [`BatchStats::Groups`]: "ghost" BatchNorm, the batch cut into equal chunks along `N`,
//!   each normalized with its own statistics: what `g` ranks with per-rank BatchNorm compute
//!   together, reproduced in one process.
//! - [`BatchStats::Synced`]: synchronized BatchNorm (like `torch.nn.SyncBatchNorm`), with
//!   statistics over the union of every process's batch, summed through a [`StatsReducer`]
//!   (an MPI all-reduce, say) in the forward and in the backward.
//!
//! Set a mode on a whole network with [`crate::ResNetModel::set_batch_stats`] (or on single
//! layers: [`crate::ResNet::set_batch_stats`], [`crate::BasicBlock::set_batch_stats`],
//! [`crate::ShortcutLayer::set_batch_stats`], [`crate::BatchNorm::set_batch_stats`]). Eval
//! mode (`train == false`) normalizes with the running statistics whatever the mode.

use std::sync::Arc;

use candle_core::{bail, Result, Tensor};

use crate::batch_norm::BatchNormConfig;
use crate::ops;
#[cfg(doc)]
use crate::{BasicBlock, BatchNorm};

/// How training-mode BatchNorm computes its batch statistics (see the [module
/// docs](self)). Eval mode ignores it.
#[derive(Clone, Debug, Default)]
pub enum BatchStats {
    /// Mean and biased variance over the whole batch this process sees (PyTorch's
    /// `BatchNorm2d`; per-rank statistics under data parallelism). The running statistics
    /// are updated from the unbiased variance over `m = N * H * W` values. The default:
    /// exactly the behaviour of a model that never had a mode set, including the fused
    /// training path of [`BasicBlock`] ([`ops::basic_block_train`]).
    #[default]
    Local,
    /// "Ghost" BatchNorm: the batch `[N, C, H, W]` is cut into `groups` equal consecutive
    /// chunks along `N` (`N` must be a multiple of `groups`, else the forward fails naming
    /// both), and each chunk is normalized with its own mean and biased variance: what
    /// `groups` ranks with per-rank BatchNorm compute together, in one process. The running
    /// statistics are updated once per forward with the averages over the chunks of the
    /// chunk means and of the chunk *unbiased* variances (over `m = N / groups * H * W`
    /// values each): `running = (1 - momentum) * running + momentum * average`, the
    /// average of what each rank's BatchNorm would hold. [`BasicBlock`]s run their layers
    /// one by one (not fused) in this mode. `Groups(1)` is [`Local`](Self::Local), bit for
    /// bit; `Groups(0)` is an error.
    Groups(usize),
    /// Synchronized BatchNorm (like `torch.nn.SyncBatchNorm`): mean and biased variance over
    /// the union of the batches of every process that shares the reducer, accumulated in
    /// f64 in two passes (per-channel sums and the element count, all-reduced, give the
    /// global mean; per-channel sums of squared deviations from it, all-reduced, give the
    /// global variance).
    ///
    /// The backward all-reduces the per-channel sums `Σ dy` and `Σ dy * x̂` (`dy` after the
    /// ReLU mask of a fused ReLU), so the input gradient is the one of the global
    /// normalisation, for a loss that is already scaled such that the *sum* over processes
    /// of the gradients is the global gradient (each process's loss divided by the global
    /// batch size, say). The gradients of the BatchNorm's weight and bias are this
    /// process's share only (`Σ dy * x̂` and `Σ dy` over the local batch): the trainer sums
    /// them, like every other parameter gradient, across processes.
    ///
    /// The running statistics are updated from the global mean and the global unbiased
    /// variance (`M / (M - 1)` times the biased one, `M` the global count per channel), so
    /// every process holds the same running statistics. Every process must run the same
    /// sequence of training-mode forwards and backwards (each BatchNorm calls the reducer
    /// twice per forward and once per backward, in the same order everywhere). CPU and f32
    /// only (see [`ops::batch_norm_train_synced`]); [`BasicBlock`]s run their layers one by
    /// one (not fused) in this mode.
    Synced(Arc<dyn StatsReducer>),
}

impl BatchStats {
    /// `Synced` through `reducer`.
    pub fn synced(reducer: impl StatsReducer + 'static) -> Self {
        Self::Synced(Arc::new(reducer))
    }

    /// Whether this mode normalizes exactly like [`Local`](Self::Local) (`Local` itself or
    /// `Groups(1)`), so the fused training path applies.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local | Self::Groups(1))
    }
}

/// Sums buffers across the processes that train one model together (an MPI all-reduce over
/// their communicator, say), for [`BatchStats::Synced`].
pub trait StatsReducer: Send + Sync + std::fmt::Debug {
    /// Replaces every element of `buf` by its sum over all processes. Every process calls
    /// this the same number of times, in the same order, with buffers of the same length.
    /// Every process must get the same sums (bit for bit) for the processes' running
    /// statistics to stay identical.
    fn all_reduce_sum(&self, buf: &mut [f64]) -> Result<()>;
}

/// The [`StatsReducer`] of a single process: sums over one process leave every buffer as it
/// is, so [`BatchStats::Synced`] with it normalizes like [`BatchStats::Local`] (to rounding).
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl StatsReducer for SingleProcess {
    fn all_reduce_sum(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// A training-mode normalisation under a non-local mode: the output, and what the running
/// statistics are updated from.
pub(crate) struct ModeOutput {
    /// The normalized (and optionally ReLU'd) activations.
    pub(crate) y: Tensor,
    /// Per-channel mean `[C]`, detached.
    pub(crate) mean: Tensor,
    /// Per-channel biased variance `[C]`, detached, over `count` values per channel.
    pub(crate) var: Tensor,
    /// Values per channel behind `var` (for the unbiased correction `count / (count - 1)`).
    pub(crate) count: usize,
}

/// `BatchStats::Groups(groups)` in training mode (`groups >= 2`): every chunk through
/// [`ops::batch_norm_train`], the outputs concatenated, the chunk statistics averaged.
pub(crate) fn groups_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    cfg: BatchNormConfig,
    groups: usize,
) -> Result<ModeOutput> {
    let (n, _c, h, w) = x.dims4()?;
    if groups == 0 || !n.is_multiple_of(groups) {
        bail!(
            "BatchNorm with BatchStats::Groups({groups}): the batch of shape {:?} does not \
             split into {groups} equal groups along N",
            x.dims()
        );
    }
    let k = n / groups;
    let count = k * h * w;
    if count < 2 {
        bail!(
            "BatchNorm with BatchStats::Groups({groups}) in training mode needs more than one \
             value per channel and group, got input of shape {:?}",
            x.dims()
        );
    }
    let mut ys = Vec::with_capacity(groups);
    let mut means = Vec::with_capacity(groups);
    let mut vars = Vec::with_capacity(groups);
    for i in 0..groups {
        let out = ops::batch_norm_train(&x.narrow(0, i * k, k)?, weight, bias, cfg.eps, cfg.relu)?;
        ys.push(out.y);
        means.push(out.mean);
        vars.push(out.var);
    }
    // the unbiased correction is the same for every chunk, so the average of the biased
    // variances, corrected once, is the average of the unbiased ones
    Ok(ModeOutput {
        y: Tensor::cat(&ys, 0)?,
        mean: Tensor::stack(&means, 0)?.mean(0)?,
        var: Tensor::stack(&vars, 0)?.mean(0)?,
        count,
    })
}

/// `BatchStats::Synced(reducer)` in training mode, through
/// [`ops::batch_norm_train_synced`].
pub(crate) fn synced_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    cfg: BatchNormConfig,
    reducer: &Arc<dyn StatsReducer>,
) -> Result<ModeOutput> {
    let out = ops::batch_norm_train_synced(x, weight, bias, cfg.eps, cfg.relu, reducer)?;
    Ok(ModeOutput {
        y: out.y,
        mean: out.mean,
        var: out.var,
        count: out.count,
    })
}
