//! Batch loader: coverage, shuffling, exact resume, background preparation.

use std::sync::Arc;

use cifar_data::{
    synthetic, AugmentConfig, AugmentParams, BatchLoader, ImageSet, LoaderConfig,
    NormalizationConfig, Normalizer, IMAGE_BYTES,
};

fn make(n: usize, cfg: LoaderConfig) -> (Arc<ImageSet>, Arc<Normalizer>, BatchLoader) {
    let set = Arc::new(synthetic::generate(n, 3));
    let norm = Arc::new(Normalizer::fit(&NormalizationConfig::PerPixelMean, &set));
    let l = BatchLoader::new(Arc::clone(&set), Arc::clone(&norm), cfg);
    (set, norm, l)
}

#[test]
fn an_epoch_covers_every_sample_once() {
    let (set, _, l) = make(
        130,
        LoaderConfig {
            batch_size: 32,
            ..Default::default()
        },
    );
    assert_eq!(l.batches_per_epoch(), 5);
    let batches: Vec<_> = l.epoch(0, 0).collect();
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        [32, 32, 32, 32, 2]
    );
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(seen, (0..130).collect::<Vec<_>>(), "shuffled");
    seen.sort_unstable();
    assert_eq!(seen, (0..130).collect::<Vec<_>>());
    for b in &batches {
        assert_eq!(b.images.len(), b.len() * IMAGE_BYTES);
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], u32::from(set.label(i)));
        }
    }
}

#[test]
fn drop_last_and_empty_tail() {
    let (_, _, l) = make(
        130,
        LoaderConfig {
            batch_size: 32,
            drop_last: true,
            ..Default::default()
        },
    );
    assert_eq!(l.batches_per_epoch(), 4);
    assert!(l.epoch(1, 0).all(|b| b.len() == 32));
    assert_eq!(l.epoch(1, 4).count(), 0);
    assert_eq!(l.epoch(1, 99).len(), 0);
}

#[test]
fn order_depends_on_seed_and_epoch_only() {
    let cfg = LoaderConfig {
        batch_size: 50,
        ..Default::default()
    };
    let (_, _, a) = make(200, cfg);
    let (_, _, b) = make(200, cfg);
    let (_, _, c) = make(200, LoaderConfig { seed: 1, ..cfg });
    assert_eq!(a.order(3), b.order(3));
    assert_ne!(a.order(3), a.order(4));
    assert_ne!(a.order(3), c.order(3));
    let ea: Vec<_> = a.epoch(3, 0).collect();
    let eb: Vec<_> = b.epoch(3, 0).collect();
    assert_eq!(ea, eb);
}

#[test]
fn resume_gives_exactly_the_remaining_batches() {
    let (_, _, l) = make(
        300,
        LoaderConfig {
            batch_size: 64,
            ..Default::default()
        },
    );
    let full: Vec<_> = l.epoch(7, 0).collect();
    for start in 0..=5 {
        let resumed: Vec<_> = l.epoch(7, start).collect();
        assert_eq!(resumed, full[start.min(5)..], "start {start}");
    }
    assert_eq!(l.batch(7, 2), full[2]);
}

#[test]
fn eval_batches_are_the_normalized_images_in_order() {
    let (set, norm, l) = make(70, LoaderConfig::eval(32));
    let batches: Vec<_> = l.epoch(0, 0).collect();
    assert_eq!(batches.len(), 3);
    let mut i = 0;
    for b in &batches {
        for k in 0..b.len() {
            assert_eq!(b.indices[k], i);
            assert_eq!(
                &b.images[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES],
                &norm.normalize(set.image(i))[..]
            );
            i += 1;
        }
    }
    assert_eq!(i, 70);
}

#[test]
fn augmented_sample_depends_on_seed_epoch_and_index() {
    let aug = AugmentConfig::default();
    let cfg = LoaderConfig {
        batch_size: 16,
        seed: 9,
        ..Default::default()
    };
    let (set, norm, l) = make(40, cfg);
    for epoch in [0, 5] {
        for b in l.epoch(epoch, 0) {
            for (k, &i) in b.indices.iter().enumerate() {
                let p = AugmentParams::draw(&aug, 9, epoch, i as u64);
                let mut want = vec![0f32; IMAGE_BYTES];
                cifar_data::augment_into(&norm, set.image(i), p, 4, &mut want);
                assert_eq!(&b.images[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES], &want[..]);
            }
        }
    }
}

#[test]
fn dropping_an_epoch_early_stops_the_producer() {
    let (_, _, l) = make(
        1000,
        LoaderConfig {
            batch_size: 10,
            prefetch: 1,
            ..Default::default()
        },
    );
    for _ in 0..20 {
        let mut it = l.epoch(0, 0);
        assert_eq!(it.len(), 100);
        assert!(it.next().is_some());
        drop(it); // must not hang
    }
    let first = l.epoch(0, 0).next().unwrap();
    let mut it = l.epoch(0, 0);
    assert_eq!(it.next().unwrap(), first);
    assert_eq!(it.len(), 99);
}

#[test]
fn invalid_batch_size_is_reported() {
    let cfg = LoaderConfig {
        batch_size: 0,
        ..Default::default()
    };
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("loader.batch_size"), "{err}");
}

#[cfg(feature = "candle")]
#[test]
fn to_tensors_shapes_and_values() {
    let (_, _, l) = make(10, LoaderConfig::eval(4));
    let b = l.batch(0, 2);
    let (x, y) = b.to_tensors(&candle_core::Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[2, 3, 32, 32]);
    assert_eq!(x.dtype(), candle_core::DType::F32);
    assert_eq!(y.to_vec1::<u32>().unwrap(), b.labels);
    assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.images);
}

#[test]
fn shards_of_a_batch_are_the_batch_cut_in_order() {
    use cifar_data::Shard;
    let cfg = LoaderConfig {
        batch_size: 32,
        augment: Some(AugmentConfig::default()),
        seed: 5,
        ..Default::default()
    };
    let (_, _, whole) = make(130, cfg);
    for count in [1, 2, 3, 5] {
        let shards: Vec<BatchLoader> = (0..count)
            .map(|rank| whole.clone().with_shard(Shard { rank, count }))
            .collect();
        for epoch in [0, 3] {
            let expected: Vec<_> = whole.epoch(epoch, 1).collect();
            let parts: Vec<Vec<_>> = shards.iter().map(|l| l.epoch(epoch, 1).collect()).collect();
            for (b, full) in expected.iter().enumerate() {
                assert_eq!(whole.batch_len(b + 1), full.len());
                let mut images = Vec::new();
                let mut labels = Vec::new();
                let mut indices = Vec::new();
                let sizes: Vec<usize> = parts.iter().map(|p| p[b].len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
                for p in &parts {
                    images.extend_from_slice(&p[b].images);
                    labels.extend_from_slice(&p[b].labels);
                    indices.extend_from_slice(&p[b].indices);
                }
                assert_eq!(indices, full.indices, "{count} shards, batch {b}");
                assert_eq!(labels, full.labels);
                assert!(images == full.images, "augmentation differs in a shard");
            }
        }
    }
    // The partial last batch (2 images) over 3 shards: one shard is empty.
    let last = whole.batches_per_epoch() - 1;
    assert_eq!(whole.batch_len(last), 2);
    let r: Vec<_> = (0..3)
        .map(|rank| Shard { rank, count: 3 }.range(2))
        .collect();
    assert_eq!(r, [0..1, 1..2, 2..2]);
}
