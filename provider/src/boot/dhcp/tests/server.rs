//! The server on real loopback sockets: answers, counters, phases, secrets kept out of the logs, and a burst
//! of DISCOVERs queued rather than dropped.

use super::*;
use crate::boot::dhcp::MAX_REPLIES_PER_MAC_PER_SEC;

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

/// A `MakeWriter` that collects log output in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    let server = DhcpServer::bind(cfg, Arc::new(TestDirectory::rack(BURST))).unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    // One DISCOVER from each host of the rack.
    for xid in 1..=BURST {
        let [_, _, hi, lo] = xid.to_be_bytes();
        let mut d = pxe(
            request(MacAddr([0x52, 0x54, 1, 0, hi, lo]), MessageType::Discover),
            0,
        );
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

/// A client that floods the server from one MAC gets at most its replies per second; another host asking in
/// the middle of the flood is answered at once.
#[tokio::test]
async fn a_flood_from_one_mac_is_capped_and_others_are_still_answered() {
    const FLOOD: u32 = 200;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = DhcpConfig::new(SERVER);
    cfg.listen = Ipv4Addr::LOCALHOST;
    cfg.server_port = 0;
    cfg.client_port = client.local_addr().unwrap().port();
    cfg.broadcast = Ipv4Addr::LOCALHOST;
    assert_eq!(cfg.max_replies_per_mac_per_sec, MAX_REPLIES_PER_MAC_PER_SEC);
    let server = DhcpServer::bind(cfg, Arc::new(TestDirectory::rack(2))).unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    let task = tokio::spawn(server.run(std::future::pending()));
    let (flooder, other) = (
        MacAddr([0x52, 0x54, 1, 0, 0, 1]),
        MacAddr([0x52, 0x54, 1, 0, 0, 2]),
    );
    let start = std::time::Instant::now();
    for xid in 0..FLOOD {
        let mut d = pxe(request(flooder, MessageType::Discover), 0);
        d.set_xid(xid);
        client.send_to(&d.to_vec().unwrap(), addr).await.unwrap();
        if xid == FLOOD / 2 {
            let mut d = pxe(request(other, MessageType::Discover), 0);
            d.set_xid(0xabcd);
            client.send_to(&d.to_vec().unwrap(), addr).await.unwrap();
        }
    }
    eventually("every request read", || {
        metrics.discover.get() == u64::from(FLOOD) + 1
    })
    .await;
    let elapsed = start.elapsed().as_secs() + 1;
    let mut offers_flooder = 0u64;
    let mut other_answered = false;
    let mut buf = vec![0u8; 1500];
    while let Ok(r) =
        tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await
    {
        let (n, _) = r.unwrap();
        let offer = Message::from_bytes(&buf[..n]).unwrap();
        if offer.chaddr()[..6] == flooder.0 {
            offers_flooder += 1;
        } else if offer.xid() == 0xabcd {
            other_answered = true;
        }
    }
    task.abort();
    assert!(
        other_answered,
        "the other host was not answered during the flood"
    );
    let cap = u64::from(MAX_REPLIES_PER_MAC_PER_SEC) * elapsed;
    assert!(
        (1..=cap).contains(&offers_flooder),
        "{offers_flooder} offers to the flooding MAC in about {elapsed} s (cap {cap})"
    );
    assert_eq!(
        offers_flooder + metrics.rate_limited.get(),
        u64::from(FLOOD)
    );
}
