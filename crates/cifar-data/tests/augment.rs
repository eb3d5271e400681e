//! Augmentation properties: crops in bounds, exact flips, fused == reference, and
//! independence from the rayon thread count.

use std::sync::Arc;

use cifar_data::{
    augment_into, augment_into_slow, synthetic, AugmentConfig, AugmentParams, BatchLoader,
    ImageSet, LoaderConfig, NormalizationConfig, Normalizer, IMAGE_BYTES, IMAGE_SIDE,
};
use proptest::prelude::*;

const S: usize = IMAGE_SIDE;

fn image_and_norm(seed: u64) -> (ImageSet, Normalizer) {
    let set = synthetic::generate(4, seed);
    let norm = Normalizer::fit(
        &NormalizationConfig::PerChannel {
            mean: None,
            std: None,
        },
        &set,
    );
    (set, norm)
}

fn params(pad: usize) -> impl Strategy<Value = AugmentParams> {
    (0..=2 * pad, 0..=2 * pad, any::<bool>()).prop_map(|(dx, dy, flip)| AugmentParams {
        dx,
        dy,
        flip,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn drawn_crops_stay_in_bounds(pad in 0usize..9, crop: bool, flip: bool,
                                  seed: u64, epoch: u64, index: u64) {
        let cfg = AugmentConfig { pad, crop, flip };
        let p = AugmentParams::draw(&cfg, seed, epoch, index);
        prop_assert!(p.dx <= 2 * pad && p.dy <= 2 * pad);
        if !crop {
            prop_assert_eq!((p.dx, p.dy), (pad, pad));
        }
        if !flip {
            prop_assert!(!p.flip);
        }
        prop_assert_eq!(p, AugmentParams::draw(&cfg, seed, epoch, index));
    }

    #[test]
    fn crop_is_a_window_of_the_zero_padded_image(seed in 0u64..1000, pad in 0usize..9,
                                                 dxy in (0usize..=16, 0usize..=16)) {
        let (dx, dy) = (dxy.0.min(2 * pad), dxy.1.min(2 * pad));
        let (set, norm) = image_and_norm(seed);
        let normalized = norm.normalize(set.image(0));
        let mut out = vec![f32::NAN; IMAGE_BYTES];
        augment_into(&norm, set.image(0), AugmentParams { dx, dy, flip: false }, pad, &mut out);
        for c in 0..3 {
            for y in 0..S {
                for x in 0..S {
                    let sy = y as isize + dy as isize - pad as isize;
                    let sx = x as isize + dx as isize - pad as isize;
                    let want = if (0..S as isize).contains(&sy) && (0..S as isize).contains(&sx) {
                        normalized[c * S * S + sy as usize * S + sx as usize]
                    } else {
                        0.0
                    };
                    prop_assert_eq!(out[c * S * S + y * S + x], want);
                }
            }
        }
    }

    #[test]
    fn flip_mirrors_the_crop_exactly(seed in 0u64..1000, p in params(4)) {
        let (set, norm) = image_and_norm(seed);
        let mut plain = vec![0f32; IMAGE_BYTES];
        let mut flipped = vec![0f32; IMAGE_BYTES];
        augment_into(&norm, set.image(1), AugmentParams { flip: false, ..p }, 4, &mut plain);
        augment_into(&norm, set.image(1), AugmentParams { flip: true, ..p }, 4, &mut flipped);
        for c in 0..3 {
            for y in 0..S {
                for x in 0..S {
                    prop_assert_eq!(
                        flipped[c * S * S + y * S + x].to_bits(),
                        plain[c * S * S + y * S + S - 1 - x].to_bits()
                    );
                }
            }
        }
    }

    #[test]
    fn fused_equals_reference(seed in 0u64..1000, pad in 0usize..9, p in params(8)) {
        let p = AugmentParams { dx: p.dx.min(2 * pad), dy: p.dy.min(2 * pad), flip: p.flip };
        let (set, norm) = image_and_norm(seed);
        let mut fast = vec![0f32; IMAGE_BYTES];
        let mut slow = vec![0f32; IMAGE_BYTES];
        augment_into(&norm, set.image(2), p, pad, &mut fast);
        augment_into_slow(&norm.normalize(set.image(2)), p, pad, &mut slow);
        prop_assert_eq!(fast, slow);
    }
}

fn loader(set: ImageSet, cfg: LoaderConfig) -> BatchLoader {
    let set = Arc::new(set);
    let norm = Arc::new(Normalizer::fit(&NormalizationConfig::PerPixelMean, &set));
    BatchLoader::new(set, norm, cfg)
}

#[test]
fn same_batches_with_one_and_two_threads() {
    let cfg = LoaderConfig {
        batch_size: 64,
        seed: 11,
        prefetch: 0,
        ..Default::default()
    };
    let l = loader(synthetic::generate(300, 5), cfg);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| (0..3).flat_map(|e| l.epoch(e, 0)).collect::<Vec<_>>())
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(one.len(), 15);
    assert_eq!(one, two);
    // The background loader (global pool) agrees too.
    let bg = loader(
        synthetic::generate(300, 5),
        LoaderConfig { prefetch: 3, ..cfg },
    );
    let three: Vec<_> = (0..3).flat_map(|e| bg.epoch(e, 0)).collect();
    assert_eq!(one, three);
}
