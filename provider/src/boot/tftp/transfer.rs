//! The sending side of one read transfer: optional OACK handshake, then windows of DATA blocks (RFC 7440), as
//! a state machine that the two drivers feed: [`run_blocking`] on a thread of the transfer's own (windowed
//! transfers) and the lock-step loop in `lockstep.rs` (many transfers on one thread).
//!
//! The sender keeps the current window's packets, back to back in one buffer, until they are acknowledged. An
//! ACK of block n confirms everything up to n and the next window starts at n+1 (re-sending what was lost); a
//! timeout re-sends the whole window, at most `retries` times in a row. Block numbers are 16 bits on the wire
//! and roll over to 0.
//!
//! Why windowed transfers get a blocking thread each and not a task: a blocking `recv` costs one wake-up per
//! ACK, where the reactor adds an `epoll_wait`, a task wake and worker hand-offs to each (measured: about
//! twice the server CPU per block), and a big window is worth a core of its own. A window leaves in one `send`
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
pub(super) const WAIT_SLICE: Duration = Duration::from_millis(500);

/// Most datagrams the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS` is 64 before Linux 6.9, 128 since).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most UDP payload in one send (65535 minus the IPv4 and UDP headers).
const GSO_MAX_BYTES: usize = 65_507;

/// What a transfer waits for next, or how it ended.
#[derive(Debug)]
pub(super) enum Step {
    /// Waiting for the client; at this instant, call [`Sender::on_timeout`].
    Wait(Instant),
    /// Over: the payload bytes delivered, or why not.
    Done(Result<u64, Failure>),
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

/// One transfer's sending side. Its socket is connected to the client (and non-blocking in the lock-step
/// loop, where a full send buffer counts as a lost packet: the timeout re-sends it).
pub(super) struct Sender<R> {
    file: R,
    negotiated: Negotiated,
    retries: u32,
    /// Send windows with UDP GSO; turned off for the rest of the transfer at the first send it fails.
    gso: bool,
    window: Window,
    /// The block number of the window's first packet; the packets carry their (wrapped) numbers.
    first: u64,
    read_all: bool,
    delivered: u64,
    /// The OACK is out and ACK 0 has not come back.
    awaiting_oack: bool,
    /// Re-sends of what is in flight (the OACK or the current window) after a timeout, in a row.
    tries: u32,
    /// A duplicate ACK of the block before the window re-sends it once per window (lost first block); more
    /// would be the Sorcerer's Apprentice bug.
    resent_on_dup: bool,
    deadline: Instant,
}

impl<R: Read> Sender<R> {
    pub fn new(file: R, negotiated: Negotiated, retries: u32) -> Self {
        let seg = 4 + negotiated.blksize;
        let window_len = usize::from(negotiated.windowsize.max(1));
        Sender {
            file,
            retries,
            gso: window_len > 1,
            window: Window {
                buf: Vec::with_capacity(window_len * seg),
                seg,
                count: 0,
            },
            first: 1,
            read_all: false,
            delivered: 0,
            awaiting_oack: !negotiated.oack.is_empty(),
            tries: 0,
            resent_on_dup: false,
            deadline: Instant::now(),
            negotiated,
        }
    }

    /// Whether the transfer still sends its windows with GSO.
    #[cfg(test)]
    pub fn uses_gso(&self) -> bool {
        self.gso
    }

    /// When the client's answer is due; then call [`Sender::on_timeout`].
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sends the OACK, or the first window.
    pub fn start(&mut self, socket: &UdpSocket) -> Step {
        if self.awaiting_oack {
            self.send_current(socket)
        } else {
            self.first_window(socket)
        }
    }

    /// A datagram from the client.
    pub fn on_datagram(
        &mut self,
        socket: &UdpSocket,
        metrics: &TftpMetrics,
        datagram: &[u8],
    ) -> Step {
        match packet::parse_incoming(datagram) {
            Incoming::Error(code, message) => Step::Done(Err(Failure::Aborted { code, message })),
            Incoming::Ack(0) if self.awaiting_oack => {
                self.awaiting_oack = false;
                self.first_window(socket)
            }
            Incoming::Ack(n) if !self.awaiting_oack => {
                // How far past the block before the window this ACK reaches, in 16-bit arithmetic.
                let reach = usize::from(n.wrapping_sub(self.first.wrapping_sub(1) as u16));
                if (1..=self.window.count).contains(&reach) {
                    let bytes = self.window.acknowledge(reach);
                    self.delivered += bytes;
                    metrics.bytes_sent.add(bytes);
                    self.first += reach as u64;
                    return self.next_window(socket);
                }
                if reach == 0 && self.window.count > 1 && !self.resent_on_dup {
                    self.resent_on_dup = true;
                    metrics.retransmits.inc();
                    return self.send_current(socket);
                }
                Step::Wait(self.deadline)
            }
            _ => Step::Wait(self.deadline),
        }
    }

    /// No answer by the deadline: send again, or give up after `retries` re-sends in a row.
    pub fn on_timeout(&mut self, socket: &UdpSocket, metrics: &TftpMetrics) -> Step {
        self.tries += 1;
        if self.tries > self.retries {
            return Step::Done(Err(Failure::TimedOut));
        }
        metrics.retransmits.inc();
        self.send_current(socket)
    }

    fn first_window(&mut self, socket: &UdpSocket) -> Step {
        // Only now: with UDP_SEGMENT set, an OACK longer than a block would leave cut in pieces.
        if self.gso && !enable_gso(socket, self.window.seg) {
            self.gso = false;
        }
        self.next_window(socket)
    }

    /// Fills the window behind what was acknowledged and sends it; done when the file is.
    fn next_window(&mut self, socket: &UdpSocket) -> Step {
        let blksize = self.negotiated.blksize;
        let window_len = usize::from(self.negotiated.windowsize.max(1));
        while self.window.count < window_len && !self.read_all {
            match self
                .window
                .push(self.first + self.window.count as u64, &mut self.file)
            {
                // A short (possibly empty) block ends the transfer.
                Ok(n) => self.read_all = n < blksize,
                Err(f) => return Step::Done(Err(f)),
            }
        }
        if self.window.count == 0 {
            return Step::Done(Ok(self.delivered));
        }
        self.tries = 0;
        self.resent_on_dup = false;
        self.send_current(socket)
    }

    /// (Re-)sends the OACK or the window and starts waiting for the answer.
    fn send_current(&mut self, socket: &UdpSocket) -> Step {
        let sent = if self.awaiting_oack {
            send(socket, &packet::oack_packet(&self.negotiated.oack))
        } else {
            self.send_packets(socket)
        };
        if let Err(f) = sent {
            return Step::Done(Err(f));
        }
        self.deadline = Instant::now() + self.negotiated.timeout;
        Step::Wait(self.deadline)
    }

    /// Every packet of the window, in order: in GSO batches while the kernel takes them, else one by one.
    fn send_packets(&mut self, socket: &UdpSocket) -> Result<(), Failure> {
        let window = &self.window;
        let mut next = 0;
        if self.gso && window.count > 1 {
            let per_send = (GSO_MAX_BYTES / window.seg).clamp(1, GSO_MAX_SEGMENTS);
            while next < window.count {
                let n = per_send.min(window.count - next);
                let start = next * window.seg;
                let end = ((next + n) * window.seg).min(window.buf.len());
                match socket.send(&window.buf[start..end]) {
                    Ok(_) => next += n,
                    Err(e) if gso_refused(&e) => {
                        // E.g. a block larger than the path MTU (GSO cannot fragment), or no GSO on this
                        // route: the same packets go one by one from here on.
                        tracing::debug!(error = %e, "UDP GSO send refused; sending datagrams one by one");
                        self.gso = false;
                        disable_gso(socket);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(Failure::Io(e.to_string())),
                }
            }
        }
        for i in next..window.count {
            send(socket, window.packet(i))?;
        }
        Ok(())
    }
}

/// One datagram. A full send buffer (non-blocking socket) is a lost packet: the timeout re-sends it.
fn send(socket: &UdpSocket, p: &[u8]) -> Result<(), Failure> {
    match socket.send(p) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(Failure::Io(e.to_string())),
    }
}

/// Runs a transfer to its end on the calling thread, blocking in `recv` on its (blocking) socket; stops
/// within [`WAIT_SLICE`] once `stopping` is set.
pub(super) fn run_blocking<R: Read>(
    sender: &mut Sender<R>,
    socket: &UdpSocket,
    metrics: &TftpMetrics,
    stopping: &AtomicBool,
) -> Result<u64, Failure> {
    let mut buf = [0u8; 1024];
    // SO_RCVTIMEO as last set: a syscall each time it changes.
    let mut read_timeout: Option<Duration> = None;
    let mut step = sender.start(socket);
    loop {
        let deadline = match step {
            Step::Done(result) => return result,
            Step::Wait(deadline) => deadline,
        };
        step = loop {
            if stopping.load(Ordering::Relaxed) {
                return Err(Failure::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                break sender.on_timeout(socket, metrics);
            }
            let wait = (deadline - now).min(WAIT_SLICE);
            // Keep the timeout set while it is at most a few ms longer than needed (a new window's wait is
            // the same as the last one's).
            let keep =
                read_timeout.is_some_and(|t| t >= wait && t - wait < Duration::from_millis(5));
            if !keep {
                socket
                    .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                    .map_err(|e| Failure::Io(e.to_string()))?;
                read_timeout = Some(wait);
            }
            // An error is a timeout, or an ICMP port unreachable (the client is gone): wait on until the
            // deadline, then re-send or give up.
            if let Ok(n) = socket.recv(&mut buf) {
                break sender.on_datagram(socket, metrics, &buf[..n]);
            }
        };
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
