//! The demo: `beowulf standalone` in a network namespace serving one QEMU machine that PXE boots the test node
//! image, printed phase by phase until the host shows as booted. Needs root and the test peers
//! (`bash .ci/install`): `cargo run --release -p e2e --bin demo`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::pxe::{Firmware, Node, PxeLab};

fn main() -> anyhow::Result<()> {
    // The boot plane (and `beowulf bmc`) run as children: this same binary, re-executed as `beowulf`.
    if let Some(result) = e2e::run_as_beowulf_child() {
        return result;
    }
    e2e::require_root_and_peers();
    let node = Node::new("demo-node-0", 0x20, Firmware::Bios);
    println!(
        "==> building the test node image and starting `beowulf standalone` in a network namespace"
    );
    let mut lab = PxeLab::start("demo", e2e::self_as_beowulf()?, vec![node.clone()]);
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
