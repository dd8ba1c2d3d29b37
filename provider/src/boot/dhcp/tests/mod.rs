//! DHCP, one file per topic: the pure decision for each message type ([`discover`], [`request`], [`relay`],
//! [`proxy`]), robustness against hostile datagrams ([`hostile`]), the server on loopback sockets ([`server`])
//! and real clients ([`peers`]). The builders and readers they share are here.

mod discover;
mod hostile;
mod peers;
mod proxy;
mod relay;
mod request;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use proptest::prelude::*;

use super::reply::{self, Destination, Outcome, Port, Responder, Silence};
use super::{BootFiles, DhcpConfig, DhcpMode, DhcpServer};
use crate::boot::testdir::{MAC, TestDirectory};
use crate::boot::{MacAddr, Phase};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);

fn responder(mode: DhcpMode) -> Responder {
    Responder {
        server_ip: SERVER,
        next_server: SERVER,
        mode,
        boot: BootFiles {
            http_boot_url: Some("http://10.99.0.1:8080/ipxe/ipxe.efi".into()),
            ..BootFiles::default()
        },
    }
}

fn request(mac: MacAddr, t: MessageType) -> Message {
    let mut m = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    m.set_xid(0xdead_beef);
    m.opts_mut().insert(DhcpOption::MessageType(t));
    m
}

fn pxe(mut m: Message, arch: u16) -> Message {
    let o = m.opts_mut();
    o.insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
    o.insert(DhcpOption::ClassIdentifier(
        format!("PXEClient:Arch:{arch:05}:UNDI:003000").into_bytes(),
    ));
    m
}

/// Through the wire format, as the server sees it.
fn roundtrip(m: &Message) -> Message {
    reply::parse(&m.to_vec().unwrap()).unwrap()
}

fn answer(r: &Responder, d: &TestDirectory, m: &Message, port: Port) -> Outcome {
    reply::respond(r, d, &roundtrip(m), port)
}

fn reply_of(o: Outcome) -> reply::Reply {
    match o {
        Outcome::Reply(r) => {
            // Every reply must survive encoding and be at least a minimal BOOTP packet.
            let bytes = reply::encode(&r.message).unwrap();
            assert!(bytes.len() >= 300, "reply is {} bytes", bytes.len());
            let back = Message::from_bytes(&bytes).unwrap();
            assert_eq!(back.opcode(), Opcode::BootReply);
            *r
        }
        Outcome::Silent(s) => panic!("expected a reply, got silence: {s:?}"),
    }
}

/// The fixed `file` field as text, without its NUL padding.
fn fname(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

fn sname(m: &Message) -> String {
    String::from_utf8_lossy(m.sname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

fn bytes_opt(m: &Message, code: OptionCode) -> Option<String> {
    match opt(m, code)? {
        DhcpOption::ClassIdentifier(b)
        | DhcpOption::BootfileName(b)
        | DhcpOption::TFTPServerName(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => panic!("unexpected option {other:?}"),
    }
}

/// Polls `f` until it holds or the deadline passes.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
