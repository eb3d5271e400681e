//! Deterministic synthetic data in the CIFAR-10 format, for tests, examples and benchmarks.

use std::path::Path;

use crate::parse::{BATCHES_DIR, META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use crate::rng::{key, STREAM_SYNTHETIC};
use crate::{Cifar10, DataError, ImageSet, CLASS_NAMES, IMAGE_BYTES, NUM_CLASSES};

/// `n` pseudo-random images with pseudo-random labels, a pure function of `(n, seed)`.
pub fn generate(n: usize, seed: u64) -> ImageSet {
    let mut images = vec![0u8; n * IMAGE_BYTES];
    for (i, img) in images.chunks_exact_mut(IMAGE_BYTES).enumerate() {
        for (j, px) in img.chunks_mut(8).enumerate() {
            let bits = key(seed, STREAM_SYNTHETIC, i as u64, j as u64).to_le_bytes();
            px.copy_from_slice(&bits[..px.len()]);
        }
    }
    let labels = (0..n)
        .map(|i| (key(seed, STREAM_SYNTHETIC, u64::MAX, i as u64) % NUM_CLASSES as u64) as u8)
        .collect();
    ImageSet::new(images, labels).expect("lengths and labels are valid by construction")
}

/// Encodes a set in the `.bin` record format.
pub fn encode_batch(set: &ImageSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(set.len() * RECORD_BYTES);
    for i in 0..set.len() {
        out.push(set.label(i));
        out.extend_from_slice(set.image(i));
    }
    out
}

/// The contents of `batches.meta.txt` (names, one per line, then an empty line).
pub fn meta_text() -> String {
    let mut s = CLASS_NAMES.join("\n");
    s.push_str("\n\n");
    s
}

/// Writes a complete synthetic dataset to `dir/cifar-10-batches-bin/` with
/// `records_per_file` records in each of the six `.bin` files, and returns what was written.
pub fn write_dataset(dir: &Path, records_per_file: usize, seed: u64) -> Result<Cifar10, DataError> {
    let root = dir.join(BATCHES_DIR);
    std::fs::create_dir_all(&root).map_err(|e| DataError::io(&root, e))?;
    let mut train = Vec::new();
    for (k, name) in TRAIN_FILES.iter().enumerate() {
        let set = generate(records_per_file, seed.wrapping_add(k as u64));
        write(&root.join(name), &encode_batch(&set))?;
        train.push(set);
    }
    let test = generate(records_per_file, seed.wrapping_add(100));
    write(&root.join(TEST_FILE), &encode_batch(&test))?;
    write(&root.join(META_FILE), meta_text().as_bytes())?;
    Ok(Cifar10 {
        train: ImageSet::concat(&train),
        test,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}
