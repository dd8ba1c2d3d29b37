//! One read transfer on its own socket: optional OACK handshake, then windows of DATA blocks (RFC 7440).
//!
//! The sender keeps the current window's packets until they are acknowledged. An ACK of block n confirms
//! everything up to n and the next window starts at n+1 (re-sending what was lost); a timeout re-sends the whole
//! window, at most `retries` times in a row. Block numbers are 16 bits on the wire and roll over to 0.

use std::collections::VecDeque;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

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
    Io(String),
}

pub(super) struct Transfer<'a> {
    pub socket: &'a UdpSocket,
    pub file: BufReader<tokio::fs::File>,
    pub negotiated: Negotiated,
    pub retries: u32,
    pub metrics: &'a TftpMetrics,
}

impl Transfer<'_> {
    /// Runs to completion; returns the payload bytes delivered.
    pub async fn run(mut self) -> Result<u64, Failure> {
        let mut buf = vec![0u8; 1024];
        if !self.negotiated.oack.is_empty() {
            let oack = packet::oack_packet(&self.negotiated.oack);
            self.exchange(&[oack], 0, &mut buf).await?;
        }
        let blksize = self.negotiated.blksize;
        let window = usize::from(self.negotiated.windowsize.max(1));
        // `first` is the block number of window[0]; the packets carry their (wrapped) numbers already.
        let mut first: u64 = 1;
        let mut pending: VecDeque<Vec<u8>> = VecDeque::with_capacity(window);
        let mut read_all = false;
        let mut delivered: u64 = 0;
        loop {
            while pending.len() < window && !read_all {
                let number = first + pending.len() as u64;
                let mut p = Vec::with_capacity(4 + blksize);
                p.extend_from_slice(&DATA.to_be_bytes());
                p.extend_from_slice(&(number as u16).to_be_bytes());
                let n = read_block(&mut self.file, &mut p, blksize).await?;
                // A short (possibly empty) block ends the transfer.
                read_all = n < blksize;
                pending.push_back(p);
            }
            if pending.is_empty() {
                return Ok(delivered);
            }
            let acked = self.send_window(&pending, first, &mut buf).await?;
            let bytes: u64 = pending.drain(..acked).map(|p| (p.len() - 4) as u64).sum();
            delivered += bytes;
            self.metrics.bytes_sent.add(bytes);
            first += acked as u64;
        }
    }

    /// Sends the OACK (a one-packet "window" acknowledged by ACK 0) and waits for it.
    async fn exchange(&self, packets: &[Vec<u8>], ack: u16, buf: &mut [u8]) -> Result<(), Failure> {
        let mut tries = 0;
        loop {
            for p in packets {
                self.send(p).await?;
            }
            let deadline = Instant::now() + self.negotiated.timeout;
            loop {
                match self.recv(buf, deadline).await? {
                    Some(Incoming::Ack(n)) if n == ack => return Ok(()),
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
    async fn send_window(
        &self,
        pending: &VecDeque<Vec<u8>>,
        first: u64,
        buf: &mut [u8],
    ) -> Result<usize, Failure> {
        let mut tries = 0;
        // A duplicate ACK of the block before the window re-sends it once per window (lost first block);
        // more would be the Sorcerer's Apprentice bug.
        let mut resent_on_dup = false;
        loop {
            for p in pending {
                self.send(p).await?;
            }
            let deadline = Instant::now() + self.negotiated.timeout;
            let mut resend = false;
            while !resend {
                match self.recv(buf, deadline).await? {
                    Some(Incoming::Ack(n)) => {
                        // How far past the block before the window this ACK reaches, in 16-bit arithmetic.
                        let reach = usize::from(n.wrapping_sub((first.wrapping_sub(1)) as u16));
                        if (1..=pending.len()).contains(&reach) {
                            return Ok(reach);
                        }
                        if reach == 0 && pending.len() > 1 && !resent_on_dup {
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

    async fn send(&self, p: &[u8]) -> Result<(), Failure> {
        self.socket
            .send(p)
            .await
            .map_err(|e| Failure::Io(e.to_string()))?;
        Ok(())
    }

    /// The next packet from the client, `None` at the deadline. ERROR ends the transfer.
    async fn recv(&self, buf: &mut [u8], deadline: Instant) -> Result<Option<Incoming>, Failure> {
        match timeout_at(deadline, self.socket.recv(buf)).await {
            Err(_) => Ok(None),
            // ICMP port unreachable: the client is gone; keep waiting until the deadline, then retry/give up.
            Ok(Err(_)) => Ok(Some(Incoming::Other)),
            Ok(Ok(n)) => match packet::parse_incoming(&buf[..n]) {
                Incoming::Error(code, message) => Err(Failure::Aborted { code, message }),
                other => Ok(Some(other)),
            },
        }
    }
}

/// Appends up to `blksize` bytes of the file to `p`; fewer only at the end of the file.
async fn read_block(
    file: &mut BufReader<tokio::fs::File>,
    p: &mut Vec<u8>,
    blksize: usize,
) -> Result<usize, Failure> {
    let start = p.len();
    p.resize(start + blksize, 0);
    let mut filled = 0;
    while filled < blksize {
        let n = file
            .read(&mut p[start + filled..])
            .await
            .map_err(|e| Failure::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    p.truncate(start + filled);
    Ok(filled)
}

/// Sends an error to the client; best effort (the transfer is over either way).
pub(super) async fn send_error(socket: &UdpSocket, code: ErrorCode, message: &str) {
    let _ = socket.send(&packet::error_packet(code, message)).await;
}
