//! `bench storm`: a simulated rack powering on at once. N clients, each with its own MAC (reserved in every
//! server's configuration) and its own address, do what a BIOS PXE ROM and then iPXE do:
//! DHCP (PXE ROM: option 60 `PXEClient`, arch 0) → TFTP of the boot file (blksize 1468, lock-step like a PXE
//! ROM) → DHCP again as iPXE (user class `iPXE`) → HTTP GET of the script named in the reply → HTTP GET of the
//! `kernel` and `initrd` URLs the script names (one keep-alive connection, as iPXE). A client is done when its
//! initrd has arrived and every byte of the boot file, kernel and initrd matched what was served.
//! With `--image DIR` the files are a real live image's (`images/hpc-node/build.sh`: `vmlinuz`, `initrd.img`,
//! `rootfs.squashfs`), and a client then also does what the booted initrd does: a GET of the squashfs named by
//! `root=live:<URL>` on the kernel command line (a new connection, as dracut's livenet), and is done when
//! that has arrived whole.
//!
//! Against our boot plane (`beowulf standalone` with an inventory of the N hosts, per-host scripts with
//! per-boot tokens) and against dnsmasq (DHCP with `dhcp-host` reservations + TFTP) + nginx (a static iPXE
//! script and the same kernel and initrd), each in its own namespace. The simulator is this process, on one
//! thread in the client namespace; it talks to the servers like a relay agent (giaddr) with every client's
//! address routed through it, so the servers keep one neighbour entry instead of N.
//!
//! Reported per N: the time from the storm's start until 99% (and 100%) of the clients have their initrd (or
//! their root filesystem, with `--image`), and the servers' CPU time and bytes per second.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dhcproto::v4::{Architecture, DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::mpsc;

use super::{
    Metric, Netns, Proc, alive, have, in_netns, netns_pairs, pattern, shm_dir, start_beowulf,
    table, write_public,
};

const SERVERS: [&str; 2] = ["beowulf", "dnsmasq+nginx"];

/// The phases of one client's boot, in order; a client records the time at which it finished each. The last
/// is only part of a boot with `--image` (without, it ends with the initrd).
const PHASES: [&str; 7] = [
    "DHCP (PXE ROM)",
    "TFTP boot file",
    "DHCP (iPXE)",
    "HTTP script",
    "kernel",
    "initrd",
    "rootfs",
];
const INITRD: usize = 5;
const ROOTFS: usize = 6;

/// Seconds since the storm's start at which one client finished each of [`PHASES`].
type Marks = [f64; PHASES.len()];
const PORT: u16 = 8080;
const BLKSIZE: usize = 1468;

#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub sizes: Vec<usize>,
    /// Bytes of the TFTP boot file (undionly.kpxe is ~70 KiB), the kernel and the initrd.
    pub boot_file: usize,
    pub kernel: usize,
    pub initrd: usize,
    /// Simulator on the last CPU, servers on the others (`bench storm --pin`).
    pub pin: bool,
    /// A live image's directory (`vmlinuz`, `initrd.img`, `rootfs.squashfs`) served instead of patterns of
    /// the sizes above; clients then also fetch the squashfs.
    pub image: Option<PathBuf>,
}

impl Options {
    pub fn full() -> Self {
        Options {
            rounds: 5,
            sizes: vec![100, 500, 1000],
            boot_file: 70 * 1024,
            kernel: 512 * 1024,
            initrd: 2 * 1024 * 1024,
            pin: false,
            image: None,
        }
    }

    pub fn quick() -> Self {
        Options {
            rounds: 1,
            sizes: vec![20, 50],
            ..Options::full()
        }
    }
}

/// Second octet of pair `k`'s addresses: 10.214/16 for ours, 10.215/16 for the peers.
fn net(k: usize) -> u8 {
    214 + k as u8
}

fn server_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, net(k), 0, 1)
}

/// The simulator's own address: the relay agent (giaddr) and the next hop to every client address.
fn relay_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, net(k), 0, 2)
}

fn client_ip(k: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, net(k), 16 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn mac(i: usize) -> [u8; 6] {
    [0x02, 0x5b, 0x00, 0x00, (i >> 8) as u8, i as u8]
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The files both sides serve.
struct Content {
    boot: Vec<u8>,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    /// A live image's squashfs (`--image`).
    rootfs: Option<Vec<u8>>,
}

impl Content {
    fn load(opts: &Options) -> anyhow::Result<Content> {
        let boot = pattern(opts.boot_file, 11);
        let Some(dir) = &opts.image else {
            return Ok(Content {
                boot,
                kernel: pattern(opts.kernel, 12),
                initrd: pattern(opts.initrd, 13),
                rootfs: None,
            });
        };
        let read = |name: &str| {
            std::fs::read(dir.join(name)).with_context(|| {
                format!(
                    "--image {}: reading {name} (build one with `VARIANT=ci bash images/hpc-node/build.sh DIR`)",
                    dir.display()
                )
            })
        };
        Ok(Content {
            boot,
            kernel: read("vmlinuz")?,
            initrd: read("initrd.img")?,
            rootfs: Some(read("rootfs.squashfs")?),
        })
    }

    /// Bytes one client downloads in a whole boot.
    fn per_client(&self) -> usize {
        self.boot.len()
            + self.kernel.len()
            + self.initrd.len()
            + self.rootfs.as_ref().map_or(0, Vec::len)
    }

    /// The phase at whose end a client has booted.
    fn last_phase(&self) -> usize {
        if self.rootfs.is_some() {
            ROOTFS
        } else {
            INITRD
        }
    }
}

// ---- the simulated clients -------------------------------------------------------------------------------

type Waiters = Rc<RefCell<HashMap<u32, mpsc::UnboundedSender<Message>>>>;

/// The relay-side DHCP socket shared by all clients (replies come to giaddr:67), demultiplexed by xid.
struct Dhcp {
    socket: Rc<UdpSocket>,
    waiters: Waiters,
    server: SocketAddr,
    giaddr: Ipv4Addr,
}

struct Lease {
    ip: Ipv4Addr,
    next_server: Ipv4Addr,
    file: String,
}

impl Dhcp {
    /// DISCOVER/OFFER/REQUEST/ACK for `mac`, as a PXE ROM (`ipxe == false`) or as iPXE.
    async fn dora(&self, mac: &[u8; 6], xid: u32, ipxe: bool) -> anyhow::Result<Lease> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.waiters.borrow_mut().insert(xid, tx);
        let result = async {
            let offer = self
                .exchange(mac, xid, ipxe, MessageType::Discover, None, &mut rx)
                .await?;
            let sid = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => bail!("OFFER without a server identifier"),
            };
            let ack = self
                .exchange(
                    mac,
                    xid,
                    ipxe,
                    MessageType::Request,
                    Some((offer.yiaddr(), sid)),
                    &mut rx,
                )
                .await?;
            // Option 67 or the fixed `file` field; servers may include the C string's NUL.
            let raw: &[u8] = match ack.opts().get(OptionCode::BootfileName) {
                Some(DhcpOption::BootfileName(f)) => f,
                _ => ack.fname().unwrap_or_default(),
            };
            let file = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string();
            Ok(Lease {
                ip: ack.yiaddr(),
                next_server: ack.siaddr(),
                file,
            })
        }
        .await;
        self.waiters.borrow_mut().remove(&xid);
        result
    }

    /// Sends one message and waits for the matching reply type, retransmitting (1 s, 2 s, 4 s, 4 s …).
    async fn exchange(
        &self,
        mac: &[u8; 6],
        xid: u32,
        ipxe: bool,
        kind: MessageType,
        request: Option<(Ipv4Addr, Ipv4Addr)>,
        rx: &mut mpsc::UnboundedReceiver<Message>,
    ) -> anyhow::Result<Message> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr,
            mac,
        );
        m.set_xid(xid).set_hops(1);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ClientSystemArchitecture(Architecture(0)));
        o.insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        o.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::TFTPServerName,
            OptionCode::BootfileName,
        ]));
        if ipxe {
            o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
        if let Some((ip, sid)) = request {
            o.insert(DhcpOption::RequestedIpAddress(ip));
            o.insert(DhcpOption::ServerIdentifier(sid));
        }
        let bytes = m.to_vec()?;
        let want = match kind {
            MessageType::Discover => MessageType::Offer,
            _ => MessageType::Ack,
        };
        let mut wait = Duration::from_secs(1);
        for _ in 0..12 {
            self.socket.send_to(&bytes, self.server).await?;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(reply)) => match reply.opts().get(OptionCode::MessageType) {
                        Some(DhcpOption::MessageType(t)) if *t == want => return Ok(reply),
                        Some(DhcpOption::MessageType(MessageType::Nak)) => {
                            bail!("NAK for {}", mac_str(mac))
                        }
                        _ => continue,
                    },
                    Ok(None) => bail!("DHCP dispatcher stopped"),
                    Err(_) => break,
                }
            }
            wait = (wait * 2).min(Duration::from_secs(4));
        }
        bail!("no {want:?} for {} after 12 tries", mac_str(mac))
    }
}

/// Reads replies on the relay socket and hands each to the client waiting for its xid.
async fn dispatch(socket: Rc<UdpSocket>, waiters: Waiters) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Ok(m) = Message::from_bytes(&buf[..n])
            && let Some(tx) = waiters.borrow().get(&m.xid())
        {
            let _ = tx.send(m);
        }
    }
}

/// Error message prefix of a TFTP ERROR packet, so that "server busy" can be retried.
const TFTP_ERROR: &str = "TFTP error:";

/// A PXE ROM's TFTP read, retried after 1 s when the server answers with an error that says it is busy. Ours
/// and dnsmasq both stay silent above their transfer limit, which the RRQ retransmission in `tftp_once`
/// covers; the busy retry is kept for servers that answer with an error (real ROMs often abort on one).
async fn tftp_get(from: Ipv4Addr, server: Ipv4Addr, file: &str) -> anyhow::Result<Vec<u8>> {
    let mut busy = 0;
    loop {
        match tftp_once(from, server, file).await {
            Err(e) if e.to_string().contains("busy") && busy < 60 => {
                busy += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// One TFTP read: RRQ with blksize, lock-step ACKs, retransmitting the last packet after 1 s.
async fn tftp_once(from: Ipv4Addr, server: Ipv4Addr, file: &str) -> anyhow::Result<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddrV4::new(from, 0)).await?;
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", &BLKSIZE.to_string()] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let mut last: Vec<u8> = rrq;
    let mut dest = SocketAddr::V4(SocketAddrV4::new(server, 69));
    let mut tid: Option<SocketAddr> = None;
    let mut data = Vec::new();
    let mut expect: u16 = 1;
    let mut blksize = 512;
    let mut buf = vec![0u8; 65536];
    let mut tries = 0;
    loop {
        sock.send_to(&last, dest).await?;
        let (n, src) =
            match tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => {
                    tries += 1;
                    // A server at its transfer limit drops the RRQ (ours, dnsmasq): keep asking, like a ROM.
                    if tries > if tid.is_none() { 60 } else { 10 } {
                        bail!("TFTP {file} from {server}: timed out at block {expect}");
                    }
                    continue;
                }
            };
        if tid.is_some_and(|t| t != src) || n < 4 {
            continue;
        }
        tid = Some(src);
        dest = src;
        let p = &buf[..n];
        match u16::from_be_bytes([p[0], p[1]]) {
            6 => {
                // OACK: take blksize, acknowledge with block 0.
                let fields: Vec<&[u8]> = p[2..].split(|&b| b == 0).collect();
                for kv in fields.chunks(2) {
                    if kv.len() == 2 && kv[0].eq_ignore_ascii_case(b"blksize") {
                        blksize = std::str::from_utf8(kv[1])?.parse()?;
                    }
                }
                last = vec![0, 4, 0, 0];
            }
            3 => {
                let block = u16::from_be_bytes([p[2], p[3]]);
                if block == expect {
                    tries = 0;
                    data.extend_from_slice(&p[4..]);
                    last = vec![0, 4, p[2], p[3]];
                    expect = expect.wrapping_add(1);
                    if n - 4 < blksize {
                        sock.send_to(&last, dest).await?;
                        return Ok(data);
                    }
                }
            }
            5 => bail!(
                "{TFTP_ERROR} {file} from {server}: {}",
                String::from_utf8_lossy(&p[4..])
            ),
            _ => {}
        }
    }
}

/// One HTTP/1.1 keep-alive connection from the client's address (iPXE's HTTP client does the same).
struct Http {
    reader: BufReader<tokio::net::TcpStream>,
}

impl Http {
    async fn connect(from: Ipv4Addr, to: SocketAddr) -> anyhow::Result<Http> {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::V4(SocketAddrV4::new(from, 0)))?;
        let stream = s
            .connect(to)
            .await
            .with_context(|| format!("connecting to {to}"))?;
        Ok(Http {
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// GET `path`; needs a Content-Length body (both servers send one for files and scripts). With `want`,
    /// the body is compared with it while it streams in (nothing kept); without, it is returned.
    async fn get(
        &mut self,
        host: &str,
        path: &str,
        want: Option<&[u8]>,
    ) -> anyhow::Result<Vec<u8>> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: iPXE/1.21.1\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len: Option<usize> = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("GET {path}: connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = Some(v.trim().parse()?);
            }
        }
        let len = len.with_context(|| format!("GET {path}: no Content-Length"))?;
        if status != "200" || want.is_none() {
            let mut body = vec![0u8; len];
            self.reader.read_exact(&mut body).await?;
            if status != "200" {
                bail!(
                    "GET {path}: status {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            return Ok(body);
        }
        let want = want.unwrap_or_default();
        if len != want.len() {
            bail!("GET {path}: {len} bytes, expected {}", want.len());
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < len {
            let n = self
                .reader
                .read(&mut buf[..(len - at).min(64 * 1024)])
                .await?;
            if n == 0 {
                bail!("GET {path}: connection closed after {at} of {len} bytes");
            }
            if buf[..n] != want[at..at + n] {
                bail!("GET {path}: wrong bytes at offset {at}");
            }
            at += n;
        }
        Ok(Vec::new())
    }
}

/// (host:port, path) of an `http://` URL.
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http URL: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((host.to_string(), path.to_string()))
}

/// One client's boot; returns when its initrd has arrived and checked out, with the time (since `t0`) at which
/// each phase ended.
async fn boot(
    dhcp: Rc<Dhcp>,
    k: usize,
    i: usize,
    content: Arc<Content>,
    t0: Instant,
) -> anyhow::Result<Marks> {
    let mut marks: Marks = [f64::NAN; PHASES.len()];
    let mut mark = |phase: usize| marks[phase] = t0.elapsed().as_secs_f64();
    let m = mac(i);
    let xid = (i as u32) << 8 | (k as u32) << 4;
    let rom = dhcp.dora(&m, xid | 1, false).await?;
    if rom.ip != client_ip(k, i) {
        bail!(
            "{} got {} instead of its reservation {}",
            mac_str(&m),
            rom.ip,
            client_ip(k, i)
        );
    }
    mark(0);
    let boot_file = tftp_get(rom.ip, rom.next_server, &rom.file).await?;
    if boot_file != content.boot {
        bail!("{}: boot file {} differs", mac_str(&m), rom.file);
    }
    mark(1);
    let ipxe = dhcp.dora(&m, xid | 2, true).await?;
    mark(2);
    let (host, path) = split_url(&ipxe.file)?;
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("script URL host {host}"))?;
    let mut http = Http::connect(ipxe.ip, addr).await?;
    let script = String::from_utf8(http.get(&host, &path, None).await?)?;
    mark(3);
    let url_of = |cmd: &str| {
        script
            .lines()
            .find_map(|l| l.strip_prefix(cmd))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .with_context(|| format!("no `{}` line in the script:\n{script}", cmd.trim()))
    };
    for (phase, cmd, want) in [
        (4, "kernel ", &content.kernel),
        (5, "initrd ", &content.initrd),
    ] {
        let (h, p) = split_url(&url_of(cmd)?)?;
        if h != host {
            bail!("{} on another server: {h}", cmd.trim());
        }
        http.get(&h, &p, Some(want))
            .await
            .with_context(|| mac_str(&m))?;
        mark(phase);
    }
    if let Some(want) = &content.rootfs {
        // What the booted initrd does: fetch `root=live:<URL>` from the kernel command line.
        let kernel_line = script
            .lines()
            .find(|l| l.starts_with("kernel "))
            .unwrap_or_default();
        let rootfs = kernel_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root=live:"))
            .with_context(|| format!("no root=live: on the script's kernel line: {kernel_line}"))?;
        let (h, p) = split_url(rootfs)?;
        let addr: SocketAddr = h.parse().with_context(|| format!("rootfs URL host {h}"))?;
        Http::connect(ipxe.ip, addr)
            .await?
            .get(&h, &p, Some(want))
            .await
            .with_context(|| mac_str(&m))?;
        mark(ROOTFS);
    }
    Ok(marks)
}

/// Runs a storm of `n` clients against pair `k`; returns each client's phase times, sorted by completion.
fn storm(
    client_ns: &Netns,
    k: usize,
    n: usize,
    content: Arc<Content>,
    sim_cpu: Option<usize>,
) -> anyhow::Result<Vec<Marks>> {
    in_netns(client_ns, move |rt| {
        if let Some(cpu) = sim_cpu {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu)?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .context("pinning the simulator")?;
        }
        let local = tokio::task::LocalSet::new();
        local.block_on(rt, async move {
            let sock = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            // A burst of N replies must not overflow the default receive buffer (force: above rmem_max).
            let _ = nix::sys::socket::setsockopt(
                &sock,
                nix::sys::socket::sockopt::RcvBufForce,
                &(8 << 20),
            );
            sock.set_reuse_address(true)?;
            sock.set_nonblocking(true)?;
            sock.bind(&SocketAddr::V4(SocketAddrV4::new(relay_ip(k), 67)).into())?;
            let socket = Rc::new(UdpSocket::from_std(sock.into())?);
            let waiters: Waiters = Rc::default();
            let dispatcher = tokio::task::spawn_local(dispatch(socket.clone(), waiters.clone()));
            let dhcp = Rc::new(Dhcp {
                socket,
                waiters,
                server: SocketAddr::V4(SocketAddrV4::new(server_ip(k), 67)),
                giaddr: relay_ip(k),
            });
            let t0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let (d, c) = (dhcp.clone(), content.clone());
                set.spawn_local(boot(d, k, i, c, t0));
            }
            let mut times = Vec::with_capacity(n);
            let mut failed = 0;
            let mut first = None;
            while let Some(r) = set.join_next().await {
                match r? {
                    Ok(t) => times.push(t),
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            dispatcher.abort();
            if let Some(e) = first {
                return Err(e.context(format!(
                    "{failed} of {n} clients of {} did not boot",
                    SERVERS[k]
                )));
            }
            let last = content.last_phase();
            times.sort_by(|a: &Marks, b: &Marks| a[last].total_cmp(&b[last]));
            Ok(times)
        })
    })
}

/// Our server's count of DHCP requests it did not answer because their MAC was over its replies per second
/// (`beowulf_dhcp_rate_limited_total` on its `/metrics`, read from the clients' namespace).
fn dhcp_rate_limited(clients: &Netns) -> anyhow::Result<u64> {
    let url = format!("http://{}:{PORT}/metrics", server_ip(0));
    let text = crate::harness::try_run(
        clients
            .command(Duration::from_secs(10), "curl")
            .args(["-sSf", &url]),
    )
    .context("reading our server's metrics")?;
    parse_metric(&text, "beowulf_dhcp_rate_limited_total")
        .with_context(|| format!("no beowulf_dhcp_rate_limited_total in {url}"))
}

/// The value of the unlabelled metric `name` in Prometheus text.
fn parse_metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(name)?.strip_prefix(' ')?;
        v.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// UDP datagrams the kernel dropped in `ns` because a socket's receive buffer was full (`RcvbufErrors` of
/// `/proc/net/snmp`): a server that does not read fast enough, or a simulator that does not, loses requests
/// this way and the clients wait for their retransmission.
fn udp_drops(ns: &Netns) -> anyhow::Result<u64> {
    let snmp = crate::harness::try_run(ns.cmd("cat").arg("/proc/net/snmp"))?;
    parse_udp_drops(&snmp).context("no Udp RcvbufErrors in /proc/net/snmp")
}

fn parse_udp_drops(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Per phase: the time at which 99% of the clients had finished it, and the median time a client spent in it.
fn phase_stats(marks: &[Marks]) -> (Marks, Marks) {
    let mut done99 = [f64::NAN; PHASES.len()];
    let mut spent = [f64::NAN; PHASES.len()];
    for p in 0..PHASES.len() {
        let mut at: Vec<f64> = marks.iter().map(|m| m[p]).collect();
        at.sort_by(f64::total_cmp);
        done99[p] = super::percentile(&at, 99.0);
        let d: Vec<f64> = marks
            .iter()
            .map(|m| if p == 0 { m[0] } else { m[p] - m[p - 1] })
            .collect();
        spent[p] = super::summary(&d).0;
    }
    (done99, spent)
}

/// Two Markdown tables from `phases[size][server][round]`: when 99% of the clients had finished each phase,
/// and the median time a client spent in each phase (both the median over rounds), so the reader sees where
/// the time goes. Phases after `last` (the rootfs, without `--image`) are left out.
fn phase_table(sizes: &[usize], phases: &[Vec<Vec<(Marks, Marks)>>], last: usize) -> String {
    let shown = &PHASES[..=last];
    let header = |what: &str| {
        let mut h = format!("| N | server | {} |\n|---|---|", shown.join(" | "));
        h.push_str(&"---:|".repeat(shown.len()));
        format!("{what}\n\n{h}\n")
    };
    let mut done = header(
        "Time from the storm's start until 99% of the clients had finished each phase (s, median over rounds):",
    );
    let mut spent = header("Median time one client spent in each phase (ms, median over rounds):");
    for (si, &n) in sizes.iter().enumerate() {
        for (k, server) in SERVERS.iter().enumerate() {
            let rounds = &phases[si][k];
            let med = |p: usize, second: bool| {
                let v: Vec<f64> = rounds
                    .iter()
                    .map(|(d, s)| if second { s[p] } else { d[p] })
                    .collect();
                super::summary(&v).0
            };
            let _ = write!(done, "| {n} | {server} |");
            let _ = write!(spent, "| {n} | {server} |");
            for p in 0..shown.len() {
                let _ = write!(done, " {:.3} |", med(p, false));
                let _ = write!(spent, " {:.1} |", med(p, true) * 1000.0);
            }
            done.push('\n');
            spent.push('\n');
        }
    }
    format!("{done}\n{spent}")
}

// ---- servers ------------------------------------------------------------------------------------------------

fn inventory(served: &Path, n: usize, rootfs: bool) -> String {
    let live = if rootfs {
        format!(
            "    rootfs: {{ path: {}/images/storm/rootfs.squashfs }}\n    cmdline: \"console=ttyS0 root=live:{{{{ rootfs_url }}}}\"\n",
            served.display()
        )
    } else {
        "    cmdline: \"console=ttyS0\"\n".to_string()
    };
    let mut y = format!(
        "namespace: bench\nnetworks:\n  - name: storm\n    subnet: 10.{o}.0.0/16\n    gateway: {gw}\n    bootServer: {gw}\n    leaseSeconds: 3600\n\
         images:\n  - name: storm\n    kernel: {{ path: {s}/images/storm/vmlinuz }}\n    initrds:\n      - {{ path: {s}/images/storm/initrd.img }}\n{live}hosts:\n",
        o = net(0),
        gw = server_ip(0),
        s = served.display(),
    );
    for i in 0..n {
        let _ = writeln!(
            y,
            "  - {{ name: n{i}, mac: \"{}\", ip: {}, image: storm }}",
            mac_str(&mac(i)),
            client_ip(0, i)
        );
    }
    y
}

fn start_dnsmasq(
    ns: &Netns,
    iface: &str,
    served: &Path,
    work: &Path,
    n: usize,
) -> anyhow::Result<Proc> {
    let mut conf = String::new();
    for i in 0..n {
        let _ = writeln!(conf, "dhcp-host={},{}", mac_str(&mac(i)), client_ip(1, i));
    }
    // The usual dnsmasq chainloading setup: PXE ROMs get undionly.kpxe over TFTP, iPXE gets the script URL.
    let _ = writeln!(conf, "dhcp-userclass=set:ipxe,iPXE");
    let _ = writeln!(conf, "dhcp-boot=tag:!ipxe,undionly.kpxe");
    let _ = writeln!(
        conf,
        "dhcp-boot=tag:ipxe,http://{}:{PORT}/boot.ipxe",
        server_ip(1)
    );
    let path = work.join("dnsmasq.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = ns.command(Duration::from_secs(3600), "dnsmasq");
    cmd.args([
        "--no-daemon",
        "--port=0",
        "--user=root",
        "--bind-interfaces",
        "--dhcp-authoritative",
        "--dhcp-lease-max=100000",
        "--leasefile-ro",
        "--no-resolv",
        "--no-hosts",
        "--quiet-dhcp",
        "--enable-tftp",
        // As many transfers at once as ours takes on its loops (TftpConfig::max_lock_step_transfers).
        "--tftp-max=2048",
        "--pid-file=",
    ])
    .arg(format!("--interface={iface}"))
    .arg(format!(
        "--dhcp-range=10.{}.0.0,static,255.255.0.0,1h",
        net(1)
    ))
    .arg(format!("--tftp-root={}", served.display()))
    .arg(format!(
        "--log-facility={}",
        work.join("dnsmasq.log").display()
    ))
    .arg(format!("--conf-file={}", path.display()))
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(work.join("dnsmasq.stderr"))?);
    Proc::try_spawn("dnsmasq", &mut cmd)
}

fn ipxe_script(k: usize, rootfs: bool) -> String {
    let base = format!("http://{}:{PORT}/images/storm", server_ip(k));
    let live = if rootfs {
        format!(" root=live:{base}/rootfs.squashfs")
    } else {
        String::new()
    };
    format!(
        "#!ipxe\nkernel {base}/vmlinuz initrd=initrd.img console=ttyS0{live}\ninitrd {base}/initrd.img\nboot\n"
    )
}

pub fn run(opts: &Options) -> anyhow::Result<String> {
    for tool in ["dnsmasq", "nginx", "timeout", "curl"] {
        if !have(tool) {
            bail!("{tool} is missing: run `bash .ci/install`");
        }
    }
    let max = opts.sizes.iter().copied().max().unwrap_or(1).max(1);
    if max > 4000 {
        bail!("at most 4000 clients (the client address block is a /20)");
    }
    let served = shm_dir("bench-storm-root")?;
    let work = shm_dir("bench-storm-work")?;
    let content = Arc::new(Content::load(opts)?);
    let rootfs = content.rootfs.is_some();
    let images = served.path().join("images/storm");
    std::fs::create_dir_all(&images)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        for d in [served.path().join("images"), images.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    write_public(&served.path().join("undionly.kpxe"), &content.boot)?;
    write_public(&images.join("vmlinuz"), &content.kernel)?;
    write_public(&images.join("initrd.img"), &content.initrd)?;
    if let Some(squashfs) = &content.rootfs {
        write_public(&images.join("rootfs.squashfs"), squashfs)?;
    }
    write_public(
        &served.path().join("boot.ipxe"),
        ipxe_script(1, rootfs).as_bytes(),
    )?;

    let pairs = netns_pairs("storm", "bs", SERVERS.len(), |k| {
        (
            format!("{}/16", server_ip(k)),
            format!("{}/16", relay_ip(k)),
        )
    })?;
    for (k, pair) in pairs.iter().enumerate() {
        // Client addresses live behind the relay (one neighbour entry on the server side).
        pair.server.try_ip(&[
            "route",
            "add",
            &format!("10.{}.16.0/20", net(k)),
            "via",
            &relay_ip(k).to_string(),
        ])?;
        let mut batch = String::new();
        for i in 0..max {
            let _ = writeln!(batch, "addr add {}/32 dev lo", client_ip(k, i));
        }
        let file = work.path().join(format!("addrs{k}"));
        std::fs::write(&file, batch)?;
        crate::harness::try_run(
            std::process::Command::new("ip")
                .args(["-n", &pair.client.name, "-batch"])
                .arg(&file),
        )?;
    }

    let inv = work.path().join("inventory.yaml");
    std::fs::write(&inv, inventory(served.path(), max, rootfs))?;
    let logs = [
        work.path().join("beowulf.log"),
        work.path().join("dnsmasq.stderr"),
        work.path().join("nginx.err"),
    ];
    let mut procs = [
        start_beowulf(
            &pairs[0].server,
            Duration::from_secs(3600),
            &inv,
            &pairs[0].server_if,
            served.path(),
            PORT,
            &logs[0],
        )?,
        start_dnsmasq(
            &pairs[1].server,
            &pairs[1].server_if,
            served.path(),
            work.path(),
            max,
        )?,
        super::start_nginx(
            &pairs[1].server,
            &format!("{}:{PORT}", server_ip(1)),
            served.path(),
            work.path(),
        )?,
    ];
    // Ready when one client boots end to end (polled with a deadline).
    for k in 0..SERVERS.len() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (p, l) in procs.iter_mut().zip(&logs) {
                alive(p, l)?;
            }
            match storm(&pairs[k].client, k, 1, content.clone(), None) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    bail!("{} not ready within 30 s: {e:#}", SERVERS[k]);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    let sim_cpu = if opts.pin {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            bail!("--pin needs at least 2 CPUs");
        }
        // Every thread of every server process (and what they start later: threads and forks inherit it), once they are up.
        let others = format!("0-{}", cpus - 2);
        for p in &procs {
            for pid in super::descendants(p.child.id()) {
                crate::harness::try_run(
                    std::process::Command::new("taskset")
                        .args(["-a", "-c", "-p", &others, &pid.to_string()])
                        .stdout(std::process::Stdio::null()),
                )?;
            }
        }
        eprintln!(
            "bench storm: simulator pinned to CPU {}, servers to CPUs {others}",
            cpus - 1
        );
        Some(cpus - 1)
    } else {
        None
    };
    let kib = |b: &[u8]| b.len() / 1024;
    eprintln!(
        "bench storm: N = {:?}, {} round(s); per client {} KiB TFTP + {} KiB kernel + {} KiB initrd{}",
        opts.sizes,
        opts.rounds,
        kib(&content.boot),
        kib(&content.kernel),
        kib(&content.initrd),
        match &content.rootfs {
            Some(r) => format!(
                " + {} KiB rootfs ({})",
                kib(r),
                opts.image.as_deref().unwrap_or(Path::new("")).display()
            ),
            None => String::new(),
        }
    );
    let last = content.last_phase();
    let booted = if rootfs {
        "their rootfs"
    } else {
        "their initrd"
    };
    // [size][server][round]
    let mut p99 = vec![vec![Vec::new(); SERVERS.len()]; opts.sizes.len()];
    let mut all = vec![vec![Vec::new(); SERVERS.len()]; opts.sizes.len()];
    let mut phases = vec![vec![Vec::new(); SERVERS.len()]; opts.sizes.len()];
    let mut dropped = vec![vec![Vec::new(); SERVERS.len()]; opts.sizes.len()];
    let mut cpu_ms = vec![vec![Vec::new(); SERVERS.len()]; opts.sizes.len()];
    let mut throughput = vec![vec![Vec::new(); SERVERS.len()]; opts.sizes.len()];
    let mut held_back = vec![Vec::new(); opts.sizes.len()];
    // When each server's last storm ended. The same clients boot again in the next round; ours answers a MAC at
    // most `MAX_REPLIES_PER_MAC_PER_SEC` times a second (a flood guard; a boot takes four replies), so storms
    // of one server start at least a second apart, as no machine reboots faster: back to back (A B, B A, A B …
    // puts two of ours together), five small storms within a second made it hold back a client's DISCOVER, and
    // that client waited a second for its retry.
    let mut last_storm: [Option<Instant>; 2] = [None; 2];
    for round in 1..=opts.rounds {
        for (si, &n) in opts.sizes.iter().enumerate() {
            // Which server goes first alternates per round (A B, B A, …).
            for j in 0..SERVERS.len() {
                let k = (j + round - 1) % SERVERS.len();
                // Ours is procs[0]; dnsmasq and nginx are procs[1] and procs[2].
                let server_pids: Vec<u32> = if k == 0 {
                    vec![procs[0].child.id()]
                } else {
                    vec![procs[1].child.id(), procs[2].child.id()]
                };
                let cpu = || {
                    server_pids
                        .iter()
                        .map(|p| super::cpu_seconds(*p))
                        .sum::<f64>()
                };
                if let Some(end) = last_storm[k] {
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(end.elapsed()));
                }
                let held_before = if k == 0 {
                    dhcp_rate_limited(&pairs[0].client)?
                } else {
                    0
                };
                let cpu_before = cpu();
                let before = (udp_drops(&pairs[k].server)?, udp_drops(&pairs[k].client)?);
                let marks = storm(&pairs[k].client, k, n, content.clone(), sim_cpu)?;
                last_storm[k] = Some(Instant::now());
                if k == 0 {
                    held_back[si].push(dhcp_rate_limited(&pairs[0].client)? - held_before);
                }
                let drops = (
                    udp_drops(&pairs[k].server)? - before.0,
                    udp_drops(&pairs[k].client)? - before.1,
                );
                let cpu_used = cpu() - cpu_before;
                cpu_ms[si][k].push(cpu_used * 1000.0 / n as f64);
                let done: Vec<f64> = marks.iter().map(|m| m[last]).collect();
                let t99 = super::percentile(&done, 99.0);
                let t100 = done.last().copied().unwrap_or(f64::NAN);
                let (done99, _) = phase_stats(&marks);
                eprintln!(
                    "round {round} N={n:<5} {:>14}: 99% booted after {t99:.2} s, all after {t100:.2} s; 99% through each phase at {}; UDP datagrams dropped (receive buffer full): server {}, simulator {}; server CPU {cpu_used:.2} s",
                    SERVERS[k],
                    done99
                        .iter()
                        .map(|t| format!("{t:.2}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    drops.0,
                    drops.1,
                );
                dropped[si][k].push(drops);
                p99[si][k].push(t99);
                all[si][k].push(t100);
                throughput[si][k].push((n * content.per_client()) as f64 / t100 / (1 << 20) as f64);
                phases[si][k].push(phase_stats(&marks));
            }
        }
        for (p, l) in procs.iter_mut().zip(&logs) {
            alive(p, l)?;
        }
    }
    let mut metrics = Vec::new();
    for (si, &n) in opts.sizes.iter().enumerate() {
        metrics.push(Metric {
            name: format!("storm N={n}: time until 99% have {booted}"),
            unit: "s",
            higher_is_better: false,
            values: p99[si].clone(),
        });
        metrics.push(Metric {
            name: format!("storm N={n}: time until all have {booted}"),
            unit: "s",
            higher_is_better: false,
            values: all[si].clone(),
        });
        metrics.push(Metric {
            name: format!("storm N={n}: server CPU time per client"),
            unit: "ms",
            higher_is_better: false,
            values: cpu_ms[si].clone(),
        });
        metrics.push(Metric {
            name: format!("storm N={n}: bytes served per second until all have {booted}"),
            unit: "MiB/s",
            higher_is_better: true,
            values: throughput[si].clone(),
        });
    }
    println!("{}", table(&SERVERS, &metrics));
    println!("{}", phase_table(&opts.sizes, &phases, last));
    println!(
        "UDP datagrams dropped per storm because a receive buffer was full (server namespace / simulator; per round):\n"
    );
    for (si, &n) in opts.sizes.iter().enumerate() {
        for (k, server) in SERVERS.iter().enumerate() {
            let per_round: Vec<String> = dropped[si][k]
                .iter()
                .map(|(s, c)| format!("{s}/{c}"))
                .collect();
            println!("- N={n} {server}: {}", per_round.join(" "));
        }
    }
    println!(
        "\nDHCP requests ours left unanswered because their MAC was over its replies per second (per round; \
         storms of a server start a second apart, so none should be):\n"
    );
    for (si, &n) in opts.sizes.iter().enumerate() {
        let per_round: Vec<String> = held_back[si].iter().map(u64::to_string).collect();
        println!("- N={n} beowulf: {}", per_round.join(" "));
    }
    println!();
    let med = |si: usize, k: usize| super::summary(&p99[si][k]).0;
    let last = opts.sizes.len() - 1;
    let mut line = format!("storm={:.2}", med(last, 1) / med(last, 0));
    for (si, &n) in opts.sizes.iter().enumerate() {
        let _ = write!(line, " storm_{n}={:.2}", med(si, 1) / med(si, 0));
    }
    let (n0, n1) = (opts.sizes[0], opts.sizes[last]);
    println!(
        "Growth of the 99% time from N={n0} to N={n1} ({}× the clients): beowulf {:.1}×, dnsmasq+nginx {:.1}×\n",
        n1 / n0.max(1),
        med(last, 0) / med(0, 0),
        med(last, 1) / med(0, 1)
    );
    let _ = write!(
        line,
        " storm_growth_beowulf={:.2} storm_growth_peer={:.2}",
        med(last, 0) / med(0, 0),
        med(last, 1) / med(0, 1)
    );
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_read_by_its_exact_name() {
        let text = "# HELP beowulf_dhcp_rate_limited_total x\n\
                    beowulf_dhcp_rate_limited_total_other 9\n\
                    beowulf_dhcp_rate_limited_total 17\n";
        assert_eq!(
            parse_metric(text, "beowulf_dhcp_rate_limited_total"),
            Some(17)
        );
        assert_eq!(parse_metric(text, "beowulf_dhcp_ignored_total"), None);
    }

    #[test]
    fn udp_drops_are_read_from_the_udp_lines() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 4716263 2203 9452 4263093 9450 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 7 0\n";
        assert_eq!(parse_udp_drops(snmp), Some(9450));
        assert_eq!(parse_udp_drops("Ip: a\nIp: 1\n"), None);
    }

    #[test]
    fn phase_stats_take_the_99th_completion_and_the_median_duration() {
        // 100 clients: client c finishes phase p at c + 10 p ms; client 99 is 1 s late in TFTP.
        let mut marks: Vec<Marks> = (0..100)
            .map(|c| std::array::from_fn(|p| (c as f64 + 10.0 * p as f64) / 1000.0))
            .collect();
        for t in &mut marks[99][1..] {
            *t += 1.0;
        }
        let (done99, spent) = phase_stats(&marks);
        // The 99th of 100 completions is client 98's; the client late from TFTP on does not count.
        assert!((done99[0] - 0.098).abs() < 1e-9, "{done99:?}");
        assert!((done99[1] - 0.108).abs() < 1e-9, "{done99:?}");
        assert!((done99[5] - 0.148).abs() < 1e-9, "{done99:?}");
        // Phase 0 lasts from the start (median of 0..99 ms = 49.5 ms), the others 10 ms each.
        assert!((spent[0] - 0.0495).abs() < 1e-9, "{spent:?}");
        for s in &spent[1..] {
            assert!((s - 0.010).abs() < 1e-9, "{spent:?}");
        }
        let rounds = [vec![vec![(done99, spent)], vec![(done99, spent)]]];
        let table = phase_table(&[100], &rounds, ROOTFS);
        assert!(
            table.contains("| 100 | beowulf | 0.098 | 0.108 |"),
            "{table}"
        );
        assert!(
            table.contains("| 100 | dnsmasq+nginx | 49.5 | 10.0 |"),
            "{table}"
        );
        assert!(table.contains("| initrd | rootfs |"), "{table}");
        // Without a live image the boot ends with the initrd: no rootfs column.
        let table = phase_table(&[100], &rounds, INITRD);
        assert!(table.contains("| initrd |\n"), "{table}");
        assert!(!table.contains("rootfs"), "{table}");
        assert!(table.contains(" 0.148 |\n"), "{table}");
    }
}
