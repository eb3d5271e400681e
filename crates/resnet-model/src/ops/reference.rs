//! Reference implementations of the fast ops, built from plain candle ops. They run on every
//! device and dtype; the fast ops fall back to them off the CPU or for dtypes other than f32,
//! and the tests compare the two.

use candle_core::{Result, Tensor, D};

#[cfg(doc)]
use super::{
    add_relu, basic_block_train, batch_norm_eval, batch_norm_train, conv2d, subsample_pad,
};
use super::{BasicBlockOutput, BasicBlockParams, BatchNormOutput, BlockBnStats, BlockShortcut};

/// Reference implementation of [`conv2d`] with candle's own op.
pub fn conv2d_slow(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, 1)
}

/// Reference implementation of [`batch_norm_train`] with plain candle ops.
pub fn batch_norm_train_slow(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOutput> {
    let (_n, c, _h, _w) = x.dims4()?;
    let xt = x.transpose(0, 1)?.flatten_from(1)?; // [C, N*H*W]
    let mean = xt.mean(D::Minus1)?; // [C]
    let centered = xt.broadcast_sub(&mean.unsqueeze(1)?)?;
    let var = centered.sqr()?.mean(D::Minus1)?; // biased
    let shape = (1, c, 1, 1);
    let inv_std = (var.reshape(shape)? + eps)?.sqrt()?.recip()?;
    let y = x
        .broadcast_sub(&mean.reshape(shape)?)?
        .broadcast_mul(&inv_std)?
        .broadcast_mul(&weight.reshape(shape)?)?
        .broadcast_add(&bias.reshape(shape)?)?;
    let y = if relu { y.relu()? } else { y };
    Ok(BatchNormOutput {
        y,
        mean: mean.detach(),
        var: var.detach(),
    })
}

/// Reference implementation of [`batch_norm_eval`] with plain candle ops.
pub fn batch_norm_eval_slow(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let shape = (1, c, 1, 1);
    let inv_std = (running_var.reshape(shape)? + eps)?.sqrt()?.recip()?;
    let y = x
        .broadcast_sub(&running_mean.reshape(shape)?)?
        .broadcast_mul(&inv_std)?
        .broadcast_mul(&weight.reshape(shape)?)?
        .broadcast_add(&bias.reshape(shape)?)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// Reference implementation of [`add_relu`].
pub fn add_relu_slow(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a + b)?.relu()
}

/// Reference implementation of [`subsample_pad`] with plain candle ops.
pub fn subsample_pad_slow(x: &Tensor, out_channels: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if out_channels < c || !(out_channels - c).is_multiple_of(2) {
        candle_core::bail!(
            "subsample_pad: cannot pad {c} channels to {out_channels} symmetrically"
        );
    }
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    // Pad odd sizes by one so the reshape trick works; the padded row/col is never selected.
    let x = if h % 2 == 1 {
        x.pad_with_zeros(2, 0, 1)?
    } else {
        x.clone()
    };
    let x = if w % 2 == 1 {
        x.pad_with_zeros(3, 0, 1)?
    } else {
        x
    };
    let sub = x
        .reshape((n, c, h2, 2, w2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((n, c, h2, w2))?;
    let p = (out_channels - c) / 2;
    sub.pad_with_zeros(1, p, p)
}

/// Reference implementation of [`basic_block_train`]: the block composed from the other
/// `_slow` ops.
pub fn basic_block_train_slow(x: &Tensor, p: &BasicBlockParams<'_>) -> Result<BasicBlockOutput> {
    let stats = |o: &BatchNormOutput| BlockBnStats {
        mean: o.mean.clone(),
        var: o.var.clone(),
    };
    let h1 = batch_norm_train_slow(
        &conv2d_slow(x, p.conv1, p.stride, 1)?,
        p.bn1_weight,
        p.bn1_bias,
        p.eps,
        true,
    )?;
    let h2 = batch_norm_train_slow(
        &conv2d_slow(&h1.y, p.conv2, 1, 1)?,
        p.bn2_weight,
        p.bn2_bias,
        p.eps,
        false,
    )?;
    let (s, shortcut_bn) = match p.shortcut {
        BlockShortcut::Identity => (x.clone(), None),
        BlockShortcut::SubsamplePad => (subsample_pad_slow(x, p.conv1.dim(0)?)?, None),
        BlockShortcut::Projection {
            conv,
            bn_weight,
            bn_bias,
        } => {
            let o = batch_norm_train_slow(
                &conv2d_slow(x, conv, p.stride, 0)?,
                bn_weight,
                bn_bias,
                p.eps,
                false,
            )?;
            (o.y.clone(), Some(stats(&o)))
        }
    };
    Ok(BasicBlockOutput {
        y: add_relu_slow(&h2.y, &s)?,
        bn1: stats(&h1),
        bn2: stats(&h2),
        shortcut_bn,
    })
}
