//! TFTP wire format (RFC 1350) with options (RFC 2347/2348/2349/7440). Parsing never panics.

use std::time::Duration;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// Requests longer than this are dropped: a request is a name and a handful of options.
pub const MAX_REQUEST: usize = 2048;

/// TFTP error codes (RFC 1350 §5, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    OptionNegotiation = 8,
}

/// A read request with its options (names lower-cased, values as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub filename: String,
    pub mode: String,
    pub options: Vec<(String, String)>,
}

/// What arrived on the server port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Read(ReadRequest),
    /// A write request: this server is read-only.
    Write,
    /// An ERROR sent to the server port: never answered (RFC 1350 forbids replying to errors).
    Error,
    /// DATA, ACK, OACK or an unknown opcode on the server port.
    Unexpected(u16),
}

/// Parses a datagram on the server port.
pub fn parse_request(buf: &[u8]) -> Result<Request, &'static str> {
    if buf.len() > MAX_REQUEST {
        return Err("oversized request");
    }
    let Some((op, body)) = split_opcode(buf) else {
        return Err("shorter than an opcode");
    };
    match op {
        RRQ => parse_rrq(body).map(Request::Read),
        WRQ => Ok(Request::Write),
        ERROR => Ok(Request::Error),
        other => Ok(Request::Unexpected(other)),
    }
}

fn split_opcode(buf: &[u8]) -> Option<(u16, &[u8])> {
    let (op, rest) = buf.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*op), rest))
}

fn parse_rrq(body: &[u8]) -> Result<ReadRequest, &'static str> {
    // NUL-terminated strings: filename, mode, then name/value pairs. The last string must be terminated.
    let Some(body) = body.strip_suffix(&[0]) else {
        return Err("request not NUL-terminated");
    };
    let mut fields = body.split(|&b| b == 0);
    let filename = fields.next().ok_or("no filename")?;
    let mode = fields.next().ok_or("no transfer mode")?;
    if filename.is_empty() {
        return Err("empty filename");
    }
    let filename = std::str::from_utf8(filename).map_err(|_| "filename is not UTF-8")?;
    let mode = std::str::from_utf8(mode)
        .map_err(|_| "mode is not UTF-8")?
        .to_ascii_lowercase();
    let mut options = Vec::new();
    while let Some(name) = fields.next() {
        let value = fields.next().ok_or("option without a value")?;
        let name = std::str::from_utf8(name).map_err(|_| "option name is not UTF-8")?;
        let value = std::str::from_utf8(value).map_err(|_| "option value is not UTF-8")?;
        if options.len() >= 16 {
            return Err("too many options");
        }
        options.push((name.to_ascii_lowercase(), value.to_string()));
    }
    Ok(ReadRequest {
        filename: filename.to_string(),
        mode,
        options,
    })
}

/// What a client sends during a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Ack(u16),
    Error(u16, String),
    Other,
}

pub fn parse_incoming(buf: &[u8]) -> Incoming {
    match split_opcode(buf) {
        Some((ACK, rest)) if rest.len() >= 2 => {
            Incoming::Ack(u16::from_be_bytes([rest[0], rest[1]]))
        }
        Some((ERROR, rest)) if rest.len() >= 2 => {
            let code = u16::from_be_bytes([rest[0], rest[1]]);
            let msg = rest[2..].split(|&b| b == 0).next().unwrap_or_default();
            Incoming::Error(code, String::from_utf8_lossy(msg).into_owned())
        }
        _ => Incoming::Other,
    }
}

pub fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + message.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&(code as u16).to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.push(0);
    p
}

pub fn oack_packet(options: &[(String, String)]) -> Vec<u8> {
    let mut p = OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        p.extend_from_slice(name.as_bytes());
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        p.push(0);
    }
    p
}

/// The server's limits for option negotiation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_blksize: u16,
    pub max_windowsize: u16,
    pub default_timeout: Duration,
}

/// The agreed transfer parameters and the OACK that announces them (empty: no OACK, plain RFC 1350).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub windowsize: u16,
    pub timeout: Duration,
    pub oack: Vec<(String, String)>,
}

/// RFC 2347: options the server does not know, or values it cannot accept, are left out of the OACK (the
/// client then uses the default); acceptable ones are clamped to the server's limits.
pub fn negotiate(options: &[(String, String)], limits: &Limits, file_size: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: 512,
        windowsize: 1,
        timeout: limits.default_timeout,
        oack: Vec::new(),
    };
    for (name, value) in options {
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        match name.as_str() {
            "blksize" if (8..=65464).contains(&v) => {
                let b = v.min(u64::from(limits.max_blksize.max(8)));
                n.blksize = b as usize;
                n.oack.push((name.clone(), b.to_string()));
            }
            "windowsize" if (1..=65535).contains(&v) => {
                let w = v.min(u64::from(limits.max_windowsize.max(1)));
                n.windowsize = w as u16;
                n.oack.push((name.clone(), w.to_string()));
            }
            "timeout" if (1..=255).contains(&v) => {
                n.timeout = Duration::from_secs(v);
                n.oack.push((name.clone(), v.to_string()));
            }
            // RFC 2349: in a read request tsize is 0 and the server answers with the size.
            "tsize" => n.oack.push((name.clone(), file_size.to_string())),
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn parses_rrq_with_options() {
        let r = parse_request(&rrq(&[
            "undionly.kpxe",
            "OCTET",
            "BLKSIZE",
            "1468",
            "tsize",
            "0",
        ]))
        .unwrap();
        assert_eq!(
            r,
            Request::Read(ReadRequest {
                filename: "undionly.kpxe".into(),
                mode: "octet".into(),
                options: vec![
                    ("blksize".into(), "1468".into()),
                    ("tsize".into(), "0".into())
                ],
            })
        );
    }

    #[test]
    fn rejects_broken_rrqs() {
        assert!(parse_request(&[0]).is_err());
        assert!(parse_request(&rrq(&["", "octet"])).is_err());
        assert!(parse_request(&rrq(&["f", "octet", "blksize"])).is_err());
        let mut unterminated = rrq(&["f", "octet"]);
        unterminated.pop();
        assert!(parse_request(&unterminated).is_err());
        assert!(parse_request(&[0, 1, 0xff, 0xfe, 0, b'o', 0]).is_err());
        assert!(parse_request(&vec![0u8; MAX_REQUEST + 1]).is_err());
    }

    #[test]
    fn negotiation_clamps_and_skips() {
        let limits = Limits {
            max_blksize: 1468,
            max_windowsize: 32,
            default_timeout: Duration::from_secs(1),
        };
        let opts = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let n = negotiate(
            &opts(&[
                ("blksize", "65464"),
                ("windowsize", "64"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("x", "1"),
            ]),
            &limits,
            12345,
        );
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.windowsize, 32);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            n.oack,
            opts(&[
                ("blksize", "1468"),
                ("windowsize", "32"),
                ("tsize", "12345"),
                ("timeout", "3")
            ])
        );
        // Out-of-range values are ignored, not echoed.
        let n = negotiate(
            &opts(&[("blksize", "7"), ("timeout", "0"), ("windowsize", "0")]),
            &limits,
            1,
        );
        assert_eq!((n.blksize, n.windowsize), (512, 1));
        assert!(n.oack.is_empty());
    }
}
