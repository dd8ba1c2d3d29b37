//! Benchmarks against named peers: each workload runs ours and each peer in alternation (A B C A B C …) in
//! network namespaces it creates, and reports the median, min, max and the per-round ratio ours/peer.
//! Driven by the `bench` binary (`cargo run --release -p e2e --bin bench -- <workload>`); not part of
//! `cargo test`.

pub mod dhcp;

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A network namespace this process created; deleted (with every interface in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns add <name>` with loopback up. Callers put the process id in `name` so that concurrent runs
    /// (and other tests on the machine) never share a namespace.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> …`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs inside the namespace (`ip netns exec`), bounded by `timeout` so that nothing
    /// outlives the benchmark even if it is killed before its destructors run.
    pub fn command(&self, limit: Duration, program: &str) -> Command {
        let mut c = Command::new("timeout");
        c.arg(limit.as_secs().max(1).to_string())
            .args(["ip", "netns", "exec", &self.name, program]);
        c
    }

    /// The path `setns(2)` needs to move a thread into this namespace.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair between two namespaces, each end with an address and up.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_cidr: &str,
    b: &Netns,
    b_if: &str,
    b_cidr: &str,
) -> anyhow::Result<()> {
    run(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    )?;
    a.ip(&["addr", "add", a_cidr, "dev", a_if])?;
    b.ip(&["addr", "add", b_cidr, "dev", b_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A peer server process; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Peer {
    pub name: &'static str,
    child: Child,
}

impl Peer {
    pub fn spawn(name: &'static str, mut cmd: Command) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}: is it installed? (`bash .ci/install`)"))?;
        Ok(Peer { name, child })
    }

    /// Fails when the peer has already exited (a bad configuration, a port in use).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // `timeout` forwards SIGTERM to the server it runs.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
