//! Data-pipeline throughput: augmentation + batching (128-image batches) and loading.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-data cargo bench -p cifar-data --bench pipeline
//! ```
//!
//! The loading benchmark needs the real archive at `<workspace>/../shared/data/` (it is
//! extracted once into a temporary directory) and is skipped without it.

use std::path::PathBuf;
use std::sync::Arc;

use cifar_data::fetch::{self, FetchOptions};
use cifar_data::{
    make_batch, synthetic, AugmentConfig, BatchLoader, LoaderConfig, NormalizationConfig,
    Normalizer,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BATCH: usize = 128;

fn augment_and_batch(c: &mut Criterion) {
    let set = Arc::new(synthetic::generate(50_000, 1));
    let norm = Arc::new(Normalizer::fit(&NormalizationConfig::PerPixelMean, &set));
    let aug = AugmentConfig::default();
    let mut g = c.benchmark_group("batch128");
    g.throughput(Throughput::Elements(BATCH as u64));
    let indices: Vec<usize> = (0..BATCH).map(|i| (i * 389) % set.len()).collect();
    g.bench_function("augment", |b| {
        let mut epoch = 0;
        b.iter(|| {
            epoch += 1;
            make_batch(&set, &norm, &indices, Some(&aug), 0, epoch)
        })
    });
    g.bench_function("normalize_only", |b| {
        b.iter(|| make_batch(&set, &norm, &indices, None, 0, 0))
    });
    g.finish();

    // A whole epoch through the background loader (shuffle + augment + prefetch), as a
    // training loop consumes it.
    let mut g = c.benchmark_group("epoch");
    g.sample_size(10);
    g.throughput(Throughput::Elements(set.len() as u64));
    let loader = BatchLoader::new(
        Arc::clone(&set),
        Arc::clone(&norm),
        LoaderConfig {
            batch_size: BATCH,
            ..LoaderConfig::default()
        },
    );
    g.bench_with_input(BenchmarkId::new("loader_50k", BATCH), &loader, |b, l| {
        let mut epoch = 0;
        b.iter(|| {
            epoch += 1;
            l.epoch(epoch, 0).map(|batch| batch.len()).sum::<usize>()
        })
    });
    g.finish();
}

fn load(c: &mut Criterion) {
    let archive = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/cifar-10-binary.tar.gz");
    if !archive.is_file() {
        eprintln!("skipping load benchmark: {} not found", archive.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = FetchOptions::new(tmp.path());
    opts.from = Some(archive);
    fetch::fetch(&opts).unwrap();
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.throughput(Throughput::Elements(60_000));
    g.bench_function("cifar10_60k", |b| {
        b.iter(|| cifar_data::load(tmp.path()).unwrap())
    });
    let data = cifar_data::load(tmp.path()).unwrap();
    g.throughput(Throughput::Elements(50_000));
    g.bench_function("fit_per_pixel_mean_50k", |b| {
        b.iter(|| Normalizer::fit(&NormalizationConfig::PerPixelMean, &data.train))
    });
    g.finish();
}

criterion_group!(benches, augment_and_batch, load);
criterion_main!(benches);
