//! Fetch through a real HTTP server on loopback, and from local archives.

mod support;

use std::path::Path;

use cifar_data::fetch::{self, FetchOptions, FetchOutcome, FetchSource};
use cifar_data::{load_with_records, DataError, BATCHES_DIR, TEST_FILE};
use support::{build_archive, entries, serve, Mode};

const RECORDS: usize = 40;

fn opts(dir: &Path, expected: &cifar_data::fetch::ExpectedChecksums) -> FetchOptions {
    let mut o = FetchOptions::new(dir);
    o.expected = expected.clone();
    o.max_retries = 2;
    o
}

fn assert_installed(dir: &Path, archive: &support::SyntheticArchive) {
    assert_eq!(
        entries(dir),
        [BATCHES_DIR],
        "only the dataset is left in {dir:?}"
    );
    for (name, bytes) in &archive.bins {
        let got = std::fs::read(dir.join(BATCHES_DIR).join(name)).unwrap();
        assert!(&got == bytes, "{name} differs");
    }
    let data = load_with_records(dir, Some(RECORDS)).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (5 * RECORDS, RECORDS));
}

#[test]
fn download_good_archive_then_already_present() {
    let archive = build_archive(RECORDS, 1);
    let server = serve(archive.bytes.clone(), Mode::Normal);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut o = opts(&dir, &archive.expected);
    o.url = Some(server.url.clone());
    match fetch::fetch(&o).unwrap() {
        FetchOutcome::Installed {
            source,
            downloaded_bytes,
            resumes,
            archive_md5_matches,
            ..
        } => {
            assert_eq!(source, FetchSource::Url(server.url.clone()));
            assert_eq!(downloaded_bytes, archive.bytes.len() as u64);
            assert_eq!(resumes, 0);
            assert!(!archive_md5_matches, "no archive MD5 was expected");
        }
        other => panic!("{other:?}"),
    }
    assert_installed(&dir, &archive);
    assert_eq!(*server.ranges.lock().unwrap(), [None]);
    // Idempotent: verified, nothing downloaded.
    assert!(matches!(
        fetch::fetch(&o).unwrap(),
        FetchOutcome::AlreadyPresent { .. }
    ));
    assert_eq!(server.ranges.lock().unwrap().len(), 1);
}

#[test]
fn dropped_connection_is_resumed_with_range() {
    let archive = build_archive(RECORDS, 2);
    let half = archive.bytes.len() / 2;
    let server = serve(archive.bytes.clone(), Mode::DropFirstHalfway);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path(), &archive.expected);
    o.url = Some(server.url.clone());
    match fetch::fetch(&o).unwrap() {
        FetchOutcome::Installed {
            downloaded_bytes,
            resumes,
            ..
        } => {
            assert_eq!(downloaded_bytes, archive.bytes.len() as u64);
            assert_eq!(resumes, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        *server.ranges.lock().unwrap(),
        [None, Some(format!("bytes={half}-"))]
    );
    assert_installed(tmp.path(), &archive);
}

#[test]
fn partial_file_from_an_earlier_run_is_continued() {
    let archive = build_archive(RECORDS, 3);
    let server = serve(archive.bytes.clone(), Mode::Normal);
    let tmp = tempfile::tempdir().unwrap();
    let third = archive.bytes.len() / 3;
    std::fs::write(
        tmp.path().join("cifar-10-binary.tar.gz.part"),
        &archive.bytes[..third],
    )
    .unwrap();
    let mut o = opts(tmp.path(), &archive.expected);
    o.url = Some(server.url.clone());
    let out = fetch::fetch(&o).unwrap();
    assert!(
        matches!(out, FetchOutcome::Installed { downloaded_bytes, resumes: 1, .. }
            if downloaded_bytes == (archive.bytes.len() - third) as u64),
        "{out:?}"
    );
    assert_eq!(
        *server.ranges.lock().unwrap(),
        [Some(format!("bytes={third}-"))]
    );
    assert_installed(tmp.path(), &archive);

    // A complete .part (crash between download and extraction): 416, then installed.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("cifar-10-binary.tar.gz.part"),
        &archive.bytes,
    )
    .unwrap();
    let mut o = opts(tmp.path(), &archive.expected);
    o.url = Some(server.url.clone());
    let out = fetch::fetch(&o).unwrap();
    assert!(
        matches!(
            out,
            FetchOutcome::Installed {
                downloaded_bytes: 0,
                ..
            }
        ),
        "{out:?}"
    );
    assert_installed(tmp.path(), &archive);
}

#[test]
fn wrong_checksum_is_rejected_and_nothing_is_left_behind() {
    let archive = build_archive(RECORDS, 4);
    // Same names, one flipped pixel byte in test_batch.bin: a valid archive, wrong contents.
    let mut bins = archive.bins.clone();
    bins.last_mut().unwrap().1[100] ^= 0xff;
    let corrupt = support::tar_gz(&bins, true);
    let server = serve(corrupt, Mode::Normal);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut o = opts(&dir, &archive.expected);
    o.url = Some(server.url.clone());
    let err = fetch::fetch(&o).unwrap_err();
    match &err {
        DataError::Checksum {
            file, source_name, ..
        } => {
            assert_eq!(file, TEST_FILE);
            assert_eq!(source_name, &server.url);
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.exists(), "left behind: {:?}", entries(&dir));

    // Pre-existing data directory: it stays, but empty.
    std::fs::create_dir(&dir).unwrap();
    assert!(matches!(fetch::fetch(&o), Err(DataError::Checksum { .. })));
    assert_eq!(entries(&dir), Vec::<String>::new());
}

#[test]
fn corrupt_gzip_is_rejected_and_nothing_is_left_behind() {
    let archive = build_archive(RECORDS, 5);
    let mut bytes = archive.bytes.clone();
    let n = bytes.len();
    bytes.truncate(n - 100); // cut off the end of the stream
    let server = serve(bytes.clone(), Mode::Normal);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path(), &archive.expected);
    o.url = Some(server.url);
    let err = fetch::fetch(&o).unwrap_err();
    assert!(matches!(err, DataError::Archive { .. }), "{err:?}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new());

    // Same from a local file: error names the file, which is left untouched.
    let local = tempfile::tempdir().unwrap();
    let path = local.path().join("broken.tar.gz");
    std::fs::write(&path, &bytes).unwrap();
    let mut o = opts(tmp.path(), &archive.expected);
    o.from = Some(path.clone());
    let err = fetch::fetch(&o).unwrap_err();
    assert!(err.to_string().contains("broken.tar.gz"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

#[test]
fn archive_missing_a_file_is_rejected() {
    let archive = build_archive(RECORDS, 6);
    let bytes = support::tar_gz(&archive.bins[..5], true);
    let local = tempfile::tempdir().unwrap();
    let path = local.path().join("a.tar.gz");
    std::fs::write(&path, bytes).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path(), &archive.expected);
    o.from = Some(path);
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        err.to_string()
            .contains("no member cifar-10-batches-bin/test_batch.bin"),
        "{err}"
    );
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

#[test]
fn offline_error_names_url_and_alternatives() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut o = FetchOptions::new(&dir);
    o.url = Some(url.clone());
    o.max_retries = 0;
    let err = fetch::fetch(&o).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Download { .. }), "{err:?}");
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains("--from"), "{msg}");
    assert!(msg.contains("--url"), "{msg}");
    assert!(msg.contains("CIFAR10_URL"), "{msg}");
    assert!(!dir.exists());
}

#[test]
fn http_error_status_is_reported() {
    let server = serve(Vec::new(), Mode::NotFound);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = FetchOptions::new(tmp.path());
    o.url = Some(server.url.clone());
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::HttpStatus { status: 404, url } if *url == server.url),
        "{err:?}"
    );
    assert!(err.to_string().contains("--from"));
}

#[test]
fn local_archive_install_force_and_tampering() {
    let archive = build_archive(RECORDS, 7);
    let local = tempfile::tempdir().unwrap();
    let path = local.path().join("cifar.tar.gz");
    std::fs::write(&path, &archive.bytes).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path(), &archive.expected);
    o.from = Some(path.clone());
    // An archive MD5 that differs (repackaged container): still valid.
    o.expected.archive_md5 = Some("00000000000000000000000000000000".into());
    let out = fetch::fetch(&o).unwrap();
    assert!(
        matches!(&out, FetchOutcome::Installed { archive_md5_matches: false, source: FetchSource::Local(p), .. } if *p == path),
        "{out:?}"
    );
    assert_installed(tmp.path(), &archive);
    assert!(fetch::is_present(tmp.path()));
    assert!(matches!(
        fetch::fetch(&o).unwrap(),
        FetchOutcome::AlreadyPresent { .. }
    ));

    // Tampered installation: the second fetch says so instead of "already present".
    let victim = tmp.path().join(BATCHES_DIR).join("data_batch_3.bin");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[7] ^= 1;
    std::fs::write(&victim, &bytes).unwrap();
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::Checksum { file, .. } if file == "data_batch_3.bin"),
        "{err:?}"
    );
    assert!(err.to_string().contains("--force"), "{err}");

    // --force replaces it atomically.
    o.force = true;
    assert!(matches!(
        fetch::fetch(&o).unwrap(),
        FetchOutcome::Installed { .. }
    ));
    assert_installed(tmp.path(), &archive);

    // An incomplete tree is not "present": it is replaced without --force.
    o.force = false;
    std::fs::remove_file(tmp.path().join(BATCHES_DIR).join("data_batch_1.bin")).unwrap();
    assert!(!fetch::is_present(tmp.path()));
    assert!(matches!(
        fetch::fetch(&o).unwrap(),
        FetchOutcome::Installed { .. }
    ));
    assert_installed(tmp.path(), &archive);
}

#[test]
fn missing_local_archive_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = FetchOptions::new(tmp.path().join("d"));
    o.from = Some(tmp.path().join("nope.tar.gz"));
    let err = fetch::fetch(&o).unwrap_err();
    assert!(err.to_string().contains("nope.tar.gz"), "{err}");
    assert!(!tmp.path().join("d").exists());
}
