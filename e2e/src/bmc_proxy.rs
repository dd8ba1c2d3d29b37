//! Fault injection between a BMC client and a BMC: a UDP proxy that delays every datagram, counts what
//! crosses it and can hide one command from the BMC, and an HTTP server that answers only after a long
//! delay. Both are small stand-ins written for the tests ("a BMC that answers slowly", "a BMC without Get
//! Channel Cipher Suites"); the BMC behind the UDP proxy is a real one (ipmi_sim or pyghmi's).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};

#[derive(Debug, Default)]
pub struct Stats {
    /// RMCP+ Open Session requests seen (payload type 0x10).
    pub open_sessions: AtomicUsize,
    /// Get Channel Cipher Suites requests seen (dropped or not).
    pub cipher_suite_lists: AtomicUsize,
    /// Datagrams from the client.
    pub to_bmc: AtomicUsize,
    /// Client datagrams not yet answered, and the largest that number has been.
    outstanding: AtomicI64,
    pub max_outstanding: AtomicI64,
}

pub struct UdpDelayProxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpDelayProxy {
    /// Listens on `listen` (port 0 for any) and forwards to `upstream`, delaying each datagram by `delay`
    /// in both directions.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> UdpDelayProxy {
        Self::start_with(listen, upstream, delay, false).await
    }

    /// Forwards without delay, but never passes Get Channel Cipher Suites on: the BMC then looks like one
    /// that does not implement the command (the client hears nothing).
    pub async fn without_cipher_suite_list(upstream: SocketAddr) -> UdpDelayProxy {
        Self::start_with((upstream.ip(), 0).into(), upstream, Duration::ZERO, true).await
    }

    async fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        delay: Duration,
        hide_cipher_suite_list: bool,
    ) -> UdpDelayProxy {
        let front = Arc::new(UdpSocket::bind(listen).await.unwrap());
        let addr = front.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let data = buf[..n].to_vec();
                st.to_bmc.fetch_add(1, Ordering::SeqCst);
                if data.len() > 5 && data[4] == 0x06 && data[5] & 0x3f == 0x10 {
                    st.open_sessions.fetch_add(1, Ordering::SeqCst);
                }
                // IPMI v1.5 outside a session: netfn App (6) in byte 15, command in byte 19.
                if data.len() > 19 && data[4] == 0x00 && data[15] >> 2 == 0x06 && data[19] == 0x54 {
                    st.cipher_suite_lists.fetch_add(1, Ordering::SeqCst);
                    if hide_cipher_suite_list {
                        continue;
                    }
                }
                let now = st.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                st.max_outstanding.fetch_max(now, Ordering::SeqCst);
                let back = match backs.get(&client) {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(UdpSocket::bind(("127.0.0.1", 0)).await.unwrap());
                        b.connect(upstream).await.unwrap();
                        let (b2, f2, st2) = (b.clone(), front.clone(), st.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 2048];
                            while let Ok(n) = b2.recv(&mut buf).await {
                                let data = buf[..n].to_vec();
                                st2.outstanding.fetch_sub(1, Ordering::SeqCst);
                                let f3 = f2.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    let _ = f3.send_to(&data, client).await;
                                });
                            }
                        });
                        backs.insert(client, b.clone());
                        b
                    }
                };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = back.send(&data).await;
                });
            }
        });
        UdpDelayProxy { addr, stats, task }
    }
}

impl Drop for UdpDelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP server that reads a request and answers `200 {}` only after `delay`.
pub struct SlowHttp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SlowHttp {
    pub async fn start(listen: SocketAddr, delay: Duration) -> SlowHttp {
        let l = TcpListener::bind(listen).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                        .await;
                });
            }
        });
        SlowHttp { addr, task }
    }
}

impl Drop for SlowHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
