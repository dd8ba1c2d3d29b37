//! Boot file bodies sent with `sendfile(2)`: from the page cache to the socket, with no copy through this
//! process (nginx's `sendfile on`). The copying path (`files.rs`, a `pread` into a buffer that hyper then
//! writes) costs two copies per byte, and boot files are almost all the bytes a boot moves.
//!
//! hyper writes bodies itself and has no file-to-socket path, so the response keeps hyper's framing and this
//! module takes over only the bytes: `files::serve` attaches a [`Plan`] (file, offset, length) to its
//! response; the connection's service swaps the body for one frame, [`Data::File`], whose bytes stand for the
//! file's (a slice of [`PLACEHOLDER`]); and the connection's [`Stream`], when hyper asks it to write such a
//! slice, sends that many bytes of the file with `sendfile` instead. hyper writes body frames with `writev`
//! as they are (its "queue" strategy, for a stream that writes vectored, which [`Stream`] does), so the
//! placeholder bytes never leave the process.
//!
//! Why it cannot send wrong bytes: if hyper ever copied a frame instead (its "flatten" strategy), the frame
//! would be consumed without [`Stream`] having sent those bytes. [`Data::advance`] checks exactly that, and
//! on a mismatch poisons the connection (its next write fails: the client sees a short body, as for a
//! truncated file) and turns this path off for the rest of the process ([`enabled`]); later responses are
//! copied as before. The test `a_copying_connection_never_sends_placeholder_bytes` forces that case.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Stands for file bytes in hyper's write queue; never sent. Zeros, in `.bss`.
static PLACEHOLDER: [u8; 1 << 20] = [0; 1 << 20];

/// Cleared for good when a connection is found copying frames (see the module's doc).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether responses may be sent with `sendfile`.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn is_placeholder(s: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    !s.is_empty() && p >= start && p < start + PLACEHOLDER.len()
}

/// A response body that is `len` bytes of `file` from `offset`: a response extension set by
/// `files::serve`, beside a body that copies the same bytes (used where no [`Stream`] serves the connection).
#[derive(Clone)]
pub struct Plan {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

/// The file body a connection is sending: shared by its [`Stream`] (which sends) and the body's frame
/// (which hyper consumes). HTTP/1 answers one request at a time, so one is enough.
#[derive(Default)]
pub struct Slot {
    active: Mutex<Option<Active>>,
    poisoned: AtomicBool,
}

struct Active {
    file: Arc<File>,
    offset: u64,
    len: u64,
    /// Bytes of `len` sent by the stream.
    sent: u64,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The response to send on a connection with `slot`: a [`Plan`]'s response gets its file body, any other
/// keeps its body.
pub fn respond(slot: &Arc<Slot>, response: Response) -> Response<BootBody> {
    let (mut parts, body) = response.into_parts();
    match parts.extensions.remove::<Plan>() {
        Some(plan) if enabled() && plan.len > 0 => {
            *slot.lock() = Some(Active {
                file: plan.file,
                offset: plan.offset,
                len: plan.len,
                sent: 0,
            });
            let frame = FileFrame {
                len: plan.len,
                consumed: 0,
                slot: slot.clone(),
            };
            Response::from_parts(parts, BootBody::File(Some(frame)))
        }
        _ => Response::from_parts(parts, BootBody::Copied(body)),
    }
}

/// A response body: axum's, or a file sent by the connection's [`Stream`].
pub enum BootBody {
    Copied(Body),
    File(Option<FileFrame>),
}

impl http_body::Body for BootBody {
    type Data = Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Data>, Self::Error>>> {
        match self.get_mut() {
            BootBody::Copied(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map(|f| f.map_data(Data::Bytes)).map_err(Into::into))),
            BootBody::File(frame) => Poll::Ready(
                frame
                    .take()
                    .map(|f| Ok(http_body::Frame::data(Data::File(f)))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BootBody::Copied(b) => b.is_end_stream(),
            BootBody::File(f) => f.is_none(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            BootBody::Copied(b) => b.size_hint(),
            BootBody::File(f) => http_body::SizeHint::with_exact(f.as_ref().map_or(0, |f| f.len)),
        }
    }
}

/// The body's one frame: `len` file bytes still to go, which hyper sees as placeholder bytes.
pub struct FileFrame {
    len: u64,
    consumed: u64,
    slot: Arc<Slot>,
}

/// A body frame's bytes.
pub enum Data {
    Bytes(Bytes),
    File(FileFrame),
}

impl hyper::body::Buf for Data {
    fn remaining(&self) -> usize {
        match self {
            Data::Bytes(b) => b.remaining(),
            Data::File(f) => usize::try_from(f.len).unwrap_or(usize::MAX),
        }
    }

    fn chunk(&self) -> &[u8] {
        match self {
            Data::Bytes(b) => b.chunk(),
            Data::File(f) => {
                &PLACEHOLDER[..usize::try_from(f.len)
                    .map_or(PLACEHOLDER.len(), |n| n.min(PLACEHOLDER.len()))]
            }
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Data::Bytes(b) => b.advance(n),
            Data::File(f) => {
                let n = n as u64;
                let sent = f.slot.lock().as_ref().map_or(0, |a| a.sent);
                if f.consumed + n > sent {
                    // Consumed without being sent: copied. Stop this connection before it writes the copy.
                    f.slot.poisoned.store(true, Ordering::Relaxed);
                    if ENABLED.swap(false, Ordering::Relaxed) {
                        tracing::error!(
                            "HTTP: a connection copied a sendfile frame; boot files are read and copied from now on"
                        );
                    }
                }
                f.consumed += n;
                f.len = f.len.saturating_sub(n);
            }
        }
    }
}

/// A connection's socket as hyper sees it: reads and writes pass through, except placeholder bytes, which
/// become `sendfile` from the slot's file.
pub struct Stream {
    io: TokioIo<TcpStream>,
    slot: Arc<Slot>,
}

impl Stream {
    pub fn new(stream: TcpStream, slot: Arc<Slot>) -> Stream {
        Stream {
            io: TokioIo::new(stream),
            slot,
        }
    }

    fn poisoned(&self) -> io::Result<()> {
        if self.slot.poisoned.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "sendfile frame was copied; closing the connection",
            ));
        }
        Ok(())
    }

    /// Sends up to `max` bytes of the slot's file.
    fn poll_sendfile(&self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let socket = self.io.inner();
        loop {
            ready!(socket.poll_write_ready(cx))?;
            let mut guard = self.slot.lock();
            let Some(active) = guard.as_mut() else {
                return Poll::Ready(Err(io::Error::other(
                    "placeholder bytes without a file to send",
                )));
            };
            let count = (active.len - active.sent).min(max as u64) as usize;
            if count == 0 {
                return Poll::Ready(Err(io::Error::other(
                    "placeholder bytes beyond the file body",
                )));
            }
            let mut offset = i64::try_from(active.offset + active.sent)
                .map_err(|_| io::Error::other("file offset out of range"))?;
            let sent = socket.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(socket, &*active.file, Some(&mut offset), count)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    // The file shrank below the length promised in Content-Length: end the connection.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "boot file truncated while being served",
                    )));
                }
                Ok(n) => {
                    active.sent += n as u64;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poisoned()?;
        if is_placeholder(buf) {
            return self.poll_sendfile(cx, buf.len());
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poisoned()?;
        match bufs.iter().position(|b| is_placeholder(b)) {
            // The file's bytes come next: send them.
            Some(0) => self.poll_sendfile(cx, bufs[0].len()),
            // What is in memory before them first (a response head); hyper calls again for the rest.
            Some(k) => Pin::new(&mut self.io).poll_write_vectored(cx, &bufs[..k]),
            None => Pin::new(&mut self.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// One connection served as `accept.rs` serves it, with its slot in the test's hands.
    async fn one_connection(file: PathBuf) -> (SocketAddr, Arc<Slot>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slot = Arc::new(Slot::default());
        let files = slot.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let app = Router::new()
                .route(
                    "/f",
                    get(move |req: axum::extract::Request| async move {
                        super::super::files::serve(&file, req.method(), req.headers())
                    }),
                )
                .route("/text", get(|| async { "hello" }));
            let responses = files.clone();
            let service =
                tower::ServiceExt::<axum::extract::Request<hyper::body::Incoming>>::map_response(
                    app,
                    move |r| respond(&responses, r),
                );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    Stream::new(stream, files),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .await;
        });
        (addr, slot)
    }

    /// Reads one response: its head and its Content-Length bytes.
    async fn response(s: &mut TcpStream) -> (String, Vec<u8>) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(
                s.read(&mut b).await.unwrap(),
                1,
                "closed in the head: {head:?}"
            );
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")?
                    .parse()
                    .ok()
            })
            .unwrap();
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        (head, body)
    }

    fn sent(slot: &Slot) -> u64 {
        slot.lock().as_ref().map_or(0, |a| a.sent)
    }

    #[tokio::test]
    async fn a_file_goes_out_by_sendfile_byte_for_byte_between_other_responses_on_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd");
        // Larger than socket buffers hold: sendfile meets a full socket and waits for it.
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let (addr, slot) = one_connection(path).await;
        let mut s = TcpStream::connect(addr).await.unwrap();

        s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body == data, "the whole file differs");
        assert_eq!(sent(&slot), data.len() as u64, "not sent by sendfile");

        s.write_all(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (_, body) = response(&mut s).await;
        assert_eq!(body, b"hello");

        s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=4000000-4000099\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert!(
            head.contains("content-range: bytes 4000000-4000099/8388608"),
            "{head}"
        );
        assert_eq!(body, data[4_000_000..4_000_100]);
        assert_eq!(sent(&slot), 100);

        // HEAD: the head alone, nothing for sendfile to send.
        s.write_all(b"HEAD /f HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        s.write_all(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (_, body) = response(&mut s).await;
        assert_eq!(body, b"hello", "the HEAD left bytes on the connection");
    }

    #[tokio::test]
    async fn a_file_truncated_under_sendfile_ends_the_connection_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel");
        let data = vec![5u8; 16 << 20];
        std::fs::write(&path, &data).unwrap();
        let (addr, _slot) = one_connection(path.clone()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The head and some bytes arrive; then the file shrinks to 1 MiB.
        let mut got = vec![0u8; 64 * 1024];
        s.read_exact(&mut got).await.unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        got.extend_from_slice(&rest);
        let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        assert!(body.len() < data.len(), "the whole length was sent");
        assert!(
            body.len() >= 1 << 20,
            "the bytes before the cut were not all sent"
        );
        // What the file still has is its own; what was in flight beyond the cut may read as zeros (the
        // socket holds the page cache's pages, as with nginx's sendfile), but the response is short, so the
        // client sees a failed download, not a file.
        assert!(
            body[..1 << 20].iter().all(|&b| b == 5),
            "the file's bytes differ"
        );
    }
}
