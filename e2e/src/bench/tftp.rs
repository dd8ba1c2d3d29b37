//! `bench tftp`: concurrent downloads with a real client (atftp) from our TFTP server, tftpd-hpa and dnsmasq's
//! TFTP server, blksize 1468, with and without windowsize (RFC 7440).
//!
//! Each server runs in a network namespace of its own, joined by a veth pair to a client namespace where the
//! atftp processes run. A batch (e.g. 64 downloads of a 1 MiB file) starts every client at once from one
//! shell and is timed until the last one exits; its throughput is the payload of all downloads over that
//! wall time. Every downloaded file is compared byte for byte with what was served, and every client must
//! exit 0, so a broken transfer fails the benchmark instead of counting. What each server negotiated is
//! checked before the rounds with atftp's `--trace` (the OACK it received) and printed: a server that ignores
//! `windowsize` runs lock-step in the windowsize rows (RFC 7440 lets it), and the table says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{
    Metric, Netns, Proc, alive, have, netns_pairs, pattern, shm_dir, start_beowulf, summary, table,
    write_public,
};

const SERVERS: [&str; 3] = ["beowulf", "tftpd-hpa", "dnsmasq"];
const BLKSIZE: u16 = 1468;
const MIB: usize = 1 << 20;

/// What to run; `quick()` is a smoke variant (one small round).
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    /// (downloads at once, file size in bytes).
    pub small: (usize, usize),
    pub big: (usize, usize),
    /// The window the clients ask for in the windowsize rows.
    pub windowsize: u16,
}

impl Options {
    pub fn full() -> Self {
        Options {
            rounds: 5,
            small: (64, MIB),
            big: (8, 64 * MIB),
            windowsize: 16,
        }
    }

    pub fn quick() -> Self {
        Options {
            rounds: 1,
            small: (16, MIB),
            big: (2, 8 * MIB),
            windowsize: 16,
        }
    }
}

fn server_ip(k: usize) -> String {
    format!("10.212.{k}.1")
}

fn client_ip(k: usize) -> String {
    format!("10.212.{k}.2")
}

/// One workload: `count` clients downloading `file` at once, with or without a window.
struct Workload {
    label: String,
    file: &'static str,
    count: usize,
    size: usize,
    window: Option<u16>,
}

fn atftp_options(window: Option<u16>) -> String {
    let mut o = format!("--option 'blksize {BLKSIZE}'");
    if let Some(w) = window {
        let _ = write!(o, " --option 'windowsize {w}'");
    }
    o
}

/// Runs one batch; returns its wall time. Every client must exit 0 and every file must match `expected`.
fn batch(
    client: &Netns,
    k: usize,
    w: &Workload,
    expected: &[u8],
    out: &Path,
) -> anyhow::Result<Duration> {
    // One shell starts all clients so that process start-up is not serialised through `ip netns exec`.
    let script = format!(
        "pids=; for i in $(seq 1 {n}); do atftp -g -r {file} -l {out}/$i {opts} {ip} >/dev/null 2>{out}/$i.err & pids=\"$pids $!\"; done; \
         fail=0; for p in $pids; do wait $p || fail=$((fail+1)); done; exit $fail",
        n = w.count,
        file = w.file,
        out = out.display(),
        opts = atftp_options(w.window),
        ip = server_ip(k),
    );
    let t0 = Instant::now();
    let status = client
        .command(Duration::from_secs(600), "sh")
        .args(["-c", &script])
        .status()
        .context("running atftp (install atftp: `bash .ci/install`)")?;
    let elapsed = t0.elapsed();
    if !status.success() {
        let err = std::fs::read_to_string(out.join("1.err")).unwrap_or_default();
        bail!(
            "{}: {} of {} atftp downloads from {} failed ({status}); first client's stderr: {}",
            w.label,
            status.code().unwrap_or(-1),
            w.count,
            SERVERS[k],
            err.trim()
        );
    }
    for i in 1..=w.count {
        let p = out.join(i.to_string());
        let got = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        if got != expected {
            bail!(
                "{}: download {i} from {} differs from the served file ({} bytes, expected {})",
                w.label,
                SERVERS[k],
                got.len(),
                expected.len()
            );
        }
        std::fs::remove_file(&p)?;
        let _ = std::fs::remove_file(out.join(format!("{i}.err")));
    }
    Ok(elapsed)
}

/// One traced download of the small file: what the server acknowledged (the OACK's options), or
/// "no OACK" for a server that ignored every option. Also the readiness probe (polled with a deadline).
fn negotiated(
    client: &Netns,
    k: usize,
    file: &str,
    window: Option<u16>,
    out: &Path,
) -> anyhow::Result<String> {
    let script = format!(
        "atftp --trace -g -r {file} -l {} {} {} 2>&1",
        out.join("probe").display(),
        atftp_options(window),
        server_ip(k)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = client
            .command(Duration::from_secs(30), "sh")
            .args(["-c", &script])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("DATA <block") {
            return Ok(text
                .lines()
                .find_map(|l| l.split("received OACK ").nth(1))
                .map(|o| o.trim().to_string())
                .unwrap_or_else(|| "no OACK (options ignored)".into()));
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not serve {file} within 20 s: {}",
                SERVERS[k],
                text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_tftpd_hpa(ns: &Netns, k: usize, root: &Path) -> anyhow::Result<Proc> {
    let mut cmd = ns.command(Duration::from_secs(3600), "in.tftpd");
    cmd.args(["--foreground", "--listen", "--user", "root", "--address"])
        .arg(format!("{}:69", server_ip(k)))
        .arg("--secure")
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Proc::try_spawn("tftpd-hpa", &mut cmd)
}

fn start_dnsmasq(ns: &Netns, iface: &str, root: &Path, pid_file: &Path) -> anyhow::Result<Proc> {
    let mut cmd = ns.command(Duration::from_secs(3600), "dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--user=root",
        "--enable-tftp",
        // Ours allows 256 transfers at once; dnsmasq's default is 50.
        "--tftp-max=256",
        "--bind-interfaces",
        "--leasefile-ro",
    ])
    .arg(format!("--interface={iface}"))
    .arg(format!("--tftp-root={}", root.display()))
    .arg(format!("--pid-file={}", pid_file.display()))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    Proc::try_spawn("dnsmasq", &mut cmd)
}

fn inventory(kernel: &Path) -> String {
    // The TFTP bench needs no hosts; the inventory is what `beowulf standalone` requires to start.
    format!(
        "namespace: bench\nnetworks:\n  - name: bench\n    subnet: 10.212.0.0/24\n    gateway: {gw}\n    bootServer: {gw}\n\
         images:\n  - name: img\n    kernel: {{ path: {k} }}\n    cmdline: \"console=ttyS0\"\nhosts: []\n",
        gw = server_ip(0),
        k = kernel.display(),
    )
}

/// Sets up namespaces and servers, runs the rounds, prints the table (stdout); returns the `bench:` fields.
pub fn run(opts: &Options) -> anyhow::Result<String> {
    for tool in ["atftp", "in.tftpd", "dnsmasq", "timeout"] {
        if !have(tool) {
            bail!("{tool} is missing: run `bash .ci/install`");
        }
    }
    let served = shm_dir("bench-tftp-root")?;
    let work = shm_dir("bench-tftp-work")?;
    let small = pattern(opts.small.1, 1);
    let big = pattern(opts.big.1, 2);
    write_public(&served.path().join("small.bin"), &small)?;
    write_public(&served.path().join("big.bin"), &big)?;

    let pairs = netns_pairs("tftp", "bt", SERVERS.len(), |k| {
        (
            format!("{}/24", server_ip(k)),
            format!("{}/24", client_ip(k)),
        )
    })?;

    let inv = work.path().join("inventory.yaml");
    std::fs::write(&inv, inventory(&served.path().join("small.bin")))?;
    let log = work.path().join("beowulf.log");
    let mut procs = [
        start_beowulf(
            &pairs[0].server,
            Duration::from_secs(3600),
            &inv,
            &pairs[0].server_if,
            served.path(),
            8080,
            &log,
        )?,
        start_tftpd_hpa(&pairs[1].server, 1, served.path())?,
        start_dnsmasq(
            &pairs[2].server,
            &pairs[2].server_if,
            served.path(),
            &work.path().join("dnsmasq.pid"),
        )?,
    ];
    let logs = [log.clone(), PathBuf::new(), PathBuf::new()];

    let mut notes = String::new();
    for k in 0..SERVERS.len() {
        let plain =
            negotiated(&pairs[k].client, k, "small.bin", None, work.path()).with_context(|| {
                match alive(&mut procs[k], &logs[k]) {
                    Err(e) => format!("{e:#}"),
                    Ok(()) => format!("{} is running", SERVERS[k]),
                }
            })?;
        let windowed = negotiated(
            &pairs[k].client,
            k,
            "small.bin",
            Some(opts.windowsize),
            work.path(),
        )?;
        if k == 0 && !windowed.contains(&format!("windowsize: {}", opts.windowsize)) {
            bail!(
                "our server did not negotiate windowsize {}: OACK {windowed}",
                opts.windowsize
            );
        }
        if !plain.contains(&format!("blksize: {BLKSIZE}")) {
            bail!(
                "{} did not negotiate blksize {BLKSIZE}: {plain}",
                SERVERS[k]
            );
        }
        let _ = writeln!(
            notes,
            "- {}: asked blksize {BLKSIZE} → OACK `{plain}`; asked blksize {BLKSIZE} + windowsize {} → OACK `{windowed}`",
            SERVERS[k], opts.windowsize
        );
    }

    let workloads = [
        Workload {
            label: format!("{} × {} MiB", opts.small.0, opts.small.1 / MIB),
            file: "small.bin",
            count: opts.small.0,
            size: opts.small.1,
            window: None,
        },
        Workload {
            label: format!(
                "{} × {} MiB, windowsize {}",
                opts.small.0,
                opts.small.1 / MIB,
                opts.windowsize
            ),
            file: "small.bin",
            count: opts.small.0,
            size: opts.small.1,
            window: Some(opts.windowsize),
        },
        Workload {
            label: format!("{} × {} MiB", opts.big.0, opts.big.1 / MIB),
            file: "big.bin",
            count: opts.big.0,
            size: opts.big.1,
            window: None,
        },
        Workload {
            label: format!(
                "{} × {} MiB, windowsize {}",
                opts.big.0,
                opts.big.1 / MIB,
                opts.windowsize
            ),
            file: "big.bin",
            count: opts.big.0,
            size: opts.big.1,
            window: Some(opts.windowsize),
        },
    ];
    eprintln!(
        "bench tftp: {} round(s) of {} workloads × {} servers (blksize {BLKSIZE})",
        opts.rounds,
        workloads.len(),
        SERVERS.len()
    );
    // values[workload][server][round], MiB/s
    let mut values = vec![vec![Vec::new(); SERVERS.len()]; workloads.len()];
    for round in 1..=opts.rounds {
        for (wi, w) in workloads.iter().enumerate() {
            let expected = if w.file == "small.bin" { &small } else { &big };
            for k in 0..SERVERS.len() {
                alive(&mut procs[k], &logs[k])?;
                let t = batch(&pairs[k].client, k, w, expected, work.path())?;
                let mibs = (w.count * w.size) as f64 / MIB as f64 / t.as_secs_f64();
                eprintln!(
                    "round {round} {:<28} {:>9}: {:>8.1} MiB/s ({:.2} s)",
                    w.label,
                    SERVERS[k],
                    mibs,
                    t.as_secs_f64()
                );
                values[wi][k].push(mibs);
            }
        }
    }
    for k in 0..SERVERS.len() {
        alive(&mut procs[k], &logs[k])?;
    }

    let metrics: Vec<Metric> = workloads
        .iter()
        .zip(values)
        .map(|(w, v)| Metric {
            name: format!("TFTP {}", w.label),
            unit: "MiB/s",
            higher_is_better: true,
            values: v,
        })
        .collect();
    println!("{}", table(&SERVERS, &metrics));
    println!("Negotiated (atftp --trace, before the rounds):\n{notes}");

    // Ratio of our median to the best peer's median, per workload.
    let ratio = |m: &Metric| {
        let ours = summary(&m.values[0]).0;
        let best = (1..SERVERS.len())
            .map(|k| summary(&m.values[k]).0)
            .fold(f64::NAN, f64::max);
        ours / best
    };
    let r: Vec<f64> = metrics.iter().map(ratio).collect();
    Ok(format!(
        "tftp={:.2} tftp_small={:.2} tftp_small_window={:.2} tftp_big={:.2} tftp_big_window={:.2}",
        r[1].min(r[3]),
        r[0],
        r[1],
        r[2],
        r[3]
    ))
}
