//! Classifying image files.
//!
//! Any format the `image` crate reads here (PNG, JPEG, GIF, BMP, WebP, TIFF) and any size.
//! Preprocessing: the image is converted to 8-bit RGB (alpha dropped, grayscale replicated,
//! 16-bit scaled), then, unless it already is 32x32, resized so that its *shorter* side is
//! 32 pixels with a triangle (bilinear, area-averaging when shrinking) filter, keeping the
//! aspect ratio, and the central 32x32 square is cropped. The pixels are then normalized
//! exactly like the training data (the checkpoint's mean/std).

use std::path::{Path, PathBuf};

use candle_core::{Tensor, D};
use cifar_data::{Normalizer, IMAGE_BYTES, IMAGE_SIDE};
use image::imageops::FilterType;
use serde::Serialize;

use crate::error::{ModelContext, Result, TrainError};
use crate::inference::{LoadedModel, ModelRequest};

/// One class and its probability.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Class index.
    pub index: usize,
    /// Class name.
    pub class: String,
    /// Softmax probability.
    pub probability: f64,
}

/// Reads an image file and turns it into a 32x32 CHW `u8` image (see the module docs).
pub fn load_image(path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: String| TrainError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| bad(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let img = reader
        .decode()
        .map_err(|e| bad(format!("not a readable image: {e}")))?;
    let side = IMAGE_SIDE as u32;
    let rgb = if img.width() == side && img.height() == side {
        img.to_rgb8()
    } else {
        img.resize_to_fill(side, side, FilterType::Triangle)
            .to_rgb8()
    };
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let mut chw = vec![0u8; IMAGE_BYTES];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = px.0[c];
        }
    }
    Ok(chw)
}

/// What each image file is: the `top_k` classes of every file in `images` by the model
/// `request` names (its normalizer fitted on the training images first when it must be),
/// in order; a file that cannot be read gets its own error. The whole of
/// `resnet-cli predict` but the printing.
pub fn predict(
    request: &ModelRequest,
    images: &[PathBuf],
    top_k: usize,
) -> Result<Vec<(PathBuf, Result<Vec<Prediction>>)>> {
    let loaded = LoadedModel::load(request)?;
    let normalizer = loaded.prepare_normalizer(&request.data)?;
    predict_files(&loaded, &normalizer, images, top_k)
}

/// The `top_k` classes of each image file, in order. A file that cannot be read gets its
/// own error; the others are still classified.
pub fn predict_files(
    loaded: &LoadedModel,
    normalizer: &Normalizer,
    paths: &[PathBuf],
    top_k: usize,
) -> Result<Vec<(PathBuf, Result<Vec<Prediction>>)>> {
    let mut results: Vec<(PathBuf, Result<Vec<Prediction>>)> = Vec::new();
    let mut good: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        match load_image(p) {
            Ok(px) => {
                good.push((i, px));
                results.push((p.clone(), Ok(Vec::new())));
            }
            Err(e) => results.push((p.clone(), Err(e))),
        }
    }
    let device = loaded.model.device().clone();
    let num_classes = loaded.model.config().num_classes;
    let k = top_k.clamp(1, num_classes);
    for chunk in good.chunks(256) {
        let mut x = vec![0f32; chunk.len() * IMAGE_BYTES];
        for ((_, px), out) in chunk.iter().zip(x.chunks_exact_mut(IMAGE_BYTES)) {
            normalizer.normalize_into(px, out);
        }
        let ctx = || "classifying images";
        let x = Tensor::from_vec(x, (chunk.len(), 3, IMAGE_SIDE, IMAGE_SIDE), &device).ctx(ctx)?;
        let logits = loaded.model.predict(&x).ctx(ctx)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)
            .and_then(|p| p.to_device(&candle_core::Device::Cpu))
            .and_then(|p| p.to_vec2::<f32>())
            .ctx(ctx)?;
        for ((slot, _), row) in chunk.iter().zip(probs) {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let preds = order[..k]
                .iter()
                .map(|&c| Prediction {
                    index: c,
                    class: loaded
                        .class_names
                        .get(c)
                        .cloned()
                        .unwrap_or_else(|| format!("class {c}")),
                    probability: f64::from(row[c]),
                })
                .collect();
            results[*slot].1 = Ok(preds);
        }
    }
    Ok(results)
}
