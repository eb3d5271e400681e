//! Repairing an installation: only missing or corrupt dataset files are replaced, nothing else
//! in the data directory is touched, what is in the way is refused, and every missing or
//! corrupt file is named.

mod support;

use std::path::{Path, PathBuf};

use cifar_data::fetch::{self, FetchOptions, FetchOutcome, FileProblem};
use cifar_data::{DataError, BATCHES_DIR, META_FILE, TEST_FILE};
use support::{build_archive, entries, SyntheticArchive};

const RECORDS: usize = 16;

/// Writes `archive` to a file and returns options installing it (`--from`) into `dir`.
fn from_file(archive: &SyntheticArchive, dir: &Path) -> (tempfile::TempDir, FetchOptions) {
    let holder = tempfile::tempdir().unwrap();
    let path = holder.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, &archive.bytes).unwrap();
    let mut o = FetchOptions::new(dir);
    o.expected = archive.expected.clone();
    o.from = Some(path);
    (holder, o)
}

fn batches(dir: &Path) -> PathBuf {
    dir.join(BATCHES_DIR)
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Identity of a file: replaced files get a new one.
#[cfg(unix)]
fn identity(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(std::fs::metadata(path).unwrap().ino())
}

#[cfg(not(unix))]
fn identity(_: &Path) -> Option<u64> {
    None
}

fn assert_bins(dir: &Path, archive: &SyntheticArchive) {
    for (name, bytes) in &archive.bins {
        let got = std::fs::read(batches(dir).join(name)).unwrap();
        assert!(&got == bytes, "{name} differs");
    }
}

#[test]
fn repair_replaces_only_missing_and_corrupt_files() {
    let archive = build_archive(RECORDS, 21);
    let tmp = tempfile::tempdir().unwrap();
    let (_holder, o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();

    // The user's own files, beside and inside the dataset directory.
    std::fs::write(batches(tmp.path()).join("notes.txt"), b"mine").unwrap();
    std::fs::write(tmp.path().join("user.txt"), b"also mine").unwrap();
    std::fs::remove_file(batches(tmp.path()).join("data_batch_3.bin")).unwrap();
    flip_byte(&batches(tmp.path()).join(TEST_FILE));
    let kept = ["data_batch_1.bin", "data_batch_2.bin", META_FILE];
    let before: Vec<_> = kept
        .iter()
        .map(|n| identity(&batches(tmp.path()).join(n)))
        .collect();

    let out = fetch::fetch(&o).unwrap();
    assert!(matches!(out, FetchOutcome::Installed { .. }), "{out:?}");
    assert_bins(tmp.path(), &archive);
    assert_eq!(
        std::fs::read(batches(tmp.path()).join("notes.txt")).unwrap(),
        b"mine"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("user.txt")).unwrap(),
        b"also mine"
    );
    let after: Vec<_> = kept
        .iter()
        .map(|n| identity(&batches(tmp.path()).join(n)))
        .collect();
    assert_eq!(before, after, "valid files were replaced");
    // The temporary extraction directory is gone.
    assert_eq!(entries(tmp.path()), [BATCHES_DIR, "user.txt"]);
    assert!(entries(&batches(tmp.path())).contains(&"notes.txt".to_string()));
    assert!(matches!(
        fetch::fetch(&o).unwrap(),
        FetchOutcome::AlreadyPresent { .. }
    ));
}

#[test]
fn force_keeps_unrelated_files() {
    let archive = build_archive(RECORDS, 22);
    let tmp = tempfile::tempdir().unwrap();
    let (_holder, mut o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();
    std::fs::write(batches(tmp.path()).join("notes.txt"), b"mine").unwrap();
    flip_byte(&batches(tmp.path()).join("data_batch_4.bin"));
    o.force = true;
    let out = fetch::fetch(&o).unwrap();
    assert!(matches!(out, FetchOutcome::Installed { .. }), "{out:?}");
    assert_bins(tmp.path(), &archive);
    assert_eq!(
        std::fs::read(batches(tmp.path()).join("notes.txt")).unwrap(),
        b"mine"
    );
    assert_eq!(entries(tmp.path()), [BATCHES_DIR]);
}

#[test]
fn failed_repair_changes_nothing() {
    let archive = build_archive(RECORDS, 23);
    let tmp = tempfile::tempdir().unwrap();
    let (_holder, mut o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();
    std::fs::write(batches(tmp.path()).join("notes.txt"), b"mine").unwrap();
    std::fs::remove_file(batches(tmp.path()).join("data_batch_3.bin")).unwrap();
    let listing = entries(&batches(tmp.path()));

    // An archive whose test_batch.bin is wrong: rejected before anything moves.
    let mut bins = archive.bins.clone();
    bins.last_mut().unwrap().1[5] ^= 1;
    let bad = tempfile::tempdir().unwrap();
    let path = bad.path().join("bad.tar.gz");
    std::fs::write(&path, support::tar_gz(&bins, true)).unwrap();
    o.from = Some(path);
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::Checksum { file, .. } if file == TEST_FILE),
        "{err:?}"
    );
    assert_eq!(entries(&batches(tmp.path())), listing);
    assert_eq!(entries(tmp.path()), [BATCHES_DIR]);
}

#[test]
fn regular_file_in_place_of_the_batches_dir_is_refused() {
    let archive = build_archive(RECORDS, 24);
    let tmp = tempfile::tempdir().unwrap();
    let blocker = batches(tmp.path());
    std::fs::write(&blocker, b"precious").unwrap();
    let (_holder, o) = from_file(&archive, tmp.path());
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::InTheWay { path, found, .. }
            if *path == blocker && found == "a regular file"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&blocker.display().to_string()), "{msg}");
    assert!(msg.contains("remove or rename it"), "{msg}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"precious");
    assert_eq!(entries(tmp.path()), [BATCHES_DIR]);
    assert!(!fetch::is_present(tmp.path()));
    assert!(matches!(
        fetch::check(tmp.path(), &archive.expected),
        Err(DataError::InTheWay { .. })
    ));
}

#[cfg(unix)]
#[test]
fn broken_symlink_in_place_of_the_batches_dir_is_refused() {
    let archive = build_archive(RECORDS, 30);
    let tmp = tempfile::tempdir().unwrap();
    let link = batches(tmp.path());
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &link).unwrap();
    let (_holder, o) = from_file(&archive, tmp.path());
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::InTheWay { path, .. } if *path == link),
        "{err:?}"
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(entries(tmp.path()), [BATCHES_DIR]);
}

#[test]
fn regular_file_in_place_of_the_data_dir_is_refused() {
    let archive = build_archive(RECORDS, 25);
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("data");
    std::fs::write(&blocker, b"precious").unwrap();
    let (_holder, o) = from_file(&archive, &blocker);
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::InTheWay { path, .. } if *path == blocker),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&blocker.display().to_string()), "{msg}");
    assert!(msg.contains("remove or rename it"), "{msg}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"precious");
    assert_eq!(entries(tmp.path()), ["data"]);

    // A data directory below that file: the file is what is in the way.
    let (_holder, o) = from_file(&archive, &blocker.join("sub"));
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::InTheWay { path, .. } if *path == blocker),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&blocker).unwrap(), b"precious");
}

#[test]
fn directory_in_place_of_a_dataset_file_is_refused() {
    let archive = build_archive(RECORDS, 26);
    let tmp = tempfile::tempdir().unwrap();
    let (_holder, o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();
    let blocker = batches(tmp.path()).join("data_batch_3.bin");
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("inside.txt"), b"precious").unwrap();
    let err = fetch::fetch(&o).unwrap_err();
    assert!(
        matches!(&err, DataError::InTheWay { path, found, .. }
            if *path == blocker && found == "a directory"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&blocker.display().to_string()), "{msg}");
    assert!(msg.contains("remove or rename it"), "{msg}");
    assert_eq!(
        std::fs::read(blocker.join("inside.txt")).unwrap(),
        b"precious"
    );
}

#[test]
fn corrupt_installation_error_names_every_corrupt_file() {
    let archive = build_archive(RECORDS, 27);
    let tmp = tempfile::tempdir().unwrap();
    let (_holder, o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();
    flip_byte(&batches(tmp.path()).join("data_batch_2.bin"));
    flip_byte(&batches(tmp.path()).join(TEST_FILE));
    let err = fetch::fetch(&o).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("data_batch_2.bin"), "{msg}");
    assert!(msg.contains("test_batch.bin"), "{msg}");
    assert!(!msg.contains("data_batch_1.bin"), "{msg}");
    assert!(msg.contains("--force"), "{msg}");
}

#[test]
fn verify_names_the_missing_file() {
    let archive = build_archive(RECORDS, 28);
    let tmp = tempfile::tempdir().unwrap();
    let (_holder, o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();
    std::fs::remove_file(batches(tmp.path()).join("data_batch_3.bin")).unwrap();
    let err = fetch::verify(tmp.path(), &archive.expected).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingFile { path, .. } if path.ends_with("data_batch_3.bin")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("data_batch_3.bin is missing"),
        "{err}"
    );
}

#[test]
fn check_lists_each_missing_or_corrupt_file() {
    let archive = build_archive(RECORDS, 31);
    let tmp = tempfile::tempdir().unwrap();
    let status = fetch::check(&tmp.path().join("none"), &archive.expected).unwrap();
    assert!(status.is_absent() && !status.is_complete());
    assert_eq!(status.problems.len(), 7);
    assert!(status.to_string().contains("not installed"), "{status}");

    let (_holder, o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();
    assert!(fetch::check(tmp.path(), &archive.expected)
        .unwrap()
        .is_complete());
    std::fs::remove_file(batches(tmp.path()).join("data_batch_3.bin")).unwrap();
    flip_byte(&batches(tmp.path()).join(TEST_FILE));
    let status = fetch::check(tmp.path(), &archive.expected).unwrap();
    let named: Vec<(String, bool)> = status
        .problems
        .iter()
        .map(|p| (p.file_name(), matches!(p, FileProblem::Missing { .. })))
        .collect();
    assert_eq!(
        named,
        [
            ("data_batch_3.bin".to_string(), true),
            (TEST_FILE.to_string(), false)
        ]
    );
    assert!(!status.is_absent() && status.any_missing());
    assert_eq!(
        status.to_string(),
        format!(
            "CIFAR-10 in {} is incomplete: data_batch_3.bin is missing, test_batch.bin has the \
             wrong SHA-256",
            batches(tmp.path()).display()
        )
    );
}

const CHILD_DIR: &str = "CIFAR_DATA_TEST_REPORT_DIR";

/// The report on stderr names each missing or corrupt file, and comes before any download:
/// the download here fails (nothing listens on the port), after the report.
#[test]
fn incomplete_dataset_is_reported_before_downloading() {
    let archive = build_archive(RECORDS, 29);
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        // Child process: fetch with progress reporting on stderr.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut o = FetchOptions::new(PathBuf::from(dir));
        o.expected = archive.expected.clone();
        o.url = Some(format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz"));
        o.max_retries = 0;
        o.progress = true;
        let err = fetch::fetch(&o).unwrap_err();
        assert!(matches!(err, DataError::Download { .. }), "{err:?}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_holder, o) = from_file(&archive, tmp.path());
    fetch::fetch(&o).unwrap();
    std::fs::remove_file(batches(tmp.path()).join("data_batch_3.bin")).unwrap();
    flip_byte(&batches(tmp.path()).join(TEST_FILE));

    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "incomplete_dataset_is_reported_before_downloading",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert!(stderr.contains("data_batch_3.bin is missing"), "{stderr}");
    assert!(
        stderr.contains("test_batch.bin has the wrong SHA-256"),
        "{stderr}"
    );
    assert!(!stderr.contains("data_batch_1.bin"), "{stderr}");
}
