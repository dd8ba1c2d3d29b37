//! The demo: `beowulf standalone` in a network namespace serving one QEMU machine that PXE boots the test node
//! image, printed phase by phase until the host shows as booted. Needs root and the test peers
//! (`bash .ci/install`): `cargo run --release -p e2e --bin demo`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Parser;
use e2e::pxe::{Firmware, Node, PxeLab};

fn main() -> anyhow::Result<()> {
    // The boot plane runs inside the namespace as a child: this same binary, re-executed as `beowulf`.
    let mut args = std::env::args_os();
    let _ = args.next();
    if args.next().is_some_and(|a| a == "__beowulf") {
        let cli = beowulf::cli::Cli::parse_from(std::iter::once("beowulf".into()).chain(args));
        return tokio::runtime::Runtime::new()?.block_on(beowulf::cli::run(cli));
    }

    e2e::require_root_and_peers();
    let exe = std::env::current_exe()?;
    let node = Node::new("demo-node-0", 0x20, Firmware::Bios);
    println!(
        "==> building the test node image and starting `beowulf standalone` in a network namespace"
    );
    let mut lab = PxeLab::start(
        "demo",
        vec![exe.into(), "__beowulf".into()],
        vec![node.clone()],
    );
    println!("    inventory: {}", lab.inventory_path().display());
    println!("    status page (inside the namespace): {}", lab.url("/"));
    println!(
        "==> powering on {} (QEMU, SeaBIOS + iPXE, TCG) ...",
        node.name
    );
    let t0 = Instant::now();
    let mut machine = lab.boot(&node);
    let mut seen = BTreeSet::new();
    let deadline = t0 + Duration::from_secs(150);
    loop {
        let view = lab.host_view(&node.name);
        if let Some(phases) = view["phases"].as_object() {
            let mut new: Vec<(String, String)> = phases
                .iter()
                .filter(|(k, _)| !seen.contains(*k))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            new.sort_by(|a, b| a.1.cmp(&b.1));
            for (phase, at) in new {
                println!(
                    "    +{:>5.1}s  {:<12} {at}",
                    t0.elapsed().as_secs_f64(),
                    phase
                );
                seen.insert(phase);
            }
        }
        if view["state"] == "booted" {
            println!(
                "==> {} is booted ({}), in {:.1}s",
                node.name,
                view["provider_id"].as_str().unwrap_or(""),
                t0.elapsed().as_secs_f64()
            );
            println!("{}", serde_json::to_string_pretty(&view)?);
            break;
        }
        if machine.qemu.exited().is_some() || Instant::now() > deadline {
            eprintln!(
                "the machine did not boot; its console:\n{}",
                machine.serial()
            );
            eprintln!("beowulf's log:\n{}", lab.log());
            anyhow::bail!("demo failed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("==> the node's console said:");
    // (The seed URL line carries the token: not printed.)
    for line in machine.serial().lines() {
        if let Some(i) = line.find("TESTNODE:")
            && !line.contains("seed=")
        {
            println!("    {}", line[i..].trim());
        }
    }
    Ok(())
}
