//! A minimal TensorBoard event-file writer (scalars only). The tests read the files back
//! with a verifying reader (`tests/common/tensorboard_reader.rs`).
//!
//! Files are TFRecord streams: each record is `u64 length (LE)`, `masked crc32c(length bytes)`,
//! the payload, `masked crc32c(payload)`, with `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`.
//! Payloads are `tensorflow.Event` protobufs, hand-encoded: the first carries
//! `file_version: "brain.Event:2"`, the others `wall_time`, `step` and a `Summary` with one
//! `Value { tag, simple_value }` — the form TensorBoard's scalar dashboard reads.
//!
//! ```
//! use trainer::tensorboard::SummaryWriter;
//!
//! let dir = std::env::temp_dir().join(format!("tb-doc-{}", std::process::id()));
//! let mut w = SummaryWriter::new(&dir)?;
//! w.add_scalar("train/loss", 2.3, 0)?;
//! w.flush()?;
//! // The file-version record, then one record per scalar.
//! assert!(std::fs::metadata(w.path())?.len() > 0);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `file_version` of the first event in every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Appends scalar summaries to a new `events.out.tfevents.<unix secs>.<hostname>` file.
pub struct SummaryWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl SummaryWriter {
    /// Creates `dir` if needed and a new event file in it, starting with the file-version
    /// record. An existing file of the same name is never overwritten (a `.N` suffix is added).
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| with_path(e, "cannot create TensorBoard directory", dir))?;
        let base = format!("events.out.tfevents.{}.{}", now() as u64, hostname());
        let mut n = 0;
        let (path, file) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(with_path(e, "cannot create event file", &path)),
            }
        };
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, now());
        put_bytes(&mut ev, 3, FILE_VERSION.as_bytes());
        w.write_record(&ev)?;
        w.flush()?;
        Ok(w)
    }

    /// Path of the event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one scalar. Buffered: call [`SummaryWriter::flush`] to make it visible.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> io::Result<()> {
        let mut val = Vec::new();
        put_bytes(&mut val, 1, tag.as_bytes());
        put_key(&mut val, 2, 5);
        val.extend_from_slice(&value.to_le_bytes());
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &val);
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, now());
        put_key(&mut ev, 2, 0);
        put_varint(&mut ev, step as u64);
        put_bytes(&mut ev, 5, &summary);
        self.write_record(&ev)
    }

    /// Appends a `SessionLog { status: START }` event at `step`: the TensorFlow convention
    /// for a restarted run. TensorBoard then discards the events of earlier files whose step
    /// is `>= step` (written after the checkpoint the run resumed from, and redone now), so
    /// a resumed run does not show those steps twice.
    pub fn add_session_start(&mut self, step: i64) -> io::Result<()> {
        let mut log = Vec::new();
        put_key(&mut log, 1, 0);
        put_varint(&mut log, 1); // SessionLog.SessionStatus.START
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, now());
        put_key(&mut ev, 2, 0);
        put_varint(&mut ev, step as u64);
        put_bytes(&mut ev, 7, &log);
        self.write_record(&ev)
    }

    /// Flushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out
            .flush()
            .map_err(|e| with_path(e, "cannot write event file", &self.path))
    }

    fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out
            .write_all(&rec)
            .map_err(|e| with_path(e, "cannot write event file", &self.path))
    }
}

/// TFRecord's masked CRC-32C.
pub fn masked_crc(data: &[u8]) -> u32 {
    // ((c >> 15) | (c << 17)) + 0xa282ead8, wrapping.
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn put_f64(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_key(buf, field, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, v.len() as u64);
    buf.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_known_values() {
        // CRC-32C("123456789") = 0xE3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // ((0xe3069283 >> 15) | (0xe3069283 << 17)) + 0xa282ead8 mod 2^32, computed by hand.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }
}
