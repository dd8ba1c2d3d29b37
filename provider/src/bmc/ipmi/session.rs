//! One RMCP+ session with one BMC: discovery, Open Session, RAKP 1–4, privilege, requests with
//! retransmission, and Close Session.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::super::error::{BmcError, Result};
use super::commands::{self, NETFN_APP, PRIV_ADMIN};
use super::crypto::{Exchange, SessionKeys, Suite, codes_match, sik_key};
use super::negotiate::{self, Answer, Listed};
use super::packet::{self, Datagram, payload};

/// How a session is opened.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// Name of the BMC in errors and logs (its endpoint URL).
    pub bmc: String,
    pub addr: SocketAddr,
    /// Wait for one answer this long before retransmitting; later attempts wait longer.
    pub timeout: Duration,
    /// Retransmissions after the first attempt.
    pub retries: u32,
    /// The suites allowed, strongest first; the next one is proposed when the BMC rejects one.
    pub suites: Vec<Suite>,
    /// Negotiate (`auto`): ask the BMC which suites it has, propose only those, and remember per address
    /// what worked. Otherwise `suites` are proposed as they are.
    pub negotiate: bool,
}

/// An established, authenticated and encrypted session.
pub struct Session {
    sock: UdpSocket,
    params: SessionParams,
    keys: SessionKeys,
    /// Our session id (the BMC puts it in its packets).
    sid_m: u32,
    /// The BMC's session id (we put it in ours).
    sid_c: u32,
    seq: u32,
    rq_seq: u8,
    pub last_used: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("bmc", &self.params.bmc)
            .field("suite", &self.keys.suite.id())
            .finish_non_exhaustive()
    }
}

/// Sends a request and waits for the answer `accept` recognises, retransmitting on timeout.
/// `make` builds the datagram for each attempt (a session request gets a new sequence number each time).
/// Datagrams that fail to decode, fail the integrity check or answer something else are dropped.
#[allow(clippy::too_many_arguments)]
async fn round_trip<T>(
    sock: &UdpSocket,
    params: &SessionParams,
    what: &str,
    keys: Option<&SessionKeys>,
    mut make: impl FnMut() -> Vec<u8>,
    mut accept: impl FnMut(Datagram) -> Option<Result<T>>,
) -> Result<T> {
    let mut buf = vec![0u8; 1024];
    let mut waited = Duration::ZERO;
    for attempt in 0..=params.retries {
        let pkt = make();
        // Each retransmission waits a little longer (backoff), so a slow BMC gets a chance to answer.
        let wait = params.timeout + params.timeout * attempt / 2;
        waited += wait;
        if let Err(e) = sock.send(&pkt).await {
            return Err(io_error(params, what, e));
        }
        let deadline = Instant::now() + wait;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break, // this attempt timed out
                Ok(Err(e)) => return Err(io_error(params, what, e)),
                Ok(Ok(n)) => n,
            };
            match packet::decode(&buf[..n], keys) {
                Ok(d) => {
                    if let Some(r) = accept(d) {
                        return r;
                    }
                }
                Err(e) => tracing::debug!(bmc = %params.bmc, error = %e, "dropping datagram"),
            }
        }
        tracing::debug!(bmc = %params.bmc, attempt, what, "no answer, retransmitting");
    }
    Err(BmcError::Timeout {
        bmc: params.bmc.clone(),
        what: format!("waiting for {what}"),
        after: waited,
    })
}

fn io_error(params: &SessionParams, what: &str, e: std::io::Error) -> BmcError {
    let detail = match e.kind() {
        // A connected UDP socket reports an ICMP port-unreachable as ECONNREFUSED.
        std::io::ErrorKind::ConnectionRefused => {
            format!(
                "nothing listens on UDP {} (port unreachable) during {what}",
                params.addr
            )
        }
        _ => format!("{what}: {e}"),
    };
    BmcError::Unreachable {
        bmc: params.bmc.clone(),
        detail,
    }
}

fn rmcp_status_error(bmc: &str, step: &str, status: u8) -> BmcError {
    let text = commands::rmcp_status_text(status);
    match status {
        0x0d | 0x0c | 0x0f | 0x09 | 0x0a => BmcError::Auth {
            bmc: bmc.to_string(),
            detail: format!("{step}: BMC says {text} (status {status:#04x})"),
        },
        _ => BmcError::Protocol {
            bmc: bmc.to_string(),
            detail: format!("{step}: BMC says {text} (status {status:#04x})"),
        },
    }
}

/// What a session-setup answer (Open Session response, RAKP 2, RAKP 4) says. Public for the fuzz targets.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup<T> {
    /// A non-zero RMCP+ status code: the BMC refused this step.
    Refused(u8),
    /// Too short for its fields, or for another session.
    Malformed,
    Ok(T),
}

fn status_of(payload: &[u8]) -> Option<u8> {
    payload.get(1).copied()
}

/// An Open Session response (IPMI v2.0 §13.18) to our session `sid_m`: the BMC's session id and the
/// authentication, integrity and confidentiality algorithms it chose.
#[doc(hidden)]
pub fn parse_open_session(resp: &[u8], sid_m: u32) -> Setup<(u32, [u8; 3])> {
    match status_of(resp) {
        None => return Setup::Malformed,
        Some(0) => {}
        Some(status) => return Setup::Refused(status),
    }
    match resp {
        [_, _, _, _, m0, m1, m2, m3, c0, c1, c2, c3, rest @ ..]
            if rest.len() >= 24 && u32::from_le_bytes([*m0, *m1, *m2, *m3]) == sid_m =>
        {
            Setup::Ok((
                u32::from_le_bytes([*c0, *c1, *c2, *c3]),
                [rest[4], rest[12], rest[20]],
            ))
        }
        _ => Setup::Malformed,
    }
}

/// RAKP message 2 (§13.21) to our session `sid_m`: the BMC's random number, its GUID and its key exchange
/// authentication code (as long as `suite`'s).
#[doc(hidden)]
pub fn parse_rakp2(rakp2: &[u8], sid_m: u32, suite: Suite) -> Setup<([u8; 16], [u8; 16], &[u8])> {
    match status_of(rakp2) {
        None => return Setup::Malformed,
        Some(0) => {}
        Some(status) => return Setup::Refused(status),
    }
    let code_end = 40 + suite.rakp_len();
    let Some(head) = rakp2.get(..code_end) else {
        return Setup::Malformed;
    };
    if u32::from_le_bytes([head[4], head[5], head[6], head[7]]) != sid_m {
        return Setup::Malformed;
    }
    let mut rand_c = [0u8; 16];
    rand_c.copy_from_slice(&head[8..24]);
    let mut guid_c = [0u8; 16];
    guid_c.copy_from_slice(&head[24..40]);
    Setup::Ok((rand_c, guid_c, &head[40..]))
}

/// RAKP message 4 (§13.23): its integrity check value (as long as `suite`'s).
#[doc(hidden)]
pub fn parse_rakp4(rakp4: &[u8], suite: Suite) -> Setup<&[u8]> {
    match status_of(rakp4) {
        None => return Setup::Malformed,
        Some(0) => {}
        Some(status) => return Setup::Refused(status),
    }
    match rakp4.get(8..8 + suite.icv_len()) {
        Some(icv) => Setup::Ok(icv),
        None => Setup::Malformed,
    }
}

/// The BMC's cipher suites (Get Channel Cipher Suites, outside a session); `None` when it does not answer
/// the command (not every BMC implements it: one attempt each, then we propose and see) or answers
/// something unreadable.
async fn list_suites(sock: &UdpSocket, params: &SessionParams) -> Option<Vec<Listed>> {
    let once = SessionParams {
        retries: 0,
        ..params.clone()
    };
    let mut records = Vec::new();
    for index in 0..64u8 {
        let rq_seq = index + 1;
        let req = packet::encode_request(
            NETFN_APP,
            commands::CMD_GET_CHANNEL_CIPHER_SUITES,
            rq_seq,
            &negotiate::listing_request(index),
        );
        let answer = round_trip(
            sock,
            &once,
            "Get Channel Cipher Suites",
            None,
            || packet::encode_v15(&req),
            |d| {
                let r = packet::decode_response(&d.payload).ok()?;
                (r.cmd == commands::CMD_GET_CHANNEL_CIPHER_SUITES && r.rq_seq == rq_seq)
                    .then_some(Ok(r))
            },
        )
        .await;
        let chunk = match answer {
            Ok(r) if r.completion == 0 && !r.data.is_empty() => r.data[1..].to_vec(),
            Ok(r) => {
                tracing::debug!(bmc = %params.bmc, completion = r.completion, "Get Channel Cipher Suites refused; proposing without a list");
                return None;
            }
            Err(e) => {
                tracing::debug!(bmc = %params.bmc, error = %e, "no Get Channel Cipher Suites answer; proposing without a list");
                return None;
            }
        };
        records.extend_from_slice(&chunk);
        if chunk.len() < negotiate::LISTING_CHUNK {
            break;
        }
    }
    match negotiate::parse_listing(&records) {
        Ok(l) => {
            tracing::debug!(bmc = %params.bmc, suites = ?l.iter().map(|s| s.id).collect::<Vec<_>>(), "the BMC lists cipher suites");
            Some(l)
        }
        Err(e) => {
            tracing::debug!(bmc = %params.bmc, error = %e, "unreadable cipher suite list; proposing without it");
            None
        }
    }
}

impl Session {
    /// Opens a session: Get Channel Authentication Capabilities, the suites to propose (asking the BMC with
    /// Get Channel Cipher Suites when negotiating), Open Session (through the proposals until one is
    /// taken), RAKP 1–4, then raises the privilege to Administrator.
    /// `kg`: the BMC key, when the BMC has one (it then keys the SIK instead of the password).
    pub async fn open(
        params: SessionParams,
        username: &str,
        password: &str,
        kg: Option<&[u8]>,
    ) -> Result<Session> {
        let bmc = params.bmc.clone();
        let user = username.as_bytes();
        let kuid = password.as_bytes();
        if user.len() > 16 {
            return Err(BmcError::Unsupported {
                bmc,
                what: "IPMI user names longer than 16 bytes".into(),
            });
        }
        if kg.is_some_and(|k| k.len() > 20) {
            return Err(BmcError::Unsupported {
                bmc,
                what: "IPMI BMC keys (Kg) longer than 20 bytes".into(),
            });
        }
        if kuid.len() > 20 {
            return Err(BmcError::Unsupported {
                bmc,
                what: "IPMI v2.0 passwords longer than 20 bytes".into(),
            });
        }
        let local: SocketAddr = if params.addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            ([0, 0, 0, 0], 0).into()
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| io_error(&params, "binding a UDP socket", e))?;
        sock.connect(params.addr)
            .await
            .map_err(|e| io_error(&params, "connecting", e))?;

        // 1. Presence and capabilities (an IPMI v1.5 packet outside a session, as every BMC accepts).
        let caps_req = packet::encode_request(
            NETFN_APP,
            commands::CMD_GET_CHANNEL_AUTH_CAPS,
            0,
            &commands::channel_auth_caps_request(),
        );
        let caps = round_trip(
            &sock,
            &params,
            "Get Channel Authentication Capabilities",
            None,
            || packet::encode_v15(&caps_req),
            |d| {
                let r = packet::decode_response(&d.payload).ok()?;
                (r.cmd == commands::CMD_GET_CHANNEL_AUTH_CAPS).then_some(Ok(r))
            },
        )
        .await?;
        if caps.completion != 0 || !commands::supports_v20(&caps.data) {
            return Err(BmcError::Unsupported {
                bmc,
                what: "IPMI v2.0 / RMCP+ (lanplus) on this channel; enable it in the BMC's LAN settings".into(),
            });
        }

        // 2. Which suites to propose (see `negotiate`).
        let allowed = params.suites.clone();
        let proposals = match (params.negotiate, negotiate::learned(params.addr)) {
            (false, _) => allowed.clone(),
            (true, Some(learned)) => negotiate::learned_first(learned, &allowed),
            (true, None) => {
                let listed = list_suites(&sock, &params).await;
                negotiate::plan(&allowed, listed.as_deref()).map_err(|r| BmcError::Unsupported {
                    bmc: bmc.clone(),
                    what: r.what(&allowed),
                })?
            }
        };

        let sid_m: u32 = loop {
            let v = rand::random::<u32>();
            if v != 0 {
                break v;
            }
        };
        let mut tag: u8 = 0;
        let mut last_err = None;
        for (i, &proposed) in proposals.iter().enumerate() {
            let more = i + 1 < proposals.len();
            tag = tag.wrapping_add(1);
            // 3. Open Session: propose exactly this suite's algorithms.
            let mut req = vec![tag, PRIV_ADMIN, 0, 0];
            req.extend_from_slice(&sid_m.to_le_bytes());
            for (ptype, alg) in [0u8, 1, 2].into_iter().zip(proposed.algorithms()) {
                req.extend_from_slice(&[ptype, 0, 0, 0x08, alg, 0, 0, 0]);
            }
            let t = tag;
            let resp = round_trip(
                &sock,
                &params,
                "the Open Session response",
                None,
                || packet::encode_v20(payload::OPEN_SESSION_REQUEST, 0, 0, &req, None, [0; 16]),
                |d| {
                    (d.payload_type == payload::OPEN_SESSION_RESPONSE
                        && d.payload.len() >= 2
                        && d.payload[0] == t)
                        .then_some(Ok(d.payload))
                },
            )
            .await?;
            let (sid_c, algs) = match parse_open_session(&resp, sid_m) {
                Setup::Ok(answer) => answer,
                Setup::Malformed => {
                    return Err(BmcError::Protocol {
                        bmc,
                        detail: "malformed Open Session response".into(),
                    });
                }
                Setup::Refused(status) => {
                    let err = rmcp_status_error(
                        &bmc,
                        &format!("Open Session with cipher suite {}", proposed.id()),
                        status,
                    );
                    // Algorithms refused: propose the next suite, if any.
                    if matches!(status, 0x04 | 0x05 | 0x06 | 0x07 | 0x10 | 0x11) && more {
                        tracing::debug!(bmc = %bmc, suite = proposed.id(), status, "cipher suite refused, proposing the next one");
                        last_err = Some(err);
                        continue;
                    }
                    return Err(err);
                }
            };
            let suite = match negotiate::judge(algs, &allowed) {
                Answer::Accept(s) => {
                    if s != proposed {
                        tracing::debug!(bmc = %bmc, proposed = proposed.id(), answered = s.id(), "the BMC counter-offered a suite we allow; taking it");
                    }
                    s
                }
                // A counter-offer we may not take is a refusal of the proposal (the BMC drops the
                // half-open session on its own).
                Answer::Other(what) if more => {
                    tracing::debug!(bmc = %bmc, suite = proposed.id(), answered = %what, "cipher suite counter-offered, proposing the next one");
                    continue;
                }
                Answer::Other(what) => {
                    return Err(BmcError::Unsupported {
                        bmc,
                        what: format!(
                            "cipher suite {}: asked for it, it answered Open Session with {what}; {}",
                            proposed.id(),
                            if params.negotiate {
                                "enable cipher suite 17 or 3 in the BMC's LAN settings"
                            } else {
                                "use --cipher-suite auto (or the host's cipherSuite: auto)"
                            }
                        ),
                    });
                }
                Answer::Weak(what) => {
                    return Err(BmcError::Unsupported {
                        bmc,
                        what: format!(
                            "a session with integrity and encryption: asked for cipher suite {}, it answered \
                             Open Session with {what}, and Beowulf never weakens a session; enable cipher \
                             suite 17 or 3 in the BMC's LAN settings",
                            proposed.id()
                        ),
                    });
                }
            };

            // 4. RAKP 1 / 2.
            let rand_m: [u8; 16] = rand::random();
            let role = PRIV_ADMIN | 0x10; // name-only lookup
            tag = tag.wrapping_add(1);
            let mut rakp1 = vec![tag, 0, 0, 0];
            rakp1.extend_from_slice(&sid_c.to_le_bytes());
            rakp1.extend_from_slice(&rand_m);
            rakp1.extend_from_slice(&[role, 0, 0, user.len() as u8]);
            rakp1.extend_from_slice(user);
            let t = tag;
            let rakp2 = round_trip(
                &sock,
                &params,
                "RAKP message 2",
                None,
                || packet::encode_v20(payload::RAKP1, 0, 0, &rakp1, None, [0; 16]),
                |d| {
                    (d.payload_type == payload::RAKP2 && d.payload.len() >= 2 && d.payload[0] == t)
                        .then_some(Ok(d.payload))
                },
            )
            .await
            .map_err(|e| match e {
                // It answered Open Session a moment ago, so it is there: BMCs that do not know a user may
                // stay silent rather than refuse (pyghmi's, so virtualbmc, does).
                BmcError::Timeout { bmc, .. } => BmcError::Auth {
                    bmc,
                    detail: format!(
                        "the BMC answered Open Session but never RAKP 1 for user {username:?}; it most \
                         likely does not know this user (some BMCs stay silent instead of refusing)"
                    ),
                },
                e => e,
            })?;
            let (rand_c, guid_c, code) = match parse_rakp2(&rakp2, sid_m, suite) {
                Setup::Ok(answer) => answer,
                Setup::Refused(status) => return Err(rmcp_status_error(&bmc, "RAKP 2", status)),
                Setup::Malformed => {
                    return Err(BmcError::Protocol {
                        bmc,
                        detail: "malformed RAKP message 2".into(),
                    });
                }
            };
            let ex = Exchange {
                suite,
                sid_m,
                sid_c,
                rand_m,
                rand_c,
                guid_c,
                role,
                username: user,
            };
            if !codes_match(&ex.rakp2_code(kuid), code) {
                return Err(BmcError::Auth {
                    bmc,
                    detail: format!(
                        "the BMC's RAKP 2 code does not match the password for user {username:?} (wrong password)"
                    ),
                });
            }

            // 5. RAKP 3 / 4.
            tag = tag.wrapping_add(1);
            let mut rakp3 = vec![tag, 0, 0, 0];
            rakp3.extend_from_slice(&sid_c.to_le_bytes());
            rakp3.extend_from_slice(&ex.rakp3_code(kuid));
            let t = tag;
            let rakp4 = round_trip(
                &sock,
                &params,
                "RAKP message 4",
                None,
                || packet::encode_v20(payload::RAKP3, 0, 0, &rakp3, None, [0; 16]),
                |d| {
                    (d.payload_type == payload::RAKP4 && d.payload.len() >= 2 && d.payload[0] == t)
                        .then_some(Ok(d.payload))
                },
            )
            .await?;
            let icv = match parse_rakp4(&rakp4, suite) {
                Setup::Ok(icv) => icv,
                Setup::Refused(status) => return Err(rmcp_status_error(&bmc, "RAKP 4", status)),
                Setup::Malformed => {
                    return Err(BmcError::Protocol {
                        bmc,
                        detail: "malformed RAKP message 4".into(),
                    });
                }
            };
            let sik = ex.sik(sik_key(kuid, kg));
            if !codes_match(&ex.rakp4_icv(&sik), icv) {
                // RAKP 2 proved the password; the SIK differs only through the BMC key.
                return Err(BmcError::Auth {
                    bmc,
                    detail: if kg.is_some() {
                        "the BMC key (Kg) does not match the BMC's (RAKP 4 check failed)".into()
                    } else {
                        "the BMC uses a BMC key (Kg) and none was given (RAKP 4 check failed)"
                            .into()
                    },
                });
            }
            let keys = SessionKeys::derive(suite, &sik);
            let mut s = Session {
                sock,
                params,
                keys,
                sid_m,
                sid_c,
                seq: 0,
                rq_seq: 0,
                last_used: Instant::now(),
            };
            // 6. Sessions start at User privilege; chassis control needs Operator, boot options Administrator.
            s.request(
                NETFN_APP,
                commands::CMD_SET_SESSION_PRIVILEGE,
                &[PRIV_ADMIN],
            )
            .await
            .map_err(|e| match e {
                BmcError::Protocol { bmc, detail } => BmcError::Auth {
                    bmc,
                    detail: format!("cannot raise the session to Administrator: {detail}"),
                },
                e => e,
            })?;
            tracing::debug!(bmc = %s.params.bmc, suite = suite.id(), "IPMI session open");
            if s.params.negotiate {
                negotiate::learn(s.params.addr, suite);
            }
            return Ok(s);
        }
        Err(last_err.unwrap_or_else(|| BmcError::Unsupported {
            bmc,
            what: "any of the configured cipher suites".into(),
        }))
    }

    pub fn suite(&self) -> Suite {
        self.keys.suite
    }

    /// Sends one IPMI request in the session and returns the response data after the completion code; a
    /// completion code other than 0 is a [`BmcError::Protocol`] naming it.
    pub async fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>> {
        match self.request_raw(netfn, cmd, data).await? {
            (0, data) => Ok(data),
            (cc, _) => Err(commands::completion_error(&self.params.bmc, netfn, cmd, cc)),
        }
    }

    /// Sends one IPMI request in the session and returns the completion code and the response data after it,
    /// for callers that treat some completion codes as answers (e.g. "not present").
    pub async fn request_raw(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<(u8, Vec<u8>)> {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        let rq_seq = self.rq_seq;
        let msg = packet::encode_request(netfn, cmd, rq_seq, data);
        let (sid_m, sid_c) = (self.sid_m, self.sid_c);
        let seq = &mut self.seq;
        let keys = &self.keys;
        let what = format!("the response to netfn {netfn:#04x} command {cmd:#04x}");
        let resp = round_trip(
            &self.sock,
            &self.params,
            &what,
            Some(keys),
            || {
                // Sequence numbers never repeat within a session (and skip 0, which means "no session").
                *seq = seq.wrapping_add(1).max(1);
                packet::encode_v20(payload::IPMI, sid_c, *seq, &msg, Some(keys), rand::random())
            },
            |d| {
                if d.payload_type != payload::IPMI || d.session_id != sid_m {
                    return None;
                }
                let r = packet::decode_response(&d.payload).ok()?;
                (r.rq_seq == rq_seq && r.cmd == cmd && r.netfn == netfn + 1).then_some(Ok(r))
            },
        )
        .await?;
        self.last_used = Instant::now();
        Ok((resp.completion, resp.data))
    }

    /// The BMC's name in errors and logs.
    pub fn bmc(&self) -> &str {
        &self.params.bmc
    }

    /// The BMC's id for this session (what it reports as the holder of a payload it activated for us).
    pub fn bmc_session_id(&self) -> u32 {
        self.sid_c
    }

    /// How long one answer is waited for (the session's request timeout).
    pub fn timeout(&self) -> Duration {
        self.params.timeout
    }

    /// Sends one payload of type `ptype` (encrypted and authenticated) with the next session sequence number,
    /// without waiting for anything: for payloads that are not request/response (SOL).
    pub async fn send_payload(&mut self, ptype: u8, data: &[u8]) -> Result<()> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let pkt = packet::encode_v20(
            ptype,
            self.sid_c,
            self.seq,
            data,
            Some(&self.keys),
            rand::random(),
        );
        self.sock
            .send(&pkt)
            .await
            .map_err(|e| io_error(&self.params, "sending a payload", e))?;
        Ok(())
    }

    /// Sends an IPMI request without waiting for its response (a keepalive whose answer is only proof of
    /// life; it arrives through [`Session::recv_payload`]).
    pub async fn send_request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<()> {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        let msg = packet::encode_request(netfn, cmd, self.rq_seq, data);
        self.send_payload(payload::IPMI, &msg).await
    }

    /// The next datagram of this session that decodes and passes the integrity check, or `None` when
    /// `deadline` comes first. Anything else on the socket is dropped.
    pub async fn recv_payload(&mut self, deadline: Instant) -> Result<Option<Datagram>> {
        let mut buf = vec![0u8; 1024];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => return Err(io_error(&self.params, "receiving", e)),
                Ok(Ok(n)) => n,
            };
            match packet::decode(&buf[..n], Some(&self.keys)) {
                Ok(d) if d.session_id == self.sid_m => {
                    self.last_used = Instant::now();
                    return Ok(Some(d));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(bmc = %self.params.bmc, error = %e, "dropping datagram"),
            }
        }
    }

    /// Closes the session; best effort, one short attempt.
    pub async fn close(mut self) {
        self.params.retries = 0;
        self.params.timeout = self.params.timeout.min(Duration::from_millis(500));
        let sid_c = self.sid_c.to_le_bytes();
        if let Err(e) = self
            .request(NETFN_APP, commands::CMD_CLOSE_SESSION, &sid_c)
            .await
        {
            tracing::debug!(bmc = %self.params.bmc, error = %e, "Close Session failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Open Session response of `fuzz/seeds/ipmi/rmcpplus-open-session` (suite 3's algorithms).
    const OPEN: [u8; 36] = [
        0, 0, 4, 0, 1, 2, 3, 4, 0xa0, 0xa1, 0xa2, 0xa3, 0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0,
        0, 0, 2, 0, 0, 8, 1, 0, 0, 0,
    ];

    #[test]
    fn session_setup_answers_are_read_by_their_offsets_and_lengths() {
        let sid_m = 0x0403_0201;
        assert_eq!(
            parse_open_session(&OPEN, sid_m),
            Setup::Ok((0xa3a2_a1a0, [1, 1, 1]))
        );
        assert_eq!(parse_open_session(&OPEN[..35], sid_m), Setup::Malformed);
        assert_eq!(parse_open_session(&OPEN, sid_m + 1), Setup::Malformed);
        assert_eq!(parse_open_session(&[0, 0x12], sid_m), Setup::Refused(0x12));
        assert_eq!(parse_open_session(&[0], sid_m), Setup::Malformed);

        let mut rakp2 = vec![2, 0, 0, 0, 1, 2, 3, 4];
        rakp2.extend(1..=32u8); // random number and GUID
        rakp2.extend([0xcc; 20]);
        let Setup::Ok((rand_c, guid_c, code)) = parse_rakp2(&rakp2, sid_m, Suite::S3) else {
            panic!("RAKP 2 not read");
        };
        assert_eq!((rand_c[0], guid_c[0], code), (1, 17, &[0xcc; 20][..]));
        assert_eq!(parse_rakp2(&rakp2, sid_m, Suite::S17), Setup::Malformed);
        assert_eq!(
            parse_rakp2(&[2, 0x0d], sid_m, Suite::S3),
            Setup::Refused(0x0d)
        );

        let rakp4 = [3, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
        assert_eq!(parse_rakp4(&rakp4, Suite::S3), Setup::Ok(&[9u8; 12][..]));
        assert_eq!(parse_rakp4(&rakp4, Suite::S17), Setup::Malformed);
        assert_eq!(parse_rakp4(&[3, 2], Suite::S17), Setup::Refused(2));
    }
}
