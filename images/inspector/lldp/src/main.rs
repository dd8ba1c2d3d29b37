//! `lldp-listen SECONDS IFACE…`: the inspection image's LLDP listener (busybox has none). It listens for
//! LLDPDUs (IEEE 802.1AB, ethertype 0x88cc) on the given interfaces until each has sent one or SECONDS have
//! passed, and prints one JSON object per interface that heard a neighbour:
//! `{"interface":"eth0","switch":"leaf-3","port":"Ethernet12"}` — the switch is the neighbour's system name
//! (else its chassis ID), the port its port ID (else its port description). Text is reduced to printable
//! ASCII, so the collector can paste the lines into its JSON as they are. It only receives: nothing is sent.
// A packet socket and its multicast membership have no safe wrapper in the crates we use (libc calls only,
// each with its SAFETY note).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const ETH_P_LLDP: u16 = 0x88cc;
/// The nearest-bridge group address LLDP is sent to.
const LLDP_MULTICAST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];

/// What one LLDPDU says about the neighbour.
#[derive(Debug, Default, PartialEq, Eq)]
struct Neighbour {
    chassis: Option<String>,
    port_id: Option<String>,
    port_description: Option<String>,
    system_name: Option<String>,
}

/// Printable ASCII only (control characters, quotes and backslashes dropped), trimmed; `None` when empty.
fn text(bytes: &[u8]) -> Option<String> {
    let s: String = bytes
        .iter()
        .map(|&b| b as char)
        .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
        .collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn mac(bytes: &[u8]) -> Option<String> {
    (bytes.len() == 6).then(|| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

/// An ID TLV's value: subtype 3 (chassis: 4) is a MAC address, the others text.
fn id(value: &[u8], mac_subtype: u8) -> Option<String> {
    let (&subtype, rest) = value.split_first()?;
    if subtype == mac_subtype {
        mac(rest)
    } else {
        text(rest)
    }
}

/// Parses an Ethernet frame carrying an LLDPDU; `None` for anything else. Never panics on short input.
fn parse(frame: &[u8]) -> Option<Neighbour> {
    if frame.len() < 14 || frame[12..14] != ETH_P_LLDP.to_be_bytes() {
        return None;
    }
    let mut n = Neighbour::default();
    let mut ttl = None;
    let mut rest = &frame[14..];
    while rest.len() >= 2 {
        let header = u16::from_be_bytes([rest[0], rest[1]]);
        let (kind, len) = (header >> 9, usize::from(header & 0x1ff));
        let value = rest.get(2..2 + len)?;
        match kind {
            0 => break,
            1 => n.chassis = id(value, 4),
            2 => n.port_id = id(value, 3),
            3 => ttl = value.get(..2).map(|t| u16::from_be_bytes([t[0], t[1]])),
            4 => n.port_description = text(value),
            5 => n.system_name = text(value),
            _ => {}
        }
        rest = &rest[2 + len..];
    }
    // TTL 0 is a shutdown LLDPDU: the neighbour is going away (or renaming itself).
    (ttl != Some(0) && (n.chassis.is_some() || n.system_name.is_some())).then_some(n)
}

fn interface_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(seconds) = args.next().and_then(|s| s.parse::<u64>().ok()) else {
        eprintln!("usage: lldp-listen SECONDS IFACE…");
        return ExitCode::from(2);
    };
    let ifaces: BTreeMap<u32, String> = args
        .filter_map(|name| interface_index(&name).map(|i| (i, name)))
        .collect();
    if ifaces.is_empty() || seconds == 0 {
        return ExitCode::SUCCESS;
    }
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_LLDP.to_be()),
        )
    };
    if fd < 0 {
        eprintln!(
            "lldp-listen: packet socket: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    for &index in ifaces.keys() {
        // NICs filter multicast they were not told about: join LLDP's group address on each.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&LLDP_MULTICAST);
        // SAFETY: `mreq` is a valid packet_mreq of the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut heard: BTreeMap<u32, Neighbour> = BTreeMap::new();
    let mut buf = [0u8; 9216];
    while heard.len() < ifaces.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        let (Ok(n), Ok(index)) = (usize::try_from(n), u32::try_from(from.sll_ifindex)) else {
            continue;
        };
        if !ifaces.contains_key(&index) || from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        if let Some(neighbour) = buf.get(..n).and_then(parse) {
            heard.entry(index).or_insert(neighbour);
        }
    }
    for (index, n) in &heard {
        let switch = n.system_name.as_ref().or(n.chassis.as_ref());
        let port = n.port_id.as_ref().or(n.port_description.as_ref());
        let field = |v: Option<&String>| v.map_or("null".to_string(), |s| format!("\"{s}\""));
        println!(
            "{{\"interface\":\"{}\",\"switch\":{},\"port\":{}}}",
            ifaces[index],
            field(switch),
            field(port)
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((kind << 9) | value.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(value);
        v
    }

    fn frame(tlvs: &[Vec<u8>]) -> Vec<u8> {
        let mut f = LLDP_MULTICAST.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ETH_P_LLDP.to_be_bytes());
        for t in tlvs {
            f.extend_from_slice(t);
        }
        f
    }

    #[test]
    fn an_lldpdu_names_the_switch_and_port() {
        let f = frame(&[
            tlv(1, &[4, 0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
            tlv(2, b"\x05Ethernet12"),
            tlv(3, &[0, 120]),
            tlv(4, b"to node-7"),
            tlv(5, b"leaf-3\"\x1b"),
            tlv(0, &[]),
        ]);
        assert_eq!(
            parse(&f),
            Some(Neighbour {
                chassis: Some("52:54:00:ab:cd:ef".into()),
                port_id: Some("Ethernet12".into()),
                port_description: Some("to node-7".into()),
                system_name: Some("leaf-3".into()),
            })
        );
        // A shutdown LLDPDU (TTL 0) names no neighbour.
        let f = frame(&[tlv(1, b"\x07sw"), tlv(2, b"\x05p1"), tlv(3, &[0, 0])]);
        assert_eq!(parse(&f), None);
        // A MAC port ID (subtype 3).
        let f = frame(&[tlv(1, b"\x07sw"), tlv(2, &[3, 1, 2, 3, 4, 5, 6])]);
        assert_eq!(
            parse(&f).unwrap().port_id.as_deref(),
            Some("01:02:03:04:05:06")
        );
    }

    #[test]
    fn short_or_foreign_frames_are_ignored_without_panicking() {
        let good = frame(&[tlv(1, b"\x07sw"), tlv(2, b"\x05p1")]);
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        let mut ipv4 = good.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse(&ipv4), None);
        // A TLV longer than the frame.
        let mut bad = frame(&[]);
        bad.extend_from_slice(&[0x02, 0xff, 1]);
        assert_eq!(parse(&bad), None);
    }
}
