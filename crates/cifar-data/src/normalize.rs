//! Pixel normalization: scale to `[0, 1]`, then subtract a mean and divide by a std, per pixel
//! position.

use serde::{Deserialize, Serialize};

use crate::{DataError, ImageSet, CHANNELS, IMAGE_BYTES, IMAGE_SIDE};

const PLANE: usize = IMAGE_SIDE * IMAGE_SIDE;

/// Which normalization to apply, usable inside a YAML run config.
///
/// ```yaml
/// normalization: { kind: per_pixel_mean }          # default, the paper's choice
/// normalization: { kind: per_channel }             # mean and std computed on the train split
/// normalization: { kind: per_channel, mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NormalizationConfig {
    /// Subtract the per-pixel mean image of the training split (values in `[0, 1]`); no
    /// division. The paper's choice and the default.
    #[default]
    PerPixelMean,
    /// Subtract a per-channel mean and divide by a per-channel std (values in `[0, 1]`), e.g.
    /// to evaluate weights trained elsewhere.
    PerChannel {
        /// Per-channel mean (R, G, B). Default `None`: computed on the training split.
        #[serde(default)]
        mean: Option<[f32; 3]>,
        /// Per-channel std (R, G, B). Default `None`: the population std over all pixels of
        /// the channel in the training split.
        #[serde(default)]
        std: Option<[f32; 3]>,
    },
}

/// A fitted normalization: a mean and a std for each of the [`IMAGE_BYTES`] pixel positions
/// (CHW). `normalize` computes `(x / 255 - mean[p]) / std[p]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalizer {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Normalizer {
    /// Fits `cfg` on `train` (statistics accumulate in `f64`). An empty `train` gives mean 0
    /// and std 1 where statistics would be computed.
    pub fn fit(cfg: &NormalizationConfig, train: &ImageSet) -> Self {
        match *cfg {
            NormalizationConfig::PerPixelMean => Self {
                mean: pixel_mean(train),
                std: vec![1.0; IMAGE_BYTES],
            },
            NormalizationConfig::PerChannel { mean, std } => {
                let (cm, cs) = if mean.is_some() && std.is_some() {
                    ([0.0; 3], [1.0; 3])
                } else {
                    channel_stats(train, mean)
                };
                let mean = mean.unwrap_or(cm);
                let std = std.unwrap_or(cs);
                Self {
                    mean: expand(mean),
                    std: expand(std),
                }
            }
        }
    }

    /// Builds a normalizer from explicit per-pixel vectors (e.g. restored from a checkpoint).
    /// Both must hold [`IMAGE_BYTES`] finite values, `std` strictly positive.
    pub fn from_parts(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, DataError> {
        for (name, v) in [("mean", &mean), ("std", &std)] {
            if v.len() != IMAGE_BYTES {
                return Err(DataError::InvalidNormalizer {
                    reason: format!("{name} has {} values, expected {IMAGE_BYTES}", v.len()),
                });
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(DataError::InvalidNormalizer {
                    reason: format!("{name}[{i}] = {} is not finite", v[i]),
                });
            }
        }
        if let Some(i) = std.iter().position(|&x| x <= 0.0) {
            return Err(DataError::InvalidNormalizer {
                reason: format!("std[{i}] = {} is not positive", std[i]),
            });
        }
        Ok(Self { mean, std })
    }

    /// Per-pixel mean, [`IMAGE_BYTES`] values in CHW order.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-pixel std, [`IMAGE_BYTES`] values in CHW order (all 1 for the per-pixel mean).
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// Normalizes one image into `out`. Both slices must hold [`IMAGE_BYTES`] values.
    pub fn normalize_into(&self, image: &[u8], out: &mut [f32]) {
        assert_eq!(
            image.len(),
            IMAGE_BYTES,
            "image must hold {IMAGE_BYTES} bytes"
        );
        assert_eq!(
            out.len(),
            IMAGE_BYTES,
            "output must hold {IMAGE_BYTES} values"
        );
        for ((o, &x), (&m, &s)) in out
            .iter_mut()
            .zip(image)
            .zip(self.mean.iter().zip(&self.std))
        {
            *o = normalize_value(x, m, s);
        }
    }

    /// Normalizes one image into a new vector.
    pub fn normalize(&self, image: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; IMAGE_BYTES];
        self.normalize_into(image, &mut out);
        out
    }

    /// The normalized value of pixel byte `x` at position `p` (CHW index).
    #[inline]
    pub(crate) fn value(&self, x: u8, p: usize) -> f32 {
        normalize_value(x, self.mean[p], self.std[p])
    }
}

#[inline]
fn normalize_value(x: u8, mean: f32, std: f32) -> f32 {
    (f32::from(x) / 255.0 - mean) / std
}

fn expand(per_channel: [f32; 3]) -> Vec<f32> {
    let mut v = Vec::with_capacity(IMAGE_BYTES);
    for c in per_channel {
        v.extend(std::iter::repeat_n(c, PLANE));
    }
    v
}

fn pixel_mean(train: &ImageSet) -> Vec<f32> {
    if train.is_empty() {
        return vec![0.0; IMAGE_BYTES];
    }
    let mut sums = vec![0u64; IMAGE_BYTES];
    for img in train.images().chunks_exact(IMAGE_BYTES) {
        for (s, &x) in sums.iter_mut().zip(img) {
            *s += u64::from(x);
        }
    }
    let n = train.len() as f64;
    sums.iter()
        .map(|&s| (s as f64 / 255.0 / n) as f32)
        .collect()
}

/// Per-channel mean (unless given) and population std (around the given or computed mean).
fn channel_stats(train: &ImageSet, given_mean: Option<[f32; 3]>) -> ([f32; 3], [f32; 3]) {
    if train.is_empty() {
        return ([0.0; 3], [1.0; 3]);
    }
    // Exact integer histograms per channel, then f64 moments.
    let mut hist = [[0u64; 256]; CHANNELS];
    for img in train.images().chunks_exact(IMAGE_BYTES) {
        for (c, plane) in img.chunks_exact(PLANE).enumerate() {
            for &x in plane {
                hist[c][usize::from(x)] += 1;
            }
        }
    }
    let count = (train.len() * PLANE) as f64;
    let mut mean = [0f32; 3];
    let mut std = [0f32; 3];
    for c in 0..CHANNELS {
        let m = match given_mean {
            Some(g) => f64::from(g[c]),
            None => {
                hist[c]
                    .iter()
                    .enumerate()
                    .map(|(v, &k)| v as f64 / 255.0 * k as f64)
                    .sum::<f64>()
                    / count
            }
        };
        let var = hist[c]
            .iter()
            .enumerate()
            .map(|(v, &k)| (v as f64 / 255.0 - m).powi(2) * k as f64)
            .sum::<f64>()
            / count;
        mean[c] = m as f32;
        std[c] = (var.sqrt() as f32).max(f32::MIN_POSITIVE);
    }
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_images() -> ImageSet {
        let mut px = vec![0u8; IMAGE_BYTES * 2];
        px[IMAGE_BYTES..].fill(255);
        px[5] = 51;
        ImageSet::new(px, vec![0, 1]).unwrap()
    }

    #[test]
    fn per_pixel_mean() {
        let set = two_images();
        let n = Normalizer::fit(&NormalizationConfig::PerPixelMean, &set);
        assert!((n.mean()[0] - 0.5).abs() < 1e-7);
        assert!((n.mean()[5] - 0.6).abs() < 1e-7);
        assert!(n.std().iter().all(|&s| s == 1.0));
        let out = n.normalize(set.image(0));
        assert!((out[0] + 0.5).abs() < 1e-7);
        assert!((out[5] - (0.2 - 0.6)).abs() < 1e-6);
    }

    #[test]
    fn per_channel_computed_and_given() {
        let set = two_images();
        let cfg = NormalizationConfig::PerChannel {
            mean: None,
            std: None,
        };
        let n = Normalizer::fit(&cfg, &set);
        let m0 = (255.0 * 1024.0 + 51.0) / 255.0 / 2048.0;
        assert!((n.mean()[0] - m0 as f32).abs() < 1e-6);
        assert!((n.mean()[1024] - 0.5).abs() < 1e-7);
        assert!((n.std()[1024] - 0.5).abs() < 1e-7);
        let given = NormalizationConfig::PerChannel {
            mean: Some([0.1, 0.2, 0.3]),
            std: Some([0.5, 0.25, 2.0]),
        };
        let n = Normalizer::fit(&given, &set);
        assert_eq!(n.mean()[2048], 0.3);
        assert_eq!(n.std()[1024], 0.25);
        let out = n.normalize(set.image(1));
        assert_eq!(out[0], (1.0 - 0.1) / 0.5);
    }

    #[test]
    fn from_parts_validates() {
        assert!(Normalizer::from_parts(vec![0.0; IMAGE_BYTES], vec![1.0; IMAGE_BYTES]).is_ok());
        let e = Normalizer::from_parts(vec![0.0; 3], vec![1.0; IMAGE_BYTES]).unwrap_err();
        assert!(e.to_string().contains("mean has 3 values"), "{e}");
        let mut std = vec![1.0; IMAGE_BYTES];
        std[7] = 0.0;
        let e = Normalizer::from_parts(vec![0.0; IMAGE_BYTES], std).unwrap_err();
        assert!(e.to_string().contains("std[7]"), "{e}");
        let mut mean = vec![0.0; IMAGE_BYTES];
        mean[2] = f32::NAN;
        let e = Normalizer::from_parts(mean, vec![1.0; IMAGE_BYTES]).unwrap_err();
        assert!(e.to_string().contains("mean[2]"), "{e}");
    }
}
