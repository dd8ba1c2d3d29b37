//! Benchmark workload `bmc`: read the power status of N ipmi_sim BMCs with our client (all BMCs at once,
//! within the global concurrency limit; one session per BMC) and with a loop of ipmitool calls, in the same
//! run against the same simulators, and print the ratio. Both must read the same states. Prints a Markdown
//! table (reads/s per round, median/min/max, ours/ipmitool per round) and returns the `bench: bmc=…` line.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use beowulf::bmc::ipmi::{CipherChoice, IpmiClient};
use beowulf::bmc::{BmcDriver, Credentials, Endpoint, Limits, Options, PowerState};

use crate::bench::{Metric, summary, table};
use crate::ipmi_sim::{self, IpmiSim};

/// Rounds per scenario (each: our cold read, our warm read, the ipmitool loop; the order alternates).
const ROUNDS: usize = 3;

/// Runs both scenarios and returns the `bench:` line's content (`bmc=<ratio> …`: the median over rounds of
/// ipmitool's time / ours).
pub fn run(args: &[String]) -> anyhow::Result<String> {
    let n: usize = match args.first() {
        Some(a) => a.parse().context("N must be a number of BMCs")?,
        None => 100,
    };
    if !(1..=250).contains(&n) {
        bail!("N must be between 1 and 250");
    }
    println!(
        "bmc: power status of {n} ipmi_sim BMCs, our native client vs a loop of `ipmitool -I lanplus -C 3`, \
         {ROUNDS} rounds per scenario"
    );
    let chassis = measure(n, true)?;
    let plain = measure(n, false)?;
    let metric = |name: &str, ours: &[f64], ipmitool: &[f64]| Metric {
        name: name.to_string(),
        unit: "reads/s",
        higher_is_better: true,
        values: vec![ours.to_vec(), ipmitool.to_vec()],
    };
    let metrics = [
        metric(
            "chassis program, new sessions",
            &chassis.cold,
            &chassis.ipmitool,
        ),
        metric(
            "chassis program, reused sessions",
            &chassis.warm,
            &chassis.ipmitool,
        ),
        metric("ipmi_sim state, new sessions", &plain.cold, &plain.ipmitool),
        metric(
            "ipmi_sim state, reused sessions",
            &plain.warm,
            &plain.ipmitool,
        ),
    ];
    println!("\n{}", table(&["beowulf", "ipmitool loop"], &metrics));
    // The median of the per-round ratios: ours and ipmitool of one round ran back to back under the same load.
    let ratio = |m: &Metric| {
        let per_round: Vec<f64> = m.values[0]
            .iter()
            .zip(&m.values[1])
            .map(|(o, p)| o / p)
            .collect();
        summary(&per_round).0
    };
    let line = format!(
        "bmc={:.1} bmc_reused={:.1} bmc_nofork={:.1} bmc_nofork_reused={:.1}",
        ratio(&metrics[0]),
        ratio(&metrics[1]),
        ratio(&metrics[2]),
        ratio(&metrics[3])
    );
    println!(
        "target >= 20x (chassis program, new sessions): {}",
        if ratio(&metrics[0]) >= 20.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(line)
}

/// Reads per second of each round.
struct Scenario {
    cold: Vec<f64>,
    warm: Vec<f64>,
    ipmitool: Vec<f64>,
}

/// One scenario. `chassis`: the BMCs run the chassis program (ipmi_sim forks a shell per read, as in the
/// tests); otherwise ipmi_sim answers from its own state (the BMC's cost is then only the protocol).
fn measure(n: usize, chassis: bool) -> anyhow::Result<Scenario> {
    // One third octet for this run, the BMCs on .1 … .N of it.
    let base = ipmi_sim::random_loopback().octets()[2];
    eprintln!("starting {n} ipmi_sim BMCs on 127.0.{base}.1-{n} …");
    let sims: Vec<IpmiSim> = (1..=n)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, base, i as u8);
            let addr = SocketAddr::from((ip, ipmi_sim::free_udp_port(ip)));
            if chassis {
                IpmiSim::start_at(addr)
            } else {
                IpmiSim::start_plain(addr)
            }
        })
        .collect();
    // Every third BMC powered on, so the reads have something to agree on.
    for (i, s) in sims.iter().enumerate() {
        if chassis && i % 3 == 0 {
            std::fs::write(s.state_dir().join("power"), "1\n")?;
        }
    }
    let expected: Vec<PowerState> = (0..n)
        .map(|i| {
            if chassis && i % 3 == 0 {
                PowerState::On
            } else {
                PowerState::Off
            }
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let limits = Limits::default();
    let new_clients = || -> Vec<Arc<IpmiClient>> {
        sims.iter()
            .map(|s| {
                Arc::new(IpmiClient::new(
                    Endpoint::parse(&s.endpoint()).unwrap(),
                    Credentials::new(ipmi_sim::USER, ipmi_sim::PASSWORD),
                    Options {
                        cipher_suite: CipherChoice::Suite3,
                        ..Options::default()
                    },
                    limits.clone(),
                ))
            })
            .collect()
    };
    // All BMCs at once (within the global limit); each client keeps its session.
    let read_all = |clients: &[Arc<IpmiClient>]| -> anyhow::Result<Duration> {
        rt.block_on(async {
            let t = Instant::now();
            let tasks: Vec<_> = clients
                .iter()
                .map(|c| {
                    let c = c.clone();
                    tokio::spawn(async move { c.power_state().await })
                })
                .collect();
            let mut states = Vec::with_capacity(tasks.len());
            for t in tasks {
                states.push(t.await??);
            }
            let took = t.elapsed();
            if states != expected {
                bail!("our client read wrong power states: {states:?}");
            }
            Ok(took)
        })
    };
    let ipmitool_loop = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        for (i, s) in sims.iter().enumerate() {
            let out = s.ipmitool(&["chassis", "power", "status"]);
            let want = if expected[i] == PowerState::On {
                "Chassis Power is on"
            } else {
                "Chassis Power is off"
            };
            if !out.contains(want) {
                bail!(
                    "ipmitool read {out:?} from {}, expected {want:?}",
                    s.endpoint()
                );
            }
        }
        Ok(t.elapsed())
    };
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mut sc = Scenario {
        cold: Vec::new(),
        warm: Vec::new(),
        ipmitool: Vec::new(),
    };
    // Untimed warm-up: ipmi_sim's first session is much slower than the next ones (its one-time set-up), which
    // would otherwise land on whichever client goes first.
    let clients = new_clients();
    read_all(&clients)?;
    rt.block_on(async {
        for c in &clients {
            c.close().await;
        }
    });
    for round in 0..ROUNDS {
        // Alternate who goes first, so drifting background load is spread over both.
        let ipmitool_first = round % 2 == 1;
        if ipmitool_first {
            sc.ipmitool.push(rate(ipmitool_loop()?));
        }
        // Fresh clients: the cold read opens a session with every BMC (what ipmitool does on every call);
        // the warm read reuses them, as the provider does when it watches BMCs.
        let clients = new_clients();
        sc.cold.push(rate(read_all(&clients)?));
        sc.warm.push(rate(read_all(&clients)?));
        rt.block_on(async {
            for c in &clients {
                c.close().await;
            }
        });
        if !ipmitool_first {
            sc.ipmitool.push(rate(ipmitool_loop()?));
        }
        eprintln!(
            "  round {}: ipmitool {:.0}/s, ours new sessions {:.0}/s, reused {:.0}/s",
            round + 1,
            sc.ipmitool[round],
            sc.cold[round],
            sc.warm[round]
        );
    }
    drop(sims);
    Ok(sc)
}
