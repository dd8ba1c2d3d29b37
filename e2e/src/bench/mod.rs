//! Benchmarks against named peers: each workload runs ours and each peer in alternation (A B C A B C …) in
//! network namespaces it creates, and reports the median, min, max and the per-round ratio ours/peer.
//! Driven by the `bench` binary (`cargo run --release -p e2e --bin bench -- <workload>`); not part of
//! `cargo test`.

pub mod dhcp;
pub mod http;
pub mod publish;
pub mod storm;
pub mod tftp;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

pub use crate::harness::{Netns, Proc, veth};

/// The first argument with which the `bench` binary runs as `beowulf` (our server under test is the shipped
/// CLI, `beowulf standalone`, in a process of its own like every peer).
pub const BEOWULF_ARG: &str = "__beowulf";

/// A server namespace and a client namespace joined by a veth pair (`server_if` in `server`, `client_if` in
/// `client`), each end with its address and up. Dropping it deletes both namespaces (and the pair with them):
/// declare it before the processes that run in it, so they are stopped first.
pub struct NetnsPair {
    pub server: Netns,
    pub client: Netns,
    pub server_if: String,
    pub client_if: String,
}

/// `count` [`NetnsPair`]s for workload `bench`, pair `k` with the veth addresses `addrs(k)` = (server CIDR,
/// client CIDR). Namespaces are named `bwb-<bench>-<pid>-{s,c}<k>` and interfaces `<tag><pid>{s,c}<k>` (`tag`
/// short: an interface name has at most 15 bytes), so concurrent runs and other tests never collide.
pub fn netns_pairs(
    bench: &str,
    tag: &str,
    count: usize,
    addrs: impl Fn(usize) -> (String, String),
) -> anyhow::Result<Vec<NetnsPair>> {
    let pid = std::process::id();
    (0..count)
        .map(|k| {
            let server = Netns::create(&format!("bwb-{bench}-{pid}-s{k}"))?;
            let client = Netns::create(&format!("bwb-{bench}-{pid}-c{k}"))?;
            let (server_if, client_if) = (format!("{tag}{pid}s{k}"), format!("{tag}{pid}c{k}"));
            if server_if.len() > 15 {
                anyhow::bail!("interface name {server_if} is longer than 15 bytes");
            }
            let (s_cidr, c_cidr) = addrs(k);
            veth(&server, &server_if, &s_cidr, &client, &client_if, &c_cidr)?;
            Ok(NetnsPair {
                server,
                client,
                server_if,
                client_if,
            })
        })
        .collect()
}

/// `beowulf standalone` (this binary re-executed) in `ns` on `interface`, logging to `log`; bounded by
/// `limit`.
pub fn start_beowulf(
    ns: &Netns,
    limit: Duration,
    inventory: &Path,
    interface: &str,
    tftp_root: &Path,
    http_port: u16,
    log: &Path,
) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = ns.command(limit, exe);
    cmd.args([BEOWULF_ARG, "standalone", "--inventory"])
        .arg(inventory)
        .args(["--interface", interface, "--tftp-root"])
        .arg(tftp_root)
        .args(["--http-port", &http_port.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log);
    Proc::try_spawn("beowulf standalone", &mut cmd)
}

/// nginx (Debian) serving `root` on `listen` (`ip:port`), with Debian's defaults where they matter
/// (sendfile, tcp_nopush, worker_processes auto, keep-alive) and no access log (ours logs nothing per request
/// either). Its error log is `work/nginx.err`.
pub fn start_nginx(ns: &Netns, listen: &str, root: &Path, work: &Path) -> anyhow::Result<Proc> {
    let conf = work.join("nginx.conf");
    let w = work.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nuser root;\nworker_processes auto;\nworker_rlimit_nofile 16384;\npid {w}/nginx.pid;\n\
             error_log {w}/nginx.err warn;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_timeout 65;\n  keepalive_requests 100000;\n\
               default_type application/octet-stream;\n  client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n\
               fastcgi_temp_path {w}/fastcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n\
               server {{\n    listen {listen};\n    root {r};\n  }}\n}}\n",
            r = root.display(),
        ),
    )?;
    let mut cmd = ns.command(Duration::from_secs(3600), "nginx");
    cmd.arg("-c")
        .arg(&conf)
        .args(["-e", &format!("{w}/nginx.err")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc::try_spawn("nginx", &mut cmd)
}

/// Deterministic incompressible-looking content (xorshift), so that a transfer that reorders, drops or
/// repeats blocks cannot match.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes `data` to `path` readable by everyone (peers drop privileges to `nobody`).
pub fn write_public(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A temporary directory on tmpfs (`/dev/shm`) traversable by everyone: served files and downloads stay in
/// memory so the disk does not take part in the measurement.
pub fn shm_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in(base)?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(d)
}

/// Fails with the log's tail when `proc` has exited.
pub fn alive(proc: &mut Proc, log: &Path) -> anyhow::Result<()> {
    proc.check_alive().with_context(|| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        format!(
            "log {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}

/// Runs `f` on a thread that has entered `ns` (its sockets live there), on a current-thread runtime.
pub fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = ns.path();
    std::thread::spawn(move || -> anyhow::Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        f(&rt)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a benchmark client thread panicked"))?
}

/// Is `program` on PATH?
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Median, min and max of a sample (empty → NaN).
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// The `p`-th percentile (0..=100) by nearest rank of an already sorted sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One metric measured for several servers over the same rounds; `values[server][round]`.
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub values: Vec<Vec<f64>>,
}

/// A Markdown table: one row per (metric, server) with median, min, max, and for peers the ratio ours/peer
/// of each round (ours is server 0).
pub fn table(servers: &[&str], metrics: &[Metric]) -> String {
    let mut s = String::from(
        "| metric | server | median | min | max | ours/peer per round |\n|---|---|---:|---:|---:|---|\n",
    );
    for m in metrics {
        for (i, name) in servers.iter().enumerate() {
            let (med, min, max) = summary(&m.values[i]);
            let ratios = if i == 0 {
                "—".to_string()
            } else {
                m.values[0]
                    .iter()
                    .zip(&m.values[i])
                    .map(|(o, p)| format!("{:.2}", o / p))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                s,
                "| {} ({}{}) | {} | {} | {} | {} | {} |",
                m.name,
                m.unit,
                if m.higher_is_better {
                    ", higher is better"
                } else {
                    ", lower is better"
                },
                name,
                fmt(med),
                fmt(min),
                fmt(max),
                ratios
            );
        }
    }
    s
}

fn fmt(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// `root` and every process below it (from the parent ids in `/proc/<pid>/stat`).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // The command name may contain spaces and parentheses: the fields follow the last ')'.
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok())
            {
                parent.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// CPU seconds (user + system) used so far by `root` and every process below it, from `/proc/<pid>/stat`
/// (clock ticks; 10 ms resolution).
pub fn cpu_seconds(root: u32) -> f64 {
    let ticks: u64 = descendants(root)
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks as f64 / hz as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_include_children_and_grandchildren() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sh -c 'sleep 30 & wait' & wait"])
            .spawn()
            .unwrap();
        let root = sh.id();
        let comm = |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        // Until the grandchild has exec'd `sleep`, it is a forked `sh` (seen so once under load).
        let found = crate::harness::poll("the grandchild", Duration::from_secs(5), || {
            let d = descendants(root);
            (d.len() >= 3 && d.iter().any(|p| comm(p).trim() == "sleep")).then_some(d)
        });
        let d = found.unwrap_or_else(|e| {
            panic!(
                "{e}: {:?}",
                descendants(root).iter().map(comm).collect::<Vec<_>>()
            )
        });
        assert_eq!(d[0], root);
        let names: Vec<String> = d.iter().map(comm).collect();
        // Stop what this test started (all of it is below `root`), deepest first.
        for p in d.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(names.iter().any(|n| n.trim() == "sleep"), "{names:?}");
        let _ = sh.wait();
    }

    #[test]
    fn cpu_seconds_grow_while_a_child_computes() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let pid = sh.id();
        let used = crate::harness::poll("some CPU time", Duration::from_secs(20), || {
            let c = cpu_seconds(pid);
            (c >= 0.05).then_some(c)
        })
        .unwrap();
        let _ = sh.kill();
        let _ = sh.wait();
        assert!(used < 20.0, "{used}");
        assert_eq!(cpu_seconds(u32::MAX), 0.0);
    }

    /// Needs root (network namespaces), like every bench.
    #[test]
    fn netns_pairs_join_each_server_to_its_client_and_clean_up() {
        let pairs = netns_pairs("unit", "bu", 2, |k| {
            (format!("10.219.{k}.1/24"), format!("10.219.{k}.2/24"))
        })
        .unwrap();
        let names: Vec<String> = pairs
            .iter()
            .flat_map(|p| [p.server.name.clone(), p.client.name.clone()])
            .collect();
        for (k, p) in pairs.iter().enumerate() {
            assert!(
                p.server
                    .try_ip(&["addr", "show", &p.server_if])
                    .unwrap()
                    .contains(&format!("10.219.{k}.1/24"))
            );
            // A datagram from the client end reaches a socket bound in the server namespace.
            let server = in_netns(&p.server, move |_| {
                Ok(std::net::UdpSocket::bind(format!("10.219.{k}.1:9"))?)
            })
            .unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            in_netns(&p.client, move |_| {
                let c = std::net::UdpSocket::bind(format!("10.219.{k}.2:0"))?;
                c.send_to(b"hello", format!("10.219.{k}.1:9"))?;
                Ok(())
            })
            .unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(from.ip().to_string(), format!("10.219.{k}.2"));
        }
        drop(pairs);
        let list = crate::harness::try_run(Command::new("ip").args(["netns", "list"])).unwrap();
        for n in names {
            assert!(!list.contains(&n), "{n} left behind:\n{list}");
        }
    }
}
