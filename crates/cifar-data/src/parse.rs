//! Strict parsing of the CIFAR-10 binary format.
//!
//! Each `.bin` file is a sequence of 3073-byte records: one label byte, then 1024 red, 1024
//! green and 1024 blue bytes (row-major 32x32). The official files hold 10,000 records each.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::{Cifar10, DataError, ImageSet, IMAGE_BYTES, NUM_CLASSES};

/// Bytes per record: one label byte and [`IMAGE_BYTES`] pixel bytes.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records in each official `.bin` file.
pub const RECORDS_PER_FILE: usize = 10_000;
/// Name of the directory the archive unpacks to.
pub const BATCHES_DIR: &str = "cifar-10-batches-bin";
/// The five training files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The class-name file.
pub const META_FILE: &str = "batches.meta.txt";

/// Hint attached to [`DataError::MissingFile`] for dataset files.
const FETCH_HINT: &str = "run `cargo xtask fetch-cifar` (or `fetch-cifar --from FILE`) to install \
the dataset";

/// Loads CIFAR-10 from `dir`, the data directory that contains `cifar-10-batches-bin/`
/// (a path to `cifar-10-batches-bin` itself is accepted too).
///
/// Strict: every `.bin` file must hold exactly [`RECORDS_PER_FILE`] records with labels
/// `0..10`, and `batches.meta.txt` must name ten classes. The training set is the
/// concatenation of `data_batch_1..5` in file order.
pub fn load(dir: &Path) -> Result<Cifar10, DataError> {
    load_with_records(dir, Some(RECORDS_PER_FILE))
}

/// Like [`load`], but with `records_per_file` records per file (`None`: any whole, non-zero
/// number of records). Meant for small synthetic datasets in tests.
pub fn load_with_records(
    dir: &Path,
    records_per_file: Option<usize>,
) -> Result<Cifar10, DataError> {
    let root = batches_dir(dir);
    let mut names: Vec<&str> = TRAIN_FILES.to_vec();
    names.push(TEST_FILE);
    let paths: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
    // Report a missing file before spending time on the others.
    for p in paths.iter().chain(std::iter::once(&root.join(META_FILE))) {
        if !p.is_file() {
            return Err(DataError::MissingFile {
                path: p.clone(),
                hint: FETCH_HINT.to_string(),
            });
        }
    }
    let class_names = read_class_names(&root.join(META_FILE))?;
    // Read and validate the six files in parallel, then unpack the records straight into
    // the final buffers (one copy).
    let raw: Vec<(Vec<u8>, usize)> = paths
        .par_iter()
        .map(|p| {
            let bytes = read_file(p)?;
            let n = validate_batch(&bytes, p, records_per_file)?;
            Ok((bytes, n))
        })
        .collect::<Result<_, DataError>>()?;
    let raw: Vec<(&[u8], usize)> = raw.iter().map(|(b, n)| (b.as_slice(), *n)).collect();
    let (train_raw, test_raw) = raw.split_at(TRAIN_FILES.len());
    let train = unpack(train_raw);
    let test = unpack(test_raw);
    Ok(Cifar10 {
        train,
        test,
        class_names,
    })
}

/// Concatenates validated batch files into one set, unpacking in parallel.
fn unpack(files: &[(&[u8], usize)]) -> ImageSet {
    let total: usize = files.iter().map(|(_, n)| n).sum();
    let mut images = vec![0u8; total * IMAGE_BYTES];
    let mut labels = vec![0u8; total];
    let mut jobs = Vec::with_capacity(files.len());
    let (mut img_rest, mut lab_rest) = (&mut images[..], &mut labels[..]);
    for (bytes, n) in files {
        let (img, r1) = img_rest.split_at_mut(n * IMAGE_BYTES);
        let (lab, r2) = lab_rest.split_at_mut(*n);
        jobs.push((*bytes, img, lab));
        (img_rest, lab_rest) = (r1, r2);
    }
    jobs.into_par_iter()
        .for_each(|(bytes, img, lab)| unpack_into(bytes, img, lab));
    ImageSet::from_validated(images, labels)
}

/// Splits records into pixels and labels (sizes already validated).
fn unpack_into(bytes: &[u8], images: &mut [u8], labels: &mut [u8]) {
    for ((rec, img), lab) in bytes
        .chunks_exact(RECORD_BYTES)
        .zip(images.chunks_exact_mut(IMAGE_BYTES))
        .zip(labels.iter_mut())
    {
        *lab = rec[0];
        img.copy_from_slice(&rec[1..]);
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
                hint: FETCH_HINT.to_string(),
            }
        } else {
            DataError::io(path, e)
        }
    })
}

/// `dir/cifar-10-batches-bin`, or `dir` itself when it already is the batches directory.
pub(crate) fn batches_dir(dir: &Path) -> PathBuf {
    let nested = dir.join(BATCHES_DIR);
    if !nested.exists() && dir.join(TRAIN_FILES[0]).exists() {
        dir.to_path_buf()
    } else {
        nested
    }
}

/// Reads one `.bin` batch file (see [`parse_batch`]).
pub fn read_batch_file(path: &Path, records: Option<usize>) -> Result<ImageSet, DataError> {
    let bytes = read_file(path)?;
    parse_batch(&bytes, path, records)
}

/// Parses the bytes of one `.bin` batch file; `path` is only used in error messages.
/// `records`: the exact number of records expected, or `None` for any whole non-zero number.
pub fn parse_batch(
    bytes: &[u8],
    path: &Path,
    records: Option<usize>,
) -> Result<ImageSet, DataError> {
    let n = validate_batch(bytes, path, records)?;
    Ok(unpack(&[(bytes, n)]))
}

/// Checks the length and every label of a batch file; returns its number of records.
fn validate_batch(bytes: &[u8], path: &Path, records: Option<usize>) -> Result<usize, DataError> {
    let actual = bytes.len();
    let whole = actual / RECORD_BYTES;
    let expected_records = records.unwrap_or(whole.max(1));
    let expected = expected_records * RECORD_BYTES;
    if actual != expected {
        let (offset, problem) = if actual < expected {
            (whole * RECORD_BYTES, "incomplete")
        } else {
            (expected, "superfluous")
        };
        return Err(DataError::BadFileSize {
            path: path.to_path_buf(),
            actual: actual as u64,
            expected: expected as u64,
            records: expected_records,
            offset: offset as u64,
            problem,
        });
    }
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        if usize::from(label) >= NUM_CLASSES {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                record,
                offset: (record * RECORD_BYTES) as u64,
                label,
            });
        }
    }
    Ok(expected_records)
}

/// Reads the ten class names from `batches.meta.txt` (one per line; blank lines ignored).
pub fn read_class_names(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(text).map_err(|e| DataError::BadMeta {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 (byte offset {})", e.utf8_error().valid_up_to()),
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != NUM_CLASSES {
        return Err(DataError::BadMeta {
            path: path.to_path_buf(),
            reason: format!(
                "{} class names, expected {NUM_CLASSES} (one per line)",
                names.len()
            ),
        });
    }
    Ok(names)
}
