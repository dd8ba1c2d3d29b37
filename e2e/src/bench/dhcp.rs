//! `bench dhcp`: ISC perfdhcp (Kea's load generator) driving full DORA exchanges for many distinct, reserved
//! clients against our DHCP server, dnsmasq and Kea `kea-dhcp4`, the latter twice: single-threaded (Debian's
//! default) and with multi-threading on (2 packet-processing threads, as many as the machine's cores). The
//! summary ratio against Kea is against the better of the two.
//!
//! Each server runs in a network namespace of its own, joined by a veth pair to a client namespace where
//! perfdhcp runs; nothing leaves those namespaces. Every server holds the same number of static reservations
//! (one per MAC in perfdhcp's `-M` list), and no dynamic pool, so every completed exchange is a reservation
//! lookup. perfdhcp always acts as a relay agent for DHCPv4 (giaddr = its address, replies to port 67), so
//! this measures the relayed path of every server.
//!
//! Per round and server, two runs: a capacity run (offered rate above what a 2-core machine serves, for a
//! fixed period; the completed 4-way exchanges per second are perfdhcp's own "Rate" figure) and a latency
//! run at a moderate rate with `-x t`, whose per-packet timestamps give DISCOVER→OFFER and REQUEST→ACK
//! percentiles (perfdhcp itself prints only min/avg/max/std-dev).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use beowulf::boot::dhcp::{DhcpConfig, DhcpMetrics, DhcpServer};
use beowulf::boot::{BootDirectory, Lease, MacAddr, Phase};

use super::{Metric, Netns, Proc, percentile, summary, table, veth};

/// What to run; `quick()` is the CI variant.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    /// Distinct client MACs, each reserved in every server.
    pub clients: usize,
    /// Offered DORA rate of the capacity run (exchanges/s) and its length.
    pub capacity_rate: u32,
    pub capacity_secs: u32,
    /// Rate and number of exchanges of the latency run.
    pub latency_rate: u32,
    pub latency_exchanges: u32,
}

impl Options {
    pub fn full() -> Self {
        Options {
            rounds: 5,
            // 20,000 exchanges/s over 6,000 MACs is about 3 a second per MAC: a busy network of booting hosts.
            // Over 1,200 (as before) each MAC asked 17 times a second, and our server's per-MAC reply limit
            // (20/s, against a client in a loop) capped what was measured, not the server.
            clients: 6000,
            // Above what any of them serves on a 2-core machine (ours reached ~9,700/s at 10,000 offered).
            capacity_rate: 20_000,
            capacity_secs: 3,
            latency_rate: 500,
            latency_exchanges: 2_000,
        }
    }

    /// A few hundred exchanges per server, one round: proves every server still answers (CI).
    pub fn quick() -> Self {
        Options {
            rounds: 1,
            clients: 1200,
            capacity_rate: 300,
            capacity_secs: 1,
            latency_rate: 200,
            latency_exchanges: 200,
        }
    }
}

const SERVERS: [&str; 4] = ["beowulf", "dnsmasq", "kea-dhcp4", "kea-dhcp4-mt"];

/// Indices into `SERVERS` of the two Kea configurations.
const KEA: usize = 2;
const KEA_MT: usize = 3;

/// The reservation of client `i` on the network of server `k`: 10.(201+k).(1 + i/250).(1 + i%250)/16.
fn reservation(k: usize, i: usize) -> (MacAddr, Ipv4Addr) {
    let mac = MacAddr([0x02, 0x42, 0xb0, 0x00, (i >> 8) as u8, (i & 0xff) as u8]);
    (
        mac,
        Ipv4Addr::new(10, 201 + k as u8, 1 + (i / 250) as u8, 1 + (i % 250) as u8),
    )
}

fn server_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201 + k as u8, 0, 1)
}

fn client_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201 + k as u8, 0, 2)
}

/// An in-memory inventory of reservations, indexed like the standalone inventory's (hash maps), recording
/// the phases as a phase store would.
struct Reservations {
    by_mac: HashMap<MacAddr, Lease>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
    phases: Mutex<HashMap<MacAddr, Phase>>,
}

impl Reservations {
    fn new(k: usize, clients: usize) -> Self {
        let mut by_mac = HashMap::new();
        let mut by_ip = HashMap::new();
        for i in 0..clients {
            let (mac, ip) = reservation(k, i);
            by_mac.insert(
                mac,
                Lease {
                    mac,
                    hostname: format!("node{i}"),
                    ip,
                    prefix_len: 16,
                    gateway: Some(server_ip(k)),
                    dns: vec![server_ip(k)],
                    domain: None,
                    mtu: None,
                    lease_secs: 3600,
                },
            );
            by_ip.insert(ip, mac);
        }
        Reservations {
            by_mac,
            by_ip,
            phases: Mutex::new(HashMap::new()),
        }
    }
}

impl BootDirectory for Reservations {
    fn lease(&self, mac: &MacAddr, relay: Option<Ipv4Addr>) -> Option<Lease> {
        let l = self.by_mac.get(mac)?;
        match relay {
            Some(r) if u32::from(r) >> 16 != u32::from(l.ip) >> 16 => None,
            _ => Some(l.clone()),
        }
    }
    fn ipxe_script_url(&self, _mac: &MacAddr) -> Option<String> {
        None
    }
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.by_ip.get(&ip).copied()
    }
    fn record(&self, mac: &MacAddr, phase: Phase) {
        if let Ok(mut p) = self.phases.lock() {
            p.insert(*mac, phase);
        }
    }
}

/// Our server on a thread that has entered the server namespace (its socket lives there); stopped on drop.
struct Ours {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: Arc<DhcpMetrics>,
}

impl Ours {
    fn start(ns: &Netns, interface: &str, clients: usize) -> anyhow::Result<Self> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns_path = ns.path();
        let interface = interface.to_string();
        let thread = std::thread::spawn(move || {
            let started = (|| -> anyhow::Result<_> {
                let f =
                    std::fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let mut cfg = DhcpConfig::new(server_ip(0));
                cfg.interface = Some(interface);
                let dir: Arc<dyn BootDirectory> = Arc::new(Reservations::new(0, clients));
                let server = rt.block_on(async { DhcpServer::bind(cfg, dir) })?;
                Ok((rt, server))
            })();
            match started {
                Ok((rt, server)) => {
                    let _ = ready_tx.send(Ok(server.metrics()));
                    rt.block_on(server.run(async {
                        let _ = stop_rx.await;
                    }));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        let metrics = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("our DHCP server did not start within 10 s")??;
        Ok(Ours {
            stop: Some(stop_tx),
            thread: Some(thread),
            metrics,
        })
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_dnsmasq(ns: &Netns, interface: &str, dir: &Path, clients: usize) -> anyhow::Result<Proc> {
    let mut hosts = String::new();
    for i in 0..clients {
        let (mac, ip) = reservation(1, i);
        let _ = writeln!(hosts, "dhcp-host={mac},{ip}");
    }
    let conf = dir.join("dnsmasq-hosts.conf");
    std::fs::write(&conf, hosts)?;
    let mut cmd = ns.command(Duration::from_secs(3600), "dnsmasq");
    cmd.args([
        "--no-daemon",
        "--port=0",
        "--bind-interfaces",
        &format!("--interface={interface}"),
        "--dhcp-range=10.202.0.0,static,255.255.0.0,1h",
        "--dhcp-authoritative",
        "--dhcp-lease-max=100000",
        "--leasefile-ro",
        "--no-resolv",
        "--no-hosts",
        "--quiet-dhcp",
        "--pid-file=",
        &format!("--log-facility={}", dir.join("dnsmasq.log").display()),
        &format!("--conf-file={}", conf.display()),
    ]);
    // dnsmasq prints its start-up banner on stderr even with --log-facility.
    cmd.stderr(std::fs::File::create(dir.join("dnsmasq.stderr"))?);
    Proc::try_spawn("dnsmasq", &mut cmd)
}

/// Kea as server `k` (`KEA` or `KEA_MT`), with its configuration, log, lock and pid files in a directory of
/// its own under `dir`. `KEA_MT` is the same configuration with multi-threading on: Kea 2.2's
/// `multi-threading` map, 2 packet-processing threads (the machine's cores) and its default queue of 64.
fn start_kea(
    ns: &Netns,
    interface: &str,
    dir: &Path,
    clients: usize,
    k: usize,
) -> anyhow::Result<Proc> {
    let dir = dir.join(SERVERS[k]);
    std::fs::create_dir_all(&dir)?;
    let reservations: Vec<_> = (0..clients)
        .map(|i| {
            let (mac, ip) = reservation(k, i);
            serde_json::json!({ "hw-address": mac.to_string(), "ip-address": ip.to_string() })
        })
        .collect();
    let multi_threading = if k == KEA_MT {
        serde_json::json!({
            "enable-multi-threading": true,
            "thread-pool-size": 2,
            "packet-queue-size": 64
        })
    } else {
        serde_json::json!({ "enable-multi-threading": false })
    };
    let subnet = Ipv4Addr::new(10, 201 + k as u8, 0, 0);
    let config = serde_json::json!({
        "Dhcp4": {
            "interfaces-config": {
                "interfaces": [format!("{interface}/{}", server_ip(k))],
                "dhcp-socket-type": "udp"
            },
            "lease-database": { "type": "memfile", "persist": false },
            "valid-lifetime": 3600,
            "authoritative": true,
            "host-reservation-identifiers": ["hw-address"],
            "multi-threading": multi_threading,
            "subnet4": [{
                "id": 1,
                "subnet": format!("{subnet}/16"),
                "option-data": [
                    { "name": "routers", "data": server_ip(k).to_string() },
                    { "name": "domain-name-servers", "data": server_ip(k).to_string() }
                ],
                "reservations": reservations
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{ "output": dir.join("kea.log").display().to_string() }],
                "severity": "WARN"
            }]
        }
    });
    let path = dir.join("kea-dhcp4.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    let mut cmd = ns.command(Duration::from_secs(3600), "kea-dhcp4");
    cmd.arg("-c").arg(&path);
    cmd.env("KEA_LOCKFILE_DIR", &dir)
        .env("KEA_PIDFILE_DIR", &dir);
    cmd.stdout(std::process::Stdio::null());
    Proc::try_spawn(SERVERS[k], &mut cmd)
}

/// Waits until Kea `k` answers; on failure the error carries its log.
fn wait_for_kea(
    ns: &Netns,
    k: usize,
    macs: &Path,
    kea: &mut Proc,
    dir: &Path,
) -> anyhow::Result<()> {
    wait_until_answering(ns, k, macs, Some(kea)).with_context(|| {
        format!(
            "{} log: {}",
            SERVERS[k],
            std::fs::read_to_string(dir.join(SERVERS[k]).join("kea.log")).unwrap_or_default()
        )
    })
}

/// What one perfdhcp run reported.
#[derive(Debug, Default)]
struct PerfRun {
    /// Completed 4-way exchanges per second (perfdhcp's "Rate").
    rate: f64,
    discover_sent: u64,
    offers: u64,
    requests_sent: u64,
    acks: u64,
    /// Milliseconds, sorted.
    offer_ms: Vec<f64>,
    ack_ms: Vec<f64>,
}

fn parse_perfdhcp(out: &str) -> anyhow::Result<PerfRun> {
    let mut run = PerfRun::default();
    let mut section = "";
    for line in out.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Rate: ") {
            run.rate = rest
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .with_context(|| format!("unexpected perfdhcp rate line {line:?}"))?;
        } else if line.starts_with("***") {
            section = match (
                line.contains("DISCOVER-OFFER"),
                line.contains("REQUEST-ACK"),
            ) {
                (true, _) if line.contains("Timestamps") => "do-ts",
                (_, true) if line.contains("Timestamps") => "ra-ts",
                (true, _) => "do",
                (_, true) => "ra",
                _ => "",
            };
        } else if let Some(n) = line.strip_prefix("sent packets: ") {
            let n = n.parse()?;
            match section {
                "do" => run.discover_sent = n,
                "ra" => run.requests_sent = n,
                _ => {}
            }
        } else if let Some(n) = line.strip_prefix("received packets: ") {
            let n = n.parse()?;
            match section {
                "do" => run.offers = n,
                "ra" => run.acks = n,
                _ => {}
            }
        } else if let Some(ts) = line.strip_prefix("sent / received: ") {
            let mut it = ts.split(" / ").map(|x| x.trim().parse::<f64>());
            if let (Some(Ok(sent)), Some(Ok(recv))) = (it.next(), it.next()) {
                let ms = (recv - sent) * 1000.0;
                match section {
                    "do-ts" => run.offer_ms.push(ms),
                    "ra-ts" => run.ack_ms.push(ms),
                    _ => {}
                }
            }
        }
    }
    run.offer_ms.sort_by(f64::total_cmp);
    run.ack_ms.sort_by(f64::total_cmp);
    Ok(run)
}

/// Runs perfdhcp in `ns` against server `k` with the MAC list; exit status 3 (some exchanges not completed)
/// is a result, anything else an error.
fn perfdhcp(
    ns: &Netns,
    k: usize,
    macs: &Path,
    args: &[String],
    limit: Duration,
) -> anyhow::Result<PerfRun> {
    let mut cmd = ns.command(limit, "perfdhcp");
    cmd.args(["-4", "-l", &client_ip(k).to_string(), "-M"])
        .arg(macs)
        .args(args)
        .arg(server_ip(k).to_string());
    let out = cmd
        .output()
        .context("running perfdhcp: install kea-admin (`bash .ci/install`)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) | Some(3) => parse_perfdhcp(&text),
        other => bail!(
            "perfdhcp against {} failed ({other:?}): {}\n{}",
            SERVERS[k],
            text.lines().take(5).collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Single exchanges until one completes (the server is up and answers reserved clients), with a deadline.
fn wait_until_answering(
    ns: &Netns,
    k: usize,
    macs: &Path,
    peer: Option<&mut Proc>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peer = peer;
    loop {
        if let Some(p) = peer.as_deref_mut() {
            p.check_alive()?;
        }
        // Three exchanges, not one: perfdhcp's first transaction has xid 0, and it never counts Kea's answer
        // to that one (Kea's log shows the OFFER sent).
        let args = ["-r", "10", "-n", "3"].map(String::from);
        let run = perfdhcp(ns, k, macs, &args, Duration::from_secs(10))?;
        if run.acks >= 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not complete a single DORA exchange within 20 s",
                SERVERS[k]
            );
        }
    }
}

/// Sets up the namespaces and servers, runs the rounds, prints the table (stdout) and returns the
/// `bench:` line's fields.
pub fn run(opts: &Options) -> anyhow::Result<String> {
    let pid = std::process::id();
    let tmp = tempfile::tempdir()?;
    let macs = tmp.path().join("macs.txt");
    let mut list = String::new();
    for i in 0..opts.clients {
        let _ = writeln!(list, "{}", reservation(0, i).0);
    }
    std::fs::write(&macs, list)?;

    let mut server_ns = Vec::new();
    let mut client_ns = Vec::new();
    let mut ifaces = Vec::new();
    for k in 0..SERVERS.len() {
        let s = Netns::create(&format!("bwb-dhcp-{pid}-s{k}"))?;
        let c = Netns::create(&format!("bwb-dhcp-{pid}-c{k}"))?;
        let (s_if, c_if) = (format!("bd{pid}s{k}"), format!("bd{pid}c{k}"));
        veth(
            &s,
            &s_if,
            &format!("{}/16", server_ip(k)),
            &c,
            &c_if,
            &format!("{}/16", client_ip(k)),
        )?;
        server_ns.push(s);
        client_ns.push(c);
        ifaces.push(s_if);
    }

    eprintln!(
        "bench dhcp: {} reserved clients per server, {} round(s)",
        opts.clients, opts.rounds
    );
    let ours = Ours::start(&server_ns[0], &ifaces[0], opts.clients)?;
    let mut dnsmasq = start_dnsmasq(&server_ns[1], &ifaces[1], tmp.path(), opts.clients)?;
    let mut kea = start_kea(&server_ns[KEA], &ifaces[KEA], tmp.path(), opts.clients, KEA)?;
    let mut kea_mt = start_kea(
        &server_ns[KEA_MT],
        &ifaces[KEA_MT],
        tmp.path(),
        opts.clients,
        KEA_MT,
    )?;
    wait_until_answering(&client_ns[0], 0, &macs, None)?;
    wait_until_answering(&client_ns[1], 1, &macs, Some(&mut dnsmasq))?;
    wait_for_kea(&client_ns[KEA], KEA, &macs, &mut kea, tmp.path())?;
    wait_for_kea(&client_ns[KEA_MT], KEA_MT, &macs, &mut kea_mt, tmp.path())?;

    let n = SERVERS.len();
    let mut rate = vec![Vec::new(); n];
    let mut do50 = vec![Vec::new(); n];
    let mut do99 = vec![Vec::new(); n];
    let mut ra50 = vec![Vec::new(); n];
    let mut ra99 = vec![Vec::new(); n];
    let capacity_args: Vec<String> = vec![
        "-r".into(),
        opts.capacity_rate.to_string(),
        "-p".into(),
        opts.capacity_secs.to_string(),
    ];
    let latency_args: Vec<String> = vec![
        "-r".into(),
        opts.latency_rate.to_string(),
        "-n".into(),
        opts.latency_exchanges.to_string(),
        "-x".into(),
        "t".into(),
    ];
    let capacity_limit = Duration::from_secs(u64::from(opts.capacity_secs) + 20);
    let latency_limit =
        Duration::from_secs(u64::from(opts.latency_exchanges / opts.latency_rate.max(1)) + 20);
    for round in 1..=opts.rounds {
        for k in 0..n {
            let cap = perfdhcp(&client_ns[k], k, &macs, &capacity_args, capacity_limit)?;
            let lat = perfdhcp(&client_ns[k], k, &macs, &latency_args, latency_limit)?;
            eprintln!(
                "round {round} {:>12}: {:>7.0} DORA/s at offered {}/s ({} of {} DISCOVERs completed); latency run: {}/{} ACKs, \
                 D→O p50 {:.3} ms p99 {:.3} ms, R→A p50 {:.3} ms p99 {:.3} ms",
                SERVERS[k],
                cap.rate,
                opts.capacity_rate,
                cap.acks,
                cap.discover_sent,
                lat.acks,
                lat.discover_sent,
                percentile(&lat.offer_ms, 50.0),
                percentile(&lat.offer_ms, 99.0),
                percentile(&lat.ack_ms, 50.0),
                percentile(&lat.ack_ms, 99.0),
            );
            if cap.acks == 0 || lat.acks == 0 {
                bail!("{} completed no DORA exchange in round {round}", SERVERS[k]);
            }
            rate[k].push(cap.rate);
            do50[k].push(percentile(&lat.offer_ms, 50.0));
            do99[k].push(percentile(&lat.offer_ms, 99.0));
            ra50[k].push(percentile(&lat.ack_ms, 50.0));
            ra99[k].push(percentile(&lat.ack_ms, 99.0));
        }
    }
    dnsmasq.check_alive()?;
    kea.check_alive()?;
    kea_mt.check_alive()?;
    // perfdhcp must have sent only reserved MACs: our server counts every unknown one.
    let unknown = ours.metrics.unknown_mac.get();
    if unknown != 0 {
        bail!(
            "our server saw {unknown} requests from MACs outside the reservations: the MAC list is not what perfdhcp sends"
        );
    }
    let acked = ours.metrics.ack.get();
    // Requests our per-MAC reply limit (DhcpConfig::max_replies_per_mac_per_sec, default 20/s) left
    // unanswered: none, unless the offered rate per client nears it (with 1,200 clients it capped ours near
    // 12,000 DORA/s).
    let rate_limited = ours.metrics.rate_limited.get();

    let lat = format!("at {}/s", opts.latency_rate);
    let metrics = [
        Metric {
            name: format!("DORA exchanges/s, offered {}/s", opts.capacity_rate),
            unit: "1/s",
            higher_is_better: true,
            values: rate.clone(),
        },
        Metric {
            name: format!("DISCOVER→OFFER p50 {lat}"),
            unit: "ms",
            higher_is_better: false,
            values: do50,
        },
        Metric {
            name: format!("DISCOVER→OFFER p99 {lat}"),
            unit: "ms",
            higher_is_better: false,
            values: do99,
        },
        Metric {
            name: format!("REQUEST→ACK p50 {lat}"),
            unit: "ms",
            higher_is_better: false,
            values: ra50,
        },
        Metric {
            name: format!("REQUEST→ACK p99 {lat}"),
            unit: "ms",
            higher_is_better: false,
            values: ra99,
        },
    ];
    println!("\n{}", table(&SERVERS, &metrics));
    println!(
        "(our server: {acked} ACKs sent, 0 requests from unreserved MACs, {rate_limited} not answered over the per-MAC reply limit)"
    );

    let medians: Vec<f64> = rate.iter().map(|v| summary(v).0).collect();
    let best_peer = medians[1..].iter().copied().fold(0.0, f64::max);
    let best_kea = medians[KEA].max(medians[KEA_MT]);
    // `dhcp_vs_kea` is against the better Kea; `_st` and `_mt` against each configuration.
    Ok(format!(
        "dhcp={:.2} dhcp_vs_dnsmasq={:.2} dhcp_vs_kea={:.2} dhcp_vs_kea_st={:.2} dhcp_vs_kea_mt={:.2}",
        medians[0] / best_peer,
        medians[0] / medians[1],
        medians[0] / best_kea,
        medians[0] / medians[KEA],
        medians[0] / medians[KEA_MT]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perfdhcp_output() {
        let out = "Rate: 499.559 4-way exchanges/second, expected rate: 500\n\
            ***Statistics for: DISCOVER-OFFER***\nsent packets: 2000\nreceived packets: 1999\n\
            ***Statistics for: REQUEST-ACK***\nsent packets: 1999\nreceived packets: 1998\n\
            ***Timestamps for packets: DISCOVER-OFFER***\nsent / received: 000000.000089 / 000000.002089\n\
            sent / received: 000000.004100 / 000000.004600\n\
            ***Timestamps for packets: REQUEST-ACK***\nsent / received: 000000.003124 / 000000.003524\n";
        let r = parse_perfdhcp(out).unwrap();
        assert_eq!(r.rate, 499.559);
        assert_eq!(
            (r.discover_sent, r.offers, r.requests_sent, r.acks),
            (2000, 1999, 1999, 1998)
        );
        assert_eq!(r.offer_ms.len(), 2);
        assert!((r.offer_ms[0] - 0.5).abs() < 1e-6 && (r.offer_ms[1] - 2.0).abs() < 1e-6);
        assert!((r.ack_ms[0] - 0.4).abs() < 1e-6);
    }

    #[test]
    fn reservations_are_distinct_and_on_the_servers_network() {
        let d = Reservations::new(0, 1200);
        assert_eq!(d.by_mac.len(), 1200);
        assert_eq!(d.by_ip.len(), 1200);
        let (mac, ip) = reservation(0, 1199);
        assert_eq!(ip, Ipv4Addr::new(10, 201, 5, 200));
        assert!(d.lease(&mac, Some(client_ip(0))).is_some());
        assert!(d.lease(&mac, Some(client_ip(1))).is_none());
    }
}
