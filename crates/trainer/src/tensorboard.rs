//! A minimal TensorBoard event-file writer (scalars only) and a verifying reader.
//!
//! Files are TFRecord streams: each record is `u64 length (LE)`, `masked crc32c(length bytes)`,
//! the payload, `masked crc32c(payload)`, with `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`.
//! Payloads are `tensorflow.Event` protobufs, hand-encoded: the first carries
//! `file_version: "brain.Event:2"`, the others `wall_time`, `step` and a `Summary` with one
//! `Value { tag, simple_value }` — the form TensorBoard's scalar dashboard reads.
//!
//! ```
//! use trainer::tensorboard::{read_scalars, SummaryWriter};
//!
//! let dir = std::env::temp_dir().join(format!("tb-doc-{}", std::process::id()));
//! let mut w = SummaryWriter::new(&dir)?;
//! w.add_scalar("train/loss", 2.3, 0)?;
//! w.flush()?;
//! let events = read_scalars(w.path()).unwrap();
//! assert_eq!((events[0].tag.as_str(), events[0].value, events[0].step), ("train/loss", 2.3, 0));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `file_version` of the first event in every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Errors of [`read_events`] / [`read_scalars`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorBoardError {
    /// The file could not be read.
    #[error("cannot read event file {}: {source}", path.display())]
    Io {
        /// The event file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record is truncated, fails its CRC, or holds a malformed protobuf.
    #[error("corrupt event file {} at byte offset {offset}: {message}", path.display())]
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// Byte offset of the record (or field) at fault.
        offset: u64,
        /// What is wrong.
        message: String,
    },
}

/// One decoded `Event` record.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// Global step.
    pub step: i64,
    /// Set on the first record of a file.
    pub file_version: Option<String>,
    /// `(tag, simple_value)` pairs of the event's summary.
    pub scalars: Vec<(String, f32)>,
    /// Whether the event is a `SessionLog` with status `START` (a resumed run).
    pub session_start: bool,
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    /// The scalar's tag, e.g. `train/loss`.
    pub tag: String,
    /// Its value.
    pub value: f32,
    /// Global step.
    pub step: i64,
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
}

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

/// A protobuf field value; `offset` bookkeeping is left to the caller.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// Iterates the `(field number, value)` pairs of one protobuf message.
fn parse_message(mut data: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    fn varint(data: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = data.split_first().ok_or("truncated varint")?;
            *data = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if data.len() < n {
            return Err(format!("field needs {n} bytes, {} left", data.len()));
        }
        let (a, b) = data.split_at(n);
        *data = b;
        Ok(a)
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(&mut data)?),
            1 => Field::Fixed64(take(&mut data, 8)?.try_into().expect("8 bytes")),
            2 => {
                let n = varint(&mut data)?;
                Field::Bytes(take(
                    &mut data,
                    usize::try_from(n).map_err(|_| "length overflow")?,
                )?)
            }
            5 => Field::Fixed32(take(&mut data, 4)?.try_into().expect("4 bytes")),
            w => return Err(format!("unsupported wire type {w} for field {}", key >> 3)),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn decode_event(data: &[u8]) -> Result<Event, String> {
    let mut ev = Event {
        wall_time: 0.0,
        step: 0,
        file_version: None,
        scalars: vec![],
        session_start: false,
    };
    for (field, value) in parse_message(data)? {
        match (field, value) {
            (1, Field::Fixed64(b)) => ev.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => ev.step = v as i64,
            (3, Field::Bytes(b)) => {
                ev.file_version =
                    Some(String::from_utf8(b.to_vec()).map_err(|_| "file_version is not UTF-8")?)
            }
            (7, Field::Bytes(log)) => {
                ev.session_start = parse_message(log)?
                    .iter()
                    .any(|(f, v)| *f == 1 && matches!(v, Field::Varint(1)));
            }
            (5, Field::Bytes(summary)) => {
                for (f, v) in parse_message(summary)? {
                    let (1, Field::Bytes(value)) = (f, v) else {
                        continue;
                    };
                    let (mut tag, mut simple) = (None, None);
                    for (f, v) in parse_message(value)? {
                        match (f, v) {
                            (1, Field::Bytes(t)) => {
                                tag = Some(
                                    String::from_utf8(t.to_vec())
                                        .map_err(|_| "tag is not UTF-8")?,
                                )
                            }
                            (2, Field::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                            _ => {}
                        }
                    }
                    if let (Some(tag), Some(v)) = (tag, simple) {
                        ev.scalars.push((tag, v));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ev)
}

/// Reads every record of an event file, verifying both CRCs of each record.
pub fn read_events(path: &Path) -> Result<Vec<Event>, TensorBoardError> {
    let bytes = std::fs::read(path).map_err(|source| TensorBoardError::Io {
        path: path.into(),
        source,
    })?;
    let corrupt = |offset: usize, message: String| TensorBoardError::Corrupt {
        path: path.into(),
        offset: offset as u64,
        message,
    };
    let mut events = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < 12 {
            return Err(corrupt(
                pos,
                format!("truncated record header ({} bytes)", rest.len()),
            ));
        }
        let len_bytes = &rest[..8];
        let len_crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        if masked_crc(len_bytes) != len_crc {
            return Err(corrupt(pos, "length CRC mismatch".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let avail = (rest.len() - 12).saturating_sub(4) as u64;
        if len > avail {
            return Err(corrupt(
                pos,
                format!("record of {len} bytes is truncated ({avail} available)"),
            ));
        }
        let len = len as usize;
        let data = &rest[12..12 + len];
        let data_crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().expect("4 bytes"));
        if masked_crc(data) != data_crc {
            return Err(corrupt(pos, "data CRC mismatch".into()));
        }
        events.push(
            decode_event(data).map_err(|m| corrupt(pos, format!("bad Event protobuf: {m}")))?,
        );
        pos += 16 + len;
    }
    Ok(events)
}

/// Reads all scalars of an event file, in file order, verifying every record's CRCs.
pub fn read_scalars(path: &Path) -> Result<Vec<ScalarEvent>, TensorBoardError> {
    Ok(read_events(path)?
        .into_iter()
        .flat_map(|ev| {
            ev.scalars.into_iter().map(move |(tag, value)| ScalarEvent {
                tag,
                value,
                step: ev.step,
                wall_time: ev.wall_time,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restart marker TensorBoard uses to drop redone steps reads back as one.
    #[test]
    fn session_start_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SummaryWriter::new(dir.path()).unwrap();
        w.add_scalar("a", 1.0, 3).unwrap();
        w.add_session_start(41).unwrap();
        w.flush().unwrap();
        let ev = read_events(w.path()).unwrap();
        assert_eq!(ev.len(), 3);
        assert!(!ev[0].session_start && !ev[1].session_start);
        assert!(ev[2].session_start && ev[2].scalars.is_empty());
        assert_eq!(ev[2].step, 41);
        // Bytes as TensorFlow's protobuf encoder writes them: field 7 holding { 1: START }.
        let bytes = std::fs::read(w.path()).unwrap();
        assert!(bytes.windows(4).any(|x| x == [0x3a, 0x02, 0x08, 0x01]));
    }

    #[test]
    fn masked_crc_known_values() {
        // CRC-32C("123456789") = 0xE3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // ((0xe3069283 >> 15) | (0xe3069283 << 17)) + 0xa282ead8 mod 2^32, computed by hand.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn varint_round_trip_including_negative_steps() {
        for v in [0i64, 1, 127, 128, 300, i64::MAX, -1, i64::MIN] {
            let mut buf = Vec::new();
            put_key(&mut buf, 2, 0);
            put_varint(&mut buf, v as u64);
            let fields = parse_message(&buf).unwrap();
            match fields[..] {
                [(2, Field::Varint(x))] => assert_eq!(x as i64, v),
                _ => panic!("bad parse for {v}"),
            }
        }
    }
}
