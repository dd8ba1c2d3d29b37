//! The DHCP decision: one request in, at most one reply out. Pure: no sockets, no clock, no recording — the
//! server loop sends the reply and records the phase, which keeps every rule here testable with built packets.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};

use crate::boot::{BootDirectory, Lease, MacAddr, Phase};

/// The BOOTP magic cookie that starts the options field (RFC 2131 §3).
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header (236 bytes) plus the magic cookie.
pub const MIN_PACKET: usize = 240;
/// Larger requests are dropped: real clients stay under one Ethernet frame, a jumbo frame at most.
pub const MAX_PACKET: usize = 9000;
/// RFC 1542: some BOOTP relays and PXE ROMs drop replies shorter than a minimal BOOTP packet.
const MIN_REPLY: usize = 300;

/// Whether this server hands out addresses or only boot options next to another DHCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DhcpMode {
    /// Answers DISCOVER/REQUEST with the host's static reservation and its boot options.
    #[default]
    Authoritative,
    /// proxyDHCP (PXE spec §2.2.3): never an address; boot options only, on port 67 and 4011.
    Proxy,
}

/// The boot files offered to firmware, by client architecture (DHCP option 93).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// For BIOS PXE ROMs (arch 0), served over TFTP.
    pub bios: String,
    /// For x86/x86-64 UEFI PXE (arch 6, 7, 9), served over TFTP: `snponly.efi` uses the firmware's NIC driver,
    /// `ipxe.efi` brings its own.
    pub uefi: String,
    /// For UEFI HTTP boot clients (arch 15/16): the absolute URL of the EFI binary. `None`: they get no offer.
    pub http_boot_url: Option<String>,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            bios: "undionly.kpxe".into(),
            uefi: "snponly.efi".into(),
            http_boot_url: None,
        }
    }
}

/// What the decision needs to know about this server.
#[derive(Debug, Clone)]
pub struct Responder {
    /// Our address on the boot network: the server identifier (option 54).
    pub server_ip: Ipv4Addr,
    /// The TFTP server (siaddr, sname, option 66); usually `server_ip`.
    pub next_server: Ipv4Addr,
    pub mode: DhcpMode,
    pub boot: BootFiles,
}

/// Which of our sockets the request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// UDP 67, the DHCP server port.
    Dhcp,
    /// UDP 4011, where PXE clients ask a proxyDHCP server for their boot file.
    ProxyBoot,
}

/// Where a reply goes (RFC 2131 §4.1); the server maps this onto socket addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 — the client has no address yet. (Unicasting to yiaddr before the client has it would
    /// need an ARP-table insert; broadcasting is always allowed.)
    Broadcast,
    /// The client's own address (ciaddr), port 68.
    Client(Ipv4Addr),
    /// The relay agent (giaddr), port 67.
    Relay(Ipv4Addr),
    /// Back to the packet's source address and port (proxyDHCP on 4011).
    Source,
}

/// A reply to send.
#[derive(Debug, Clone)]
pub struct Reply {
    pub mac: MacAddr,
    pub message: Message,
    pub destination: Destination,
    /// The boot phase to record once the reply is sent.
    pub phase: Option<Phase>,
}

/// Why a request got no reply. Each maps to a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Silence {
    /// Could not be parsed: too short or long, wrong magic, not Ethernet, no message type.
    Malformed(&'static str),
    /// A BOOTREPLY or a message type a server never answers (OFFER, ACK, ...).
    NotARequest,
    /// Not in the inventory: the operator may have a typo in a MAC; logged at debug.
    UnknownMac(MacAddr),
    /// The client chose another server's offer, or this proxy is not meant to answer it.
    NotForUs(MacAddr),
    /// The client found our address in use (DECLINE).
    Declined { mac: MacAddr, ip: Option<Ipv4Addr> },
    /// The client gave its lease back (RELEASE); reservations are static, nothing to free.
    Released(MacAddr),
    /// A known host that is not a boot client asked a proxyDHCP server: nothing to say.
    NoBootTarget(MacAddr),
}

/// The result of one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    Reply(Box<Reply>),
    Silent(Silence),
}

/// Parses a datagram into a DHCP request, rejecting anything a real client would not send. Never panics.
pub fn parse(buf: &[u8]) -> Result<Message, &'static str> {
    use dhcproto::Decodable;
    if buf.len() < MIN_PACKET {
        return Err("truncated: shorter than a BOOTP header");
    }
    if buf.len() > MAX_PACKET {
        return Err("oversized");
    }
    if buf[236..240] != MAGIC {
        return Err("no DHCP magic cookie");
    }
    // Checked on the raw bytes: the decoder trusts hlen when slicing chaddr.
    if buf[1] != 1 || buf[2] != 6 {
        return Err("hardware type is not Ethernet");
    }
    let clean = sanitize(buf)?;
    let msg = Message::from_bytes(&clean).map_err(|_| "undecodable")?;
    if msg.opts().msg_type().is_none() {
        return Err("no message type (plain BOOTP is not served)");
    }
    Ok(msg)
}

/// The options a request may carry that this server reads, with the lengths it accepts (`None`: any).
const KEPT_OPTIONS: [(u8, Option<usize>); 12] = [
    (50, Some(4)), // requested IP address
    (53, Some(1)), // message type
    (54, Some(4)), // server identifier
    (55, None),    // parameter request list
    (57, Some(2)), // maximum message size
    (60, None),    // vendor class identifier
    (61, None),    // client identifier
    (77, None),    // user class
    (82, None),    // relay agent information
    (93, None),    // client system architecture (checked below: a non-empty list of u16)
    (94, Some(3)), // client network interface identifier
    (97, None),    // client machine identifier (UUID)
];

/// Walks the option TLVs with bounds checks and keeps only the options this server reads, with plausible
/// lengths. The decoder is then never shown options it mishandles (dhcproto 0.15 asserts or unwraps on some
/// malformed options, e.g. 81 and 121), and a truncated option list is refused instead of half-read. A
/// fixed-length option counts once (the first): the decoder concatenates repeated options (RFC 3396), and two
/// 3-byte option 94s became one of 6 bytes, which it asserts against (found by `fuzz/` target `dhcp`).
fn sanitize(buf: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut seen_fixed = [false; 256];
    let mut out = Vec::with_capacity(buf.len());
    out.extend_from_slice(&buf[..MIN_PACKET]);
    let mut rest = &buf[MIN_PACKET..];
    loop {
        let Some((&code, tail)) = rest.split_first() else {
            return Err("options not terminated by END");
        };
        match code {
            0 => rest = tail,
            255 => break,
            _ => {
                let Some((&len, tail)) = tail.split_first() else {
                    return Err("truncated option");
                };
                let len = usize::from(len);
                if tail.len() < len {
                    return Err("truncated option");
                }
                let (value, tail) = tail.split_at(len);
                let rule = KEPT_OPTIONS.iter().find(|(c, _)| *c == code);
                let keep = rule.is_some_and(|(_, want)| {
                    want.is_none_or(|w| w == len)
                        && (code != 93 || (len >= 2 && len % 2 == 0))
                        && !(want.is_some() && seen_fixed[usize::from(code)])
                });
                if keep && rule.is_some_and(|(_, want)| want.is_some()) {
                    seen_fixed[usize::from(code)] = true;
                }
                if keep {
                    out.push(code);
                    out.push(len as u8);
                    out.extend_from_slice(value);
                }
                rest = tail;
            }
        }
    }
    out.push(255);
    Ok(out)
}

/// What kind of boot client sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientKind {
    /// Option 93, first entry.
    pub arch: Option<u16>,
    /// Option 60 starts with `PXEClient`.
    pub pxe: bool,
    /// Option 60 starts with `HTTPClient` (UEFI HTTP boot).
    pub http: bool,
    /// User class (option 77) `iPXE`: the iPXE binary is already running and wants its script.
    pub ipxe: bool,
}

impl ClientKind {
    pub fn of(req: &Message) -> Self {
        let opts = req.opts();
        let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
            _ => None,
        };
        let class: &[u8] = match opts.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(c)) => c,
            _ => &[],
        };
        let ipxe = match opts.get(OptionCode::UserClass) {
            Some(DhcpOption::UserClass(u)) => user_class_has_ipxe(u),
            _ => false,
        };
        ClientKind {
            arch,
            pxe: class.starts_with(b"PXEClient"),
            http: class.starts_with(b"HTTPClient"),
            ipxe,
        }
    }

    /// Firmware that network-boots (as opposed to an OS's DHCP client, which only wants an address).
    pub fn is_boot_client(&self) -> bool {
        self.pxe || self.http || self.ipxe || self.arch.is_some()
    }
}

/// iPXE sends option 77 as the bare string `iPXE`; RFC 3004 clients send length-prefixed entries. Accept both.
fn user_class_has_ipxe(data: &[u8]) -> bool {
    if data == b"iPXE" {
        return true;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || tail.len() < len {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// The boot file for a client: a TFTP file name, or a URL for iPXE and UEFI HTTP boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTarget {
    pub file: String,
    /// UEFI HTTP boot: `file` is a URL and the reply must carry option 60 `HTTPClient`.
    pub http: bool,
}

/// Picks the boot file for a client (none for OS DHCP clients and unknown architectures).
pub fn boot_target(
    r: &Responder,
    dir: &dyn BootDirectory,
    mac: &MacAddr,
    kind: &ClientKind,
) -> Option<BootTarget> {
    if kind.ipxe {
        return dir
            .ipxe_script_url(mac)
            .map(|file| BootTarget { file, http: false });
    }
    let http_arch = matches!(kind.arch, Some(15 | 16));
    if kind.http || http_arch {
        return r
            .boot
            .http_boot_url
            .clone()
            .map(|file| BootTarget { file, http: true });
    }
    let file = match kind.arch {
        Some(0) => &r.boot.bios,
        Some(6 | 7 | 9) => &r.boot.uefi,
        // A PXE ROM that does not say its architecture is a BIOS ROM (option 93 came with PXE 2.1 / UEFI).
        None if kind.pxe => &r.boot.bios,
        _ => return None,
    };
    Some(BootTarget {
        file: file.clone(),
        http: false,
    })
}

/// Decides the reply to one parsed request.
pub fn respond(r: &Responder, dir: &dyn BootDirectory, req: &Message, port: Port) -> Outcome {
    if req.opcode() != Opcode::BootRequest || req.htype() != HType::Eth {
        return Outcome::Silent(Silence::NotARequest);
    }
    let Some(mac) = mac_of(req) else {
        return Outcome::Silent(Silence::Malformed("hardware address is not 6 bytes"));
    };
    let Some(msg_type) = req.opts().msg_type() else {
        return Outcome::Silent(Silence::Malformed("no message type"));
    };
    match r.mode {
        DhcpMode::Authoritative => authoritative(r, dir, req, mac, msg_type),
        DhcpMode::Proxy => proxy(r, dir, req, mac, msg_type, port),
    }
}

fn mac_of(req: &Message) -> Option<MacAddr> {
    let c = req.chaddr();
    let bytes: [u8; 6] = c.try_into().ok()?;
    Some(MacAddr(bytes))
}

fn relay_of(req: &Message) -> Option<Ipv4Addr> {
    let g = req.giaddr();
    (!g.is_unspecified()).then_some(g)
}

fn requested_ip(req: &Message) -> Option<Ipv4Addr> {
    match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    }
}

fn server_id(req: &Message) -> Option<Ipv4Addr> {
    match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn authoritative(
    r: &Responder,
    dir: &dyn BootDirectory,
    req: &Message,
    mac: MacAddr,
    msg_type: MessageType,
) -> Outcome {
    let relay = relay_of(req);
    match msg_type {
        MessageType::Discover => {
            let Some(lease) = dir.lease(&mac, relay) else {
                return Outcome::Silent(Silence::UnknownMac(mac));
            };
            let mut m = base_reply(r, req, MessageType::Offer);
            m.set_yiaddr(lease.ip);
            add_lease_options(&mut m, &lease, true);
            add_boot_options(r, dir, req, &mac, &mut m);
            reply(mac, m, to_client(req, false), Some(Phase::DhcpOffer))
        }
        MessageType::Request => {
            let Some(lease) = dir.lease(&mac, relay) else {
                return Outcome::Silent(Silence::UnknownMac(mac));
            };
            // RFC 2131 §4.3.2: SELECTING names a server; INIT-REBOOT names an address; RENEW/REBIND use ciaddr.
            let wanted = match server_id(req) {
                Some(sid) if sid != r.server_ip => return Outcome::Silent(Silence::NotForUs(mac)),
                Some(_) => requested_ip(req).or_else(|| nonzero(req.ciaddr())),
                None => requested_ip(req).or_else(|| nonzero(req.ciaddr())),
            };
            if wanted != Some(lease.ip) {
                let mut m = base_reply(r, req, MessageType::Nak);
                m.opts_mut().insert(DhcpOption::Message(
                    "that address is not reserved for this host".into(),
                ));
                // A NAK always goes by broadcast (or the relay): the client's address is wrong.
                let dest = relay.map_or(Destination::Broadcast, Destination::Relay);
                return reply(mac, m, dest, None);
            }
            let mut m = base_reply(r, req, MessageType::Ack);
            m.set_yiaddr(lease.ip);
            m.set_ciaddr(req.ciaddr());
            add_lease_options(&mut m, &lease, true);
            add_boot_options(r, dir, req, &mac, &mut m);
            reply(mac, m, to_client(req, true), Some(Phase::DhcpAck))
        }
        MessageType::Inform => {
            // The client configured its address itself and wants the rest: no yiaddr, no lease time.
            let Some(lease) = dir.lease(&mac, relay) else {
                return Outcome::Silent(Silence::UnknownMac(mac));
            };
            let mut m = base_reply(r, req, MessageType::Ack);
            m.set_ciaddr(req.ciaddr());
            add_lease_options(&mut m, &lease, false);
            add_boot_options(r, dir, req, &mac, &mut m);
            reply(mac, m, to_client(req, true), None)
        }
        MessageType::Decline => Outcome::Silent(Silence::Declined {
            mac,
            ip: requested_ip(req),
        }),
        MessageType::Release => Outcome::Silent(Silence::Released(mac)),
        _ => Outcome::Silent(Silence::NotARequest),
    }
}

fn proxy(
    r: &Responder,
    dir: &dyn BootDirectory,
    req: &Message,
    mac: MacAddr,
    msg_type: MessageType,
    port: Port,
) -> Outcome {
    let kind = ClientKind::of(req);
    // Only boot firmware talks to a proxy; OS DHCP traffic is the other server's business.
    if !kind.is_boot_client() {
        return Outcome::Silent(Silence::NotForUs(mac));
    }
    let relay = relay_of(req);
    let known = dir.lease(&mac, relay).is_some() || dir.ipxe_script_url(&mac).is_some();
    if !known {
        return Outcome::Silent(Silence::UnknownMac(mac));
    }
    if boot_target(r, dir, &mac, &kind).is_none() {
        return Outcome::Silent(Silence::NoBootTarget(mac));
    }
    let (msg, dest, phase) = match (port, msg_type) {
        (Port::Dhcp, MessageType::Discover) => (
            MessageType::Offer,
            to_client(req, false),
            Some(Phase::DhcpOffer),
        ),
        // PXE clients ask the proxy for the boot file on 4011 after taking the real server's address.
        (Port::ProxyBoot, MessageType::Request | MessageType::Inform) => {
            (MessageType::Ack, Destination::Source, Some(Phase::DhcpAck))
        }
        (_, MessageType::Decline) => {
            return Outcome::Silent(Silence::Declined {
                mac,
                ip: requested_ip(req),
            });
        }
        (_, MessageType::Release) => return Outcome::Silent(Silence::Released(mac)),
        _ => return Outcome::Silent(Silence::NotForUs(mac)),
    };
    let mut m = base_reply(r, req, msg);
    if port == Port::ProxyBoot {
        m.set_ciaddr(req.ciaddr());
    }
    add_boot_options(r, dir, req, &mac, &mut m);
    // PXE spec: a proxy offer identifies itself with `PXEClient` even to clients that only sent option 93.
    if !m.opts().contains(OptionCode::ClassIdentifier) {
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
    reply(mac, m, dest, phase)
}

fn nonzero(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified()).then_some(ip)
}

fn reply(
    mac: MacAddr,
    message: Message,
    destination: Destination,
    phase: Option<Phase>,
) -> Outcome {
    Outcome::Reply(Box::new(Reply {
        mac,
        message,
        destination,
        phase,
    }))
}

/// RFC 2131 §4.1: relay first; then a client that has an address (ciaddr) gets unicast; else broadcast.
fn to_client(req: &Message, ciaddr_ok: bool) -> Destination {
    if let Some(relay) = relay_of(req) {
        return Destination::Relay(relay);
    }
    match nonzero(req.ciaddr()) {
        Some(ci) if ciaddr_ok => Destination::Client(ci),
        _ => Destination::Broadcast,
    }
}

fn base_reply(r: &Responder, req: &Message, msg_type: MessageType) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(req.xid())
        .set_flags(if req.flags().broadcast() {
            Flags::default().set_broadcast()
        } else {
            Flags::default()
        })
        .set_giaddr(req.giaddr())
        .set_chaddr(req.chaddr());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(msg_type));
    opts.insert(DhcpOption::ServerIdentifier(r.server_ip));
    // RFC 3046: a relay's agent information goes back to it unchanged.
    if let Some(opt @ DhcpOption::RelayAgentInformation(_)) =
        req.opts().get(OptionCode::RelayAgentInformation)
    {
        opts.insert(opt.clone());
    }
    m
}

fn add_lease_options(m: &mut Message, lease: &Lease, with_time: bool) {
    let opts = m.opts_mut();
    opts.insert(DhcpOption::SubnetMask(prefix_to_mask(lease.prefix_len)));
    if let Some(gw) = lease.gateway {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    if !lease.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(lease.dns.clone()));
    }
    if let Some(domain) = &lease.domain {
        opts.insert(DhcpOption::DomainName(domain.clone()));
    }
    if !lease.hostname.is_empty() {
        opts.insert(DhcpOption::Hostname(lease.hostname.clone()));
    }
    if let Some(mtu) = lease.mtu {
        opts.insert(DhcpOption::InterfaceMtu(mtu));
    }
    if with_time {
        let t = lease.lease_secs.max(60);
        opts.insert(DhcpOption::AddressLeaseTime(t));
        opts.insert(DhcpOption::Renewal(t / 2));
        opts.insert(DhcpOption::Rebinding(t / 8 * 7));
    }
}

/// siaddr, sname/file and options 66/67 as PXE ROMs (which read the fixed fields) and iPXE (options) expect.
fn add_boot_options(
    r: &Responder,
    dir: &dyn BootDirectory,
    req: &Message,
    mac: &MacAddr,
    m: &mut Message,
) {
    let kind = ClientKind::of(req);
    let Some(target) = boot_target(r, dir, mac, &kind) else {
        return;
    };
    m.set_siaddr(r.next_server);
    let next = r.next_server.to_string();
    m.set_sname_str(&next);
    // The fixed `file` field holds 127 bytes plus NUL; longer URLs travel in option 67 only.
    if target.file.len() < 128 {
        m.set_fname_str(&target.file);
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::TFTPServerName(next.into_bytes()));
    opts.insert(DhcpOption::BootfileName(target.file.into_bytes()));
    // No `PXEClient` (option 60) in an address-carrying reply: EDK2 classifies a DHCP offer with `PXEClient` but no
    // option 43 as a BINL offer and then asks port 4011 for the boot file; a plain offer with a boot file is
    // booted directly, by EDK2 and legacy PXE ROMs alike (as ISC dhcpd and dnsmasq's `dhcp-boot` do). Tested
    // with OVMF in `edk2_pxe_chains_to_ipxe_through_our_dhcp_and_tftp`. Proxy replies add it (see `proxy`).
    if target.http {
        opts.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
    }
    // PXE ROMs match the reply to their UUID (option 97) when they sent one.
    if let Some(opt @ DhcpOption::ClientMachineIdentifier(_)) =
        req.opts().get(OptionCode::ClientMachineIdentifier)
    {
        opts.insert(opt.clone());
    }
}

/// A prefix length as a dotted mask; lengths over 32 are treated as 32.
pub fn prefix_to_mask(prefix_len: u8) -> Ipv4Addr {
    let p = u32::from(prefix_len.min(32));
    let bits = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    Ipv4Addr::from(bits)
}

/// Encodes a reply, padded to the 300-byte BOOTP minimum.
pub fn encode(m: &Message) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    use dhcproto::Encodable;
    let mut buf = m.to_vec()?;
    if buf.len() < MIN_REPLY {
        buf.resize(MIN_REPLY, 0);
    }
    Ok(buf)
}
