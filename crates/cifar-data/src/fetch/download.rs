//! Resumable HTTP download to a `.part` file.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ureq::config::AutoHeaderValue;
use ureq::Agent;

use crate::DataError;

/// What a download did.
#[derive(Debug, Default)]
pub(crate) struct Downloaded {
    /// Bytes received in this call.
    pub(crate) bytes: u64,
    /// Range requests made to continue a partial file.
    pub(crate) resumes: u32,
}

/// Downloads `url` into `part`, continuing from what `part` already holds with HTTP Range
/// requests. Up to `max_retries` consecutive attempts that bring no new byte are retried.
pub(crate) fn download(
    url: &str,
    part: &Path,
    max_retries: u32,
    progress: bool,
) -> Result<Downloaded, DataError> {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .accept_encoding(AutoHeaderValue::None)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build();
    let agent = Agent::new_with_config(config);
    let bar = if progress {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message("downloading");
    let download_err = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };

    let mut done = Downloaded::default();
    let mut failures = 0u32;
    let mut last_error = String::new();
    loop {
        if failures > max_retries {
            bar.abandon();
            return Err(download_err(format!(
                "{last_error} (gave up after {failures} attempts without progress)"
            )));
        }
        if failures > 0 {
            std::thread::sleep(Duration::from_millis(200 * u64::from(failures)));
        }
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let mut req = agent.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                last_error = e.to_string();
                failures += 1;
                continue;
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (start, total) = match status {
            200 => (
                0,
                header("content-length").and_then(|v| v.trim().parse().ok()),
            ),
            206 => match header("content-range")
                .as_deref()
                .and_then(parse_content_range)
            {
                Some((Some(s), t)) if s == have => (s, t),
                other => {
                    // A range we did not ask for: start over.
                    last_error = format!("unexpected Content-Range {other:?} for offset {have}");
                    truncate(part, 0)?;
                    failures += 1;
                    continue;
                }
            },
            416 => {
                let total = header("content-range")
                    .as_deref()
                    .and_then(parse_content_range)
                    .and_then(|(_, t)| t);
                if total == Some(have) {
                    break; // the part file is already complete
                }
                last_error = format!("HTTP 416 for offset {have} (total {total:?})");
                truncate(part, 0)?;
                failures += 1;
                continue;
            }
            s if s >= 500 => {
                last_error = format!("HTTP status {s}");
                failures += 1;
                continue;
            }
            s => {
                bar.abandon();
                return Err(DataError::HttpStatus {
                    url: url.to_string(),
                    status: s,
                });
            }
        };
        if start == 0 && have > 0 {
            truncate(part, 0)?; // server ignored the range: restart from scratch
        }
        if start > 0 {
            done.resumes += 1;
        }
        bar.set_length(total.unwrap_or(0));
        bar.set_position(start);

        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(|e| DataError::io(part, e))?;
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        let mut read_error = None;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    file.write_all(&buf[..n])
                        .map_err(|e| DataError::io(part, e))?;
                    got += n as u64;
                    bar.inc(n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    read_error = Some(e.to_string());
                    break;
                }
            }
        }
        file.sync_all().map_err(|e| DataError::io(part, e))?;
        done.bytes += got;
        let now = start + got;
        let complete = read_error.is_none() && total.is_none_or(|t| now >= t);
        if complete {
            break;
        }
        last_error = read_error
            .unwrap_or_else(|| format!("connection closed after {now} of {total:?} bytes"));
        if got > 0 {
            failures = 0;
        }
        failures += 1;
    }
    bar.finish_and_clear();
    Ok(done)
}

fn truncate(part: &Path, len: u64) -> Result<(), DataError> {
    match OpenOptions::new().write(true).open(part) {
        Ok(f) => f.set_len(len).map_err(|e| DataError::io(part, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataError::io(part, e)),
    }
}

/// Parses `bytes START-END/TOTAL` or `bytes */TOTAL` into `(Some(START) | None, TOTAL)`.
fn parse_content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => None,
        r => Some(r.split_once('-')?.0.trim().parse().ok()?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((Some(100), Some(1000)))
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some((None, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((Some(5), None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
