//! Evaluation of a model on an image set: loss, accuracy, per-class accuracy, confusion
//! matrix. Single view (no augmentation), eval-mode BatchNorm (running statistics).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use cifar_data::{BatchLoader, ImageSet, LoaderConfig, Normalizer, Shard};
use resnet_model::ResNetModel;
use serde::{Deserialize, Serialize};

use crate::distributed::{Communicator, SingleProcess};
use crate::error::{ModelContext, Result};
use crate::loss::cross_entropy;

/// Accuracy of one class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClassAccuracy {
    /// Class name.
    pub class: String,
    /// Correctly classified images of this class.
    pub correct: u64,
    /// Images of this class.
    pub total: u64,
    /// `correct / total` (0 when the class is absent).
    pub accuracy: f64,
}

/// The result of evaluating a model on a set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// Correctly classified images (top-1).
    pub correct: u64,
    /// Images evaluated.
    pub total: u64,
    /// `correct / total`.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy of each class, in label order.
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

impl EvalResult {
    /// Error rate in percent, the paper's measure.
    pub fn error_percent(&self) -> f64 {
        100.0 * (1.0 - self.accuracy)
    }
}

/// Evaluates `model` on `set` (normalized by `normalizer`) in batches of `batch_size`.
/// `class_names` label the per-class rows (missing names become `class N`).
pub fn evaluate(
    model: &ResNetModel,
    set: &Arc<ImageSet>,
    normalizer: &Arc<Normalizer>,
    batch_size: usize,
    class_names: &[String],
) -> Result<EvalResult> {
    evaluate_sharded(
        model,
        set,
        normalizer,
        batch_size,
        class_names,
        &SingleProcess,
    )
}

/// [`evaluate`] by the ranks of `comm` together: each rank evaluates its shard of every
/// batch, and the confusion counts and loss sums are summed over the ranks (every rank gets
/// the whole result). The counts are exactly those of one process; the loss may differ in
/// the last bits (summed in another order).
pub fn evaluate_sharded(
    model: &ResNetModel,
    set: &Arc<ImageSet>,
    normalizer: &Arc<Normalizer>,
    batch_size: usize,
    class_names: &[String],
    comm: &dyn Communicator,
) -> Result<EvalResult> {
    let num_classes = model.config().num_classes;
    let loader = BatchLoader::new(
        Arc::clone(set),
        Arc::clone(normalizer),
        LoaderConfig::eval(batch_size.max(1)),
    )
    .with_shard(Shard {
        rank: comm.rank(),
        count: comm.size(),
    });
    let device = model.device().clone();
    let mut confusion = vec![vec![0u64; num_classes]; num_classes];
    let mut loss_sum = 0f64;
    for (b, batch) in loader.epoch(0, 0).enumerate() {
        if batch.is_empty() {
            continue;
        }
        let ctx = || format!("evaluating batch {b}");
        let (x, y) = batch.to_tensors(&device).ctx(ctx)?;
        let logits = model.predict(&x).ctx(ctx)?;
        let loss = cross_entropy(&logits, &y, 0.0)
            .and_then(|l| l.to_scalar::<f32>())
            .ctx(ctx)?;
        loss_sum += f64::from(loss) * batch.len() as f64;
        let pred = argmax(&logits).ctx(ctx)?;
        for (&t, &p) in batch.labels.iter().zip(&pred) {
            confusion[t as usize][p as usize] += 1;
        }
    }
    if comm.size() > 1 {
        let mut sums: Vec<f64> = confusion.iter().flatten().map(|&c| c as f64).collect();
        sums.push(loss_sum);
        comm.all_reduce_sum_f64(&mut sums);
        loss_sum = sums.pop().expect("the loss sum");
        for (c, s) in confusion.iter_mut().flatten().zip(sums) {
            *c = s as u64;
        }
    }
    Ok(summarize(confusion, loss_sum, class_names))
}

/// Per-row arg-max of `[N, C]` logits (ties to the lowest index).
pub(crate) fn argmax(logits: &Tensor) -> candle_core::Result<Vec<u32>> {
    logits.argmax(1)?.to_device(&Device::Cpu)?.to_vec1::<u32>()
}

/// Builds an [`EvalResult`] from a confusion matrix and the summed loss.
pub fn summarize(confusion: Vec<Vec<u64>>, loss_sum: f64, class_names: &[String]) -> EvalResult {
    let total: u64 = confusion.iter().flatten().sum();
    let correct: u64 = (0..confusion.len()).map(|i| confusion[i][i]).sum();
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let n: u64 = row.iter().sum();
            ClassAccuracy {
                class: class_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("class {i}")),
                correct: row[i],
                total: n,
                accuracy: if n > 0 { row[i] as f64 / n as f64 } else { 0.0 },
            }
        })
        .collect();
    EvalResult {
        correct,
        total,
        accuracy: if total > 0 {
            correct as f64 / total as f64
        } else {
            0.0
        },
        loss: if total > 0 {
            loss_sum / total as f64
        } else {
            0.0
        },
        per_class,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarize_counts() {
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let r = summarize(vec![vec![3, 1], vec![0, 4]], 8.0, &names);
        assert_eq!((r.correct, r.total), (7, 8));
        assert_eq!(r.accuracy, 0.875);
        assert_eq!(r.loss, 1.0);
        assert_eq!(r.per_class[0].accuracy, 0.75);
        assert_eq!(r.per_class[1].class, "b");
        assert!((r.error_percent() - 12.5).abs() < 1e-12);
        let empty = summarize(vec![vec![0; 3]; 3], 0.0, &[]);
        assert_eq!(empty.accuracy, 0.0);
        assert_eq!(empty.per_class[2].class, "class 2");
    }
}
