//! Conversion of batches to candle tensors (feature `candle`).

use candle_core::{Device, Tensor};

use crate::{Batch, CHANNELS, IMAGE_SIDE};

impl Batch {
    /// The images as an `f32` tensor `[N, 3, 32, 32]` and the labels as a `u32` tensor `[N]`,
    /// on `device`.
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let n = self.len();
        let images =
            Tensor::from_slice(&self.images, (n, CHANNELS, IMAGE_SIDE, IMAGE_SIDE), device)?;
        let labels = Tensor::from_slice(&self.labels, n, device)?;
        Ok((images, labels))
    }
}
