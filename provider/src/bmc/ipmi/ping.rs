//! RMCP presence ping (ASF, DMTF DSP0136): "is anything management-capable at this address", without a
//! session or credentials. One small datagram each way; retransmitted like session requests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::super::error::{BmcError, Result};

/// IANA enterprise number of the ASF (Alerting Standards Forum), 4542.
const ASF_IANA: [u8; 4] = [0x00, 0x00, 0x11, 0xbe];
const PRESENCE_PING: u8 = 0x80;
const PRESENCE_PONG: u8 = 0x40;
const RMCP_CLASS_ASF: u8 = 0x06;

/// What a BMC's presence pong says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The BMC supports IPMI (supported-entities bit 7).
    pub ipmi: bool,
    /// Supported interactions byte bit 5: RMCP security extensions (ASF 2.0).
    pub rmcp_security: bool,
    /// How long the answer took.
    pub rtt: Duration,
}

/// An RMCP/ASF presence ping with message tag `tag` (RMCP sequence 0xff: no RMCP ACK wanted).
pub fn encode_ping(tag: u8) -> [u8; 12] {
    [
        0x06,
        0x00,
        0xff,
        RMCP_CLASS_ASF,
        ASF_IANA[0],
        ASF_IANA[1],
        ASF_IANA[2],
        ASF_IANA[3],
        PRESENCE_PING,
        tag,
        0x00,
        0x00,
    ]
}

/// Parses a presence pong answering `tag`: `Some((ipmi, rmcp_security))`, `None` for anything else.
pub fn decode_pong(d: &[u8], tag: u8) -> Option<(bool, bool)> {
    if d.len() < 12 + 16 || d[0] != 0x06 || d[3] & 0x1f != RMCP_CLASS_ASF || d[4..8] != ASF_IANA {
        return None;
    }
    if d[8] != PRESENCE_PONG || d[9] != tag || (d[11] as usize) < 16 {
        return None;
    }
    let data = &d[12..12 + 16];
    Some((data[8] & 0x80 != 0, data[9] & 0x20 != 0))
}

/// Pings `addr`; waits `timeout` for an answer, then retransmits (each wait half as long again) up to
/// `retries` times. `bmc` names the BMC in errors.
pub async fn ping(bmc: &str, addr: SocketAddr, timeout: Duration, retries: u32) -> Result<Pong> {
    let unreachable = |e: std::io::Error| BmcError::Unreachable {
        bmc: bmc.to_string(),
        detail: match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("nothing listens on UDP {addr} (port unreachable) during the presence ping")
            }
            _ => format!("presence ping: {e}"),
        },
    };
    let local: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        ([0, 0, 0, 0], 0).into()
    };
    let sock = UdpSocket::bind(local).await.map_err(unreachable)?;
    sock.connect(addr).await.map_err(unreachable)?;
    let tag = rand::random::<u8>() & 0xfe;
    let mut buf = [0u8; 256];
    let mut waited = Duration::ZERO;
    for attempt in 0..=retries {
        let wait = timeout + timeout * attempt / 2;
        waited += wait;
        let sent = Instant::now();
        sock.send(&encode_ping(tag)).await.map_err(unreachable)?;
        let deadline = sent + wait;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(unreachable(e)),
                Ok(Ok(n)) => n,
            };
            if let Some((ipmi, rmcp_security)) = decode_pong(&buf[..n], tag) {
                return Ok(Pong {
                    ipmi,
                    rmcp_security,
                    rtt: sent.elapsed(),
                });
            }
        }
    }
    Err(BmcError::Timeout {
        bmc: bmc.to_string(),
        what: "an RMCP presence pong".into(),
        after: waited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_bytes_and_pong_parsing_follow_asf() {
        assert_eq!(
            encode_ping(0x21),
            [6, 0, 0xff, 6, 0, 0, 0x11, 0xbe, 0x80, 0x21, 0, 0]
        );
        // ipmi_sim's answer, byte for byte.
        let pong = [
            0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, 0x21, 0x00, 0x10, 0x00, 0x00,
            0x11, 0xbe, 0x00, 0x00, 0x00, 0x00, 0x81, 0x00, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(decode_pong(&pong, 0x21), Some((true, false)));
        // Another tag, a ping, another class, truncated, or garbage: not a pong.
        assert_eq!(decode_pong(&pong, 0x22), None);
        let mut p = pong;
        p[8] = PRESENCE_PING;
        assert_eq!(decode_pong(&p, 0x21), None);
        let mut p = pong;
        p[3] = 0x07;
        assert_eq!(decode_pong(&p, 0x21), None);
        assert_eq!(decode_pong(&pong[..20], 0x21), None);
        assert_eq!(decode_pong(&[], 0x21), None);
        let mut p = pong;
        p[20] = 0x01;
        p[21] = 0x20;
        assert_eq!(decode_pong(&p, 0x21), Some((false, true)));
    }
}
