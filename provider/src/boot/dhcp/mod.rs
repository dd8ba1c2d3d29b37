//! DHCPv4 server for the boot network: static reservations only, PXE/iPXE/UEFI-HTTP aware, relay aware,
//! optionally proxyDHCP. The decision logic lives in [`reply`] (pure); this module owns sockets and counters.
//!
//! Usage (what `beowulf standalone` does):
//! ```no_run
//! # async fn f(dir: std::sync::Arc<dyn beowulf::boot::BootDirectory>) -> Result<(), beowulf::boot::dhcp::DhcpError> {
//! use beowulf::boot::dhcp::{DhcpConfig, DhcpServer};
//! let mut cfg = DhcpConfig::new("10.99.0.1".parse().unwrap());
//! cfg.interface = Some("br0".into());
//! let server = DhcpServer::bind(cfg, dir)?;
//! let metrics = server.metrics(); // read by /metrics
//! tokio::spawn(server.run(std::future::pending()));
//! # Ok(()) }
//! ```

pub mod reply;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::MessageType;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::counters::{Counter, Sample};
use super::{BootDirectory, MacAddr};
pub use reply::{BootFiles, DhcpMode};
use reply::{Destination, Outcome, Port, Responder, Silence};

/// How the DHCP server listens and what it offers.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    /// Our address on the boot network: server identifier (option 54) and default next-server.
    pub server_ip: Ipv4Addr,
    /// TFTP server for siaddr / option 66, when it is not `server_ip`.
    pub next_server: Option<Ipv4Addr>,
    pub mode: DhcpMode,
    pub boot: BootFiles,
    /// Bind to this interface only (SO_BINDTODEVICE): broadcasts are received and sent on the boot network and
    /// nowhere else. Strongly recommended on multi-homed hosts; needs CAP_NET_RAW.
    pub interface: Option<String>,
    /// Local address to bind; `0.0.0.0` to receive broadcasts.
    pub listen: Ipv4Addr,
    /// Server port, 67. Tests use 0 (an ephemeral port).
    pub server_port: u16,
    /// Where clients listen, 68.
    pub client_port: u16,
    /// Port replies to relay agents go to, 67.
    pub relay_port: u16,
    /// The proxyDHCP boot-server port, 4011 (only bound in proxy mode). 0: ephemeral.
    pub proxy_port: u16,
    /// The address broadcast replies go to, 255.255.255.255. Tests on loopback point it at 127.0.0.1.
    pub broadcast: Ipv4Addr,
    /// At most this many replies per second to one MAC; requests beyond are dropped and counted. A booting
    /// host needs a handful (firmware, iPXE and the OS each do DISCOVER/REQUEST, with retries); a client
    /// flooding the server must not take its time from the others. 0: no limit.
    pub max_replies_per_mac_per_sec: u32,
}

/// The default of [`DhcpConfig::max_replies_per_mac_per_sec`].
pub const MAX_REPLIES_PER_MAC_PER_SEC: u32 = 20;

impl DhcpConfig {
    /// Defaults: authoritative, standard ports, all addresses, `undionly.kpxe` / `snponly.efi`.
    pub fn new(server_ip: Ipv4Addr) -> Self {
        DhcpConfig {
            server_ip,
            next_server: None,
            mode: DhcpMode::Authoritative,
            boot: BootFiles::default(),
            interface: None,
            listen: Ipv4Addr::UNSPECIFIED,
            server_port: 67,
            client_port: 68,
            relay_port: 67,
            proxy_port: 4011,
            broadcast: Ipv4Addr::BROADCAST,
            max_replies_per_mac_per_sec: MAX_REPLIES_PER_MAC_PER_SEC,
        }
    }

    fn responder(&self) -> Responder {
        Responder {
            server_ip: self.server_ip,
            next_server: self.next_server.unwrap_or(self.server_ip),
            mode: self.mode,
            boot: self.boot.clone(),
        }
    }
}

/// The DHCP server could not start or its socket failed.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error(
        "cannot bind DHCP socket {addr}{}: {source} (port 67 needs root or CAP_NET_BIND_SERVICE; binding to an \
         interface needs CAP_NET_RAW; is another DHCP server running?)",
        .interface.as_deref().map(|i| format!(" on interface {i}")).unwrap_or_default()
    )]
    Bind {
        addr: SocketAddr,
        interface: Option<String>,
        source: std::io::Error,
    },
}

/// Counters of the DHCP server; see [`DhcpMetrics::samples`] for names.
#[derive(Debug, Default)]
pub struct DhcpMetrics {
    pub discover: Counter,
    pub request: Counter,
    pub inform: Counter,
    pub decline: Counter,
    pub release: Counter,
    pub other: Counter,
    pub offer: Counter,
    pub ack: Counter,
    pub nak: Counter,
    /// Requests from MACs the inventory does not know.
    pub unknown_mac: Counter,
    /// Truncated, oversized or undecodable datagrams.
    pub malformed: Counter,
    /// Requests meant for another server (or not for a proxy).
    pub ignored: Counter,
    pub send_errors: Counter,
    /// Requests of known hosts not answered because their MAC exceeded its reply rate.
    pub rate_limited: Counter,
    /// The last DECLINE per host: the reserved address is in use by another machine (an address conflict the
    /// operator must resolve; the reservation is static, so the host will keep getting it).
    declines: std::sync::Mutex<std::collections::BTreeMap<MacAddr, Option<Ipv4Addr>>>,
}

impl DhcpMetrics {
    /// Hosts that DECLINEd their reserved address, with the address they declined (for the status page).
    pub fn declines(&self) -> Vec<(MacAddr, Option<Ipv4Addr>)> {
        match self.declines.lock() {
            Ok(d) => d.iter().map(|(m, ip)| (*m, *ip)).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn record_decline(&self, mac: MacAddr, ip: Option<Ipv4Addr>) {
        if let Ok(mut d) = self.declines.lock() {
            d.insert(mac, ip);
        }
    }

    /// Every counter, for the metrics endpoint.
    pub fn samples(&self) -> Vec<Sample> {
        const RX: &str = "beowulf_dhcp_received_total";
        const RX_HELP: &str = "DHCP requests received, by message type";
        const TX: &str = "beowulf_dhcp_sent_total";
        const TX_HELP: &str = "DHCP replies sent, by message type";
        let s = |name, label, help, c: &Counter| Sample {
            name,
            label,
            help,
            value: c.get(),
        };
        vec![
            s(RX, Some(("type", "discover")), RX_HELP, &self.discover),
            s(RX, Some(("type", "request")), RX_HELP, &self.request),
            s(RX, Some(("type", "inform")), RX_HELP, &self.inform),
            s(RX, Some(("type", "decline")), RX_HELP, &self.decline),
            s(RX, Some(("type", "release")), RX_HELP, &self.release),
            s(RX, Some(("type", "other")), RX_HELP, &self.other),
            s(TX, Some(("type", "offer")), TX_HELP, &self.offer),
            s(TX, Some(("type", "ack")), TX_HELP, &self.ack),
            s(TX, Some(("type", "nak")), TX_HELP, &self.nak),
            s(
                "beowulf_dhcp_unknown_mac_total",
                None,
                "DHCP requests from MACs not in the inventory (not answered)",
                &self.unknown_mac,
            ),
            s(
                "beowulf_dhcp_malformed_total",
                None,
                "Datagrams on the DHCP ports that were truncated, oversized or undecodable (dropped)",
                &self.malformed,
            ),
            s(
                "beowulf_dhcp_ignored_total",
                None,
                "DHCP requests meant for another server (not answered)",
                &self.ignored,
            ),
            s(
                "beowulf_dhcp_rate_limited_total",
                None,
                "DHCP requests of known hosts not answered: their MAC exceeded its replies per second",
                &self.rate_limited,
            ),
            s(
                "beowulf_dhcp_send_errors_total",
                None,
                "DHCP replies that could not be sent",
                &self.send_errors,
            ),
        ]
    }
}

/// Replies per MAC in the current one-second window. Only MACs that get replies (the directory's hosts) are
/// tracked, so the map is bounded by the inventory, whatever MACs a flood makes up.
#[derive(Default)]
struct ReplyRate {
    windows: std::sync::Mutex<std::collections::HashMap<MacAddr, (std::time::Instant, u32)>>,
}

impl ReplyRate {
    /// Whether one more reply to `mac` at `now` stays within `limit` per second (0: always).
    fn allow(&self, mac: MacAddr, limit: u32, now: std::time::Instant) -> bool {
        if limit == 0 {
            return true;
        }
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let e = w.entry(mac).or_insert((now, 0));
        if now.duration_since(e.0) >= std::time::Duration::from_secs(1) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= limit
    }
}

/// A bound DHCP server, ready to [`run`](DhcpServer::run).
pub struct DhcpServer {
    config: DhcpConfig,
    rate: ReplyRate,
    responder: Responder,
    directory: Arc<dyn BootDirectory>,
    metrics: Arc<DhcpMetrics>,
    socket: UdpSocket,
    proxy_socket: Option<UdpSocket>,
}

impl std::fmt::Debug for DhcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn bind_udp(addr: SocketAddrV4, interface: Option<&str>) -> Result<UdpSocket, std::io::Error> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_broadcast(true)?;
    crate::boot::udp::grow_recv_buffer(&sock, "DHCP");
    if let Some(ifname) = interface {
        sock.bind_device(Some(ifname.as_bytes()))?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::V4(addr).into())?;
    UdpSocket::from_std(sock.into())
}

impl DhcpServer {
    /// Binds the server port (and 4011 in proxy mode). Must be called inside a tokio runtime.
    pub fn bind(config: DhcpConfig, directory: Arc<dyn BootDirectory>) -> Result<Self, DhcpError> {
        let bind = |port: u16| {
            let addr = SocketAddrV4::new(config.listen, port);
            bind_udp(addr, config.interface.as_deref()).map_err(|source| DhcpError::Bind {
                addr: addr.into(),
                interface: config.interface.clone(),
                source,
            })
        };
        let socket = bind(config.server_port)?;
        let proxy_socket = match config.mode {
            DhcpMode::Proxy => Some(bind(config.proxy_port)?),
            DhcpMode::Authoritative => None,
        };
        Ok(DhcpServer {
            rate: ReplyRate::default(),
            responder: config.responder(),
            config,
            directory,
            metrics: Arc::default(),
            socket,
            proxy_socket,
        })
    }

    /// The bound server address (port 67 unless configured otherwise).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The bound proxyDHCP boot-server address (4011), in proxy mode.
    pub fn proxy_local_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.proxy_socket.as_ref().map(|s| s.local_addr())
    }

    pub fn metrics(&self) -> Arc<DhcpMetrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        info!(
            server_ip = %self.config.server_ip,
            mode = ?self.config.mode,
            interface = self.config.interface.as_deref().unwrap_or("(all)"),
            "DHCP server listening"
        );
        let main = self.serve(&self.socket, Port::Dhcp);
        let proxy = async {
            match &self.proxy_socket {
                Some(s) => self.serve(s, Port::ProxyBoot).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = main => {}
            () = proxy => {}
        }
    }

    async fn serve(&self, socket: &UdpSocket, port: Port) {
        // One datagram larger than any accepted request, so oversized ones are seen whole and counted.
        let mut buf = vec![0u8; reply::MAX_PACKET + 1];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, src)) => self.handle(socket, &buf[..n], src, port).await,
                // ICMP errors from earlier sends surface here; they concern that send only.
                Err(e) => debug!(error = %e, "DHCP receive error"),
            }
        }
    }

    async fn handle(&self, socket: &UdpSocket, packet: &[u8], src: SocketAddr, port: Port) {
        let m = &self.metrics;
        let req = match reply::parse(packet) {
            Ok(req) => req,
            Err(why) => {
                m.malformed.inc();
                debug!(%src, len = packet.len(), why, "dropped malformed DHCP packet");
                return;
            }
        };
        match req.opts().msg_type() {
            Some(MessageType::Discover) => m.discover.inc(),
            Some(MessageType::Request) => m.request.inc(),
            Some(MessageType::Inform) => m.inform.inc(),
            Some(MessageType::Decline) => m.decline.inc(),
            Some(MessageType::Release) => m.release.inc(),
            _ => m.other.inc(),
        }
        let outcome = reply::respond(&self.responder, &*self.directory, &req, port);
        let r = match outcome {
            Outcome::Reply(r) => r,
            Outcome::Silent(s) => {
                match s {
                    Silence::Malformed(why) => {
                        m.malformed.inc();
                        debug!(%src, why, "dropped malformed DHCP packet");
                    }
                    Silence::UnknownMac(mac) => {
                        m.unknown_mac.inc();
                        debug!(%mac, %src, "no reservation for this MAC; not answering");
                    }
                    Silence::NotForUs(mac) | Silence::NoBootTarget(mac) => {
                        m.ignored.inc();
                        debug!(%mac, "DHCP request not for this server");
                    }
                    Silence::NotARequest => m.ignored.inc(),
                    Silence::Declined { mac, ip } => {
                        m.record_decline(mac, ip);
                        let ip = ip.map(|i| i.to_string()).unwrap_or_default();
                        warn!(%mac, %ip, "client DECLINEd its reserved address: another machine uses it");
                    }
                    Silence::Released(mac) => debug!(%mac, "client released its lease"),
                }
                return;
            }
        };
        if !self.rate.allow(
            r.mac,
            self.config.max_replies_per_mac_per_sec,
            std::time::Instant::now(),
        ) {
            m.rate_limited.inc();
            debug!(mac = %r.mac, "DHCP request not answered: over its replies per second");
            return;
        }
        let dest = match r.destination {
            Destination::Broadcast => {
                SocketAddrV4::new(self.config.broadcast, self.config.client_port).into()
            }
            Destination::Client(ip) => SocketAddrV4::new(ip, self.config.client_port).into(),
            Destination::Relay(ip) => SocketAddrV4::new(ip, self.config.relay_port).into(),
            Destination::Source => src,
        };
        let bytes = match reply::encode(&r.message) {
            Ok(b) => b,
            Err(e) => {
                m.send_errors.inc();
                warn!(mac = %r.mac, error = %e, "could not encode DHCP reply");
                return;
            }
        };
        if let Err(e) = socket.send_to(&bytes, dest).await {
            m.send_errors.inc();
            warn!(mac = %r.mac, %dest, error = %e, "could not send DHCP reply");
            return;
        }
        let kind = r.message.opts().msg_type();
        match kind {
            Some(MessageType::Offer) => m.offer.inc(),
            Some(MessageType::Ack) => m.ack.inc(),
            Some(MessageType::Nak) => m.nak.inc(),
            _ => {}
        }
        // The boot file may be a per-host script URL carrying a token: log only what kind of file it is.
        let client = reply::ClientKind::of(&req);
        info!(
            mac = %r.mac,
            reply = ?kind.unwrap_or(MessageType::Unknown(0)),
            ip = %r.message.yiaddr(),
            %dest,
            arch = client.arch.map(|a| a.to_string()).unwrap_or_default(),
            ipxe = client.ipxe,
            "DHCP reply sent"
        );
        if let Some(phase) = r.phase {
            self.directory.record(&r.mac, phase);
        }
    }
}

#[cfg(test)]
mod tests;
