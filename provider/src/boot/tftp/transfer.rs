//! One read transfer on its own connected socket and thread: optional OACK handshake, then windows of DATA
//! blocks (RFC 7440).
//!
//! The sender keeps the current window's packets, back to back in one buffer, until they are acknowledged. An
//! ACK of block n confirms everything up to n and the next window starts at n+1 (re-sending what was lost); a
//! timeout re-sends the whole window, at most `retries` times in a row. Block numbers are 16 bits on the wire
//! and roll over to 0.
//!
//! Why a blocking thread per transfer and not a task: a lock-step transfer is one send and one receive per
//! block, and a blocking `recv` costs one wake-up per ACK, where the reactor adds an `epoll_wait`, a task wake
//! and worker hand-offs to each (measured: about twice the server CPU per block). A window leaves in one `send`
//! with UDP GSO (`UDP_SEGMENT`): the kernel cuts it into datagrams of one block each, so a window costs one
//! pass through the stack and wakes the client once, instead of once per block.

use std::io::{self, Read};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::TftpMetrics;
use super::packet::{self, DATA, ErrorCode, Incoming, Negotiated};

/// How a transfer ended, when it did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The client sent an ERROR (an EDK2 `tsize` probe ends this way, with code 8).
    Aborted {
        code: u16,
        message: String,
    },
    /// No acknowledgement after all retries.
    TimedOut,
    /// The server is shutting down.
    Stopped,
    Io(String),
}

/// The longest a transfer blocks in `recv` before it looks at the shutdown flag again.
const WAIT_SLICE: Duration = Duration::from_millis(500);

/// Most datagrams the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS` is 64 before Linux 6.9, 128 since).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most UDP payload in one send (65535 minus the IPv4 and UDP headers).
const GSO_MAX_BYTES: usize = 65_507;

pub(super) struct Transfer<'a, R> {
    /// Blocking and connected to the client.
    pub socket: &'a UdpSocket,
    pub file: R,
    pub negotiated: Negotiated,
    pub retries: u32,
    pub metrics: &'a TftpMetrics,
    pub stopping: &'a AtomicBool,
    /// Send windows with UDP GSO; turned off for the rest of the transfer at the first send it fails.
    pub gso: bool,
}

/// The unacknowledged DATA packets, back to back: every packet is `4 + blksize` bytes except a short last
/// one, which is the last of the file. This is the layout a GSO send wants.
struct Window {
    buf: Vec<u8>,
    seg: usize,
    count: usize,
}

impl Window {
    fn packet(&self, i: usize) -> &[u8] {
        let start = i * self.seg;
        &self.buf[start..(start + self.seg).min(self.buf.len())]
    }

    /// Forgets the first `n` packets; returns their payload bytes.
    fn acknowledge(&mut self, n: usize) -> u64 {
        let bytes = (n * self.seg).min(self.buf.len());
        self.buf.drain(..bytes);
        self.count -= n;
        (bytes - 4 * n) as u64
    }

    /// Appends block `number` with up to `blksize` bytes of `file`; returns the payload length.
    fn push(&mut self, number: u64, file: &mut impl Read) -> Result<usize, Failure> {
        let blksize = self.seg - 4;
        let start = self.buf.len();
        self.buf.extend_from_slice(&DATA.to_be_bytes());
        self.buf.extend_from_slice(&(number as u16).to_be_bytes());
        self.buf.resize(start + self.seg, 0);
        let mut filled = 0;
        while filled < blksize {
            match file.read(&mut self.buf[start + 4 + filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Io(e.to_string())),
            }
        }
        self.buf.truncate(start + 4 + filled);
        self.count += 1;
        Ok(filled)
    }
}

impl<R: Read> Transfer<'_, R> {
    /// Runs to completion; returns the payload bytes delivered.
    pub fn run(&mut self) -> Result<u64, Failure> {
        let mut buf = [0u8; 1024];
        let mut read_timeout = None;
        if !self.negotiated.oack.is_empty() {
            let oack = packet::oack_packet(&self.negotiated.oack);
            self.exchange(&oack, &mut buf, &mut read_timeout)?;
        }
        let blksize = self.negotiated.blksize;
        let window_len = usize::from(self.negotiated.windowsize.max(1));
        if window_len == 1 || !enable_gso(self.socket, 4 + blksize) {
            self.gso = false;
        }
        // `first` is the block number of the window's first packet; the packets carry their (wrapped) numbers.
        let mut first: u64 = 1;
        let mut window = Window {
            buf: Vec::with_capacity(window_len * (4 + blksize)),
            seg: 4 + blksize,
            count: 0,
        };
        let mut read_all = false;
        let mut delivered: u64 = 0;
        loop {
            while window.count < window_len && !read_all {
                let n = window.push(first + window.count as u64, &mut self.file)?;
                // A short (possibly empty) block ends the transfer.
                read_all = n < blksize;
            }
            if window.count == 0 {
                return Ok(delivered);
            }
            let acked = self.send_window(&window, first, &mut buf, &mut read_timeout)?;
            let bytes = window.acknowledge(acked);
            delivered += bytes;
            self.metrics.bytes_sent.add(bytes);
            first += acked as u64;
        }
    }

    /// Sends the OACK and waits for ACK 0.
    fn exchange(
        &self,
        oack: &[u8],
        buf: &mut [u8],
        read_timeout: &mut Option<Duration>,
    ) -> Result<(), Failure> {
        let mut tries = 0;
        loop {
            self.send(oack)?;
            let deadline = Instant::now() + self.negotiated.timeout;
            loop {
                match self.recv(buf, deadline, read_timeout)? {
                    Some(Incoming::Ack(0)) => return Ok(()),
                    Some(_) => continue,
                    None => break,
                }
            }
            tries += 1;
            if tries > self.retries {
                return Err(Failure::TimedOut);
            }
            self.metrics.retransmits.inc();
        }
    }

    /// Sends a window and waits for an ACK inside it; returns how many blocks it acknowledged (≥ 1).
    fn send_window(
        &mut self,
        window: &Window,
        first: u64,
        buf: &mut [u8],
        read_timeout: &mut Option<Duration>,
    ) -> Result<usize, Failure> {
        let mut tries = 0;
        // A duplicate ACK of the block before the window re-sends it once per window (lost first block);
        // more would be the Sorcerer's Apprentice bug.
        let mut resent_on_dup = false;
        loop {
            self.send_packets(window)?;
            let deadline = Instant::now() + self.negotiated.timeout;
            let mut resend = false;
            while !resend {
                match self.recv(buf, deadline, read_timeout)? {
                    Some(Incoming::Ack(n)) => {
                        // How far past the block before the window this ACK reaches, in 16-bit arithmetic.
                        let reach = usize::from(n.wrapping_sub((first.wrapping_sub(1)) as u16));
                        if (1..=window.count).contains(&reach) {
                            return Ok(reach);
                        }
                        if reach == 0 && window.count > 1 && !resent_on_dup {
                            resent_on_dup = true;
                            resend = true;
                        }
                    }
                    Some(_) => {}
                    None => {
                        tries += 1;
                        if tries > self.retries {
                            return Err(Failure::TimedOut);
                        }
                        resend = true;
                    }
                }
            }
            self.metrics.retransmits.inc();
        }
    }

    /// Every packet of the window, in order: in GSO batches while the kernel takes them, else one by one.
    fn send_packets(&mut self, window: &Window) -> Result<(), Failure> {
        let mut next = 0;
        if self.gso && window.count > 1 {
            let per_send = (GSO_MAX_BYTES / window.seg).clamp(1, GSO_MAX_SEGMENTS);
            while next < window.count {
                let n = per_send.min(window.count - next);
                let start = next * window.seg;
                let end = ((next + n) * window.seg).min(window.buf.len());
                match self.socket.send(&window.buf[start..end]) {
                    Ok(_) => next += n,
                    Err(e) if gso_refused(&e) => {
                        // E.g. a block larger than the path MTU (GSO cannot fragment), or no GSO on this
                        // route: the same packets go one by one from here on.
                        tracing::debug!(error = %e, "UDP GSO send refused; sending datagrams one by one");
                        self.gso = false;
                        disable_gso(self.socket);
                        break;
                    }
                    Err(e) => return Err(Failure::Io(e.to_string())),
                }
            }
        }
        for i in next..window.count {
            self.send(window.packet(i))?;
        }
        Ok(())
    }

    fn send(&self, p: &[u8]) -> Result<(), Failure> {
        self.socket
            .send(p)
            .map_err(|e| Failure::Io(e.to_string()))?;
        Ok(())
    }

    /// The next packet from the client, `None` at the deadline. ERROR ends the transfer.
    fn recv(
        &self,
        buf: &mut [u8],
        deadline: Instant,
        read_timeout: &mut Option<Duration>,
    ) -> Result<Option<Incoming>, Failure> {
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Err(Failure::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = (deadline - now).min(WAIT_SLICE);
            // SO_RCVTIMEO costs a syscall: keep the one set while it is at most a few ms longer than needed
            // (a new window's wait is the same as the last one's).
            let keep =
                read_timeout.is_some_and(|t| t >= wait && t - wait < Duration::from_millis(5));
            if !keep {
                self.socket
                    .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                    .map_err(|e| Failure::Io(e.to_string()))?;
                *read_timeout = Some(wait);
            }
            match self.socket.recv(buf) {
                Ok(n) => {
                    return match packet::parse_incoming(&buf[..n]) {
                        Incoming::Error(code, message) => Err(Failure::Aborted { code, message }),
                        other => Ok(Some(other)),
                    };
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // ICMP port unreachable: the client is gone; keep waiting until the deadline, then retry/give up.
                Err(_) => return Ok(Some(Incoming::Other)),
            }
        }
    }
}

/// Sets `UDP_SEGMENT` so that a send of several `seg`-byte packets leaves as that many datagrams. False where
/// the kernel has no UDP GSO (before Linux 4.18).
fn enable_gso(socket: &UdpSocket, seg: usize) -> bool {
    let Ok(size) = i32::try_from(seg) else {
        return false;
    };
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGsoSegment, &size).is_ok()
}

fn disable_gso(socket: &UdpSocket) {
    let _ = nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGsoSegment, &0);
}

/// Errors with which the kernel refuses a GSO send as a whole (nothing was sent): the packet is larger than
/// the path MTU (`EMSGSIZE`), the route cannot segment (`EIO`, e.g. IPsec), or the batch is too big (`EINVAL`).
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EMSGSIZE | libc_errno::EIO | libc_errno::EINVAL | libc_errno::EOPNOTSUPP)
    )
}

mod libc_errno {
    use nix::errno::Errno;
    pub const EMSGSIZE: i32 = Errno::EMSGSIZE as i32;
    pub const EIO: i32 = Errno::EIO as i32;
    pub const EINVAL: i32 = Errno::EINVAL as i32;
    pub const EOPNOTSUPP: i32 = Errno::EOPNOTSUPP as i32;
}

/// Sends an error to the client; best effort (the transfer is over either way).
pub(super) fn send_error(socket: &UdpSocket, code: ErrorCode, message: &str) {
    let _ = socket.send(&packet::error_packet(code, message));
}
