//! Accepting the HTTP server's connections, with limits that hold when somebody on the provisioning network
//! misbehaves (a crashed loop, a scanner, a slowloris): at most [`ConnLimits::per_client`] connections from
//! one address, at most [`ConnLimits::total`] in all, and a request head must arrive within
//! [`ConnLimits::header_timeout`] (an idle keep-alive connection is closed after the same time). A connection
//! over a limit is closed at once, so one client cannot take the slots every other host needs to boot.
//! Request bodies are bounded where they are read (`http.rs`: callback, inspection and disk reports).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::TokioTimer;
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::sendfile;

/// How long shutdown waits for requests in progress before it closes their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Connection limits of the boot plane's HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections in all.
    pub total: usize,
    /// Open connections from one address (a host's iPXE uses one; a Linux initrd a few).
    pub per_client: usize,
    /// How long a request head (or the next one, on a kept-alive connection) may take to arrive.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            total: 4096,
            per_client: 128,
            header_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// A connection's place within the limits, given back when the connection ends.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Slot {
    fn take(
        open: &Arc<Mutex<Open>>,
        ip: IpAddr,
        limits: &ConnLimits,
    ) -> Result<Slot, &'static str> {
        let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
        if o.total >= limits.total {
            return Err("the server's connection limit");
        }
        let n = o.per_client.entry(ip).or_default();
        if *n >= limits.per_client {
            return Err("the per-client connection limit");
        }
        *n += 1;
        o.total += 1;
        Ok(Slot {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.total -= 1;
        if let Some(n) = o.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.per_client.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops accepting, lets requests
/// in progress finish for up to [`SHUTDOWN_GRACE`] (idle connections close at once) and returns. `refused` counts connections closed for a limit.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
    refused: Counter,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin; connections that end
                    // free them.
                    tracing::warn!(error = %e, "HTTP: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let slot = match Slot::take(&open, peer.ip(), &limits) {
            Ok(s) => s,
            Err(which) => {
                refused.inc();
                // One warning per 10 s: a flood must not become a flood of log lines.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(client = %peer.ip(), limit = which, "HTTP: connection refused (over {which})");
                    last_warning = Some(Instant::now());
                }
                drop(stream);
                continue;
            }
        };
        // As nginx (`tcp_nodelay on`): a response's last, short segment goes out without waiting for the ACK
        // of the previous ones (Nagle), which otherwise delays every keep-alive Range answer.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            // Boot files go out with sendfile (`sendfile.rs`): the stream and the responses share this.
            let files = Arc::new(sendfile::Slot::default());
            let service =
                tower::ServiceExt::map_request(app, move |mut req: axum::extract::Request<_>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
            let responses = files.clone();
            let service =
                tower::ServiceExt::map_response(service, move |r| sendfile::respond(&responses, r));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(
                    sendfile::Stream::new(stream, files),
                    hyper_util::service::TowerToHyperService::new(service),
                );
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                // The only change is to `true`: stop.
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(client = %peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Long downloads (a squashfs to a slow node) would hold a restart for minutes; their clients resume
        // with a Range request once the server is back (curl --retry -C -, the live image's fetch).
        tracing::info!(
            connections = conns.len(),
            "HTTP: closing transfers still running at shutdown"
        );
        conns.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    use super::*;

    /// A connection from `from` (any 127/8 address is this machine's loopback).
    async fn connect(from: [u8; 4], to: SocketAddr) -> TcpStream {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((from, 0))).unwrap();
        s.connect(to).await.unwrap()
    }

    /// Reads until the server closes the connection; how long that took.
    async fn closed_after(s: &mut TcpStream, within: Duration) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(within, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server kept the connection open for {within:?}"),
            }
        }
    }

    async fn fetch(from: [u8; 4], to: SocketAddr) -> String {
        let mut s = connect(from, to).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn one_client_cannot_take_the_connections_others_need_and_slow_heads_are_cut() {
        let limits = ConnLimits {
            total: 12,
            per_client: 8,
            header_timeout: Duration::from_secs(1),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            get(
                |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                    format!("ok from {}", peer.ip())
                },
            ),
        );
        let refused = Counter::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, refused.clone(), async {
            let _ = stopped.await;
        }));

        // A client holding its limit of idle connections (a slowloris: it never sends a head).
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(connect([127, 0, 0, 1], addr).await);
        }
        let opened = Instant::now();
        // Its next one is closed at once, long before any timeout.
        let mut extra = connect([127, 0, 0, 1], addr).await;
        let took = closed_after(&mut extra, Duration::from_secs(5)).await;
        assert!(took < Duration::from_millis(800), "{took:?}");
        assert_eq!(refused.get(), 1);
        // Everyone else is served, and the handler sees the real peer.
        let answer = fetch([127, 0, 0, 2], addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok from 127.0.0.2"), "{answer}");

        // The server's total: 8 + 4 more from another client fill it; a third client is then refused.
        let mut more = Vec::new();
        for _ in 0..4 {
            more.push(connect([127, 0, 0, 3], addr).await);
        }
        let mut third = connect([127, 0, 0, 4], addr).await;
        closed_after(&mut third, Duration::from_secs(5)).await;
        assert_eq!(refused.get(), 2);

        // Heads that never come: every idle connection is cut after the header timeout, not before.
        for s in idle.iter_mut().chain(more.iter_mut()) {
            closed_after(s, Duration::from_secs(5)).await;
        }
        let held = opened.elapsed();
        assert!(
            held >= Duration::from_millis(900),
            "cut after {held:?}, before the timeout"
        );
        // The slots are given back: the first client is served again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = fetch([127, 0, 0, 1], addr).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "{answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Shutdown: a request in progress ends, then serve returns.
        let mut slow = connect([127, 0, 0, 5], addr).await;
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_head_sent_slowly_but_within_the_timeout_is_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let limits = ConnLimits {
            header_timeout: Duration::from_secs(2),
            ..ConnLimits::default()
        };
        tokio::spawn(serve(
            listener,
            app,
            limits,
            Counter::default(),
            std::future::pending(),
        ));
        let mut s = connect([127, 0, 0, 1], addr).await;
        for part in [
            "GET / HTTP/1.1\r\n",
            "Host: x\r\n",
            "Connection: close\r\n",
            "\r\n",
        ] {
            s.write_all(part.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("ok"),
            "{out}"
        );
    }
}
