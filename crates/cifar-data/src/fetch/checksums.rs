//! Expected checksums and streaming hash helpers.

use std::io::{Read, Write};
use std::path::Path;

use md5::Md5;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::parse::{TEST_FILE, TRAIN_FILES};
use crate::DataError;

/// MD5 of the official `cifar-10-binary.tar.gz` (170,052,171 bytes).
pub const OFFICIAL_ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// SHA-256 of the six official `.bin` files (from `shared/data/PROVENANCE.md`).
pub const OFFICIAL_BIN_SHA256: [(&str, &str); 6] = [
    (
        "data_batch_1.bin",
        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    ),
    (
        "data_batch_2.bin",
        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    ),
    (
        "data_batch_3.bin",
        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    ),
    (
        "data_batch_4.bin",
        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    ),
    (
        "data_batch_5.bin",
        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    ),
    (
        "test_batch.bin",
        "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    ),
];

/// What a fetched dataset must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedChecksums {
    /// MD5 (hex) of the archive container. Informational: an archive whose container differs
    /// is still accepted when every `.bin` file matches.
    pub archive_md5: Option<String>,
    /// SHA-256 (hex) of each `.bin` file, by file name. These decide validity.
    pub bin_sha256: Vec<(String, String)>,
}

impl Default for ExpectedChecksums {
    /// The official values ([`ExpectedChecksums::official`]).
    fn default() -> Self {
        Self::official()
    }
}

impl ExpectedChecksums {
    /// The checksums of the official CIFAR-10 binary release.
    pub fn official() -> Self {
        Self {
            archive_md5: Some(OFFICIAL_ARCHIVE_MD5.to_string()),
            bin_sha256: OFFICIAL_BIN_SHA256
                .iter()
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .collect(),
        }
    }

    /// The SHA-256 of the six `.bin` files found in `batches_dir` (no archive checksum); for
    /// datasets other than the official one, e.g. synthetic ones in tests.
    pub fn of_batches_dir(batches_dir: &Path) -> Result<Self, DataError> {
        let names: Vec<&str> = TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect();
        let bin_sha256 = names
            .par_iter()
            .map(|n| Ok((n.to_string(), sha256_file(&batches_dir.join(n))?)))
            .collect::<Result<_, DataError>>()?;
        Ok(Self {
            archive_md5: None,
            bin_sha256,
        })
    }

    pub(crate) fn sha256_of(&self, name: &str) -> Option<&str> {
        self.bin_sha256
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.as_str())
    }
}

/// SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut w = HashWriter::new(std::io::sink());
    std::io::copy(&mut f, &mut w).map_err(|e| DataError::io(path, e))?;
    Ok(w.finish_hex())
}

/// A writer that hashes (SHA-256) what passes through it.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub(crate) fn finish_hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (MD5) what is read through it.
pub(crate) struct Md5Reader<R> {
    inner: R,
    hasher: Md5,
}

impl<R: Read> Md5Reader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Md5::new(),
        }
    }

    /// Reads the rest of the input, then returns the MD5 (hex) of everything read.
    pub(crate) fn drain_hex(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Md5Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
