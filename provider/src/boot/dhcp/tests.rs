//! DHCP: the pure decision (built requests, asserted reply fields and options), robustness against hostile
//! datagrams (proptest), and the server on real loopback sockets.

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

#[test]
fn bios_pxe_discover_gets_the_reservation_and_undionly() {
    let d = TestDirectory::one_host();
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &pxe(request(MAC, MessageType::Discover), 0),
        Port::Dhcp,
    ));
    let m = &r.message;
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.xid(), 0xdead_beef);
    assert_eq!(m.chaddr(), &MAC.0);
    assert_eq!(m.yiaddr(), HOST_IP);
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(fname(m), "undionly.kpxe");
    assert_eq!(sname(m), "10.99.0.1");
    assert_eq!(
        opt(m, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(m, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        opt(m, OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 99, 0, 254)]))
    );
    assert_eq!(
        opt(m, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![
            Ipv4Addr::new(10, 99, 0, 53),
            Ipv4Addr::new(10, 99, 0, 54)
        ]))
    );
    assert_eq!(
        opt(m, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("cluster.test".into()))
    );
    assert_eq!(
        opt(m, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node1".into()))
    );
    assert_eq!(
        opt(m, OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(9000))
    );
    assert_eq!(
        opt(m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        opt(m, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(1800))
    );
    assert_eq!(
        bytes_opt(m, OptionCode::TFTPServerName).unwrap(),
        "10.99.0.1"
    );
    assert_eq!(
        bytes_opt(m, OptionCode::BootfileName).unwrap(),
        "undionly.kpxe"
    );
    // No PXEClient in an address-carrying offer: EDK2 would take it for a BINL offer (see reply.rs).
    assert!(opt(m, OptionCode::ClassIdentifier).is_none());
    assert_eq!(r.destination, Destination::Broadcast);
    assert_eq!(r.phase, Some(Phase::DhcpOffer));
}

#[test]
fn uefi_architectures_get_the_uefi_binary() {
    let d = TestDirectory::one_host();
    for arch in [6, 7, 9] {
        let r = reply_of(answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &pxe(request(MAC, MessageType::Discover), arch),
            Port::Dhcp,
        ));
        assert_eq!(
            bytes_opt(&r.message, OptionCode::BootfileName).unwrap(),
            "snponly.efi",
            "arch {arch}"
        );
    }
    let mut resp = responder(DhcpMode::Authoritative);
    resp.boot.uefi = "ipxe.efi".into();
    let r = reply_of(answer(
        &resp,
        &d,
        &pxe(request(MAC, MessageType::Discover), 7),
        Port::Dhcp,
    ));
    assert_eq!(fname(&r.message), "ipxe.efi");
    // An architecture we have no binary for gets an address but no boot file.
    let r = reply_of(answer(
        &resp,
        &d,
        &pxe(request(MAC, MessageType::Discover), 11),
        Port::Dhcp,
    ));
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert!(opt(&r.message, OptionCode::BootfileName).is_none());
}

#[test]
fn uefi_http_boot_gets_a_url_and_httpclient() {
    let d = TestDirectory::one_host();
    let mut m = request(MAC, MessageType::Discover);
    m.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture(16)));
    m.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"HTTPClient:Arch:00016:UNDI:003001".to_vec(),
    ));
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &m,
        Port::Dhcp,
    ));
    assert_eq!(
        bytes_opt(&r.message, OptionCode::BootfileName).unwrap(),
        "http://10.99.0.1:8080/ipxe/ipxe.efi"
    );
    assert_eq!(
        bytes_opt(&r.message, OptionCode::ClassIdentifier).unwrap(),
        "HTTPClient"
    );
}

#[test]
fn ipxe_user_class_gets_the_per_host_script_url() {
    let mut d = TestDirectory::one_host();
    let long = format!("http://10.99.0.1:8080/boot/{}/script.ipxe", "t".repeat(120));
    d.scripts.insert(MAC, long.clone());
    for class in [b"iPXE".to_vec(), b"\x04iPXE".to_vec()] {
        let mut m = pxe(request(MAC, MessageType::Discover), 7);
        m.opts_mut().insert(DhcpOption::UserClass(class));
        let r = reply_of(answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &m,
            Port::Dhcp,
        ));
        assert_eq!(
            bytes_opt(&r.message, OptionCode::BootfileName).unwrap(),
            long
        );
        // Too long for the 128-byte file field: option 67 only.
        assert!(r.message.fname().is_none_or(|f| f.iter().all(|&b| b == 0)));
    }
}

#[test]
fn os_dhcp_clients_get_an_address_without_boot_options() {
    let d = TestDirectory::one_host();
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &request(MAC, MessageType::Discover),
        Port::Dhcp,
    ));
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert_eq!(r.message.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&r.message, OptionCode::BootfileName).is_none());
    assert!(opt(&r.message, OptionCode::ClassIdentifier).is_none());
}

#[test]
fn unknown_macs_get_nothing() {
    let d = TestDirectory::one_host();
    let other = MacAddr([2, 0, 0, 0, 0, 1]);
    for t in [
        MessageType::Discover,
        MessageType::Request,
        MessageType::Inform,
    ] {
        match answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &pxe(request(other, t), 0),
            Port::Dhcp,
        ) {
            Outcome::Silent(Silence::UnknownMac(m)) => assert_eq!(m, other),
            o => panic!("{t:?}: expected UnknownMac, got {o:?}"),
        }
    }
}

#[test]
fn request_selecting_us_is_acked_and_others_are_left_alone() {
    let d = TestDirectory::one_host();
    let resp = responder(DhcpMode::Authoritative);
    let mut m = pxe(request(MAC, MessageType::Request), 7);
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(HOST_IP));
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert_eq!(r.phase, Some(Phase::DhcpAck));
    assert_eq!(r.destination, Destination::Broadcast);
    assert_eq!(fname(&r.message), "snponly.efi");

    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 99, 0, 2)));
    assert!(matches!(
        answer(&resp, &d, &m, Port::Dhcp),
        Outcome::Silent(Silence::NotForUs(_))
    ));

    // INIT-REBOOT with an address that is not this host's reservation: NAK, broadcast.
    let mut m = request(MAC, MessageType::Request);
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 99, 0, 77)));
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.destination, Destination::Broadcast);
    assert_eq!(r.phase, None);
}

#[test]
fn renewing_clients_get_unicast_and_the_broadcast_flag_is_kept() {
    let d = TestDirectory::one_host();
    let resp = responder(DhcpMode::Authoritative);
    let mut m = request(MAC, MessageType::Request);
    m.set_ciaddr(HOST_IP);
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.message.ciaddr(), HOST_IP);
    assert_eq!(r.destination, Destination::Client(HOST_IP));

    let mut m = request(MAC, MessageType::Discover);
    m.set_flags(Flags::default().set_broadcast());
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert!(r.message.flags().broadcast());
    assert_eq!(r.destination, Destination::Broadcast);
}

#[test]
fn inform_is_acked_without_an_address_or_lease_time() {
    let d = TestDirectory::one_host();
    let mut m = request(MAC, MessageType::Inform);
    m.set_ciaddr(HOST_IP);
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &m,
        Port::Dhcp,
    ));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&r.message, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&r.message, OptionCode::SubnetMask).is_some());
    assert_eq!(r.destination, Destination::Client(HOST_IP));
    assert_eq!(r.phase, None);
}

#[test]
fn relayed_requests_look_up_by_relay_and_answer_the_relay() {
    let d = TestDirectory::one_host();
    let relay = Ipv4Addr::new(10, 99, 0, 254);
    let mut m = pxe(request(MAC, MessageType::Discover), 0);
    m.set_giaddr(relay);
    m.set_hops(1);
    let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
    info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(
        b"rack7-port3".to_vec(),
    ));
    m.opts_mut()
        .insert(DhcpOption::RelayAgentInformation(info.clone()));
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &m,
        Port::Dhcp,
    ));
    assert_eq!(r.destination, Destination::Relay(relay));
    assert_eq!(r.message.giaddr(), relay);
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert_eq!(
        opt(&r.message, OptionCode::RelayAgentInformation),
        Some(&DhcpOption::RelayAgentInformation(info))
    );
    assert_eq!(d.lookups.lock().unwrap().last(), Some(&(MAC, Some(relay))));

    // A relay on another subnet: the host has no reservation there.
    m.set_giaddr(Ipv4Addr::new(10, 50, 0, 1));
    assert!(matches!(
        answer(&responder(DhcpMode::Authoritative), &d, &m, Port::Dhcp),
        Outcome::Silent(Silence::UnknownMac(_))
    ));
}

#[test]
fn decline_and_release_are_not_answered() {
    let d = TestDirectory::one_host();
    let mut m = request(MAC, MessageType::Decline);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(HOST_IP));
    assert_eq!(
        match answer(&responder(DhcpMode::Authoritative), &d, &m, Port::Dhcp) {
            Outcome::Silent(s) => s,
            o => panic!("{o:?}"),
        },
        Silence::Declined {
            mac: MAC,
            ip: Some(HOST_IP)
        }
    );
    assert!(matches!(
        answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &request(MAC, MessageType::Release),
            Port::Dhcp
        ),
        Outcome::Silent(Silence::Released(_))
    ));
}

#[test]
fn proxy_mode_offers_boot_options_only() {
    let d = TestDirectory::one_host();
    let resp = responder(DhcpMode::Proxy);
    let r = reply_of(answer(
        &resp,
        &d,
        &pxe(request(MAC, MessageType::Discover), 7),
        Port::Dhcp,
    ));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&r.message, OptionCode::SubnetMask).is_none());
    assert!(opt(&r.message, OptionCode::AddressLeaseTime).is_none());
    assert_eq!(
        bytes_opt(&r.message, OptionCode::ClassIdentifier).unwrap(),
        "PXEClient"
    );
    assert_eq!(fname(&r.message), "snponly.efi");
    assert_eq!(r.destination, Destination::Broadcast);

    // The boot-server request on 4011, from a client that already has its address from the other server.
    let mut m = pxe(request(MAC, MessageType::Request), 7);
    m.set_ciaddr(Ipv4Addr::new(192, 168, 1, 50));
    let r = reply_of(answer(&resp, &d, &m, Port::ProxyBoot));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.destination, Destination::Source);
    assert_eq!(r.phase, Some(Phase::DhcpAck));
    assert_eq!(
        bytes_opt(&r.message, OptionCode::BootfileName).unwrap(),
        "snponly.efi"
    );

    // The REQUEST on 67 is for the real DHCP server; OS clients are not ours at all.
    assert!(matches!(
        answer(&resp, &d, &m, Port::Dhcp),
        Outcome::Silent(Silence::NotForUs(_))
    ));
    assert!(matches!(
        answer(&resp, &d, &request(MAC, MessageType::Discover), Port::Dhcp),
        Outcome::Silent(Silence::NotForUs(_))
    ));
    let stranger = pxe(
        request(MacAddr([2, 0, 0, 0, 0, 9]), MessageType::Discover),
        7,
    );
    // (unknown MACs stay unanswered in proxy mode too)
    assert!(matches!(
        answer(&resp, &d, &stranger, Port::Dhcp),
        Outcome::Silent(Silence::UnknownMac(_))
    ));
}

#[test]
fn malformed_packets_are_refused() {
    let good = pxe(request(MAC, MessageType::Discover), 0)
        .to_vec()
        .unwrap();
    assert!(reply::parse(&good).is_ok());
    assert!(reply::parse(&good[..239]).is_err());
    assert!(reply::parse(&[]).is_err());
    let mut oversized = good.clone();
    oversized.resize(reply::MAX_PACKET + 1, 0);
    assert!(reply::parse(&oversized).is_err());
    let mut bad_magic = good.clone();
    bad_magic[236] = 0;
    assert!(reply::parse(&bad_magic).is_err());
    let mut long_hlen = good.clone();
    long_hlen[2] = 200; // would slice past chaddr in a trusting decoder
    assert!(reply::parse(&long_hlen).is_err());
    // BOOTP without a message type.
    let mut bootp = good[..240].to_vec();
    bootp.push(255);
    assert!(reply::parse(&bootp).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..1200), raw in any::<bool>()) {
        let d = TestDirectory::one_host();
        // Half fully random, half a valid header with random options (what reaches the option decoder).
        let bytes = if raw { tail } else {
            let mut b = request(MAC, MessageType::Discover).to_vec().unwrap()[..240].to_vec();
            b.extend_from_slice(&tail);
            b
        };
        if let Ok(m) = reply::parse(&bytes) {
            for mode in [DhcpMode::Authoritative, DhcpMode::Proxy] {
                if let Outcome::Reply(r) = reply::respond(&responder(mode), &d, &m, Port::Dhcp) {
                    reply::encode(&r.message).unwrap();
                }
            }
        }
    }

    #[test]
    fn mutated_requests_never_panic(
        cut in 0usize..400,
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..12),
        arch in 0u16..20,
    ) {
        let d = TestDirectory::one_host();
        let mut m = pxe(request(MAC, MessageType::Request), arch);
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(HOST_IP));
        let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
        info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(b"c1".to_vec()));
        info.insert(dhcproto::v4::relay::RelayInfo::LinkSelection(HOST_IP));
        m.opts_mut().insert(DhcpOption::RelayAgentInformation(info));
        let mut bytes = m.to_vec().unwrap();
        for (at, v) in flips {
            if let Some(b) = bytes.get_mut(at) {
                *b = v;
            }
        }
        bytes.truncate(cut.max(200));
        if let Ok(m) = reply::parse(&bytes) {
            for mode in [DhcpMode::Authoritative, DhcpMode::Proxy] {
                for port in [Port::Dhcp, Port::ProxyBoot] {
                    if let Outcome::Reply(r) = reply::respond(&responder(mode), &d, &m, port) {
                        reply::encode(&r.message).unwrap();
                    }
                }
            }
        }
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

/// The server on loopback sockets: a client socket stands in for port 68 and receives the "broadcast".
#[tokio::test]
async fn server_answers_on_loopback_counts_and_records() {
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = DhcpConfig::new(SERVER);
    cfg.listen = Ipv4Addr::LOCALHOST;
    cfg.server_port = 0;
    cfg.client_port = client.local_addr().unwrap().port();
    cfg.broadcast = Ipv4Addr::LOCALHOST;
    let dir = Arc::new(TestDirectory::one_host());
    let server = DhcpServer::bind(cfg, dir.clone()).unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let metrics = server.metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    // Garbage and an unknown MAC first: both must be dropped, counted and not answered.
    client.send_to(b"definitely not DHCP", addr).await.unwrap();
    let stranger = pxe(
        request(MacAddr([2, 0, 0, 0, 0, 1]), MessageType::Discover),
        0,
    );
    client
        .send_to(&stranger.to_vec().unwrap(), addr)
        .await
        .unwrap();
    eventually("malformed + unknown counted", || {
        metrics.malformed.get() == 1 && metrics.unknown_mac.get() == 1
    })
    .await;
    // A DECLINE is not answered but remembered as an address conflict.
    let mut decline = request(MAC, MessageType::Decline);
    decline
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(HOST_IP));
    decline
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER));
    client
        .send_to(&decline.to_vec().unwrap(), addr)
        .await
        .unwrap();
    eventually("decline recorded", || {
        metrics.declines() == vec![(MAC, Some(HOST_IP))]
    })
    .await;
    assert_eq!(metrics.decline.get(), 1);

    let discover = pxe(request(MAC, MessageType::Discover), 7);
    client
        .send_to(&discover.to_vec().unwrap(), addr)
        .await
        .unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, addr);
    let offer = Message::from_bytes(&buf[..n]).unwrap();
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.xid(), 0xdead_beef);
    assert_eq!(offer.yiaddr(), HOST_IP);
    assert_eq!(fname(&offer), "snponly.efi");

    let mut req = pxe(request(MAC, MessageType::Request), 7);
    req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(HOST_IP));
    client.send_to(&req.to_vec().unwrap(), addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let ack = Message::from_bytes(&buf[..n]).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), HOST_IP);

    eventually("phases recorded", || dir.phases().len() == 2).await;
    assert_eq!(
        dir.phases(),
        vec![(MAC, Phase::DhcpOffer), (MAC, Phase::DhcpAck)]
    );
    assert_eq!((metrics.discover.get(), metrics.request.get()), (2, 1));
    assert_eq!((metrics.offer.get(), metrics.ack.get()), (1, 1));
    let samples = metrics.samples();
    assert!(samples.iter().any(|s| s.name == "beowulf_dhcp_sent_total"
        && s.label == Some(("type", "offer"))
        && s.value == 1));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// proxyDHCP: the offer on the server port, then the boot-server exchange on the second (4011) port.
#[tokio::test]
async fn proxy_server_answers_the_boot_server_port() {
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = DhcpConfig::new(SERVER);
    cfg.mode = DhcpMode::Proxy;
    cfg.listen = Ipv4Addr::LOCALHOST;
    cfg.server_port = 0;
    cfg.proxy_port = 0;
    cfg.client_port = client.local_addr().unwrap().port();
    cfg.broadcast = Ipv4Addr::LOCALHOST;
    let dir = Arc::new(TestDirectory::one_host());
    let server = DhcpServer::bind(cfg, dir.clone()).unwrap();
    let proxy_addr = server.proxy_local_addr().unwrap().unwrap();
    let task = tokio::spawn(server.run(std::future::pending()));

    let mut req = pxe(request(MAC, MessageType::Request), 0);
    req.set_ciaddr(Ipv4Addr::LOCALHOST);
    client
        .send_to(&req.to_vec().unwrap(), proxy_addr)
        .await
        .unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, proxy_addr);
    let ack = Message::from_bytes(&buf[..n]).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(fname(&ack), "undionly.kpxe");
    task.abort();
}

/// A network namespace this test owns (unique name), removed on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create(tag: &str) -> Self {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("bw-{tag}-{}-{n}", std::process::id());
        let ns = NetNs { name };
        ns.cmd(&["ip", "netns", "add", &ns.name]);
        ns
    }

    /// Runs a command (on the host; `ip -n` / `ip netns exec` put it in the namespace) and returns stdout.
    fn cmd(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} failed (these tests need root and iproute2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        self.cmd(&all)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A real DHCP client: busybox `udhcpc` on one end of a veth pair, the server bound (SO_BINDTODEVICE) to the
/// other end, both inside a namespace of our own. Real broadcasts, real ports 67/68 — but not the host's.
#[test]
fn busybox_udhcpc_gets_and_configures_the_reservation() {
    let ns = NetNs::create("udhcpc");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&[
        "link", "add", "bwsrv", "type", "veth", "peer", "name", "bwcli",
    ]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "bwsrv"]);
    ns.ip(&["link", "set", "bwsrv", "up"]);
    ns.ip(&["link", "set", "bwcli", "up"]);

    let dir = Arc::new(TestDirectory::one_host());
    let (metrics_tx, metrics_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns_path = format!("/var/run/netns/{}", ns.name);
    let server_dir = dir.clone();
    // The server runs on a thread that has entered the namespace; its sockets live there.
    let server = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = DhcpConfig::new(SERVER);
            cfg.interface = Some("bwsrv".into());
            let server = DhcpServer::bind(cfg, server_dir).unwrap();
            metrics_tx.send(server.metrics()).unwrap();
            server
                .run(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    let metrics = metrics_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("DHCP server did not start");

    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script");
    let env_out = tmp.path().join("env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nenv > {}.$$\nmv {}.$$ {}\nip addr add \"$ip/$subnet\" dev \"$interface\"\n",
            env_out.display(),
            env_out.display(),
            env_out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let udhcpc_run = |extra: &[&str]| -> std::process::Output {
        let _ = std::fs::remove_file(&env_out);
        let script = script.to_str().unwrap();
        let mut args = vec![
            "timeout", "30", "ip", "netns", "exec", &ns.name, "busybox", "udhcpc", "-i", "bwcli",
            "-f", "-q", "-n", "-T", "1", "-s", script,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap()
    };
    let udhcpc = |extra: &[&str]| -> std::collections::HashMap<String, String> {
        let out = udhcpc_run(extra);
        assert!(
            out.status.success(),
            "udhcpc got no lease: {}\nserver counters: {:?}",
            String::from_utf8_lossy(&out.stderr),
            metrics
                .samples()
                .iter()
                .filter(|s| s.value > 0)
                .map(|s| (s.name, s.label, s.value))
                .collect::<Vec<_>>()
        );
        std::fs::read_to_string(&env_out)
            .expect("udhcpc did not run its bound script")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };

    // The veth's random MAC is not in the inventory: no answer at all, and the server counts it.
    let out = udhcpc_run(&["-t", "2"]);
    assert!(!out.status.success(), "an unknown MAC got a lease");
    assert!(!env_out.exists());
    assert_eq!(metrics.unknown_mac.get(), metrics.discover.get());
    assert!(metrics.unknown_mac.get() >= 1);
    assert_eq!(metrics.offer.get(), 0);
    let unknown = metrics.unknown_mac.get();

    ns.ip(&["link", "set", "bwcli", "address", &MAC.to_string()]);
    // An OS client: the lease and its options, no boot file.
    let env = udhcpc(&[]);
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("ip"), Some("10.99.0.10"));
    assert_eq!(get("subnet"), Some("255.255.255.0"));
    assert_eq!(get("router"), Some("10.99.0.254"));
    assert_eq!(get("dns").map(str::trim), Some("10.99.0.53 10.99.0.54"));
    assert_eq!(get("domain"), Some("cluster.test"));
    assert_eq!(get("hostname"), Some("node1"));
    assert_eq!(get("mtu"), Some("9000"));
    assert_eq!(get("lease"), Some("3600"));
    assert_eq!(get("serverid"), Some("10.99.0.1"));
    assert_eq!(get("boot_file"), None);
    let addrs = ns.ip(&["-4", "addr", "show", "dev", "bwcli"]);
    assert!(
        addrs.contains("inet 10.99.0.10/24"),
        "udhcpc did not configure the address: {addrs}"
    );
    ns.ip(&["addr", "flush", "dev", "bwcli"]);

    // The same client announcing itself as x86-64 UEFI PXE: the boot file and next-server come along.
    let env = udhcpc(&["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"]);
    assert_eq!(env.get("ip").map(String::as_str), Some("10.99.0.10"));
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("snponly.efi")
    );
    assert_eq!(env.get("siaddr").map(String::as_str), Some("10.99.0.1"));

    let phases = dir.phases();
    assert_eq!(
        phases,
        vec![
            (MAC, Phase::DhcpOffer),
            (MAC, Phase::DhcpAck),
            (MAC, Phase::DhcpOffer),
            (MAC, Phase::DhcpAck)
        ]
    );
    assert_eq!((metrics.offer.get(), metrics.ack.get()), (2, 2));
    assert_eq!(metrics.unknown_mac.get(), unknown);
    stop_tx.send(()).unwrap();
    server.join().unwrap();
}

/// A `MakeWriter` that collects log output in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The iPXE script URL carries the host's boot token: the server must not log it, at any level.
#[tokio::test]
async fn per_host_script_url_never_reaches_the_logs() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // Current-thread runtime: the server task runs on this thread and logs into `logs`.
    let _guard = tracing::subscriber::set_default(subscriber);

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = DhcpConfig::new(SERVER);
    cfg.listen = Ipv4Addr::LOCALHOST;
    cfg.server_port = 0;
    cfg.client_port = client.local_addr().unwrap().port();
    cfg.broadcast = Ipv4Addr::LOCALHOST;
    let mut dir = TestDirectory::one_host();
    let token = "f00dfacecafebabe0123456789abcdef";
    dir.scripts.insert(
        MAC,
        format!("http://10.99.0.1:8080/boot/{token}/script.ipxe"),
    );
    let server = DhcpServer::bind(cfg, Arc::new(dir)).unwrap();
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(server.run(std::future::pending()));

    let mut m = pxe(request(MAC, MessageType::Discover), 0);
    m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    client.send_to(&m.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let offer = Message::from_bytes(&buf[..n]).unwrap();
    assert!(
        bytes_opt(&offer, OptionCode::BootfileName)
            .unwrap()
            .contains(token)
    );
    task.abort();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("DHCP reply sent"),
        "logs were not captured: {text}"
    );
    assert!(
        !text.contains(token),
        "the boot token leaked into the logs:\n{text}"
    );
}

/// A QEMU started as `ip netns exec NS timeout … qemu-system-x86_64 …` (`ip netns exec` execs, so the child is
/// `timeout`). Dropping it sends SIGTERM, which `timeout` passes on to QEMU; SIGKILL would orphan QEMU.
struct Qemu(std::process::Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.0.wait();
    }
}

/// Real firmware against both UDP services: OVMF's own (EDK2) PXE client asks our DHCP, fetches `snponly.efi`
/// from our TFTP, iPXE starts, asks our DHCP again (user class iPXE) and fetches its script over TFTP.
#[test]
fn edk2_pxe_chains_to_ipxe_through_our_dhcp_and_tftp() {
    let ns = NetNs::create("edk2");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["tuntap", "add", "dev", "bwtap0", "mode", "tap"]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "bwtap0"]);
    ns.ip(&["link", "set", "bwtap0", "up"]);

    let tftp_root = tempfile::tempdir().unwrap();
    std::fs::copy(
        "/usr/lib/ipxe/snponly.efi",
        tftp_root.path().join("snponly.efi"),
    )
    .expect("Debian's ipxe package (bash .ci/install)");
    std::fs::write(
        tftp_root.path().join("boot.ipxe"),
        "#!ipxe\necho BEOWULF-NET-OK ${net0/ip} ${filename}\n",
    )
    .unwrap();
    let mut dir = TestDirectory::one_host();
    dir.scripts.insert(MAC, "tftp://10.99.0.1/boot.ipxe".into());
    let dir = Arc::new(dir);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns_path = format!("/var/run/netns/{}", ns.name);
    let (server_dir, root) = (dir.clone(), tftp_root.path().to_path_buf());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let servers = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut d = DhcpConfig::new(SERVER);
            d.interface = Some("bwtap0".into());
            let dhcp = DhcpServer::bind(d, server_dir.clone()).unwrap();
            let mut t = crate::boot::tftp::TftpConfig::new(root);
            t.interface = Some("bwtap0".into());
            let tftp = crate::boot::tftp::TftpServer::bind(t, server_dir).unwrap();
            ready_tx.send((dhcp.metrics(), tftp.metrics())).unwrap();
            let dhcp = tokio::spawn(dhcp.run(std::future::pending()));
            let tftp = tokio::spawn(tftp.run(std::future::pending()));
            let _ = stop_rx.await;
            dhcp.abort();
            tftp.abort();
        });
    });
    let (dhcp_metrics, tftp_metrics) = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("servers did not start");

    let serial = tftp_root.path().join("serial.log");
    let mut qemu = Qemu(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "timeout",
                "120",
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                "-m",
                "512",
            ])
            .args([
                "-smp",
                "1",
                "-nographic",
                "-no-reboot",
                "-bios",
                "/usr/share/ovmf/OVMF.fd",
            ])
            .args(["-netdev", "tap,id=n0,ifname=bwtap0,script=no,downscript=no"])
            .args([
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
            ])
            .args([
                "-boot", "n", "-monitor", "none", "-display", "none", "-serial",
            ])
            .arg(format!("file:{}", serial.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (bash .ci/install)"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(110);
    let log = loop {
        let log = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if log.contains("BEOWULF-NET-OK") || std::time::Instant::now() > deadline {
            break log;
        }
        if let Ok(Some(_)) = qemu.0.try_wait() {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(qemu);
    stop_tx.send(()).unwrap();
    servers.join().unwrap();
    let counters: Vec<_> = dhcp_metrics
        .samples()
        .into_iter()
        .chain(tftp_metrics.samples())
        .filter(|s| s.value > 0)
        .map(|s| (s.name, s.label, s.value))
        .collect();
    assert!(
        log.contains("BEOWULF-NET-OK 10.99.0.10 tftp://10.99.0.1/boot.ipxe"),
        "iPXE did not run its script; counters {counters:?}\nserial:\n{log}"
    );
    // Firmware retransmits DISCOVERs at will: compare the sequence of distinct consecutive phases.
    let mut phases: Vec<Phase> = dir.phases().into_iter().map(|(_, p)| p).collect();
    phases.dedup();
    // EDK2 probes the size of snponly.efi first and aborts that transfer (counted, not a phase).
    assert_eq!(tftp_metrics.transfers_aborted.get(), 1, "{counters:?}");
    assert_eq!(tftp_metrics.transfers_completed.get(), 2, "{counters:?}");
    assert_eq!(
        phases,
        vec![
            Phase::DhcpOffer,
            Phase::DhcpAck,
            Phase::Tftp,
            Phase::DhcpOffer,
            Phase::DhcpAck,
            Phase::Tftp
        ]
    );
}

/// A rack powering on sends its DISCOVERs in one burst. The kernel queues them on the server socket until the
/// server reads; with the default receive buffer (~200 KiB, ~150 datagrams) most of a large burst would be
/// dropped and every dropped client would wait for its retransmission (4 s and more for a PXE ROM). Here 2,000
/// DISCOVERs arrive before the server reads its first one, and every one of them must be answered.
#[tokio::test]
async fn a_burst_of_discovers_is_queued_not_dropped() {
    const BURST: u32 = 2000;
    let client = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    // The client's own buffer must hold the 2,000 OFFERs (needs root, as the server's).
    nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::RcvBufForce, &(16 << 20))
        .unwrap();
    client.set_nonblocking(true).unwrap();
    client
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    let client = tokio::net::UdpSocket::from_std(client.into()).unwrap();
    let mut cfg = DhcpConfig::new(SERVER);
    cfg.listen = Ipv4Addr::LOCALHOST;
    cfg.server_port = 0;
    cfg.client_port = client.local_addr().unwrap().port();
    cfg.broadcast = Ipv4Addr::LOCALHOST;
    let server = DhcpServer::bind(cfg, Arc::new(TestDirectory::one_host())).unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    for xid in 0..BURST {
        let mut d = pxe(request(MAC, MessageType::Discover), 0);
        d.set_xid(xid);
        client.send_to(&d.to_vec().unwrap(), addr).await.unwrap();
    }
    // Only now does the server start reading.
    let task = tokio::spawn(server.run(std::future::pending()));
    let mut seen = std::collections::HashSet::new();
    let mut buf = vec![0u8; 1500];
    while seen.len() < BURST as usize {
        let Ok(r) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf)).await
        else {
            break;
        };
        let (n, _) = r.unwrap();
        let offer = Message::from_bytes(&buf[..n]).unwrap();
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        seen.insert(offer.xid());
    }
    task.abort();
    assert_eq!(
        (seen.len(), metrics.discover.get()),
        (BURST as usize, u64::from(BURST)),
        "OFFERs received, DISCOVERs the server read"
    );
}
