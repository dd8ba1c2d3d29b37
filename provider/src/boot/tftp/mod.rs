//! Read-only TFTP server (RFC 1350) with option negotiation (RFC 2347), blksize (2348), timeout and tsize
//! (2349) and windowsize (7440), confined to one root directory. It exists to hand PXE firmware the iPXE
//! binaries (Debian's `ipxe` package: `/usr/lib/ipxe/undionly.kpxe`, `snponly.efi`, `ipxe.efi`).
//!
//! Requests arrive on one tokio task. Every transfer gets its own ephemeral, connected socket (its TID). The
//! lock-step ones (what PXE ROMs ask for) all run on one thread that polls their sockets (`lockstep.rs`); a
//! windowed one gets a thread of its own with blocking I/O (`transfer.rs` says why). A semaphore bounds how
//! many run at once.
//!
//! ```no_run
//! # async fn f(dir: std::sync::Arc<dyn beowulf::boot::BootDirectory>) -> Result<(), beowulf::boot::tftp::TftpError> {
//! use beowulf::boot::tftp::{TftpConfig, TftpServer};
//! let mut cfg = TftpConfig::new("/usr/lib/ipxe");
//! cfg.interface = Some("br0".into());
//! let server = TftpServer::bind(cfg, dir)?;
//! let metrics = server.metrics();
//! tokio::spawn(server.run(std::future::pending()));
//! # Ok(()) }
//! ```

mod lockstep;
pub mod packet;
pub mod path;
mod transfer;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::counters::{Counter, Sample};
use super::{BootDirectory, Phase};
use lockstep::Lockstep;
use packet::{ErrorCode, Limits, ReadRequest, Request};
use path::Refusal;
use transfer::{Failure, Sender};

/// How the TFTP server listens and what it allows.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// The directory served; nothing outside it is readable.
    pub root: PathBuf,
    /// Local address; `0.0.0.0:69` in production, `127.0.0.1:0` in tests.
    pub listen: SocketAddrV4,
    /// Bind to this interface only (SO_BINDTODEVICE).
    pub interface: Option<String>,
    /// Largest block size granted (RFC 2348 allows up to 65464). 1468 fills a 1500-byte Ethernet frame.
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not ask for one.
    pub timeout: Duration,
    /// Retransmissions of one window before the transfer is abandoned.
    pub retries: u32,
    /// Transfers served at once on a thread of their own (windowed ones, RFC 7440); further requests are
    /// dropped unanswered, so clients retransmit them.
    pub max_transfers: usize,
    /// Lock-step transfers (what PXE ROMs and iPXE ask for) served at once on the polling loops, where each
    /// costs a socket, its open file and a small read buffer, no thread; above it requests are dropped
    /// unanswered too. High enough that a rack booting at once is served in one wave: a dropped request
    /// costs its client a retransmission timeout (a second or more).
    pub max_lock_step_transfers: usize,
    /// How long transfers in flight at shutdown may take to finish. A PXE ROM does not ask again for a file
    /// whose transfer was cut (its boot ends), so a restart lets them finish; an iPXE binary takes well under a
    /// second on a LAN.
    pub drain: Duration,
}

impl TftpConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TftpConfig {
            root: root.into(),
            listen: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 69),
            interface: None,
            max_blksize: 1468,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_transfers: 256,
            max_lock_step_transfers: 2048,
            drain: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("TFTP root {path}: {source} (point it at an existing directory, e.g. /usr/lib/ipxe)")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot bind TFTP socket {addr}: {source} (port 69 needs root or CAP_NET_BIND_SERVICE; binding to an \
         interface needs CAP_NET_RAW; is another TFTP server running?)"
    )]
    Bind {
        addr: SocketAddrV4,
        source: std::io::Error,
    },
}

/// Counters of the TFTP server; see [`TftpMetrics::samples`] for names.
#[derive(Debug, Default)]
pub struct TftpMetrics {
    pub read_requests: Counter,
    pub write_requests: Counter,
    /// Undecodable, truncated or oversized datagrams on the server port.
    pub malformed: Counter,
    pub not_found: Counter,
    pub access_violations: Counter,
    pub busy: Counter,
    pub transfers_started: Counter,
    pub transfers_completed: Counter,
    /// Ended by the client with an ERROR (including `tsize` probes).
    pub transfers_aborted: Counter,
    pub transfers_timed_out: Counter,
    /// Ended by a local error (reading the file, sending).
    pub transfers_failed: Counter,
    /// Payload bytes acknowledged by clients.
    pub bytes_sent: Counter,
    pub retransmits: Counter,
}

impl TftpMetrics {
    pub fn samples(&self) -> Vec<Sample> {
        const RQ: &str = "beowulf_tftp_requests_total";
        const RQ_HELP: &str = "TFTP requests received, by kind";
        const RJ: &str = "beowulf_tftp_refused_total";
        const RJ_HELP: &str = "TFTP requests refused, by reason";
        const TR: &str = "beowulf_tftp_transfers_total";
        const TR_HELP: &str = "TFTP transfers, by outcome (started counts every accepted request)";
        let s = |name, label, help, c: &Counter| Sample {
            name,
            label,
            help,
            value: c.get(),
        };
        vec![
            s(RQ, Some(("kind", "read")), RQ_HELP, &self.read_requests),
            s(RQ, Some(("kind", "write")), RQ_HELP, &self.write_requests),
            s(RQ, Some(("kind", "malformed")), RQ_HELP, &self.malformed),
            s(RJ, Some(("reason", "not_found")), RJ_HELP, &self.not_found),
            s(
                RJ,
                Some(("reason", "access_violation")),
                RJ_HELP,
                &self.access_violations,
            ),
            s(RJ, Some(("reason", "busy")), RJ_HELP, &self.busy),
            s(
                TR,
                Some(("outcome", "started")),
                TR_HELP,
                &self.transfers_started,
            ),
            s(
                TR,
                Some(("outcome", "completed")),
                TR_HELP,
                &self.transfers_completed,
            ),
            s(
                TR,
                Some(("outcome", "aborted")),
                TR_HELP,
                &self.transfers_aborted,
            ),
            s(
                TR,
                Some(("outcome", "timed_out")),
                TR_HELP,
                &self.transfers_timed_out,
            ),
            s(
                "beowulf_tftp_bytes_sent_total",
                None,
                "TFTP payload bytes acknowledged by clients",
                &self.bytes_sent,
            ),
            s(
                "beowulf_tftp_retransmits_total",
                None,
                "TFTP windows sent again after a timeout or a lost block",
                &self.retransmits,
            ),
        ]
    }
}

struct Shared {
    config: TftpConfig,
    root: PathBuf,
    directory: Arc<dyn BootDirectory>,
    metrics: Arc<TftpMetrics>,
    slots: Slots,
    /// Set when `run` ends; transfer threads see it within `transfer::WAIT_SLICE` and stop.
    stopping: AtomicBool,
}

impl Shared {
    fn limits(&self) -> Limits {
        Limits {
            max_blksize: self.config.max_blksize,
            max_windowsize: self.config.max_windowsize,
            default_timeout: self.config.timeout,
        }
    }

    /// Waits for the transfers in flight to finish, at most `config.drain`.
    async fn drain(&self) {
        let running = self.slots.running();
        if running == 0 {
            return;
        }
        let drain = self.config.drain;
        info!(
            transfers = running,
            wait_s = drain.as_secs_f32(),
            "TFTP: letting the transfers in flight finish before stopping"
        );
        if tokio::time::timeout(drain, self.slots.all_free())
            .await
            .is_err()
        {
            warn!(
                transfers = self.slots.running(),
                "TFTP: transfers still running at shutdown are cut (their clients' boots fail)"
            );
        }
    }
}

/// The transfer limits: one pool of slots for transfers with a thread of their own, one for those on the
/// polling loops.
struct Slots {
    threads: (Arc<Semaphore>, usize),
    loops: (Arc<Semaphore>, usize),
}

impl Slots {
    fn new(config: &TftpConfig) -> Self {
        let pool = |n: usize| {
            let n = n.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
            (Arc::new(Semaphore::new(n)), n)
        };
        Slots {
            threads: pool(config.max_transfers),
            loops: pool(config.max_lock_step_transfers),
        }
    }

    /// A slot for a transfer on the loops or on a thread; `None` when that pool is full.
    fn take(&self, on_loop: bool) -> Option<OwnedSemaphorePermit> {
        let (pool, _) = if on_loop { &self.loops } else { &self.threads };
        pool.clone().try_acquire_owned().ok()
    }

    fn running(&self) -> usize {
        [&self.threads, &self.loops]
            .iter()
            .map(|(pool, all)| all - pool.available_permits())
            .sum()
    }

    /// Completes when every transfer has given its slot back.
    async fn all_free(&self) {
        for (pool, all) in [&self.threads, &self.loops] {
            // `all` fits in u32 (clamped in `new`); the pools are never closed.
            let _ = pool.acquire_many(*all as u32).await;
        }
    }
}

/// Tells the transfer threads to stop when the server's future completes or is dropped.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stopping.store(true, Ordering::Relaxed);
    }
}

/// A bound TFTP server, ready to [`run`](TftpServer::run).
pub struct TftpServer {
    shared: Arc<Shared>,
    socket: UdpSocket,
}

impl std::fmt::Debug for TftpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpServer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn bind_udp(addr: SocketAddrV4, interface: Option<&str>) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(ifname) = interface {
        sock.bind_device(Some(ifname.as_bytes()))?;
    }
    // Room for a whole window in flight without drops in the kernel.
    let _ = sock.set_send_buffer_size(1 << 20);
    sock.bind(&SocketAddr::V4(addr).into())?;
    Ok(sock)
}

impl TftpServer {
    /// Checks the root and binds the server port. Must be called inside a tokio runtime.
    pub fn bind(config: TftpConfig, directory: Arc<dyn BootDirectory>) -> Result<Self, TftpError> {
        let root = config
            .root
            .canonicalize()
            .map_err(|source| TftpError::Root {
                path: config.root.clone(),
                source,
            })?;
        if !root.is_dir() {
            return Err(TftpError::Root {
                path: config.root.clone(),
                source: std::io::Error::other("not a directory"),
            });
        }
        let socket = bind_udp(config.listen, config.interface.as_deref())
            .and_then(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s.into())
            })
            .map_err(|source| TftpError::Bind {
                addr: config.listen,
                source,
            })?;
        let slots = Slots::new(&config);
        Ok(TftpServer {
            shared: Arc::new(Shared {
                config,
                root,
                directory,
                metrics: Arc::default(),
                slots,
                stopping: AtomicBool::new(false),
            }),
            socket,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn metrics(&self) -> Arc<TftpMetrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` completes, then takes no new request and returns when the transfers in flight
    /// have finished, or after [`TftpConfig::drain`] (those still running then stop). When this future is
    /// dropped instead, transfers stop within half a second, unanswered.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let _stop = StopOnDrop(self.shared.clone());
        info!(
            root = %self.shared.root.display(),
            listen = %self.shared.config.listen,
            interface = self.shared.config.interface.as_deref().unwrap_or("(all)"),
            "TFTP server listening"
        );
        let lockstep = Lockstep::start(self.shared.clone())
            .inspect_err(|e| {
                warn!(error = %e, "cannot start the TFTP lock-step loop; every transfer gets a thread")
            })
            .ok();
        let serve = async {
            let mut buf = vec![0u8; packet::MAX_REQUEST + 1];
            loop {
                let (n, src) = match self.socket.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "TFTP receive error");
                        continue;
                    }
                };
                let Some(job) = self.accept(&buf[..n], src, lockstep.is_some()).await else {
                    continue;
                };
                let job = match &lockstep {
                    Some(l) if job.lock_step => match l.submit(Box::new(job)) {
                        Ok(()) => continue,
                        Err(job) => *job,
                    },
                    _ => job,
                };
                let shared = self.shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("tftp-transfer".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        if let Some(mut t) = open(&shared, job) {
                            let result = transfer::run_blocking(
                                &mut t.sender,
                                &t.socket,
                                &shared.metrics,
                                &shared.stopping,
                            );
                            t.report.finish(&t.socket, result);
                        }
                    });
                if let Err(e) = spawned {
                    // The request (and its slot) is dropped; the client retransmits it.
                    warn!(%src, error = %e, "cannot start a TFTP transfer thread");
                }
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = serve => {}
        }
        drop(self.socket);
        // The loop serves the transfers in flight through the drain, then ends.
        drop(lockstep);
        self.shared.drain().await;
    }

    /// Handles one datagram on the server port; returns the transfer to run for an acceptable RRQ. `loops`:
    /// the polling loops run, so lock-step transfers take their slots from the loops' pool.
    async fn accept(&self, datagram: &[u8], src: SocketAddr, loops: bool) -> Option<Job> {
        let m = &self.shared.metrics;
        let req = match packet::parse_request(datagram) {
            Ok(Request::Read(r)) => r,
            Ok(Request::Write) => {
                m.write_requests.inc();
                self.reply_error(
                    src,
                    ErrorCode::AccessViolation,
                    "this TFTP server is read-only",
                )
                .await;
                return None;
            }
            Ok(Request::Error) => return None,
            Ok(Request::Unexpected(op)) => {
                m.malformed.inc();
                debug!(%src, op, "unexpected TFTP opcode on the server port");
                self.reply_error(src, ErrorCode::IllegalOperation, "expected a read request")
                    .await;
                return None;
            }
            Err(why) => {
                m.malformed.inc();
                debug!(%src, len = datagram.len(), why, "dropped malformed TFTP request");
                if datagram.len() <= packet::MAX_REQUEST {
                    self.reply_error(src, ErrorCode::IllegalOperation, why)
                        .await;
                }
                return None;
            }
        };
        m.read_requests.inc();
        if req.mode != "octet" {
            self.reply_error(
                src,
                ErrorCode::IllegalOperation,
                "only octet mode is supported",
            )
            .await;
            return None;
        }
        let lock_step = packet::negotiate(&req.options, &self.shared.limits(), 0).windowsize <= 1;
        let Some(permit) = self.shared.slots.take(lock_step && loops) else {
            // Dropped, not answered: PXE ROMs abort the boot on a TFTP ERROR, but retransmit an unanswered
            // RRQ, which is then served once a transfer has finished.
            m.busy.inc();
            warn!(%src, lock_step, "TFTP transfer limit reached; dropping the request (the client retransmits it)");
            return None;
        };
        Some(Job {
            req,
            client: src,
            permit,
            lock_step,
        })
    }

    async fn reply_error(&self, to: SocketAddr, code: ErrorCode, message: &str) {
        let _ = self
            .socket
            .send_to(&packet::error_packet(code, message), to)
            .await;
    }
}

/// An accepted read request, holding its transfer slot.
struct Job {
    req: ReadRequest,
    client: SocketAddr,
    permit: OwnedSemaphorePermit,
    /// No window above one block was asked for.
    lock_step: bool,
}

/// A transfer ready to run: its socket, connected to the client (its port is the server's TID, RFC 1350
/// §4), and what to account for when it ends.
struct Opened {
    socket: std::net::UdpSocket,
    sender: Sender<std::io::BufReader<std::fs::File>>,
    report: Report,
}

struct Report {
    shared: Arc<Shared>,
    req: ReadRequest,
    client: SocketAddr,
    blksize: usize,
    windowsize: u16,
    started: Instant,
    /// The transfer's slot, free again when the report is made.
    _permit: OwnedSemaphorePermit,
}

/// Opens the transfer's socket and file and negotiates its options; a refusal is answered (and counted) here.
fn open(shared: &Arc<Shared>, job: Job) -> Option<Opened> {
    let Job {
        req,
        client,
        permit,
        lock_step,
    } = job;
    let m = &shared.metrics;
    let local = SocketAddrV4::new(*shared.config.listen.ip(), 0);
    let socket: std::net::UdpSocket = match bind_udp(local, shared.config.interface.as_deref()) {
        Ok(s) => s.into(),
        Err(e) => {
            warn!(%client, error = %e, "cannot open a TFTP transfer socket");
            return None;
        }
    };
    if let Err(e) = socket.connect(client) {
        warn!(%client, error = %e, "cannot connect a TFTP transfer socket");
        return None;
    }
    let (file, size) = match path::open(&shared.root, &req.filename) {
        Ok(f) => f,
        Err(Refusal::NotFound) => {
            m.not_found.inc();
            debug!(%client, file = %req.filename, "TFTP file not found");
            transfer::send_error(&socket, ErrorCode::FileNotFound, "file not found");
            return None;
        }
        Err(Refusal::AccessViolation(why)) => {
            m.access_violations.inc();
            warn!(%client, file = %req.filename, why, "TFTP request refused");
            transfer::send_error(&socket, ErrorCode::AccessViolation, why);
            return None;
        }
    };
    let negotiated = packet::negotiate(&req.options, &shared.limits(), size);
    let (blksize, windowsize) = (negotiated.blksize, negotiated.windowsize);
    m.transfers_started.inc();
    Some(Opened {
        socket,
        sender: Sender::new(
            // A window of up to 64 large blocks is read at once; one block at a time needs much less, and
            // thousands of lock-step transfers may be open together.
            std::io::BufReader::with_capacity(if lock_step { 32 * 1024 } else { 256 * 1024 }, file),
            negotiated,
            shared.config.retries,
        ),
        report: Report {
            shared: shared.clone(),
            req,
            client,
            blksize,
            windowsize,
            started: Instant::now(),
            _permit: permit,
        },
    })
}

impl Report {
    /// Counts and logs how the transfer ended, tells the client about a failure on our side, and records a
    /// completed boot-file download as the node's TFTP phase.
    fn finish(self, socket: &std::net::UdpSocket, result: Result<u64, Failure>) {
        let Report {
            shared,
            req,
            client,
            blksize,
            windowsize,
            started,
            ..
        } = &self;
        let m = &shared.metrics;
        match result {
            Ok(bytes) => {
                m.transfers_completed.inc();
                info!(
                    %client,
                    file = %req.filename,
                    bytes,
                    blksize,
                    windowsize,
                    ms = started.elapsed().as_millis() as u64,
                    "TFTP transfer complete"
                );
                if let IpAddr::V4(ip) = client.ip()
                    && let Some(mac) = shared.directory.mac_for_ip(ip)
                {
                    shared.directory.record(&mac, Phase::Tftp);
                }
            }
            Err(Failure::Aborted { code, message }) => {
                m.transfers_aborted.inc();
                debug!(%client, file = %req.filename, code, message, "TFTP transfer aborted by the client");
            }
            Err(Failure::TimedOut) => {
                m.transfers_timed_out.inc();
                warn!(%client, file = %req.filename, "TFTP transfer timed out: the client stopped acknowledging");
                transfer::send_error(socket, ErrorCode::NotDefined, "timed out");
            }
            Err(Failure::Io(e)) => {
                m.transfers_failed.inc();
                warn!(%client, file = %req.filename, error = %e, "TFTP transfer failed");
                transfer::send_error(socket, ErrorCode::NotDefined, "read error");
            }
            Err(Failure::Stopped) => {
                debug!(%client, file = %req.filename, "TFTP transfer stopped: the server is shutting down");
            }
        }
    }
}

#[cfg(test)]
mod tests;
