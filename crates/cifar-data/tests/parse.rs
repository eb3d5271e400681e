//! Synthetic `.bin` round-trips and the specific error of each bad input.

use std::path::Path;

use cifar_data::{
    load, load_with_records, parse_batch, synthetic, DataError, ImageSet, BATCHES_DIR, IMAGE_BYTES,
    META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES,
};

fn root(dir: &Path) -> std::path::PathBuf {
    dir.join(BATCHES_DIR)
}

#[test]
fn round_trip_of_a_synthetic_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let written = synthetic::write_dataset(tmp.path(), 13, 42).unwrap();
    let loaded = load_with_records(tmp.path(), Some(13)).unwrap();
    assert_eq!(loaded, written);
    assert_eq!(loaded.train.len(), 65);
    assert_eq!(loaded.class_names, cifar_data::CLASS_NAMES);
    // Train set is the files in order.
    let second = parse_batch(
        &std::fs::read(root(tmp.path()).join(TRAIN_FILES[1])).unwrap(),
        Path::new("x"),
        None,
    )
    .unwrap();
    assert_eq!(loaded.train.slice(13..26), second);
    // The batches directory itself is accepted too.
    assert_eq!(
        load_with_records(&root(tmp.path()), Some(13)).unwrap(),
        written
    );
    // Any whole number of records with `None`.
    assert_eq!(load_with_records(tmp.path(), None).unwrap(), written);
}

#[test]
fn record_layout_is_label_then_chw() {
    let mut px = vec![0u8; IMAGE_BYTES];
    px[0] = 1; // R (0,0)
    px[1023] = 2; // R (31,31)
    px[1024] = 3; // G (0,0)
    px[2048] = 4; // B (0,0)
    let set = ImageSet::new(px.clone(), vec![7]).unwrap();
    let bytes = synthetic::encode_batch(&set);
    assert_eq!(bytes.len(), RECORD_BYTES);
    assert_eq!(bytes[0], 7);
    assert_eq!(&bytes[1..], &px[..]);
    assert_eq!(parse_batch(&bytes, Path::new("b"), Some(1)).unwrap(), set);
}

#[test]
fn truncated_file_names_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic::write_dataset(tmp.path(), 4, 0).unwrap();
    let f = root(tmp.path()).join(TRAIN_FILES[2]);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 10]).unwrap();
    let err = load_with_records(tmp.path(), Some(4)).unwrap_err();
    match &err {
        DataError::BadFileSize {
            path,
            actual,
            expected,
            offset,
            problem,
            ..
        } => {
            assert_eq!(path, &f);
            assert_eq!(*actual, (4 * RECORD_BYTES - 10) as u64);
            assert_eq!(*expected, (4 * RECORD_BYTES) as u64);
            assert_eq!(*offset, (3 * RECORD_BYTES) as u64);
            assert_eq!(*problem, "incomplete");
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("data_batch_3.bin") && msg.contains("9219"),
        "{msg}"
    );
    // Same with any record count allowed.
    assert!(matches!(
        load_with_records(tmp.path(), None),
        Err(DataError::BadFileSize { .. })
    ));
}

#[test]
fn extra_records_and_wrong_count_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic::write_dataset(tmp.path(), 4, 0).unwrap();
    // Strict `load` expects 10,000 records per file.
    let err = load(tmp.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::BadFileSize {
                expected: 30_730_000,
                problem: "incomplete",
                ..
            }
        ),
        "{err:?}"
    );
    let err = load_with_records(tmp.path(), Some(3)).unwrap_err();
    assert!(
        matches!(&err, DataError::BadFileSize { offset, problem: "superfluous", .. } if *offset == 3 * RECORD_BYTES as u64),
        "{err:?}"
    );
    assert!(matches!(
        parse_batch(&[], Path::new("empty.bin"), None),
        Err(DataError::BadFileSize { .. })
    ));
}

#[test]
fn bad_label_names_record_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic::write_dataset(tmp.path(), 5, 0).unwrap();
    let f = root(tmp.path()).join(TEST_FILE);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[3 * RECORD_BYTES] = 10;
    std::fs::write(&f, &bytes).unwrap();
    let err = load_with_records(tmp.path(), Some(5)).unwrap_err();
    match &err {
        DataError::BadLabel {
            path,
            record,
            offset,
            label,
        } => {
            assert_eq!(path, &f);
            assert_eq!((*record, *offset, *label), (3, 3 * RECORD_BYTES as u64, 10));
        }
        other => panic!("{other:?}"),
    }
    assert!(err
        .to_string()
        .contains("test_batch.bin: record 3 (byte offset 9219)"));
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingFile { path, .. } if path.ends_with("cifar-10-batches-bin/data_batch_1.bin")),
        "{err:?}"
    );
    assert!(err.to_string().contains("cargo xtask fetch-cifar"), "{err}");
    for name in [TRAIN_FILES[4], TEST_FILE, META_FILE] {
        let tmp = tempfile::tempdir().unwrap();
        synthetic::write_dataset(tmp.path(), 2, 0).unwrap();
        std::fs::remove_file(root(tmp.path()).join(name)).unwrap();
        let err = load_with_records(tmp.path(), Some(2)).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingFile { path, .. } if path.ends_with(name)),
            "{err:?}"
        );
    }
}

#[test]
fn bad_meta_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic::write_dataset(tmp.path(), 2, 0).unwrap();
    let meta = root(tmp.path()).join(META_FILE);
    std::fs::write(&meta, "cat\ndog\n\n").unwrap();
    let err = load_with_records(tmp.path(), Some(2)).unwrap_err();
    assert!(
        matches!(&err, DataError::BadMeta { path, .. } if *path == meta),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("2 class names, expected 10"),
        "{err}"
    );
    std::fs::write(&meta, [0xffu8, 0xfe]).unwrap();
    let err = load_with_records(tmp.path(), Some(2)).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}
