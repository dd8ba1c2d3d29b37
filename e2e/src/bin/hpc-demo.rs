//! The HPC demo: the HPC stack's SLURM and LDAP services (from its rendered charts, Debian's packages) and two
//! QEMU compute nodes that `beowulf standalone` PXE-boots with the stack's example user-data, powered on
//! through their BMCs; then the check every HPC team runs — `sinfo`, `srun -N2 hostname`, a batch job and
//! `sacct`, an LDAP user on a node. Needs root and the test peers (`bash .ci/install`), about five minutes:
//! `cargo run --release -p e2e --bin hpc-demo`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::hpc::{HpcLab, NODES};

fn main() -> anyhow::Result<()> {
    // The boot plane (and `beowulf bmc`) run as children: this same binary, re-executed as `beowulf`.
    if let Some(result) = e2e::run_as_beowulf_child() {
        return result;
    }
    e2e::require_root_and_peers();
    let beowulf: Vec<std::ffi::OsString> =
        vec![std::env::current_exe()?.into(), "__beowulf".into()];
    let t0 = Instant::now();
    let say = |s: &str| println!("==> [{:>5.1}s] {s}", t0.elapsed().as_secs_f64());
    let mut hpc = HpcLab::start(beowulf.clone(), &say);
    let all: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
    let all = all.join(",");
    println!("    inventory: {}", hpc.lab.inventory_path().display());
    println!(
        "    status page (inside the namespace): {}",
        hpc.lab.url("/")
    );

    let show = |hpc: &mut HpcLab, cmd: &[&str]| {
        println!("$ {}", cmd.join(" "));
        let out = hpc.login(cmd);
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    };
    show(&mut hpc, &["sinfo"]);

    say("beowulf bmc: next boot PXE, power on");
    for args in [&["bootdev", "pxe"][..], &["power", "on"]] {
        print!("{}", hpc.bmc(&beowulf, &all, args));
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last = Vec::new();
    loop {
        let states = hpc.node_states();
        if states != last {
            let line: Vec<String> = states.iter().map(|(n, s)| format!("{n}={s}")).collect();
            say(&format!("sinfo: {}", line.join(" ")));
            last = states.clone();
        }
        if NODES
            .iter()
            .all(|(n, _)| states.iter().any(|(name, s)| name == n && s == "idle"))
        {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("{}", hpc.diagnostics());
            anyhow::bail!("the nodes did not become idle");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    say("both compute nodes are idle");
    show(&mut hpc, &["sinfo"]);
    show(&mut hpc, &["srun", "-N2", "hostname"]);
    let id = String::from_utf8(
        hpc.login(&[
            "sbatch",
            "--parsable",
            "--output=/tmp/slurm-%j.out",
            "--wrap",
            "sleep 5 && hostname",
        ])
        .stdout,
    )?;
    let id = id.trim().to_string();
    println!("$ sbatch --wrap \"sleep 5 && hostname\"\nSubmitted batch job {id}");
    show(&mut hpc, &["squeue"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !String::from_utf8_lossy(
        &hpc.login(&["sacct", "-j", &id, "-X", "-n", "-o", "State"])
            .stdout,
    )
    .contains("COMPLETED")
    {
        if Instant::now() > deadline {
            anyhow::bail!("job {id} did not complete");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    show(
        &mut hpc,
        &[
            "sacct",
            "-j",
            &id,
            "-o",
            "JobID,JobName,State,ExitCode,NodeList",
        ],
    );
    show(&mut hpc, &["srun", "-N1", "id", "alice"]);
    say("done; stopping the nodes and the services");
    Ok(())
}
