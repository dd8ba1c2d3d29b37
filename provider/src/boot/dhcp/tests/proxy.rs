//! proxyDHCP: boot options only, on port 67 and the boot server port 4011.

use super::*;

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
