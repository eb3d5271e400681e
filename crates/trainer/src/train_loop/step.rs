//! One training step, and the stop decision every rank agrees on.

use std::time::Instant;

use super::Trainer;
use crate::distributed::{all_reduce_grads, average_buffers};
use crate::error::{ModelContext, Result, TrainError};
use crate::loss::{accuracy_count, cross_entropy};
use crate::progress::StepInfo;
use crate::session::StopReason;

impl Trainer<'_> {
    /// One optimizer step on `batch` (this rank's shard of a batch of `global_len` images);
    /// `wait` is the time spent waiting for the batch.
    pub(super) fn step(
        &mut self,
        batch: &cifar_data::Batch,
        global_len: usize,
        lr: f64,
        wait: f64,
        epoch: u64,
    ) -> Result<()> {
        let t = Instant::now();
        let it = self.state.iteration + 1;
        let ctx = || format!("training step at iteration {it}");
        let ranks = self.comm.size();
        let (x, y) = batch.to_tensors(&self.device).ctx(ctx)?;
        let logits = self.model.forward_t(&x, true).ctx(ctx)?;
        let mut loss = cross_entropy(&logits, &y, self.cfg.training.label_smoothing).ctx(ctx)?;
        let mut loss_value = loss.to_scalar::<f32>().ctx(ctx)?;
        let mut correct = accuracy_count(&logits, &y).ctx(ctx)? as u64;
        if ranks > 1 {
            // The shard's mean loss, weighted by its share of the global batch: the ranks'
            // gradients then sum to the gradient of the global batch's mean loss.
            let n = batch.len() as f64;
            let share = n / global_len as f64;
            loss = (loss * share).ctx(ctx)?;
            let mut sums = [f64::from(loss_value) * n, correct as f64];
            self.comm.all_reduce_sum_f64(&mut sums);
            loss_value = (sums[0] / global_len as f64) as f32;
            correct = sums[1] as u64;
        }
        if !loss_value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                iteration: it,
                loss: loss_value,
                last_checkpoint: self.last_checkpoint.as_ref().map(|(p, _)| p.clone()),
            });
        }
        let mut grads = loss.backward().ctx(ctx)?;
        let t_comm = Instant::now();
        if ranks > 1 {
            let params = self.model.parameters();
            all_reduce_grads(self.comm.as_ref(), &params, &mut grads).ctx(ctx)?;
        }
        let mut comm_secs = t_comm.elapsed().as_secs_f64();
        self.sgd.step(&grads, lr).ctx(ctx)?;
        if ranks > 1 && !self.sync_bn {
            let t_comm = Instant::now();
            average_buffers(self.comm.as_ref(), &self.model.buffers()).ctx(ctx)?;
            comm_secs += t_comm.elapsed().as_secs_f64();
        }
        self.comm_time.0 += comm_secs;
        self.comm_time.1 += 1;
        self.state.iteration = it;
        let n = global_len as u64;
        self.session_images += n;
        let secs = wait + t.elapsed().as_secs_f64();
        self.state.epoch_stats.add(loss_value, correct, n, secs);
        self.state.window_stats.add(loss_value, correct, n, secs);
        self.observer.step(&StepInfo {
            iteration: it,
            epoch,
            lr,
            loss: loss_value,
            accuracy: correct as f64 / n.max(1) as f64,
            images_per_sec: self.state.window_stats.images_per_sec(),
        });
        if it.is_multiple_of(self.cfg.training.log_every) {
            self.log_window(lr)?;
        }
        Ok(())
    }

    /// The same stop decision on every rank: anyone's stop request, the iteration limit, or
    /// rank 0's clock (so that all ranks stop after the same step).
    pub(super) fn agree_on_stop(&self, local: Option<StopReason>) -> Option<StopReason> {
        if self.comm.size() == 1 {
            return local;
        }
        let is = |r| f64::from(u8::from(local == Some(r)));
        let mut votes = [
            is(StopReason::Interrupted),
            is(StopReason::IterationLimit),
            if self.comm.rank() == 0 {
                is(StopReason::TimeLimit)
            } else {
                0.0
            },
        ];
        self.comm.all_reduce_sum_f64(&mut votes);
        [
            StopReason::Interrupted,
            StopReason::IterationLimit,
            StopReason::TimeLimit,
        ]
        .into_iter()
        .zip(votes)
        .find(|(_, v)| *v > 0.0)
        .map(|(r, _)| r)
    }
}
