//! A boot file request's headers (Range, If-Range, If-None-Match, If-Modified-Since, If-Unmodified-Since:
//! any bytes a host on the boot network sends) answered by the boot plane's file serving, on real files of
//! a few sizes with a fixed modification time (so the ETag and Last-Modified a seed names are the file's).
//! Input: one byte choosing the file and the method, then `Name: value` lines.
//! Invariants beyond "no panic": the status is one of 200, 206, 304, 412, 416; a 206 names a range inside
//! the file (`start <= end < len`), its Content-Length is the range's length and its body those bytes of
//! the file; a 200 sends the whole file; a 416 names the length and sends nothing; a 304/412 answers only a
//! conditional request; and a plain `bytes=A-B`, `bytes=A-`, `bytes=-N` gets what RFC 9110 §14.1.2 says.
#![no_main]

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use beowulf::boot::http::files;
use http_body::Body as _;
use libfuzzer_sys::fuzz_target;

/// 2023-11-14T22:13:20Z: ETag `"6553f100-<len hex>"`, Last-Modified `Tue, 14 Nov 2023 22:13:20 GMT`.
const MTIME: u64 = 1_700_000_000;
/// Past one 64 KiB body frame, so a range can span two.
const SIZES: [usize; 7] = [0, 1, 2, 10, 100, 1000, 65_536 + 7];

fn files() -> &'static Vec<(PathBuf, Vec<u8>)> {
    static FILES: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        // One directory per process (parallel jobs never share a file); those of finished runs go.
        const PREFIX: &str = "beowulf-fuzz-http-range-";
        let tmp = std::env::temp_dir();
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name();
            if let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX))
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        SIZES
            .iter()
            .map(|&n| {
                let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 251) as u8).collect();
                let path = dir.join(format!("f{n}"));
                std::fs::write(&path, &data).expect("a boot file");
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(MTIME)))
                    .expect("its time");
                (path, data)
            })
            .collect()
    })
}

/// The whole body (the file body is ready at once: positional reads, no waiting).
fn body_of(r: Response) -> Vec<u8> {
    let mut body = pin!(r.into_body());
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Poll::Ready(Some(Err(e))) => panic!("reading the body: {e}"),
            Poll::Ready(None) => return out,
            Poll::Pending => panic!("a file body waited"),
        }
    }
}

/// What RFC 9110 §14.1.2 answers for a plain single range `spec` (canonical decimal numbers only; `None`:
/// not such a range): `Some(Some((start, end)))` a 206, `Some(None)` 416, for a file of `len` bytes
/// (an empty file: the whole, empty file, `Some(Some((0, u64::MAX)))`).
fn oracle(spec: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let r = spec.strip_prefix("bytes=")?;
    let num = |s: &str| {
        (!s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0')))
        .then(|| s.parse::<u64>().ok())
        .flatten()
    };
    let (a, b) = r.split_once('-')?;
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n = num(b)?;
            if n == 0 {
                return Some(None);
            }
            (len.saturating_sub(n), len.checked_sub(1))
        }
        (false, true) => (num(a)?, len.checked_sub(1)),
        (false, false) => {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Some(None);
            }
            (a, len.checked_sub(1).map(|last| b.min(last)))
        }
        (true, true) => return None,
    };
    Some(match end {
        None if start == 0 => Some((0, u64::MAX)),
        Some(end) if start <= end => Some((start, end)),
        _ => None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (path, file) = &files()[usize::from(pick) % SIZES.len()];
    let method = if pick & 0x80 != 0 {
        Method::HEAD
    } else {
        Method::GET
    };
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    let len = file.len() as u64;
    let r = files::serve(path, &method, &headers);
    let status = r.status();
    let h = r.headers().clone();
    let text = |n: &HeaderName| {
        h.get(n)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    };
    let body = body_of(r);
    let conditional = [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|n| headers.contains_key(n));
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.trim_start().starts_with("bytes="));
    match status {
        StatusCode::OK => {
            assert_eq!(text(&header::CONTENT_LENGTH), Some(len.to_string()));
            assert_eq!(text(&header::CONTENT_RANGE), None);
            if method == Method::GET {
                assert!(body == *file, "a 200 without the whole file");
            }
        }
        StatusCode::PARTIAL_CONTENT => {
            assert!(range.is_some(), "206 without a bytes Range");
            let cr = text(&header::CONTENT_RANGE).expect("a 206 names its range");
            let (se, total) = cr
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('/'))
                .expect("bytes S-E/LEN");
            let (s, e) = se.split_once('-').expect("S-E");
            let (s, e): (u64, u64) = (s.parse().unwrap(), e.parse().unwrap());
            assert_eq!(total, len.to_string());
            assert!(s <= e && e < len, "{cr} of a file of {len} bytes");
            assert_eq!(text(&header::CONTENT_LENGTH), Some((e - s + 1).to_string()));
            if method == Method::GET {
                assert!(body == file[s as usize..=e as usize], "{cr}: other bytes");
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            assert!(range.is_some(), "416 without a bytes Range");
            assert_eq!(text(&header::CONTENT_RANGE), Some(format!("bytes */{len}")));
        }
        StatusCode::NOT_MODIFIED | StatusCode::PRECONDITION_FAILED => {
            assert!(conditional, "{status} for an unconditional request");
            assert_eq!(text(&header::ETAG), Some(format!("\"{MTIME:x}-{len:x}\"")));
        }
        s => panic!("unexpected status {s}"),
    }
    if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
        assert!(body.is_empty(), "{status} with a body");
    }
    if method == Method::HEAD {
        assert!(body.is_empty(), "HEAD with a body");
    }
    // A single, plain range on an unconditional request: exactly what the RFC says.
    if !conditional
        && !headers.contains_key(header::IF_RANGE)
        && headers.get_all(header::RANGE).iter().count() == 1
        && let Some(spec) = range.filter(|s| !s.starts_with(char::is_whitespace))
        && let Some(want) = oracle(spec, len)
    {
        let got = match status {
            StatusCode::PARTIAL_CONTENT => {
                let cr = text(&header::CONTENT_RANGE).unwrap();
                let se = &cr["bytes ".len()..cr.find('/').unwrap()];
                let (s, e) = se.split_once('-').unwrap();
                Some((s.parse().unwrap(), e.parse().unwrap()))
            }
            StatusCode::OK => Some((0, u64::MAX)),
            _ => None,
        };
        assert_eq!(got, want, "{spec:?} on {len} bytes answered {status}");
    }
});
