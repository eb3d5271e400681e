//! The state of an installation: which dataset files are missing or corrupt, and whether
//! something the installer did not create is in the way.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::checksums::{sha256_file, ExpectedChecksums};
use crate::parse::{BATCHES_DIR, META_FILE};
use crate::DataError;

/// A dataset file in `cifar-10-batches-bin/` that is missing or corrupt.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileProblem {
    /// The file does not exist (or is a symbolic link to nothing).
    Missing {
        /// Where the file belongs.
        path: PathBuf,
    },
    /// The file's SHA-256 is not the expected one.
    WrongChecksum {
        /// The file.
        path: PathBuf,
        /// The expected SHA-256 (hex).
        expected: String,
        /// The SHA-256 found (hex).
        actual: String,
    },
}

impl FileProblem {
    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            FileProblem::Missing { path } | FileProblem::WrongChecksum { path, .. } => path,
        }
    }

    /// The file's name, e.g. `data_batch_3.bin`.
    pub fn file_name(&self) -> String {
        let path = self.path();
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    }
}

impl fmt::Display for FileProblem {
    /// `data_batch_3.bin is missing`, `test_batch.bin has the wrong SHA-256`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Missing { .. } => write!(f, "{} is missing", self.file_name()),
            FileProblem::WrongChecksum { .. } => {
                write!(f, "{} has the wrong SHA-256", self.file_name())
            }
        }
    }
}

/// What [`check`](super::check) found in `dir/cifar-10-batches-bin/`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetStatus {
    /// The `cifar-10-batches-bin` directory (which may not exist).
    pub dir: PathBuf,
    /// Each missing or corrupt dataset file, in file order (the `.bin` files, then
    /// `batches.meta.txt`); empty when the dataset is complete and verified.
    pub problems: Vec<FileProblem>,
    /// How many of the dataset files exist (valid or not); 0 when nothing is installed.
    pub files_found: usize,
}

impl DatasetStatus {
    /// Every dataset file exists and every `.bin` file has the expected SHA-256.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }

    /// No dataset file exists: nothing is installed.
    pub fn is_absent(&self) -> bool {
        self.files_found == 0
    }

    /// At least one dataset file is missing.
    pub fn any_missing(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p, FileProblem::Missing { .. }))
    }

    /// The problems, comma-separated: `data_batch_3.bin is missing, test_batch.bin has the
    /// wrong SHA-256`.
    pub fn problem_list(&self) -> String {
        let items: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        items.join(", ")
    }
}

impl fmt::Display for DatasetStatus {
    /// One line: complete, not installed, or incomplete/corrupt naming each bad file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.dir.display();
        if self.is_complete() {
            write!(f, "CIFAR-10 in {dir} is complete (checksums verified)")
        } else if self.is_absent() {
            write!(f, "CIFAR-10 is not installed in {dir}")
        } else {
            let state = if self.any_missing() {
                "incomplete"
            } else {
                "corrupt"
            };
            write!(f, "CIFAR-10 in {dir} is {state}: {}", self.problem_list())
        }
    }
}

/// See [`check`](super::check).
pub(crate) fn check(
    data_dir: &Path,
    expected: &ExpectedChecksums,
) -> Result<DatasetStatus, DataError> {
    let target = data_dir.join(BATCHES_DIR);
    let mut names: Vec<&str> = expected
        .bin_sha256
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    if !names.contains(&META_FILE) {
        names.push(META_FILE);
    }
    if !existing_dir(data_dir)? || !existing_dir(&target)? {
        return Ok(DatasetStatus {
            problems: names
                .iter()
                .map(|n| FileProblem::Missing {
                    path: target.join(n),
                })
                .collect(),
            dir: target,
            files_found: 0,
        });
    }
    let found = names
        .par_iter()
        .map(|name| check_file(&target.join(name), expected.sha256_of(name)))
        .collect::<Result<Vec<_>, DataError>>()?;
    let files_found = found
        .iter()
        .filter(|p| !matches!(p, Some(FileProblem::Missing { .. })))
        .count();
    Ok(DatasetStatus {
        dir: target,
        problems: found.into_iter().flatten().collect(),
        files_found,
    })
}

/// `None` when `path` is a regular file with SHA-256 `want` (any content when `want` is None).
fn check_file(path: &Path, want: Option<&str>) -> Result<Option<FileProblem>, DataError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(Some(FileProblem::Missing {
                path: path.to_path_buf(),
            }))
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    if !meta.is_file() {
        return Err(DataError::in_the_way(path, kind(&meta), "a dataset file"));
    }
    let Some(want) = want else {
        return Ok(None);
    };
    let actual = sha256_file(path)?;
    Ok(
        (!actual.eq_ignore_ascii_case(want)).then(|| FileProblem::WrongChecksum {
            path: path.to_path_buf(),
            expected: want.to_string(),
            actual,
        }),
    )
}

/// Whether the directory `path` exists. Err([`DataError::InTheWay`]) when `path`, or the
/// nearest existing ancestor, is something other than a directory (a regular file, a broken
/// symbolic link...), since a directory cannot be created there without deleting it.
pub(crate) fn existing_dir(path: &Path) -> Result<bool, DataError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(m) => Err(DataError::in_the_way(path, kind(&m), "a directory")),
        Err(e) => {
            if let Some(err) = ancestor_in_the_way(path) {
                Err(err)
            } else if e.kind() != ErrorKind::NotFound {
                Err(DataError::io(path, e))
            } else if std::fs::symlink_metadata(path).is_ok() {
                Err(DataError::in_the_way(
                    path,
                    "a broken symbolic link",
                    "a directory",
                ))
            } else {
                Ok(false)
            }
        }
    }
}

/// The error for the nearest existing ancestor of `path` if it is not a directory.
fn ancestor_in_the_way(path: &Path) -> Option<DataError> {
    let (a, m) = path
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .find_map(|a| std::fs::metadata(a).ok().map(|m| (a, m)))?;
    (!m.is_dir()).then(|| DataError::in_the_way(a, kind(&m), "a directory"))
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_file() {
        "a regular file"
    } else if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(problems: Vec<FileProblem>, files_found: usize) -> DatasetStatus {
        DatasetStatus {
            dir: PathBuf::from("d/cifar-10-batches-bin"),
            problems,
            files_found,
        }
    }

    #[test]
    fn messages_name_each_file() {
        let missing = FileProblem::Missing {
            path: PathBuf::from("d/cifar-10-batches-bin/data_batch_3.bin"),
        };
        let wrong = FileProblem::WrongChecksum {
            path: PathBuf::from("d/cifar-10-batches-bin/test_batch.bin"),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert_eq!(missing.to_string(), "data_batch_3.bin is missing");
        assert_eq!(wrong.to_string(), "test_batch.bin has the wrong SHA-256");
        assert_eq!(
            status(vec![missing.clone(), wrong.clone()], 6).to_string(),
            "CIFAR-10 in d/cifar-10-batches-bin is incomplete: data_batch_3.bin is missing, \
             test_batch.bin has the wrong SHA-256"
        );
        assert_eq!(
            status(vec![wrong], 7).to_string(),
            "CIFAR-10 in d/cifar-10-batches-bin is corrupt: test_batch.bin has the wrong SHA-256"
        );
        assert_eq!(
            status(vec![missing], 0).to_string(),
            "CIFAR-10 is not installed in d/cifar-10-batches-bin"
        );
        assert!(status(vec![], 7).is_complete());
    }
}
