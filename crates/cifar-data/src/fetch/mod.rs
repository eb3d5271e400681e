//! Download and install CIFAR-10 (`cargo xtask fetch-cifar`).
//!
//! The archive comes from, in order of precedence: [`FetchOptions::from`] (a local archive),
//! [`FetchOptions::url`] (a mirror), `$CIFAR10_ARCHIVE`, `$CIFAR10_URL`, and finally the
//! official [`OFFICIAL_URL`].
//!
//! First [`check`] looks at what is installed. A complete, verified dataset is reported as
//! [`FetchOutcome::AlreadyPresent`]; one whose files all exist but some have the wrong
//! SHA-256 is an error naming each of them (reinstall with [`FetchOptions::force`]). Anything
//! that is not a directory where `<dir>` or `cifar-10-batches-bin/` belongs, or not a regular
//! file where a dataset file belongs, is refused ([`DataError::InTheWay`]): fetch never deletes
//! what it did not create. With [`FetchOptions::progress`], an incomplete dataset is reported
//! on stderr, naming each missing or corrupt file, before anything is downloaded.
//!
//! Downloads stream to `<dir>/cifar-10-binary.tar.gz.part` with a progress bar; an
//! interrupted download (dropped connection, or a `.part` left by an earlier run) continues
//! with an HTTP Range request. The archive is then extracted into a temporary directory inside
//! `<dir>`, and the SHA-256 of each of the six `.bin` files is checked against the official
//! values (an archive whose container checksum differs — a repackaged copy — is accepted when
//! all `.bin` files match). Only then are the dataset files that are missing or corrupt in
//! `cifar-10-batches-bin/` renamed into place, each atomically; every other file there (valid
//! dataset files, and anything the user put there) is left untouched. On a checksum or archive
//! error nothing changes (the downloaded file is deleted; a local archive is never touched).
//! Only the `.bin` files and `batches.meta.txt` are installed; the temporary directory and the
//! downloaded archive are deleted afterwards.

mod checksums;
mod download;
mod install;
mod status;

use std::path::{Path, PathBuf};

pub use checksums::{sha256_file, ExpectedChecksums, OFFICIAL_ARCHIVE_MD5, OFFICIAL_BIN_SHA256};
pub use status::{DatasetStatus, FileProblem};

use crate::parse::{META_FILE, TEST_FILE, TRAIN_FILES};
use crate::DataError;

/// The official archive.
pub const OFFICIAL_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Environment variable: the data directory (default `data/cifar-10`).
pub const ENV_DIR: &str = "CIFAR10_DIR";
/// Environment variable: a local archive to install from.
pub const ENV_ARCHIVE: &str = "CIFAR10_ARCHIVE";
/// Environment variable: a mirror URL of the archive.
pub const ENV_URL: &str = "CIFAR10_URL";
/// File name of the archive being downloaded (plus `.part` while incomplete).
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";

/// Options of [`fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Data directory; the dataset goes to `dir/cifar-10-batches-bin/`.
    pub dir: PathBuf,
    /// Mirror URL of the archive.
    pub url: Option<String>,
    /// Local archive to install from (takes precedence over `url`).
    pub from: Option<PathBuf>,
    /// Report on stderr: which files are missing or corrupt before repairing an incomplete
    /// dataset, and a download progress bar.
    pub progress: bool,
    /// Reinstall even when the dataset is present and verified, or present but corrupt: every
    /// dataset file that is missing or has the wrong SHA-256 is replaced (each atomically).
    pub force: bool,
    /// Checksums the dataset must match. Default: the official ones.
    pub expected: ExpectedChecksums,
    /// Consecutive download attempts without progress that are retried. Default: 3.
    pub max_retries: u32,
}

impl FetchOptions {
    /// Defaults for `dir`: source from the environment or the official URL, no progress bar,
    /// official checksums.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            url: None,
            from: None,
            progress: false,
            force: false,
            expected: ExpectedChecksums::official(),
            max_retries: 3,
        }
    }
}

impl Default for FetchOptions {
    /// [`FetchOptions::new`] on [`default_data_dir`].
    fn default() -> Self {
        Self::new(default_data_dir())
    }
}

/// Where the archive comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchSource {
    /// A local archive file.
    Local(PathBuf),
    /// An HTTP(S) URL.
    Url(String),
}

impl std::fmt::Display for FetchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchSource::Local(p) => write!(f, "{}", p.display()),
            FetchSource::Url(u) => f.write_str(u),
        }
    }
}

/// What [`fetch`] did.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The dataset was already installed and verified; nothing changed.
    AlreadyPresent {
        /// The verified `cifar-10-batches-bin` directory.
        dir: PathBuf,
    },
    /// The dataset was installed.
    Installed {
        /// The new `cifar-10-batches-bin` directory.
        dir: PathBuf,
        /// Where the archive came from.
        source: FetchSource,
        /// MD5 (hex) of the archive container.
        archive_md5: String,
        /// Whether that MD5 is the expected (official) one. `false` for a repackaged archive
        /// whose `.bin` files nonetheless verified.
        archive_md5_matches: bool,
        /// Bytes downloaded by this call (0 for a local archive).
        downloaded_bytes: u64,
        /// HTTP Range requests made to resume the download.
        resumes: u32,
    },
}

/// `$CIFAR10_DIR` if set and non-empty, else `data/cifar-10` (relative to the current
/// directory).
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os(ENV_DIR) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("data/cifar-10"),
    }
}

/// Whether all seven dataset files exist in `dir/cifar-10-batches-bin/` (existence only;
/// [`fetch`] verifies checksums).
pub fn is_present(dir: &Path) -> bool {
    let root = install::target_dir(dir);
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE, &META_FILE])
        .all(|n| root.join(n).is_file())
}

/// Which dataset files in `dir/cifar-10-batches-bin/` are missing, or have a SHA-256 other
/// than `expected` (hashes the `.bin` files that exist, in parallel). Err when something other
/// than a directory is where `dir` or `cifar-10-batches-bin` belongs
/// ([`DataError::InTheWay`]), when a dataset file's name is taken by something other than a
/// regular file, or on an I/O error.
pub fn check(dir: &Path, expected: &ExpectedChecksums) -> Result<DatasetStatus, DataError> {
    status::check(dir, expected)
}

/// Checks that every dataset file exists in `dir/cifar-10-batches-bin/` and that the `.bin`
/// files have the SHA-256 in `expected`. The error concerns the first missing
/// ([`DataError::MissingFile`]) or corrupt ([`DataError::Checksum`]) file, and its message
/// names every other one.
pub fn verify(dir: &Path, expected: &ExpectedChecksums) -> Result<(), DataError> {
    let status = check(dir, expected)?;
    if let Some(FileProblem::Missing { path }) = status.problems.first() {
        return Err(DataError::MissingFile {
            path: path.clone(),
            hint: format!(
                "{status}; fetch again (`cargo xtask fetch-cifar`) to install the missing files"
            ),
        });
    }
    match corrupt_error(&status, "fetch with --force to replace them") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`DataError::Checksum`] for the first corrupt file of `status` (if any), naming the other
/// problems.
fn corrupt_error(status: &DatasetStatus, advice: &str) -> Option<DataError> {
    let (first, expected, actual) = status.problems.iter().find_map(|p| match p {
        FileProblem::WrongChecksum {
            expected, actual, ..
        } => Some((p, expected, actual)),
        _ => None,
    })?;
    let others: Vec<String> = status
        .problems
        .iter()
        .filter(|p| *p != first)
        .map(|p| p.to_string())
        .collect();
    let others = if others.is_empty() {
        String::new()
    } else {
        format!("; also {}", others.join(", "))
    };
    Some(DataError::Checksum {
        source_name: format!(
            "{} (installed earlier{others}; {advice})",
            status.dir.display()
        ),
        file: first.file_name(),
        expected: expected.clone(),
        actual: actual.clone(),
    })
}

/// The source `opts` designates: `from`, `url`, `$CIFAR10_ARCHIVE`, `$CIFAR10_URL`, then the
/// official URL.
pub fn resolve_source(opts: &FetchOptions) -> FetchSource {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(p) = &opts.from {
        FetchSource::Local(p.clone())
    } else if let Some(u) = &opts.url {
        FetchSource::Url(u.clone())
    } else if let Some(p) = env(ENV_ARCHIVE) {
        FetchSource::Local(PathBuf::from(p))
    } else if let Some(u) = env(ENV_URL) {
        FetchSource::Url(u)
    } else {
        FetchSource::Url(OFFICIAL_URL.to_string())
    }
}

/// Installs CIFAR-10 into `opts.dir` (see the [module documentation](self)).
pub fn fetch(opts: &FetchOptions) -> Result<FetchOutcome, DataError> {
    let status = check(&opts.dir, &opts.expected)?;
    if !opts.force {
        if status.is_complete() {
            return Ok(FetchOutcome::AlreadyPresent { dir: status.dir });
        }
        if !status.any_missing() {
            // Every file is there but some are corrupt: report, change nothing.
            if let Some(e) =
                corrupt_error(&status, "fetch with --force to replace the corrupt files")
            {
                return Err(e);
            }
        }
    }
    let source = resolve_source(opts);
    if let FetchSource::Local(p) = &source {
        if !p.is_file() {
            return Err(DataError::MissingFile {
                path: p.clone(),
                hint: "the archive given with --from / $CIFAR10_ARCHIVE does not exist".to_string(),
            });
        }
    }
    if opts.progress && !status.is_absent() && !status.is_complete() {
        eprintln!("{status}; installing these files from {source} (other files stay as they are)");
    }
    let created_dir = !status::existing_dir(&opts.dir)?;
    std::fs::create_dir_all(&opts.dir).map_err(|e| DataError::io(&opts.dir, e))?;
    let replace: Vec<String> = status.problems.iter().map(FileProblem::file_name).collect();
    let result = install_from(&source, opts, &replace);
    if result.is_err() && created_dir {
        // Only succeeds when empty: a partial download kept for resuming stays.
        let _ = std::fs::remove_dir(&opts.dir);
    }
    result
}

fn install_from(
    source: &FetchSource,
    opts: &FetchOptions,
    replace: &[String],
) -> Result<FetchOutcome, DataError> {
    let name = source.to_string();
    let (archive, downloaded) = match source {
        FetchSource::Local(p) => (p.clone(), None),
        FetchSource::Url(url) => {
            let part = opts.dir.join(format!("{ARCHIVE_NAME}.part"));
            let d = download::download(url, &part, opts.max_retries, opts.progress)?;
            (part, Some(d))
        }
    };
    let result = install::install_archive(&archive, &name, &opts.dir, &opts.expected, replace);
    if downloaded.is_some() {
        // Installed, or the complete download is corrupt: either way it has served.
        if result.is_ok()
            || matches!(
                result,
                Err(DataError::Checksum { .. } | DataError::Archive { .. })
            )
        {
            let _ = std::fs::remove_file(&archive);
        }
    }
    let installed = result?;
    let d = downloaded.unwrap_or_default();
    Ok(FetchOutcome::Installed {
        dir: install::target_dir(&opts.dir),
        source: source.clone(),
        archive_md5_matches: opts
            .expected
            .archive_md5
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(&installed.archive_md5)),
        archive_md5: installed.archive_md5,
        downloaded_bytes: d.bytes,
        resumes: d.resumes,
    })
}
