//! IPMI v2.0 Serial over LAN (SOL, spec section 15): the host's serial port carried in SOL payloads of an
//! RMCP+ session, encrypted and authenticated like every other payload of the session.
//!
//! [`SolState`] is the console side of the packet exchange, free of I/O and clocks given from outside: the
//! BMC's packets are acknowledged (a retransmission is acknowledged again but delivered once), what we type
//! goes out one packet at a time (the spec's window is one) and is sent again when no acknowledgement comes,
//! the part a BMC did not accept is sent again. [`Console`] runs it on a session of its own: Activate
//! Payload, the exchange with a keepalive, Deactivate Payload and Close Session at the end.
//!
//! A console uses its own session, not the one power and boot commands share: it lives for minutes or hours,
//! and BMCs allow one SOL session at a time ("payload already active" is [`BmcError::Busy`]; `takeover`
//! deactivates the other one first, as `ipmitool sol deactivate` would).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::error::{BmcError, Result};
use super::commands::{self, NETFN_APP};
use super::packet::payload;
use super::session::{Session, SessionParams};

pub const CMD_ACTIVATE_PAYLOAD: u8 = 0x48;
pub const CMD_DEACTIVATE_PAYLOAD: u8 = 0x49;
pub const CMD_GET_PAYLOAD_INSTANCE_INFO: u8 = 0x4b;

/// SOL payload instance 1: the system's serial port.
pub const INSTANCE: u8 = 1;

/// Bits of the fourth byte of a SOL packet.
pub mod flags {
    /// Both directions: the packet named by the ack field was not accepted; send it again later.
    pub const NACK: u8 = 0x40;
    /// BMC → console: the serial port cannot take characters now.
    pub const UNAVAILABLE: u8 = 0x20;
    /// BMC → console: SOL is being deactivated (by another session, or by the BMC).
    pub const DEACTIVATING: u8 = 0x10;
    /// BMC → console: a break was seen on the serial port.
    pub const BREAK_DETECTED: u8 = 0x04;
    /// Console → BMC: send a break on the serial port.
    pub const GENERATE_BREAK: u8 = 0x10;
}

/// Why a SOL packet was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SolError {
    #[error("SOL packet too short ({0} bytes, at least 4)")]
    Short(usize),
}

/// One SOL packet (spec table 15-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolPacket {
    /// 1–15; 0 for a packet that only acknowledges.
    pub seq: u8,
    /// The sequence number this packet acknowledges (or refuses, with [`flags::NACK`]); 0 for none.
    pub ack: u8,
    /// How many characters of the acknowledged packet were accepted.
    pub accepted: u8,
    /// Operation (console → BMC) or status (BMC → console): [`flags`].
    pub flags: u8,
    pub data: Vec<u8>,
}

impl SolPacket {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.data.len());
        v.extend_from_slice(&[self.seq & 0x0f, self.ack & 0x0f, self.accepted, self.flags]);
        v.extend_from_slice(&self.data);
        v
    }

    pub fn decode(b: &[u8]) -> Result<SolPacket, SolError> {
        match b {
            [seq, ack, accepted, flags, data @ ..] => Ok(SolPacket {
                seq: seq & 0x0f,
                ack: ack & 0x0f,
                accepted: *accepted,
                flags: *flags,
                data: data.to_vec(),
            }),
            _ => Err(SolError::Short(b.len())),
        }
    }
}

/// Activate Payload request: SOL, `instance`, encrypted and authenticated, serial alerts deferred while
/// SOL is active, the BMC may start sending at once (the bits ipmitool sends, which BMCs accept widely).
pub fn activate_request(instance: u8) -> [u8; 6] {
    [payload::SOL, instance, 0xc6, 0, 0, 0]
}

pub fn deactivate_request(instance: u8) -> [u8; 6] {
    [payload::SOL, instance, 0, 0, 0, 0]
}

/// What Activate Payload answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activation {
    /// Largest SOL payload the BMC takes from us (bytes, header included).
    pub inbound_max: u16,
    pub outbound_max: u16,
    /// The UDP port the BMC names for the payload. BMCs name 623 whatever port their session is on
    /// (ipmi_sim too), so the session's own port is used; this is kept for the logs.
    pub port: u16,
}

/// Parses the Activate Payload response data (after the completion code).
pub fn parse_activation(d: &[u8]) -> Option<Activation> {
    let w = |i: usize| Some(u16::from_le_bytes([*d.get(i)?, *d.get(i + 1)?]));
    Some(Activation {
        inbound_max: w(4)?,
        outbound_max: w(6)?,
        port: w(8)?,
    })
}

/// Who holds SOL, from a Get Payload Instance Info response: the BMC's session id (0: nobody).
pub fn parse_instance_holder(d: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(..4)?.try_into().ok()?))
}

/// How long an unacknowledged packet waits before it is sent again, and how many times.
pub const RETRANSMIT_AFTER: Duration = Duration::from_millis(800);
pub const RETRANSMITS: u32 = 6;

/// What a received packet gives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// New characters from the serial port (empty for a retransmission already delivered).
    pub data: Vec<u8>,
    /// The acknowledgement to send back.
    pub ack: Option<SolPacket>,
    /// The BMC is deactivating SOL.
    pub ended: bool,
    /// A break was seen on the serial port.
    pub break_detected: bool,
}

/// The console's half of the SOL exchange.
#[derive(Debug)]
pub struct SolState {
    /// The last sequence number received with data (0: none yet).
    last_rx: u8,
    /// The sequence number of our last packet.
    tx_seq: u8,
    /// Our packet waiting for its acknowledgement: the packet, when it is due again, retransmissions left.
    outstanding: Option<(SolPacket, Instant, u32)>,
    pending: VecDeque<u8>,
    break_pending: bool,
    /// Most characters per packet.
    chunk: usize,
}

impl SolState {
    /// `inbound_max`: the Activate Payload's inbound payload size.
    pub fn new(inbound_max: u16) -> SolState {
        SolState {
            last_rx: 0,
            tx_seq: 0,
            outstanding: None,
            pending: VecDeque::new(),
            break_pending: false,
            // The size includes the 4-byte header; a BMC naming less than 8 still gets single characters.
            chunk: usize::from(inbound_max).saturating_sub(4).clamp(1, 255),
        }
    }

    /// Characters to send to the serial port.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.pending.extend(bytes);
    }

    pub fn queue_break(&mut self) {
        self.break_pending = true;
    }

    /// Whether typed characters are still waiting to be sent or acknowledged.
    pub fn busy(&self) -> bool {
        self.outstanding.is_some() || !self.pending.is_empty() || self.break_pending
    }

    /// Takes in one packet from the BMC.
    pub fn on_packet(&mut self, p: &SolPacket, now: Instant) -> Received {
        let mut r = Received {
            ended: p.flags & flags::DEACTIVATING != 0,
            break_detected: p.flags & flags::BREAK_DETECTED != 0,
            ..Received::default()
        };
        // Its acknowledgement of our packet.
        if p.ack != 0
            && let Some((sent, _, _)) = &mut self.outstanding
            && sent.seq == p.ack
        {
            if p.flags & flags::NACK != 0 {
                // Refused for now (the port is busy): try again after the usual wait, without using up a try.
                if let Some(o) = &mut self.outstanding {
                    o.1 = now + RETRANSMIT_AFTER;
                }
            } else {
                let accepted = usize::from(p.accepted).min(sent.data.len());
                // What it did not take goes first in the next packet.
                for b in sent.data[accepted..].iter().rev() {
                    self.pending.push_front(*b);
                }
                self.outstanding = None;
            }
        }
        // Its characters.
        if p.seq != 0 && !p.data.is_empty() {
            if p.seq != self.last_rx {
                self.last_rx = p.seq;
                r.data = p.data.clone();
            }
            r.ack = Some(SolPacket {
                seq: 0,
                ack: p.seq,
                accepted: u8::try_from(p.data.len()).unwrap_or(u8::MAX),
                flags: 0,
                data: Vec::new(),
            });
        }
        r
    }

    /// The packet to send now, if any: a retransmission that is due, or the next characters. `Err` when a
    /// packet went unacknowledged through every retransmission.
    pub fn poll_send(&mut self, now: Instant) -> Result<Option<SolPacket>, u32> {
        if let Some((p, due, left)) = &mut self.outstanding {
            if now < *due {
                return Ok(None);
            }
            if *left == 0 {
                return Err(RETRANSMITS);
            }
            *left -= 1;
            *due = now + RETRANSMIT_AFTER;
            return Ok(Some(p.clone()));
        }
        if self.pending.is_empty() && !self.break_pending {
            return Ok(None);
        }
        self.tx_seq = self.tx_seq % 15 + 1;
        let n = self.pending.len().min(self.chunk);
        let p = SolPacket {
            seq: self.tx_seq,
            ack: 0,
            accepted: 0,
            flags: if std::mem::take(&mut self.break_pending) {
                flags::GENERATE_BREAK
            } else {
                0
            },
            data: self.pending.drain(..n).collect(),
        };
        self.outstanding = Some((p.clone(), now + RETRANSMIT_AFTER, RETRANSMITS));
        Ok(Some(p))
    }

    /// When [`SolState::poll_send`] has something to do next, if it waits for anything.
    pub fn next_due(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|(_, due, _)| *due)
    }
}

/// Input to a running console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SolInput {
    Data(Vec<u8>),
    Break,
}

/// How a console ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolEnd {
    /// Our side closed it (input or output dropped).
    Closed,
    /// The BMC deactivated SOL (another session took it over, or the BMC ended it).
    Deactivated,
}

/// An active SOL session with one BMC.
pub struct Console {
    session: Session,
    activation: Activation,
    keepalive: Duration,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("bmc", &self.session.bmc())
            .field("activation", &self.activation)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// Opens a session and activates SOL on it. With `takeover`, SOL active on another session is
    /// deactivated first; without it, that is [`BmcError::Busy`].
    pub async fn open(
        params: SessionParams,
        username: &str,
        password: &str,
        kg: Option<&[u8]>,
        takeover: bool,
        keepalive: Duration,
    ) -> Result<Console> {
        let mut session = Session::open(params, username, password, kg).await?;
        match activate(&mut session, takeover).await {
            Ok(activation) => {
                tracing::debug!(bmc = %session.bmc(), ?activation, "SOL active");
                Ok(Console {
                    session,
                    activation,
                    keepalive,
                })
            }
            Err(e) => {
                session.close().await;
                Err(e)
            }
        }
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Runs the console until it ends: characters from the serial port go to `output` as they come,
    /// `input` goes to the serial port. Dropping `input`'s sender or `output`'s receiver ends it (SOL is
    /// deactivated and the session closed). A BMC that stops answering the keepalive for three intervals
    /// is a [`BmcError::Timeout`].
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<SolInput>,
        output: mpsc::Sender<Vec<u8>>,
    ) -> Result<SolEnd> {
        let end = self.exchange(&mut input, &output).await;
        if !matches!(end, Ok(SolEnd::Deactivated)) {
            // Best effort: the BMC frees the payload for the next console, then the session goes.
            let _ = tokio::time::timeout(
                self.session.timeout(),
                self.session.request_raw(
                    NETFN_APP,
                    CMD_DEACTIVATE_PAYLOAD,
                    &deactivate_request(INSTANCE),
                ),
            )
            .await;
        }
        self.session.close().await;
        end
    }

    async fn exchange(
        &mut self,
        input: &mut mpsc::Receiver<SolInput>,
        output: &mpsc::Sender<Vec<u8>>,
    ) -> Result<SolEnd> {
        let mut state = SolState::new(self.activation.inbound_max);
        let mut heard = Instant::now();
        let mut next_keepalive = heard + self.keepalive;
        let mut input_open = true;
        loop {
            let now = Instant::now();
            match state.poll_send(now) {
                Ok(Some(p)) => self.session.send_payload(payload::SOL, &p.encode()).await?,
                Ok(None) => {}
                Err(tries) => {
                    return Err(BmcError::Timeout {
                        bmc: self.session.bmc().to_string(),
                        what: format!(
                            "waiting for the BMC to acknowledge SOL data ({tries} retransmissions)"
                        ),
                        after: RETRANSMIT_AFTER * (tries + 1),
                    });
                }
            }
            if !input_open && !state.busy() {
                return Ok(SolEnd::Closed);
            }
            if now >= next_keepalive {
                if heard.elapsed() > self.keepalive * 3 {
                    return Err(BmcError::Timeout {
                        bmc: self.session.bmc().to_string(),
                        what: "waiting for any answer on the SOL session".into(),
                        after: heard.elapsed(),
                    });
                }
                // Any request keeps the session alive and its answer proves the BMC is there; this one also
                // says which session holds SOL, since some BMCs (ipmi_sim) hand it to another session that
                // takes it over without telling this one.
                self.session
                    .send_request(
                        NETFN_APP,
                        CMD_GET_PAYLOAD_INSTANCE_INFO,
                        &[payload::SOL, INSTANCE],
                    )
                    .await?;
                next_keepalive = now + self.keepalive;
            }
            let wake = state
                .next_due()
                .map_or(next_keepalive, |d| d.min(next_keepalive));
            tokio::select! {
                got = self.session.recv_payload(wake) => {
                    let Some(d) = got? else { continue };
                    heard = Instant::now();
                    if d.payload_type == payload::IPMI {
                        if self.taken_over(&d.payload) {
                            return Ok(SolEnd::Deactivated);
                        }
                        continue;
                    }
                    if d.payload_type != payload::SOL {
                        continue;
                    }
                    let p = match SolPacket::decode(&d.payload) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::debug!(bmc = %self.session.bmc(), error = %e, "dropping SOL packet");
                            continue;
                        }
                    };
                    let r = state.on_packet(&p, heard);
                    if let Some(ack) = r.ack {
                        self.session.send_payload(payload::SOL, &ack.encode()).await?;
                    }
                    if !r.data.is_empty() && output.send(r.data).await.is_err() {
                        return Ok(SolEnd::Closed);
                    }
                    if r.ended {
                        return Ok(SolEnd::Deactivated);
                    }
                }
                got = input.recv(), if input_open => match got {
                    Some(SolInput::Data(b)) => state.queue(&b),
                    Some(SolInput::Break) => state.queue_break(),
                    None => input_open = false,
                },
                () = output.closed() => return Ok(SolEnd::Closed),
            }
        }
    }
}

impl Console {
    /// Whether a keepalive answer says SOL is now held by another session (or none). A BMC that does not
    /// know the command answers with an error code: that says nothing.
    fn taken_over(&self, msg: &[u8]) -> bool {
        let Ok(r) = super::packet::decode_response(msg) else {
            return false;
        };
        if r.cmd != CMD_GET_PAYLOAD_INSTANCE_INFO || r.completion != 0 {
            return false;
        }
        match parse_instance_holder(&r.data) {
            Some(holder) if holder != self.session.bmc_session_id() => {
                tracing::debug!(bmc = %self.session.bmc(), holder, "SOL is held by another session now");
                true
            }
            _ => false,
        }
    }
}

/// Activate Payload (SOL instance 1), taking it over from another session when asked.
async fn activate(session: &mut Session, takeover: bool) -> Result<Activation> {
    let bmc = session.bmc().to_string();
    for attempt in 0..2 {
        let (cc, data) = session
            .request_raw(NETFN_APP, CMD_ACTIVATE_PAYLOAD, &activate_request(INSTANCE))
            .await?;
        match cc {
            0 => {
                return parse_activation(&data).ok_or_else(|| BmcError::Protocol {
                    bmc,
                    detail: "malformed Activate Payload response".into(),
                });
            }
            0x80 if takeover && attempt == 0 => {
                tracing::debug!(bmc = %bmc, "SOL is active on another session; deactivating it (takeover)");
                session
                    .request_raw(
                        NETFN_APP,
                        CMD_DEACTIVATE_PAYLOAD,
                        &deactivate_request(INSTANCE),
                    )
                    .await?;
            }
            0x80 => {
                return Err(BmcError::Busy {
                    bmc,
                    what: "the serial console (SOL) is already active on another session (another console, \
                           or a server capturing it); take it over with --force"
                        .into(),
                });
            }
            0x81 => {
                return Err(BmcError::Unsupported {
                    bmc,
                    what:
                        "a serial console: SOL is disabled on it; enable it in the BMC's settings \
                           (ipmitool sol set enabled true)"
                            .into(),
                });
            }
            0x82 => {
                return Err(BmcError::Busy {
                    bmc,
                    what: "it has reached its limit of active SOL sessions; close another console"
                        .into(),
                });
            }
            // Invalid command: the BMC has no SOL at all.
            0xc1 => {
                return Err(BmcError::Unsupported {
                    bmc,
                    what: "a serial console: it does not implement Activate Payload (no Serial over LAN)"
                        .into(),
                });
            }
            0x83 | 0x84 => {
                return Err(BmcError::Unsupported {
                    bmc,
                    what: "an encrypted serial console (SOL refused with encryption); Beowulf never opens \
                           one in the clear"
                        .into(),
                });
            }
            cc => {
                return Err(commands::completion_error(
                    &bmc,
                    NETFN_APP,
                    CMD_ACTIVATE_PAYLOAD,
                    cc,
                ));
            }
        }
    }
    Err(BmcError::Busy {
        bmc,
        what: "the serial console (SOL) stayed active on another session after deactivating it"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bmc_packet(seq: u8, ack: u8, accepted: u8, flags: u8, data: &[u8]) -> SolPacket {
        SolPacket {
            seq,
            ack,
            accepted,
            flags,
            data: data.to_vec(),
        }
    }

    #[test]
    fn packets_round_trip_and_short_ones_are_refused() {
        let p = bmc_packet(3, 9, 4, flags::NACK, b"abc");
        assert_eq!(p.encode(), [3, 9, 4, 0x40, b'a', b'b', b'c']);
        assert_eq!(SolPacket::decode(&p.encode()), Ok(p));
        assert_eq!(SolPacket::decode(&[1, 2, 3]), Err(SolError::Short(3)));
        // Reserved bits of the sequence fields are ignored.
        assert_eq!(SolPacket::decode(&[0xf3, 0xf0, 0, 0]).unwrap().seq, 3);
    }

    #[test]
    fn received_data_is_acknowledged_and_delivered_once() {
        let now = Instant::now();
        let mut s = SolState::new(255);
        let r = s.on_packet(&bmc_packet(5, 0, 0, 0, b"hello"), now);
        assert_eq!(r.data, b"hello");
        assert_eq!(r.ack, Some(bmc_packet(0, 5, 5, 0, b"")));
        // The BMC did not see our ack and sends it again: acknowledged again, not delivered again.
        let r = s.on_packet(&bmc_packet(5, 0, 0, 0, b"hello"), now);
        assert!(r.data.is_empty());
        assert_eq!(r.ack, Some(bmc_packet(0, 5, 5, 0, b"")));
        let r = s.on_packet(&bmc_packet(6, 0, 0, 0, b"!"), now);
        assert_eq!(r.data, b"!");
        // A status-only packet needs no ack.
        let r = s.on_packet(&bmc_packet(0, 0, 0, flags::DEACTIVATING, b""), now);
        assert!(r.ended && r.ack.is_none());
    }

    #[test]
    fn typed_data_goes_one_packet_at_a_time_and_is_retransmitted() {
        let t0 = Instant::now();
        let mut s = SolState::new(4 + 3); // three characters per packet
        s.queue(b"abcdefg");
        let p1 = s.poll_send(t0).unwrap().unwrap();
        assert_eq!((p1.seq, p1.data.as_slice()), (1, &b"abc"[..]));
        // Window of one: nothing more until it is acknowledged.
        assert_eq!(s.poll_send(t0), Ok(None));
        // Not acknowledged in time: the same packet again.
        let again = s.poll_send(t0 + RETRANSMIT_AFTER).unwrap().unwrap();
        assert_eq!(again, p1);
        // Acknowledged with two of three characters accepted: "c" leads the next packet.
        s.on_packet(&bmc_packet(0, 1, 2, 0, b""), t0);
        let p2 = s.poll_send(t0).unwrap().unwrap();
        assert_eq!((p2.seq, p2.data.as_slice()), (2, &b"cde"[..]));
        // A NACK (port busy) delays it without using up a retransmission.
        s.on_packet(&bmc_packet(0, 2, 0, flags::NACK, b""), t0);
        assert_eq!(s.poll_send(t0), Ok(None));
        assert_eq!(s.poll_send(t0 + RETRANSMIT_AFTER).unwrap().unwrap(), p2);
        s.on_packet(&bmc_packet(0, 2, 3, 0, b""), t0);
        assert_eq!(s.poll_send(t0).unwrap().unwrap().data, b"fg");
        // An ack for another sequence number is not ours.
        s.on_packet(&bmc_packet(0, 9, 2, 0, b""), t0);
        assert!(s.busy());
        s.on_packet(&bmc_packet(0, 3, 2, 0, b""), t0);
        assert!(!s.busy());
    }

    #[test]
    fn sequence_numbers_cycle_through_1_to_15_and_unanswered_packets_give_up() {
        let t0 = Instant::now();
        let mut s = SolState::new(255);
        let mut seqs = Vec::new();
        for _ in 0..16 {
            s.queue(b"x");
            let p = s.poll_send(t0).unwrap().unwrap();
            seqs.push(p.seq);
            s.on_packet(&bmc_packet(0, p.seq, 1, 0, b""), t0);
        }
        assert_eq!(seqs, (1..=15).chain([1]).collect::<Vec<u8>>());
        s.queue(b"y");
        let mut t = t0;
        s.poll_send(t).unwrap().unwrap();
        for _ in 0..RETRANSMITS {
            t += RETRANSMIT_AFTER;
            assert!(s.poll_send(t).unwrap().is_some());
        }
        assert_eq!(s.poll_send(t + RETRANSMIT_AFTER), Err(RETRANSMITS));
    }

    #[test]
    fn a_break_is_an_operation_bit() {
        let mut s = SolState::new(255);
        s.queue_break();
        let p = s.poll_send(Instant::now()).unwrap().unwrap();
        assert_eq!(p.flags, flags::GENERATE_BREAK);
        assert!(p.data.is_empty());
    }

    #[test]
    fn activation_responses() {
        let d = [0, 0, 0, 0, 0xff, 0x00, 0xff, 0x00, 0x6f, 0x02, 0xff, 0xff];
        assert_eq!(
            parse_activation(&d),
            Some(Activation {
                inbound_max: 255,
                outbound_max: 255,
                port: 623
            })
        );
        assert_eq!(parse_activation(&d[..9]), None);
        // ipmi_sim's Get Payload Instance Info answer.
        let info = [0x82, 0x03, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_instance_holder(&info), Some(0x382));
        assert_eq!(parse_instance_holder(&info[..3]), None);
    }
}
