//! A verifying reader of TensorBoard event files, for tests: reads back what
//! `trainer::tensorboard::SummaryWriter` wrote, checking every record's CRCs and decoding the
//! `Event` protobufs (scalars, the file version, `SessionLog` START markers). Test support
//! only (the product writes event files and never reads them); shared by the trainer's tests
//! and the end-to-end tests (which include this file by path).
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};

use trainer::tensorboard::masked_crc;

/// Errors of [`read_events`] / [`read_scalars`].
#[derive(Debug)]
pub enum TensorBoardError {
    /// The file could not be read.
    Io {
        /// The event file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record is truncated, fails its CRC, or holds a malformed protobuf.
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// Byte offset of the record (or field) at fault.
        offset: u64,
        /// What is wrong.
        message: String,
    },
}

impl std::fmt::Display for TensorBoardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, source } => {
                write!(f, "cannot read event file {}: {source}", path.display())
            }
            Self::Corrupt {
                path,
                offset,
                message,
            } => write!(
                f,
                "corrupt event file {} at byte offset {offset}: {message}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TensorBoardError {}

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
