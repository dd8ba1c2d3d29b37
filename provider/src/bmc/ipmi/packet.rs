//! Wire formats: the RMCP header, IPMI v1.5 and v2.0 (RMCP+) session wrappers, and IPMI LAN messages.
//! Pure functions over bytes; every decoder returns an error on malformed input instead of panicking.

use super::crypto::{SessionKeys, codes_match};

/// RMCP header: version 6, reserved, sequence 0xff (no RMCP ack), class IPMI.
const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xff, 0x07];
/// Auth type / format byte announcing an RMCP+ (IPMI v2.0) session header.
const FORMAT_RMCP_PLUS: u8 = 0x06;

/// RMCP+ payload types (IPMI v2.0 table 13-16).
pub mod payload {
    pub const IPMI: u8 = 0x00;
    pub const SOL: u8 = 0x01;
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub const RAKP1: u8 = 0x12;
    pub const RAKP2: u8 = 0x13;
    pub const RAKP3: u8 = 0x14;
    pub const RAKP4: u8 = 0x15;
}

const ENCRYPTED: u8 = 0x80;
const AUTHENTICATED: u8 = 0x40;

/// Why a datagram was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("datagram too short ({0} bytes)")]
    Short(usize),
    #[error("not an RMCP/IPMI datagram")]
    NotIpmi,
    #[error("length field says {said} bytes, datagram has {has}")]
    Length { said: usize, has: usize },
    #[error("integrity check failed (AuthCode does not match)")]
    Integrity,
    #[error("an established session sent an unauthenticated or unencrypted payload")]
    Unprotected,
    #[error("payload could not be decrypted")]
    Decrypt,
    #[error("IPMI message checksum mismatch")]
    Checksum,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Payload type without the encryption/authentication bits (`payload::*`); `IPMI` for v1.5 packets.
    pub payload_type: u8,
    pub session_id: u32,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// An IPMI v1.5 packet outside any session (used for Get Channel Authentication Capabilities).
pub fn encode_v15(msg: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(14 + msg.len());
    p.extend_from_slice(&RMCP_HEADER);
    p.push(0x00); // auth type none
    p.extend_from_slice(&0u32.to_le_bytes()); // session sequence
    p.extend_from_slice(&0u32.to_le_bytes()); // session id
    p.push(msg.len() as u8);
    p.extend_from_slice(msg);
    p
}

/// An RMCP+ packet. With `keys`, the payload is encrypted and the packet authenticated.
pub fn encode_v20(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<&SessionKeys>,
    iv: [u8; 16],
) -> Vec<u8> {
    let body = match keys {
        Some(k) => k.encrypt(iv, payload),
        None => payload.to_vec(),
    };
    let ptype = payload_type
        | if keys.is_some() {
            ENCRYPTED | AUTHENTICATED
        } else {
            0
        };
    let mut p = Vec::with_capacity(16 + body.len() + 24);
    p.extend_from_slice(&RMCP_HEADER);
    p.push(FORMAT_RMCP_PLUS);
    p.push(ptype);
    p.extend_from_slice(&session_id.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&(body.len() as u16).to_le_bytes());
    p.extend_from_slice(&body);
    if let Some(k) = keys {
        // Pad so that the integrity data (format byte .. next header) is a multiple of 4 bytes.
        let covered = p.len() - RMCP_HEADER.len() + 2;
        let pad = (4 - covered % 4) % 4;
        p.extend(std::iter::repeat_n(0xffu8, pad));
        p.push(pad as u8);
        p.push(0x07); // next header
        let code = k.auth_code(&p[RMCP_HEADER.len()..]);
        p.extend_from_slice(&code);
    }
    p
}

/// Decodes a datagram. With `keys` (an established session), anything not authenticated and encrypted
/// is rejected, and the AuthCode is verified before the payload is decrypted.
pub fn decode(d: &[u8], keys: Option<&SessionKeys>) -> Result<Datagram, PacketError> {
    if d.len() < 5 {
        return Err(PacketError::Short(d.len()));
    }
    if d[0] != 0x06 || d[3] & 0x1f != 0x07 {
        return Err(PacketError::NotIpmi);
    }
    let s = &d[4..];
    if s[0] != FORMAT_RMCP_PLUS {
        // IPMI v1.5: auth type, seq(4), session id(4), [auth code(16) unless type none], length(1), message.
        if keys.is_some() {
            return Err(PacketError::Unprotected);
        }
        let mut off = 9;
        if s[0] != 0x00 {
            off += 16;
        }
        if s.len() < off + 1 {
            return Err(PacketError::Short(d.len()));
        }
        let len = s[off] as usize;
        let msg = s.get(off + 1..off + 1 + len).ok_or(PacketError::Length {
            said: len,
            has: s.len() - off - 1,
        })?;
        return Ok(Datagram {
            payload_type: payload::IPMI,
            seq: u32::from_le_bytes([s[1], s[2], s[3], s[4]]),
            session_id: u32::from_le_bytes([s[5], s[6], s[7], s[8]]),
            payload: msg.to_vec(),
        });
    }
    if s.len() < 12 {
        return Err(PacketError::Short(d.len()));
    }
    let ptype = s[1];
    let session_id = u32::from_le_bytes([s[2], s[3], s[4], s[5]]);
    let seq = u32::from_le_bytes([s[6], s[7], s[8], s[9]]);
    let len = u16::from_le_bytes([s[10], s[11]]) as usize;
    let body = s.get(12..12 + len).ok_or(PacketError::Length {
        said: len,
        has: s.len() - 12,
    })?;
    let payload = match keys {
        None => {
            if ptype & (ENCRYPTED | AUTHENTICATED) != 0 {
                return Err(PacketError::Unprotected);
            }
            body.to_vec()
        }
        Some(k) => {
            if ptype & (ENCRYPTED | AUTHENTICATED) != ENCRYPTED | AUTHENTICATED {
                return Err(PacketError::Unprotected);
            }
            let icv = k.suite.icv_len();
            if s.len() < 12 + len + 2 + icv {
                return Err(PacketError::Short(d.len()));
            }
            let covered = &s[..s.len() - icv];
            let pad = covered[covered.len() - 2] as usize;
            if covered.len() != 12 + len + pad + 2 || covered[covered.len() - 1] != 0x07 {
                return Err(PacketError::Length {
                    said: len,
                    has: s.len(),
                });
            }
            if !codes_match(&k.auth_code(covered), &s[s.len() - icv..]) {
                return Err(PacketError::Integrity);
            }
            k.decrypt(body).ok_or(PacketError::Decrypt)?
        }
    };
    Ok(Datagram {
        payload_type: ptype & 0x3f,
        session_id,
        seq,
        payload,
    })
}

/// Our software ID as requester, and the BMC's slave address.
const REQUESTER: u8 = 0x81;
const BMC_ADDR: u8 = 0x20;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// An IPMI LAN request message.
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![BMC_ADDR, netfn << 2];
    m.push(checksum(&m));
    let start = m.len();
    m.extend_from_slice(&[REQUESTER, (rq_seq & 0x3f) << 2, cmd]);
    m.extend_from_slice(data);
    let c = checksum(&m[start..]);
    m.push(c);
    m
}

/// A decoded IPMI LAN response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub netfn: u8,
    pub rq_seq: u8,
    pub cmd: u8,
    pub completion: u8,
    pub data: Vec<u8>,
}

pub fn decode_response(m: &[u8]) -> Result<Response, PacketError> {
    if m.len() < 8 {
        return Err(PacketError::Short(m.len()));
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(PacketError::Checksum);
    }
    Ok(Response {
        netfn: m[1] >> 2,
        rq_seq: m[4] >> 2,
        cmd: m[5],
        completion: m[6],
        data: m[7..m.len() - 1].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::crypto::Suite;
    use super::*;

    fn keys(suite: Suite) -> SessionKeys {
        SessionKeys::derive(suite, &[7u8; 20])
    }

    #[test]
    fn request_bytes_match_the_spec_layout() {
        // Get Chassis Status: netfn 0x00 cmd 0x01, rqSeq 5.
        let m = encode_request(0x00, 0x01, 5, &[]);
        assert_eq!(m, vec![0x20, 0x00, 0xe0, 0x81, 0x14, 0x01, 0x6a]);
        // Checksums make each covered range sum to zero.
        assert_eq!(m[..3].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(m[3..].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let v15 = encode_v15(&m);
        assert_eq!(&v15[..5], &[0x06, 0x00, 0xff, 0x07, 0x00]);
        assert_eq!(v15[13] as usize, m.len());
    }

    #[test]
    fn rmcp_plus_round_trip_with_integrity_and_confidentiality() {
        for suite in [Suite::S3, Suite::S17] {
            let k = keys(suite);
            for len in 0..40 {
                let payload: Vec<u8> = (0..len as u8).collect();
                let p = encode_v20(payload::IPMI, 0x11223344, 9, &payload, Some(&k), [3; 16]);
                // Integrity data is DWORD aligned.
                assert_eq!((p.len() - 4 - suite.icv_len()) % 4, 0);
                let d = decode(&p, Some(&k)).unwrap();
                assert_eq!(
                    (d.payload_type, d.session_id, d.seq),
                    (payload::IPMI, 0x11223344, 9)
                );
                assert_eq!(d.payload, payload);
            }
        }
    }

    #[test]
    fn tampering_and_garbage_are_rejected_without_panicking() {
        let k = keys(Suite::S3);
        let p = encode_v20(payload::IPMI, 1, 2, b"hello", Some(&k), [0; 16]);
        for i in 4..p.len() {
            let mut t = p.clone();
            t[i] ^= 0x01;
            assert!(
                decode(&t, Some(&k)).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        // Unauthenticated packet inside a session.
        let plain = encode_v20(payload::IPMI, 1, 2, b"hello", None, [0; 16]);
        assert_eq!(decode(&plain, Some(&k)), Err(PacketError::Unprotected));
        // Truncations and random bytes.
        for n in 0..p.len() {
            let _ = decode(&p[..n], Some(&k));
            let _ = decode(&p[..n], None);
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 80) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            if buf.len() > 4 {
                buf[..4].copy_from_slice(&RMCP_HEADER);
            }
            let _ = decode(&buf, Some(&k));
            let _ = decode(&buf, None);
            let _ = decode_response(&buf);
        }
    }

    #[test]
    fn response_checksums_are_verified() {
        // A response to Get Chassis Status: power on.
        let mut m = vec![0x81, 0x04];
        m.push(checksum(&m));
        m.extend_from_slice(&[0x20, 5 << 2, 0x01, 0x00, 0x01, 0x00, 0x00]);
        let c = checksum(&m[3..]);
        m.push(c);
        let r = decode_response(&m).unwrap();
        assert_eq!(
            (r.netfn, r.rq_seq, r.cmd, r.completion, r.data.as_slice()),
            (1, 5, 1, 0, &[1u8, 0, 0][..])
        );
        m[7] ^= 1;
        assert_eq!(decode_response(&m), Err(PacketError::Checksum));
    }
}
