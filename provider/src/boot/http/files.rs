//! Boot file bodies for `/images/<image>/<file>`: validators (Last-Modified, ETag), conditional requests and
//! single byte ranges, read with positional reads on the serving task itself. The server's connections send
//! the same bytes with `sendfile` instead (`sendfile.rs`, from the [`super::sendfile::Plan`] attached here);
//! the reading body is what is sent where they cannot.
//!
//! Why not tower-http's `ServeFile` (used before): it reads through tokio's blocking pool, one thread hop per
//! open, stat, seek and 64 KiB read, and profiling `bench http` showed most of our CPU in those futex
//! wake-ups and context switches, not in copying. Here the file is opened and read with `pread` directly on
//! the runtime worker, 64 KiB per body frame. A read of a file that is not in the page cache blocks that
//! worker for the disk read (nginx's `sendfile` blocks its worker the same way); boot files are read by
//! every host of an image, so they are hot after the first boot.
//!
//! The file handle is held for the whole response: replacing a file by rename keeps serving the old content
//! to the responses already started; a file truncated under a response ends that response's connection early
//! (the client sees a short body), and the server carries on.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use httpdate::HttpDate;

/// Bytes per body frame. Measured in `bench http` (64 × 64 MiB): 64 KiB gave 0.69–0.78× nginx, 256 KiB only
/// 0.54–0.64× at the same CPU time; a buffer that is read into and then written from while it is still in
/// the CPU cache is what counts. hyper queues up to about 400 KiB per connection either way.
const CHUNK: u64 = 64 * 1024;

/// The response to a GET or HEAD of the regular file at `path` (a path from the inventory, never from the URL).
/// Public for the fuzz targets.
pub fn serve(path: &Path, method: &Method, headers: &HeaderMap) -> Response {
    let (file, meta) = match open(path) {
        Ok(f) => f,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "boot file cannot be served");
            }
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
    };
    let size = meta.len();
    let modified = meta.modified().ok().map(HttpDate::from);
    let etag = etag(&meta);

    if let Some(status) = precondition(headers, modified, &etag) {
        let mut r = status.into_response();
        validators(r.headers_mut(), modified, &etag);
        return r;
    }

    let range = match requested_range(headers, modified, &etag) {
        None => None,
        Some(spec) => match http_range_header::parse_range_header(spec)
            .and_then(|parsed| longest_suffix(parsed, size).validate(size))
        {
            Ok(ranges) if ranges.len() == 1 => Some((*ranges[0].start(), *ranges[0].end())),
            // One range is what boot loaders and kernels ask for; several (multipart) are refused as before.
            _ => {
                let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}"))
                        .unwrap_or(HeaderValue::from_static("bytes */*")),
                );
                return r;
            }
        },
    };
    let (status, start, len) = match range {
        // `validate` clamps the end to the file.
        Some((start, end)) if size > 0 => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        // An empty file has no byte a range could name (`bytes 0-0/0` would be an invalid Content-Range),
        // but `validate` lets `0-` through: the whole, empty file (a server may ignore Range, RFC 9110 §14.2).
        Some(_) | None => (StatusCode::OK, 0, size),
    };
    let file = std::sync::Arc::new(file);
    let sends_bytes = *method != Method::HEAD && len > 0;
    let body = if sends_bytes {
        Body::new(FileBody {
            file: file.clone(),
            pos: start,
            end: start + len,
        })
    } else {
        Body::empty()
    };
    let mut r = (status, body).into_response();
    if sends_bytes {
        // The connection sends these bytes with sendfile where it can (`sendfile.rs`); the body above copies
        // them where it cannot.
        r.extensions_mut().insert(super::sendfile::Plan {
            file,
            offset: start,
            len,
        });
    }
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        let end = (start + len).saturating_sub(1);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    validators(h, modified, &etag);
    r
}

/// A suffix longer than the file names all of it (RFC 9110 §14.1.2: "the entire representation is used");
/// `validate` would refuse it.
fn longest_suffix(
    mut parsed: http_range_header::ParsedRanges,
    size: u64,
) -> http_range_header::ParsedRanges {
    for r in &mut parsed.ranges {
        if let http_range_header::StartPosition::FromLast(n) = &mut r.start {
            *n = (*n).min(size);
        }
    }
    parsed
}

/// Opens a regular file (directories and devices are "not found", as `ServeFile` answered).
fn open(path: &Path) -> io::Result<(File, Metadata)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// nginx's form: `"<mtime seconds hex>-<size hex>"`; changes when the file is replaced or rewritten.
fn etag(meta: &Metadata) -> String {
    let secs = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("\"{secs:x}-{:x}\"", meta.len())
}

fn validators(h: &mut HeaderMap, modified: Option<HttpDate>, etag: &str) {
    if let Some(m) = modified
        && let Ok(v) = HeaderValue::from_str(&m.to_string())
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(headers: &HeaderMap, name: &header::HeaderName) -> Option<HttpDate> {
    header_str(headers, name).and_then(|v| v.trim().parse().ok())
}

/// Does a list of entity tags (`If-None-Match`) name `etag`? Weak comparison, `*` matches any.
fn etag_listed(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// RFC 9110 §13.2.2 order: If-Unmodified-Since (412), then If-None-Match, else If-Modified-Since (304).
fn precondition(headers: &HeaderMap, modified: Option<HttpDate>, etag: &str) -> Option<StatusCode> {
    if let Some(since) = http_date(headers, &header::IF_UNMODIFIED_SINCE)
        && modified.is_none_or(|m| m > since)
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    if let Some(list) = header_str(headers, &header::IF_NONE_MATCH) {
        return etag_listed(list, etag).then_some(StatusCode::NOT_MODIFIED);
    }
    if let Some(since) = http_date(headers, &header::IF_MODIFIED_SINCE)
        && modified.is_some_and(|m| m <= since)
    {
        return Some(StatusCode::NOT_MODIFIED);
    }
    None
}

/// The Range header to honour: only `bytes=` (other units MUST be ignored), and only if an `If-Range`
/// validator, when sent, still matches (otherwise the whole, changed file is sent).
fn requested_range<'a>(
    headers: &'a HeaderMap,
    modified: Option<HttpDate>,
    etag: &str,
) -> Option<&'a str> {
    let spec = header_str(headers, &header::RANGE)?;
    if !spec.trim_start().starts_with("bytes=") {
        return None;
    }
    if let Some(cond) = header_str(headers, &header::IF_RANGE) {
        let cond = cond.trim();
        let holds = if cond.starts_with('"') {
            cond == etag
        } else {
            // A date validates only if it is exactly the file's Last-Modified.
            cond.parse::<HttpDate>()
                .ok()
                .is_some_and(|d| Some(d) == modified)
        };
        if !holds {
            return None;
        }
    }
    Some(spec.trim_start())
}

/// Read buffers whose frames hyper has written, for the next frames: a fresh buffer must be zeroed before
/// `read_at` may fill it, and that memset cost as much CPU as a tenth of the whole response path.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// At most 16 MiB of idle buffers.
const SPARE_MAX: usize = 256;

/// One body frame: the first `len` bytes of a `CHUNK`-sized buffer, which goes back to `SPARE` when dropped.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let spare = SPARE.lock().ok().and_then(|mut s| s.pop());
        Chunk {
            buf: spare.unwrap_or_else(|| vec![0; CHUNK as usize]),
            len: 0,
        }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut spare) = SPARE.lock()
            && spare.len() < SPARE_MAX
        {
            spare.push(buf);
        }
    }
}

/// A file's bytes `pos..end`, `CHUNK` per frame, read at their offset (no shared cursor, no seek).
struct FileBody {
    file: std::sync::Arc<File>,
    pos: u64,
    end: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let want = (self.end - self.pos).min(CHUNK) as usize;
        let mut chunk = Chunk::new();
        let n = loop {
            match self.file.read_at(&mut chunk.buf[..want], self.pos) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        };
        if n == 0 {
            // The file shrank below the length already promised in Content-Length: end the connection.
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "boot file truncated while being served",
            ))));
        }
        chunk.len = n;
        self.pos += n as u64;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_owner(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(size: usize, range: &str) -> Response {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; size]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        serve(&path, &Method::GET, &h)
    }

    /// Against the `http_range` fuzz target's invariant (an answered range lies within the file): `bytes=0-` of
    /// an empty file was answered 206 with `Content-Range: bytes 0-0/0`, naming a byte the file does not have.
    #[test]
    fn a_range_of_an_empty_file_answers_the_whole_empty_file() {
        for spec in ["bytes=0-", "bytes=0-0", "bytes=0-100"] {
            let r = answer(0, spec);
            assert_eq!(r.status(), StatusCode::OK, "{spec}");
            assert!(r.headers().get(header::CONTENT_RANGE).is_none(), "{spec}");
            assert_eq!(r.headers()[header::CONTENT_LENGTH], "0", "{spec}");
        }
        assert_eq!(answer(0, "bytes=-1").status(), StatusCode::OK);
        assert_eq!(
            answer(0, "bytes=1-").status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        // A non-empty file still gets its range.
        let r = answer(3, "bytes=0-");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 0-2/3");
    }

    /// Against the `http_range` fuzz target's oracle (RFC 9110 §14.1.2): a suffix longer than the file was
    /// refused with 416; it names the whole file.
    #[test]
    fn a_suffix_longer_than_the_file_is_the_whole_file() {
        let r = answer(3, "bytes=-500");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 0-2/3");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "3");
        assert_eq!(
            answer(3, "bytes=-3").headers()[header::CONTENT_RANGE],
            "bytes 0-2/3"
        );
    }
}
