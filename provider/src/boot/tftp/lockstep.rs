//! Lock-step transfers (no `windowsize` above 1: what PXE ROMs ask for) on a few threads, one per CPU, each
//! waiting in epoll (mio) for the sockets of all its transfers at once; transfers are dealt to them in turn.
//!
//! A lock-step transfer is one small send and one ACK per block. On a thread of its own it costs a wake-up
//! per block, and when a rack boots, a hundred runnable threads share the CPUs with the server's request loop
//! and with each other, so some transfers stall behind the rest (docs/benchmarks.md, "Storm"). On a loop, a
//! busy moment returns many ACKs per wake-up and every transfer advances in turn, as in dnsmasq; one loop per
//! CPU keeps big lock-step downloads from sharing one core. Windowed transfers keep a thread each
//! (`transfer.rs` says why).

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::warn;

use super::transfer::{Failure, Step, WAIT_SLICE};
use super::{Job, Opened, Shared, TftpMetrics};

const WAKER: Token = Token(0);
/// How often the loop looks for transfers whose client has not answered in time. Timeouts are whole seconds
/// (RFC 2349), so a re-send up to this much later changes nothing.
const SWEEP: Duration = Duration::from_millis(50);
/// Errors in a row on one socket after which the loop stops reading it until its next event (a pending
/// socket error, such as an ICMP port unreachable, is reported once; this only bounds the unexpected).
const MAX_ERRORS_IN_A_ROW: usize = 16;

/// Hands accepted requests to the loops' threads. A thread ends when this is dropped and its transfers are
/// over, or at once (transfers stopped) when the server's `stopping` flag is set.
pub(super) struct Lockstep {
    loops: Vec<Handle>,
    next: AtomicUsize,
}

impl Lockstep {
    /// Starts one loop per CPU (at least one; fewer if threads cannot be started).
    pub fn start(shared: Arc<Shared>) -> io::Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let mut loops = vec![Handle::start(shared.clone())?];
        for _ in 1..cpus.min(MAX_LOOPS) {
            match Handle::start(shared.clone()) {
                Ok(h) => loops.push(h),
                Err(e) => {
                    warn!(error = %e, loops = loops.len(), "cannot start another TFTP lock-step loop");
                    break;
                }
            }
        }
        Ok(Lockstep {
            loops,
            next: AtomicUsize::new(0),
        })
    }

    /// Queues a request on the next loop; gives it back if that loop is gone.
    pub fn submit(&self, job: Box<Job>) -> Result<(), Box<Job>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.loops[i].submit(job)
    }
}

/// Most lock-step loops, however many CPUs: lock-step transfers wait on the network far more than they compute.
const MAX_LOOPS: usize = 8;

/// One loop's queue and waker.
struct Handle {
    jobs: Option<mpsc::Sender<Box<Job>>>,
    waker: Waker,
}

impl Handle {
    fn start(shared: Arc<Shared>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (jobs, queue) = mpsc::channel();
        let event_loop = Loop {
            shared,
            poll,
            queue,
            running: HashMap::new(),
            next_token: 1,
        };
        std::thread::Builder::new()
            .name("tftp-lockstep".into())
            .spawn(move || event_loop.run())?;
        Ok(Handle {
            jobs: Some(jobs),
            waker,
        })
    }

    fn submit(&self, job: Box<Job>) -> Result<(), Box<Job>> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        jobs.send(job).map_err(|e| e.0)?;
        let _ = self.waker.wake();
        Ok(())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closed first, then woken: the loop sees the queue disconnected.
        self.jobs = None;
        let _ = self.waker.wake();
    }
}

struct Loop {
    shared: Arc<Shared>,
    poll: Poll,
    queue: mpsc::Receiver<Box<Job>>,
    running: HashMap<Token, Opened>,
    next_token: usize,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; 1024];
        let mut next_sweep = Instant::now() + SWEEP;
        let mut accepting = true;
        loop {
            let wait = if self.running.is_empty() {
                WAIT_SLICE
            } else {
                next_sweep.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!(error = %e, "TFTP lock-step loop: waiting for sockets failed");
                std::thread::sleep(SWEEP);
            }
            if self.shared.stopping.load(Ordering::Relaxed) {
                for (_, t) in self.running.drain() {
                    t.report.finish(&t.socket, Err(Failure::Stopped));
                }
                return;
            }
            for event in &events {
                let token = event.token();
                let Some(t) = self.running.get_mut(&token) else {
                    continue;
                };
                if let Some(result) = receive(t, &self.shared.metrics, &mut buf) {
                    self.end(token, result);
                }
            }
            loop {
                match self.queue.try_recv() {
                    Ok(job) => self.begin(*job),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        accepting = false;
                        break;
                    }
                }
            }
            if !accepting && self.running.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + SWEEP;
                let late: Vec<Token> = (self.running.iter())
                    .filter(|(_, t)| t.sender.deadline() <= now)
                    .map(|(token, _)| *token)
                    .collect();
                for token in late {
                    let Some(t) = self.running.get_mut(&token) else {
                        continue;
                    };
                    if let Step::Done(result) = t.sender.on_timeout(&t.socket, &self.shared.metrics)
                    {
                        self.end(token, result);
                    }
                }
            }
        }
    }

    /// Opens the transfer, registers its socket and sends its first packet.
    fn begin(&mut self, job: Job) {
        // Refusals (not found, access) are answered and counted by `open`.
        let Some(mut t) = super::open(&self.shared, job) else {
            return;
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        let registered = t.socket.set_nonblocking(true).and_then(|()| {
            self.poll.registry().register(
                &mut SourceFd(&t.socket.as_raw_fd()),
                token,
                Interest::READABLE,
            )
        });
        if let Err(e) = registered {
            t.report.finish(
                &t.socket,
                Err(Failure::Io(format!("polling the transfer socket: {e}"))),
            );
            return;
        }
        let step = t.sender.start(&t.socket);
        self.running.insert(token, t);
        if let Step::Done(result) = step {
            self.end(token, result);
        }
    }

    fn end(&mut self, token: Token, result: Result<u64, Failure>) {
        if let Some(t) = self.running.remove(&token) {
            let _ = (self.poll.registry()).deregister(&mut SourceFd(&t.socket.as_raw_fd()));
            t.report.finish(&t.socket, result);
        }
    }
}

/// Reads every datagram waiting on a transfer's socket (the poll is edge-triggered); the result once the
/// transfer is over.
fn receive(t: &mut Opened, metrics: &TftpMetrics, buf: &mut [u8]) -> Option<Result<u64, Failure>> {
    let mut errors = 0;
    loop {
        match t.socket.recv(buf) {
            Ok(n) => {
                errors = 0;
                if let Step::Done(result) = t.sender.on_datagram(&t.socket, metrics, &buf[..n]) {
                    return Some(result);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // An ICMP port unreachable (the client is gone) or an interrupted call: the timeout decides.
            Err(_) => {
                errors += 1;
                if errors >= MAX_ERRORS_IN_A_ROW {
                    return None;
                }
            }
        }
    }
}
