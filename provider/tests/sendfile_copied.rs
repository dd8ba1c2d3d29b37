//! The sendfile path's safety net (`boot::http::sendfile`): a connection whose hyper copies body frames
//! (its "flatten" write strategy, forced here with `writev(false)`) instead of handing them to the stream as
//! they are must never send the placeholder bytes that stand for the file. The connection is closed before
//! it writes, sendfile is turned off for the process, and the next connection gets the file, copied.
//! A test binary of its own: turning sendfile off is process-wide.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use beowulf::boot::http::{files, sendfile};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Serves one connection at a time on a hyper that copies body frames.
async fn copying_server(file: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let file = file.clone();
            let app = Router::new().route(
                "/f",
                get(move |req: axum::extract::Request| async move {
                    files::serve(&file, req.method(), req.headers())
                }),
            );
            let slot = Arc::new(sendfile::Slot::default());
            let responses = slot.clone();
            let service =
                tower::ServiceExt::<axum::extract::Request<hyper::body::Incoming>>::map_response(
                    app,
                    move |r| sendfile::respond(&responses, r),
                );
            let _ = hyper::server::conn::http1::Builder::new()
                .writev(false)
                .serve_connection(
                    sendfile::Stream::new(stream, slot),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .await;
        }
    });
    addr
}

async fn get_all(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

#[tokio::test]
async fn a_copying_connection_never_sends_placeholder_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmlinuz");
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
    std::fs::write(&path, &data).unwrap();
    let addr = copying_server(path).await;
    assert!(sendfile::enabled());

    // No byte of the body (the file has no zero byte; the placeholder is zeros), and the download fails.
    let first = get_all(addr).await;
    let body = first
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&first[..0], |i| &first[i + 4..]);
    assert!(!body.contains(&0), "placeholder bytes were sent");
    assert!(body.len() < data.len(), "a copied frame was sent whole");
    assert!(!sendfile::enabled(), "sendfile stayed on");

    // The next connection is answered with the file, copied.
    let second = get_all(addr).await;
    let i = second.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(second.starts_with(b"HTTP/1.1 200"));
    assert!(second[i + 4..] == data[..], "the file differs");
}
