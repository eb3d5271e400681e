//! Test helpers: synthetic archives and a tiny HTTP server on loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use cifar_data::fetch::ExpectedChecksums;
use cifar_data::{synthetic, META_FILE, TEST_FILE, TRAIN_FILES};
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// A synthetic `cifar-10-binary.tar.gz` and the checksums of its `.bin` files.
pub struct SyntheticArchive {
    pub bytes: Vec<u8>,
    pub expected: ExpectedChecksums,
    pub bins: Vec<(String, Vec<u8>)>,
}

/// Builds an archive with `records` records per file, laid out like the official one
/// (directory entry, readme.html, the seven files).
pub fn build_archive(records: usize, seed: u64) -> SyntheticArchive {
    let mut bins = Vec::new();
    for (k, name) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
        let set = synthetic::generate(records, seed + k as u64);
        bins.push((name.to_string(), synthetic::encode_batch(&set)));
    }
    let expected = ExpectedChecksums {
        archive_md5: None,
        bin_sha256: bins
            .iter()
            .map(|(n, b)| (n.clone(), hex::encode(Sha256::digest(b))))
            .collect(),
    };
    let bytes = tar_gz(&bins, true);
    SyntheticArchive {
        bytes,
        expected,
        bins,
    }
}

/// A `.tar.gz` of `cifar-10-batches-bin/<name>` members (plus meta and readme when `extras`).
pub fn tar_gz(bins: &[(String, Vec<u8>)], extras: bool) -> Vec<u8> {
    let gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_cksum();
    tar.append_data(&mut dir, "cifar-10-batches-bin/", std::io::empty())
        .unwrap();
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), data)
            .unwrap();
    };
    if extras {
        add(META_FILE, synthetic::meta_text().as_bytes());
        add(
            "readme.html",
            b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0; url=x\">",
        );
    }
    for (name, data) in bins {
        add(name, data);
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// How the server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Honest server with Range support.
    Normal,
    /// The first response announces the full length but stops half way and closes.
    DropFirstHalfway,
    /// Every response is 404.
    NotFound,
}

/// A running server. `ranges` logs the `Range` header of every request (None: no header).
pub struct Server {
    pub url: String,
    pub ranges: Arc<Mutex<Vec<Option<String>>>>,
}

/// Serves `body` at any path of `http://127.0.0.1:<port>/`.
pub fn serve(body: Vec<u8>, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/cifar-10-binary.tar.gz",
        listener.local_addr().unwrap()
    );
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&ranges);
    std::thread::spawn(move || {
        for (k, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let _ = handle(stream, &body, mode, k, &log);
        }
    });
    Server { url, ranges }
}

fn handle(
    mut stream: TcpStream,
    body: &[u8],
    mode: Mode,
    k: usize,
    log: &Mutex<Vec<Option<String>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push(range.clone());
    let len = body.len();
    if mode == Mode::NotFound {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let (head, payload): (String, &[u8]) = match start {
        Some(s) if s >= len => (
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            &[],
        ),
        Some(s) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - s
            ),
            &body[s..],
        ),
        None => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-gzip\r\n\
                 Content-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
            ),
            body,
        ),
    };
    stream.write_all(head.as_bytes())?;
    if mode == Mode::DropFirstHalfway && k == 0 {
        stream.write_all(&payload[..payload.len() / 2])?;
        stream.flush()?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    stream.write_all(payload)?;
    stream.flush()
}

/// Names of the entries of `dir` (empty when `dir` does not exist).
pub fn entries(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}
