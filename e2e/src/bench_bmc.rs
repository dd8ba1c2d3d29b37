//! Benchmark workload `bmc`: read the power status of N ipmi_sim BMCs with our client (all BMCs at once,
//! within the global concurrency limit; one session per BMC) and with a loop of ipmitool calls, in the same
//! run against the same simulators, and print the ratio. Both must read the same states.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use beowulf::bmc::ipmi::{CipherChoice, IpmiClient};
use beowulf::bmc::{BmcDriver, Credentials, Endpoint, Limits, Options, PowerState};

use crate::ipmi_sim::{self, IpmiSim};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let n: usize = match args.first() {
        Some(a) => a.parse().context("N must be a number of BMCs")?,
        None => 100,
    };
    if !(1..=250).contains(&n) {
        bail!("N must be between 1 and 250");
    }
    println!(
        "bmc: power status of {n} ipmi_sim BMCs, our native client vs a loop of `ipmitool -I lanplus -C 3`"
    );
    let with = measure(n, true)?;
    let without = measure(n, false)?;
    println!(
        "  target: >= 20x (new sessions, chassis program)  ->  {}",
        if with >= 20.0 { "met" } else { "NOT met" }
    );
    let _ = without;
    Ok(())
}

/// One scenario; returns the cold ratio. `chassis`: the BMCs run the chassis program (a shell per read, as
/// in the tests); otherwise ipmi_sim answers from its own state (the BMC's cost is then only the protocol).
fn measure(n: usize, chassis: bool) -> anyhow::Result<f64> {
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
    let clients: Vec<Arc<IpmiClient>> = sims
        .iter()
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
        .collect();
    let read_all = |clients: &[Arc<IpmiClient>]| -> anyhow::Result<(Duration, Vec<PowerState>)> {
        rt.block_on(async {
            let t = Instant::now();
            let tasks: Vec<_> = clients
                .iter()
                .map(|c| {
                    let c = c.clone();
                    tokio::spawn(async move { c.power_state().await })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await??);
            }
            Ok((t.elapsed(), out))
        })
    };
    // Cold: includes opening a session with every BMC (what ipmitool does on every call).
    let (ours_cold, states) = read_all(&clients)?;
    if states != expected {
        bail!("our client read wrong power states: {states:?}");
    }
    // Warm: the sessions are reused, as the provider does when it watches BMCs.
    let (ours_warm, states) = read_all(&clients)?;
    if states != expected {
        bail!("our client read wrong power states on reused sessions");
    }
    rt.block_on(async {
        for c in &clients {
            c.close().await;
        }
    });

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
    let ipmitool = t.elapsed();

    let ratio = |d: Duration| ipmitool.as_secs_f64() / d.as_secs_f64();
    println!(
        "- BMCs {} (all reads agree):",
        if chassis {
            "with the chassis program (a shell per read)"
        } else {
            "answering from ipmi_sim's own state"
        }
    );
    println!(
        "  ipmitool loop:                       {:>9.1} ms",
        ipmitool.as_secs_f64() * 1e3
    );
    println!(
        "  beowulf, new sessions (cold):        {:>9.1} ms   ratio {:.1}x",
        ours_cold.as_secs_f64() * 1e3,
        ratio(ours_cold)
    );
    println!(
        "  beowulf, reused sessions (warm):     {:>9.1} ms   ratio {:.1}x",
        ours_warm.as_secs_f64() * 1e3,
        ratio(ours_warm)
    );
    drop(sims);
    Ok(ratio(ours_cold))
}
