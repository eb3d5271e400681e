//! Data-parallel training: one model trained by K processes ("ranks"), each on a shard of
//! every batch, as He et al. trained on two GPUs and as PyTorch's `DistributedDataParallel`
//! does.
//!
//! The loop talks to the other ranks through a [`Communicator`]: [`SingleProcess`] (the
//! default, no communication) or, with the `mpi` feature, `mpi::MpiCommunicator` over the
//! system MPI library (`mpirun -np K resnet-cli train CONFIG`). What a step does with K ranks:
//!
//! * every global batch of `training.batch_size` images is cut into K consecutive shards
//!   ([`cifar_data::Shard`]); order and augmentation depend only on (seed, epoch, sample), so
//!   the shards together are exactly the single-process batch;
//! * each rank's loss is its shard's summed loss divided by the *global* batch size, so the
//!   sum over ranks of the gradients is the gradient of the global batch's mean loss; the
//!   gradients are summed with one all-reduce on one flat buffer, and every rank applies the
//!   same SGD step, so the weights stay bit-identical (checked at every epoch end, see
//!   [`check_identical`]);
//! * BatchNorm uses per-rank batch statistics by default (the paper's two-GPU setup and
//!   DDP's default), with the running statistics averaged across ranks after every step so
//!   that every rank holds the same model (DDP instead copies rank 0's); or synchronized
//!   statistics (`training.sync_batch_norm: true`, like `torch.nn.SyncBatchNorm`), which
//!   makes K ranks compute what one process computes on the whole batch;
//! * rank 0 alone reads and writes the run directory (config, checkpoints, metrics,
//!   TensorBoard, plots, report); it sends the starting state to the other ranks, which
//!   therefore need only the dataset, not the run directory; evaluation is sharded and its
//!   counts summed; a stop request (Ctrl-C / SIGTERM on any rank, or rank 0's time limit)
//!   stops every rank after the same iteration, with one checkpoint. A run resumes with any
//!   number of ranks.

use std::fmt;
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

#[cfg(feature = "mpi")]
pub mod mpi;

/// Collective operations among the ranks that train one model. Every rank calls the same
/// operations in the same order with buffers of the same length.
pub trait Communicator: Send + Sync + fmt::Debug {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Replaces every element of `buf` by its sum over all ranks (the same result on every
    /// rank).
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);
    /// [`all_reduce_sum_f32`](Self::all_reduce_sum_f32) in double precision (statistics and
    /// counts: exact for integers below 2^53).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Replaces `buf` on every rank by rank 0's bytes (of any length).
    fn broadcast_bytes(&self, buf: &mut Vec<u8>);
    /// A line for logs, e.g. `2 ranks over Open MPI v4.1.4 (this is rank 0 on host-a)`.
    fn describe(&self) -> String;
    /// Ends every rank's process with exit code `code` (after an error on this rank, so that
    /// no other rank waits forever in a collective operation).
    fn abort(&self, code: i32) -> !;
}

/// One process, no communication: every operation leaves its buffer as it is. The same type
/// as [`resnet_model::SingleProcess`], the single-process [`resnet_model::StatsReducer`]
/// (re-exported here, so one value serves as both).
pub use resnet_model::SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) {}
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn broadcast_bytes(&self, _buf: &mut Vec<u8>) {}
    fn describe(&self) -> String {
        "a single process".into()
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// A [`Communicator`] as the [`resnet_model::StatsReducer`] that synchronized BatchNorm sums
/// its statistics with.
#[derive(Debug)]
pub(crate) struct CommReducer(pub(crate) Arc<dyn Communicator>);

impl resnet_model::StatsReducer for CommReducer {
    fn all_reduce_sum(&self, buf: &mut [f64]) -> candle_core::Result<()> {
        self.0.all_reduce_sum_f64(buf);
        Ok(())
    }
}

/// Rank 0's string on every rank.
pub(crate) fn broadcast_string(comm: &dyn Communicator, s: &mut String) {
    let mut bytes = std::mem::take(s).into_bytes();
    comm.broadcast_bytes(&mut bytes);
    *s = String::from_utf8_lossy(&bytes).into_owned();
}

/// Flattens `tensors` (f32) into one buffer, in order.
fn flatten(tensors: &[&Tensor]) -> candle_core::Result<Vec<f32>> {
    let mut flat = Vec::with_capacity(tensors.iter().map(|t| t.elem_count()).sum());
    for t in tensors {
        flat.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(flat)
}

/// Cuts `flat` back into tensors shaped like `like`, on their devices.
fn unflatten(flat: &[f32], like: &[&Tensor]) -> candle_core::Result<Vec<Tensor>> {
    let mut at = 0;
    like.iter()
        .map(|t| {
            let n = t.elem_count();
            let part = Tensor::from_slice(&flat[at..at + n], t.shape(), t.device());
            at += n;
            part
        })
        .collect()
}

/// Sums the gradients of `params` over all ranks with one all-reduce on one flat buffer, and
/// replaces them in `grads`. A parameter without a gradient (unused) counts as zeros.
pub(crate) fn all_reduce_grads(
    comm: &dyn Communicator,
    params: &[(String, Var)],
    grads: &mut GradStore,
) -> candle_core::Result<()> {
    let zeros: Vec<Tensor> = params
        .iter()
        .map(|(_, v)| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => v.as_tensor().zeros_like(),
        })
        .collect::<candle_core::Result<_>>()?;
    let refs: Vec<&Tensor> = zeros.iter().collect();
    let mut flat = flatten(&refs)?;
    comm.all_reduce_sum_f32(&mut flat);
    for ((_, v), g) in params.iter().zip(unflatten(&flat, &refs)?) {
        grads.insert(v.as_tensor(), g);
    }
    Ok(())
}

/// Replaces each of `buffers` (BatchNorm running statistics) by its mean over all ranks.
pub(crate) fn average_buffers(
    comm: &dyn Communicator,
    buffers: &[(String, Var)],
) -> candle_core::Result<()> {
    let tensors: Vec<Tensor> = buffers.iter().map(|(_, v)| v.as_tensor().clone()).collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let mut flat = flatten(&refs)?;
    comm.all_reduce_sum_f32(&mut flat);
    let k = comm.size() as f32;
    flat.iter_mut().for_each(|x| *x /= k);
    for ((_, v), t) in buffers.iter().zip(unflatten(&flat, &refs)?) {
        v.set(&t)?;
    }
    Ok(())
}

/// Whether `tensors` are bit-identical on every rank. Each rank's CRC-32C of the values'
/// bytes, cut into two 16-bit halves `h`, is summed over the ranks as `h` and `h²` (exact in
/// f64): the halves agree on all ranks iff `K·Σh² = (Σh)²`.
pub fn check_identical(comm: &dyn Communicator, tensors: &[&Tensor]) -> candle_core::Result<bool> {
    if comm.size() == 1 {
        return Ok(true);
    }
    let flat = flatten(tensors)?;
    let bytes: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    let c = crc32c::crc32c(&bytes);
    let (lo, hi) = (f64::from(c & 0xffff), f64::from(c >> 16));
    let mut sums = [lo, lo * lo, hi, hi * hi];
    comm.all_reduce_sum_f64(&mut sums);
    let k = comm.size() as f64;
    Ok(k * sums[1] == sums[0] * sums[0] && k * sums[3] == sums[2] * sums[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `SingleProcess` value is the model's statistics reducer and the loop's
    /// communicator at once, and both leave their buffers alone.
    #[test]
    fn single_process_is_reducer_and_communicator() {
        use resnet_model::StatsReducer;
        let one = SingleProcess;
        let mut b64 = vec![1.5f64, -2.0];
        one.all_reduce_sum(&mut b64).unwrap();
        one.all_reduce_sum_f64(&mut b64);
        assert_eq!(b64, [1.5, -2.0]);
        let mut bytes = b"rank 0".to_vec();
        one.broadcast_bytes(&mut bytes);
        assert_eq!(
            (one.rank(), one.size(), bytes.as_slice()),
            (0, 1, &b"rank 0"[..])
        );
    }
}
