//! TensorBoard event files: write, read back with CRC verification, detect corruption.
//!
//! Optional check with the real TensorBoard (not part of CI):
//! `mkdir -p /tmp/tb && TB_OUT_DIR=/tmp/tb cargo test -p trainer --test tensorboard`, then in a
//! Python environment with `pip install tensorboard`:
//! `python -c "from tensorboard.backend.event_processing.event_accumulator import
//! EventAccumulator as E; e = E('/tmp/tb'); e.Reload(); print(e.Tags()['scalars'],
//! e.Scalars('train/loss')[:2])"`.

mod common;

use common::tensorboard_reader::{read_events, read_scalars, TensorBoardError};
use trainer::tensorboard::{SummaryWriter, FILE_VERSION};

fn write_sample(dir: &std::path::Path) -> std::path::PathBuf {
    let mut w = SummaryWriter::new(dir).unwrap();
    for step in 0..50i64 {
        w.add_scalar("train/loss", 2.5 - step as f32 * 0.01, step * 10)
            .unwrap();
        w.add_scalar("train/lr", 0.1, step * 10).unwrap();
    }
    w.add_scalar("val/accuracy", 0.9125, 500).unwrap();
    w.add_scalar("weird", f32::NAN, -3).unwrap();
    w.flush().unwrap();
    w.path().to_path_buf()
}

#[test]
fn write_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path());
    // Keep a copy for checking with the real TensorBoard when asked to (see the module docs).
    if let Ok(out) = std::env::var("TB_OUT_DIR") {
        std::fs::copy(
            &path,
            std::path::Path::new(&out).join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let secs: u64 = name.split('.').nth(3).unwrap().parse().unwrap();
    assert!(secs > 1_600_000_000);

    let events = read_events(&path).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    assert!(events[0].scalars.is_empty());
    assert!(events[0].wall_time > 1.6e9);

    let s = read_scalars(&path).unwrap();
    assert_eq!(s.len(), 102);
    assert_eq!(
        (s[0].tag.as_str(), s[0].value, s[0].step),
        ("train/loss", 2.5, 0)
    );
    assert_eq!(
        (s[3].tag.as_str(), s[3].value, s[3].step),
        ("train/lr", 0.1, 10)
    );
    assert_eq!(
        (s[100].tag.as_str(), s[100].value, s[100].step),
        ("val/accuracy", 0.9125, 500)
    );
    assert!(s[101].value.is_nan() && s[101].step == -3);
    assert!(s.windows(2).all(|w| w[0].wall_time <= w[1].wall_time));
}

#[test]
fn two_writers_in_one_second_use_different_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = SummaryWriter::new(dir.path()).unwrap();
    let b = SummaryWriter::new(dir.path()).unwrap();
    assert_ne!(a.path(), b.path());
}

#[test]
fn every_corrupted_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::new(dir.path()).unwrap();
    w.add_scalar("loss", 1.0, 1).unwrap();
    w.flush().unwrap();
    let good = std::fs::read(w.path()).unwrap();
    let bad_path = dir.path().join("corrupt.tfevents");
    for i in 0..good.len() {
        let mut bytes = good.clone();
        bytes[i] ^= 0x20;
        std::fs::write(&bad_path, &bytes).unwrap();
        match read_scalars(&bad_path) {
            Err(TensorBoardError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, bad_path);
                assert!(
                    offset as usize <= i,
                    "offset {offset} after corrupted byte {i}"
                );
            }
            other => panic!("flipping byte {i} gave {other:?}"),
        }
    }
    // Truncation is reported with the file name and offset, too.
    std::fs::write(&bad_path, &good[..good.len() - 3]).unwrap();
    let msg = read_scalars(&bad_path).unwrap_err().to_string();
    assert!(
        msg.contains("corrupt.tfevents") && msg.contains("offset"),
        "{msg}"
    );
}

#[test]
fn missing_file_names_the_path() {
    let msg = read_scalars(std::path::Path::new("/nonexistent/events.out.tfevents.1.x"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("/nonexistent/events.out.tfevents.1.x"),
        "{msg}"
    );
}

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

/// Steps are protobuf varints, negative ones as ten-byte two's complement: every extreme
/// reads back as written.
#[test]
fn steps_round_trip_including_negative_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::new(dir.path()).unwrap();
    let steps = [0i64, 1, 127, 128, 300, i64::MAX, -1, i64::MIN];
    for &s in &steps {
        w.add_scalar("s", 1.0, s).unwrap();
    }
    w.flush().unwrap();
    let back: Vec<i64> = read_scalars(w.path())
        .unwrap()
        .iter()
        .map(|e| e.step)
        .collect();
    assert_eq!(back, steps);
}
