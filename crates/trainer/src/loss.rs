//! Softmax cross-entropy with optional label smoothing, and top-1 accuracy.
//!
//! Semantics follow PyTorch's `torch.nn.functional.cross_entropy(logits, labels,
//! label_smoothing=ε)` with mean reduction: `(1-ε)·mean_i(-log p_i[y_i]) +
//! ε·mean_i(mean_k(-log p_i[k]))`. The log-softmax is computed stably (max-shifted
//! log-sum-exp), in the logits' dtype.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use trainer::loss::{accuracy_count, cross_entropy};
//!
//! let logits = Tensor::new(&[[0f32, 0.0], [3.0, 1.0]], &Device::Cpu).unwrap();
//! let labels = Tensor::new(&[1u32, 1], &Device::Cpu).unwrap();
//! let loss = cross_entropy(&logits, &labels, 0.0).unwrap().to_scalar::<f32>().unwrap();
//! assert!(loss > 0.0);
//! assert_eq!(accuracy_count(&logits, &labels).unwrap(), 0);
//! ```
//!
//! Labels are class indices (`u32`; other integer dtypes are converted). An index `>=` the
//! number of classes is an error on CPU (candle's `gather` checks it).

use candle_core::{bail, DType, Result, Tensor, D};

fn check_shapes(logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    let (n, c) = match logits.dims() {
        [n, c] => (*n, *c),
        d => bail!("cross-entropy: logits must be [batch, classes], got shape {d:?}"),
    };
    match labels.dims() {
        [m] if *m == n => {}
        d => {
            bail!("cross-entropy: labels must be [{n}] to match logits [{n}, {c}], got shape {d:?}")
        }
    }
    if n == 0 || c == 0 {
        bail!("cross-entropy: empty batch or no classes (logits shape [{n}, {c}])");
    }
    if !labels.dtype().is_int() {
        bail!(
            "cross-entropy: labels must be integer class indices, got dtype {:?}",
            labels.dtype()
        );
    }
    Ok((n, c))
}

fn labels_u32(labels: &Tensor) -> Result<Tensor> {
    if labels.dtype() == DType::U32 {
        Ok(labels.clone())
    } else {
        labels.to_dtype(DType::U32)
    }
}

/// Row-wise `log softmax` of `[N, C]` logits, numerically stable.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    // The shift does not change the result, so it carries no gradient.
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Mean softmax cross-entropy over the batch, with PyTorch's label-smoothing semantics.
///
/// `logits`: `[N, C]` float; `labels`: `[N]` class indices; `label_smoothing` in `[0, 1]`.
/// Returns a scalar tensor (rank 0) that supports backpropagation.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    check_shapes(logits, labels)?;
    if !(0.0..=1.0).contains(&label_smoothing) {
        bail!("cross-entropy: label_smoothing must be in [0, 1], got {label_smoothing}");
    }
    let logp = log_softmax(logits)?;
    let idx = labels_u32(labels)?.unsqueeze(1)?;
    let nll = logp.gather(&idx, 1)?.squeeze(1)?.mean_all()?.neg()?;
    if label_smoothing == 0.0 {
        return Ok(nll);
    }
    let smooth = logp.mean(D::Minus1)?.mean_all()?.neg()?;
    (nll * (1.0 - label_smoothing))? + (smooth * label_smoothing)?
}

/// Number of rows whose arg-max logit equals the label (top-1 correct count).
///
/// Ties go to the lowest class index (candle's `argmax`).
pub fn accuracy_count(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    check_shapes(logits, labels)?;
    let pred = logits.argmax(D::Minus1)?;
    let correct = pred
        .eq(&labels_u32(labels)?)?
        .to_dtype(DType::U32)?
        .sum_all()?;
    Ok(correct.to_scalar::<u32>()? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn manual_ce(logits: &[[f64; 3]], labels: &[usize], eps: f64) -> f64 {
        let mut total = 0.0;
        for (row, &y) in logits.iter().zip(labels) {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            let logp: Vec<f64> = row.iter().map(|v| v - lse).collect();
            let uniform = -logp.iter().sum::<f64>() / row.len() as f64;
            total += (1.0 - eps) * -logp[y] + eps * uniform;
        }
        total / labels.len() as f64
    }

    #[test]
    fn matches_hand_computation_with_and_without_smoothing() -> Result<()> {
        let rows = [[1.0, 2.0, 0.5], [-3.0, 0.0, 3.0], [100.0, 0.0, -100.0]];
        let labels = [1usize, 0, 0];
        let lt = Tensor::new(&rows.map(|r| r.map(|v| v as f32)), &Device::Cpu)?;
        let yt = Tensor::new(&[1u32, 0, 0], &Device::Cpu)?;
        for eps in [0.0, 0.1, 1.0] {
            let ours = cross_entropy(&lt, &yt, eps)?.to_scalar::<f32>()? as f64;
            let want = manual_ce(&rows, &labels, eps);
            assert!(
                (ours - want).abs() < 1e-5 * want.abs().max(1.0),
                "eps {eps}: {ours} vs {want}"
            );
        }
        // i64 labels are accepted too.
        let y64 = Tensor::new(&[1i64, 0, 0], &Device::Cpu)?;
        let a = cross_entropy(&lt, &y64, 0.1)?.to_scalar::<f32>()?;
        let b = cross_entropy(&lt, &yt, 0.1)?.to_scalar::<f32>()?;
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn gradient_is_softmax_minus_onehot_over_n() -> Result<()> {
        let v = Var::new(&[[1f32, 2.0, 0.5], [0.0, 0.0, 0.0]], &Device::Cpu)?;
        let y = Tensor::new(&[2u32, 1], &Device::Cpu)?;
        let loss = cross_entropy(v.as_tensor(), &y, 0.0)?;
        let g = loss
            .backward()?
            .get(v.as_tensor())
            .unwrap()
            .to_vec2::<f32>()?;
        let rows = [[1f64, 2.0, 0.5], [0.0, 0.0, 0.0]];
        for (i, (row, yi)) in rows.iter().zip([2usize, 1]).enumerate() {
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            for k in 0..3 {
                let want = (row[k].exp() / z - if k == yi { 1.0 } else { 0.0 }) / 2.0;
                assert!(
                    (g[i][k] as f64 - want).abs() < 1e-6,
                    "[{i}][{k}] {} vs {want}",
                    g[i][k]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn accuracy_counts_top1() -> Result<()> {
        let l = Tensor::new(&[[0.1f32, 0.9], [0.8, 0.2], [0.3, 0.7]], &Device::Cpu)?;
        let y = Tensor::new(&[1u32, 1, 1], &Device::Cpu)?;
        assert_eq!(accuracy_count(&l, &y)?, 2);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<()> {
        let l = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        let short = Tensor::new(&[0u32], &Device::Cpu)?;
        let msg = cross_entropy(&l, &short, 0.0).unwrap_err().to_string();
        assert!(msg.contains("labels must be [2]"), "{msg}");
        let out_of_range = Tensor::new(&[0u32, 3], &Device::Cpu)?;
        assert!(cross_entropy(&l, &out_of_range, 0.0).is_err());
        let float_labels = Tensor::new(&[0f32, 1.0], &Device::Cpu)?;
        assert!(cross_entropy(&l, &float_labels, 0.0).is_err());
        let ok = Tensor::new(&[0u32, 1], &Device::Cpu)?;
        assert!(cross_entropy(&l, &ok, 1.5).is_err());
        assert!(accuracy_count(&l.flatten_all()?, &ok).is_err());
        Ok(())
    }
}
