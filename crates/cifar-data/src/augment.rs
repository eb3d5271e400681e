//! The paper's augmentation: zero-pad, random 32x32 crop, random horizontal flip.
//!
//! Padding happens **after** normalization, so a padded pixel is 0 in normalized space: with
//! the per-pixel-mean normalization that is the mean pixel of the training set, not black.
//! (Padding the raw image with black before normalizing would instead give `-mean`.)
//!
//! Every sample's crop offset and flip are drawn from a counter-based RNG keyed by
//! `(seed, epoch, sample index)`: the same triple always gives the same augmentation, in any
//! thread and in any order.

use serde::{Deserialize, Serialize};

use crate::rng::{below, key, mix64, STREAM_AUGMENT};
use crate::{Normalizer, CHANNELS, IMAGE_BYTES, IMAGE_SIDE};

const SIDE: isize = IMAGE_SIDE as isize;
const PLANE: usize = IMAGE_SIDE * IMAGE_SIDE;

/// Augmentation settings, usable inside a YAML run config. Defaults are the paper's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Zero padding on each side before cropping. Default: 4.
    pub pad: usize,
    /// Random 32x32 crop of the padded image; without it the centre (the original) is kept.
    /// Default: true.
    pub crop: bool,
    /// Horizontal flip with probability 0.5. Default: true.
    pub flip: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            pad: 4,
            crop: true,
            flip: true,
        }
    }
}

/// The augmentation of one sample: crop origin `(dx, dy)` in the padded image (each in
/// `0..=2 * pad`) and whether to mirror the crop horizontally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AugmentParams {
    /// Column of the crop's left edge in the padded image.
    pub dx: usize,
    /// Row of the crop's top edge in the padded image.
    pub dy: usize,
    /// Mirror the crop left-right.
    pub flip: bool,
}

impl AugmentParams {
    /// No change: the centre crop, unflipped.
    pub fn identity(pad: usize) -> Self {
        Self {
            dx: pad,
            dy: pad,
            flip: false,
        }
    }

    /// The augmentation of sample `index` in `epoch` under `seed`.
    pub fn draw(cfg: &AugmentConfig, seed: u64, epoch: u64, index: u64) -> Self {
        let k1 = key(seed, STREAM_AUGMENT, epoch, index);
        let k2 = mix64(k1);
        let k3 = mix64(k2);
        let span = 2 * cfg.pad as u64 + 1;
        let (dx, dy) = if cfg.crop {
            (below(k1, span) as usize, below(k2, span) as usize)
        } else {
            (cfg.pad, cfg.pad)
        };
        Self {
            dx,
            dy,
            flip: cfg.flip && (k3 >> 63) == 1,
        }
    }
}

/// Normalizes and augments one image in a single pass: `out` receives the 32x32 crop at
/// `params` of the zero-padded normalized image, mirrored if `params.flip`.
/// `image` and `out` must hold [`IMAGE_BYTES`] values.
pub fn augment_into(
    normalizer: &Normalizer,
    image: &[u8],
    params: AugmentParams,
    pad: usize,
    out: &mut [f32],
) {
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
    let off_x = params.dx as isize - pad as isize;
    let off_y = params.dy as isize - pad as isize;
    // Output columns whose source column lies inside the image.
    let (lo, hi) = if params.flip {
        // source column = 31 - x + off_x
        (off_x.clamp(0, SIDE), (SIDE + off_x).clamp(0, SIDE))
    } else {
        // source column = x + off_x
        ((-off_x).clamp(0, SIDE), (SIDE - off_x).clamp(0, SIDE))
    };
    let (lo, hi) = (lo as usize, hi.max(lo) as usize);
    for c in 0..CHANNELS {
        for y in 0..IMAGE_SIDE {
            let row = &mut out[c * PLANE + y * IMAGE_SIDE..][..IMAGE_SIDE];
            let sy = y as isize + off_y;
            if !(0..SIDE).contains(&sy) {
                row.fill(0.0);
                continue;
            }
            let src_row = c * PLANE + sy as usize * IMAGE_SIDE;
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
            if params.flip {
                for (x, o) in row.iter_mut().enumerate().take(hi).skip(lo) {
                    let p = src_row + (SIDE - 1 - x as isize + off_x) as usize;
                    *o = normalizer.value(image[p], p);
                }
            } else {
                for (x, o) in row.iter_mut().enumerate().take(hi).skip(lo) {
                    let p = src_row + (x as isize + off_x) as usize;
                    *o = normalizer.value(image[p], p);
                }
            }
        }
    }
}

/// Reference twin of [`augment_into`] working on an already normalized image: literally pads
/// into a `(32 + 2 pad)^2` buffer per channel, crops, then flips.
pub fn augment_into_slow(normalized: &[f32], params: AugmentParams, pad: usize, out: &mut [f32]) {
    assert_eq!(normalized.len(), IMAGE_BYTES);
    assert_eq!(out.len(), IMAGE_BYTES);
    let ps = IMAGE_SIDE + 2 * pad;
    for c in 0..CHANNELS {
        let mut padded = vec![0f32; ps * ps];
        for y in 0..IMAGE_SIDE {
            for x in 0..IMAGE_SIDE {
                padded[(y + pad) * ps + x + pad] = normalized[c * PLANE + y * IMAGE_SIDE + x];
            }
        }
        let mut crop = vec![0f32; PLANE];
        for y in 0..IMAGE_SIDE {
            for x in 0..IMAGE_SIDE {
                let (py, px) = (y + params.dy, x + params.dx);
                if py < ps && px < ps {
                    crop[y * IMAGE_SIDE + x] = padded[py * ps + px];
                }
            }
        }
        for y in 0..IMAGE_SIDE {
            for x in 0..IMAGE_SIDE {
                let sx = if params.flip { IMAGE_SIDE - 1 - x } else { x };
                out[c * PLANE + y * IMAGE_SIDE + x] = crop[y * IMAGE_SIDE + sx];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::generate;
    use crate::NormalizationConfig;

    #[test]
    fn fused_matches_slow_for_all_offsets() {
        let set = generate(3, 9);
        let norm = Normalizer::fit(&NormalizationConfig::PerPixelMean, &set);
        let normalized = norm.normalize(set.image(1));
        let pad = 4;
        let mut a = vec![0f32; IMAGE_BYTES];
        let mut b = vec![1f32; IMAGE_BYTES];
        for dx in 0..=2 * pad {
            for dy in 0..=2 * pad {
                for flip in [false, true] {
                    let p = AugmentParams { dx, dy, flip };
                    augment_into(&norm, set.image(1), p, pad, &mut a);
                    augment_into_slow(&normalized, p, pad, &mut b);
                    assert_eq!(a, b, "{p:?}");
                }
            }
        }
        augment_into(
            &norm,
            set.image(1),
            AugmentParams::identity(pad),
            pad,
            &mut a,
        );
        assert_eq!(a, normalized);
    }

    #[test]
    fn draw_is_deterministic_and_covers_range() {
        let cfg = AugmentConfig::default();
        let mut seen = std::collections::HashSet::new();
        let mut flips = 0;
        for i in 0..2000 {
            let p = AugmentParams::draw(&cfg, 5, 2, i);
            assert_eq!(p, AugmentParams::draw(&cfg, 5, 2, i));
            assert!(p.dx <= 8 && p.dy <= 8);
            seen.insert((p.dx, p.dy));
            flips += usize::from(p.flip);
        }
        assert_eq!(seen.len(), 81);
        assert!((900..1100).contains(&flips), "{flips}");
        let off = AugmentConfig {
            crop: false,
            flip: false,
            ..cfg
        };
        assert_eq!(
            AugmentParams::draw(&off, 5, 2, 7),
            AugmentParams::identity(4)
        );
    }
}
