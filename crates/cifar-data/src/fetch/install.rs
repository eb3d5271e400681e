//! Extraction of the archive into a temporary directory, verification, and the atomic rename
//! of each missing or corrupt file into place.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::checksums::{ExpectedChecksums, HashWriter, Md5Reader};
use super::status::existing_dir;
use crate::parse::{BATCHES_DIR, META_FILE};
use crate::DataError;

/// Result of a successful installation.
pub(crate) struct Installed {
    pub(crate) archive_md5: String,
}

/// Extracts `archive` (a `.tar.gz`) into a temporary directory inside `data_dir` (beside
/// `cifar-10-batches-bin/`, on the same file system), verifies every `.bin` file against
/// `expected`, then renames into `cifar-10-batches-bin/` the dataset files named in `replace`
/// (those missing or corrupt there), plus `batches.meta.txt` if its contents differ from the
/// archive's. Each file is replaced atomically; every other file in `cifar-10-batches-bin/` is
/// left untouched. On an archive or checksum error nothing changes in `data_dir`. The
/// temporary directory is removed in every case.
/// `source_name` (a path or URL) is used in error messages.
pub(crate) fn install_archive(
    archive: &Path,
    source_name: &str,
    data_dir: &Path,
    expected: &ExpectedChecksums,
    replace: &[String],
) -> Result<Installed, DataError> {
    let bad = |reason: String| DataError::Archive {
        source_name: source_name.to_string(),
        reason,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cifar-10-extract-")
        .tempdir_in(data_dir)
        .map_err(|e| DataError::io(data_dir, e))?;
    let staged = tmp.path().join(BATCHES_DIR);
    std::fs::create_dir(&staged).map_err(|e| DataError::io(&staged, e))?;

    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(MultiGzDecoder::new(Md5Reader::new(file)));
    let mut digests: Vec<(String, String)> = Vec::new();
    let wanted: Vec<&str> = expected
        .bin_sha256
        .iter()
        .map(|(n, _)| n.as_str())
        .chain([META_FILE])
        .collect();
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a readable .tar.gz: {e}")))?;
    let mut buf = vec![0u8; 1 << 16];
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a readable .tar.gz: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .into_owned();
        let Some(name) = member_name(&path).filter(|n| wanted.contains(&n.as_str())) else {
            continue; // e.g. readme.html
        };
        let dest = staged.join(&name);
        let out = std::fs::File::create(&dest).map_err(|e| DataError::io(&dest, e))?;
        let mut w = HashWriter::new(out);
        loop {
            let n = std::io::Read::read(&mut entry, &mut buf)
                .map_err(|e| bad(format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])
                .map_err(|e| DataError::io(&dest, e))?;
        }
        w.get_mut()
            .sync_all()
            .map_err(|e| DataError::io(&dest, e))?;
        digests.retain(|(n, _)| *n != name);
        digests.push((name, w.finish_hex()));
    }
    // Read to the end: checks the gzip trailer (CRC, length) and completes the MD5.
    let mut gz = tar.into_inner();
    std::io::copy(&mut gz, &mut std::io::sink())
        .map_err(|e| bad(format!("corrupt gzip stream: {e}")))?;
    let archive_md5 = gz
        .into_inner()
        .drain_hex()
        .map_err(|e| DataError::io(archive, e))?;

    for name in &wanted {
        if *name != META_FILE && !digests.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("no member {BATCHES_DIR}/{name}")));
        }
    }
    if !staged.join(META_FILE).is_file() {
        return Err(bad(format!("no member {BATCHES_DIR}/{META_FILE}")));
    }
    for (name, got) in &digests {
        if let Some(want) = expected.sha256_of(name) {
            if !got.eq_ignore_ascii_case(want) {
                return Err(DataError::Checksum {
                    source_name: source_name.to_string(),
                    file: name.clone(),
                    expected: want.to_string(),
                    actual: got.clone(),
                });
            }
        }
    }

    let target = target_dir(data_dir);
    if !existing_dir(&target)? {
        std::fs::create_dir(&target).map_err(|e| DataError::io(&target, e))?;
    }
    for name in &wanted {
        let (from, to) = (staged.join(name), target.join(name));
        let needed =
            replace.iter().any(|r| r == name) || (*name == META_FILE && !same_contents(&from, &to));
        if needed {
            std::fs::rename(&from, &to).map_err(|e| DataError::io(&to, e))?;
        }
    }
    // Make the renames durable (best effort: not every platform syncs directories).
    let _ = std::fs::File::open(&target).and_then(|d| d.sync_all());
    drop(tmp);
    Ok(Installed { archive_md5 })
}

/// Whether the files `a` and `b` both exist and hold the same bytes.
fn same_contents(a: &Path, b: &Path) -> bool {
    let len = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    };
    match (len(a), len(b)) {
        (Some(x), Some(y)) if x == y => {
            matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
        }
        _ => false,
    }
}

/// `name` for an archive member `cifar-10-batches-bin/name` (leading `./` allowed).
fn member_name(path: &Path) -> Option<String> {
    let parts: Vec<Component<'_>> = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    match parts.as_slice() {
        [Component::Normal(dir), Component::Normal(name)] if *dir == BATCHES_DIR => {
            name.to_str().map(str::to_string)
        }
        _ => None,
    }
}

/// `data_dir/cifar-10-batches-bin`.
pub(crate) fn target_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(BATCHES_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            member_name(Path::new("cifar-10-batches-bin/data_batch_1.bin")).as_deref(),
            Some("data_batch_1.bin")
        );
        assert_eq!(
            member_name(Path::new("./cifar-10-batches-bin/test_batch.bin")).as_deref(),
            Some("test_batch.bin")
        );
        assert_eq!(member_name(Path::new("cifar-10-batches-bin")), None);
        assert_eq!(member_name(Path::new("other/data_batch_1.bin")), None);
        assert_eq!(member_name(Path::new("../cifar-10-batches-bin/x")), None);
    }
}
