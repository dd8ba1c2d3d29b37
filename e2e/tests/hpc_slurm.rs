//! The HPC promise: SLURM jobs run on compute nodes PXE-booted by `beowulf standalone`, as LDAP users.
//!
//! `e2e::hpc::HpcLab` runs the HPC stack's own SLURM (slurmctld, slurmdbd, the login pod, munge: the stack's
//! SLURM image, built by `images/slurm` and run unpacked), MariaDB and 389 Directory Server (seeded by the
//! stack's seed Job; the host's packages) from its rendered charts, and two
//! QEMU compute nodes behind `ipmi_sim` BMCs that boot the HPC node image with the stack's example compute
//! user-data. The test powers them on through their BMCs (`beowulf bmc --inventory`) and then asks SLURM:
//! both nodes idle, a two-node `srun`, a batch job recorded by accounting, an LDAP user resolved on a node,
//! the CVMFS client configuration the nodes received, and a node power-cycled through its
//! BMC back to idle with a new boot and nothing done by hand.
//!
//! Two TCG boots of the live image at once on two cores: several minutes.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::hpc::{CVMFS_PROXY_ADDRESS, HpcLab, NODES};
use e2e::{require_root_and_peers, wait_for};

fn beowulf() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_e2e-beowulf").into()]
}

fn node_names() -> Vec<String> {
    NODES.iter().map(|(n, _)| n.to_string()).collect()
}

#[test]
fn slurm_jobs_run_on_pxe_booted_nodes_as_ldap_users() {
    require_root_and_peers();
    let t0 = Instant::now();
    let say = |s: &str| eprintln!("[{:>5.1}s] {s}", t0.elapsed().as_secs_f64());
    let mut hpc = HpcLab::start(beowulf(), &say);
    let all = node_names().join(",");

    // Before power-on: SLURM knows both nodes from the stack's slurm.conf, and neither answers.
    let states = hpc.node_states();
    for n in node_names() {
        assert!(
            states.iter().any(|(name, st)| *name == n && st != "idle"),
            "{n} before its boot: {states:?}"
        );
    }

    // Power on through the BMCs: next boot PXE, then on.
    say("bootdev pxe + power on through the BMCs");
    let out = hpc.bmc(&beowulf(), &all, &["bootdev", "pxe"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = hpc.bmc(&beowulf(), &all, &["power", "on"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let t_on = Instant::now();
    for bmc in &hpc.bmcs {
        wait_for("QEMU to start", Duration::from_secs(15), || bmc.qemu_pid());
    }

    // Both nodes register with slurmctld (configless slurmd, munge key and hostnames from the user-data).
    let mut last = Vec::new();
    let idle = e2e::poll("both nodes idle in sinfo", Duration::from_secs(900), || {
        for (node, bmc) in hpc.nodes.iter().zip(&hpc.bmcs) {
            assert!(
                bmc.qemu_pid().is_some(),
                "{}'s machine stopped\n{}",
                node.name,
                hpc.diagnostics()
            );
        }
        last = hpc.node_states();
        node_names()
            .iter()
            .all(|n| last.iter().any(|(name, st)| name == n && st == "idle"))
            .then_some(())
    });
    if let Err(e) = idle {
        panic!("{e}: last sinfo {last:?}\n{}", hpc.diagnostics());
    }
    say(&format!(
        "both nodes idle {:.0}s after power-on",
        t_on.elapsed().as_secs_f64()
    ));
    // slurmd runs before cloud-init has finished; the callback comes at its end (phone_home).
    for n in node_names() {
        let view = wait_for("the node's callback", Duration::from_secs(300), || {
            let view = hpc.lab.host_view(&n);
            (view["state"] == "booted").then_some(view)
        });
        assert_eq!(view["callback"]["hostname"], n.as_str(), "{view}");
    }

    // The directory server sized its caches by the memory limit the ldap chart gives it (1 GiB), not by the
    // machine's memory: unlimited, its database cache needs more free disk than its volume may have.
    let errors = hpc.ldap.volume_file("data", "logs/errors");
    assert!(
        errors.contains("found 1048576k physical memory"),
        "389ds did not see the chart's 1 GiB limit:\n{}",
        errors
            .lines()
            .filter(|l| l.contains("autotune"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Controller and nodes run SLURM releases that talk to each other (SLURM's rule: the controller's own
    // major release or one of the two before it), as slurmctld, the nodes' slurmd and both images' records
    // say.
    let ctld = hpc.slurmctld.clone();
    let out = hpc
        .pods
        .command(&ctld, "slurmctld", Some(&["slurmctld", "-V"]))
        .output()
        .unwrap();
    // "slurm 22.05.8", or "slurm-wlm 22.05.8" from Debian's build.
    let version = |v: &str| v.split_whitespace().last().unwrap_or_default().to_string();
    let controller = version(&String::from_utf8_lossy(&out.stdout));
    assert!(!controller.is_empty(), "slurmctld -V: {out:?}");
    // The controller runs on the stack's SLURM image, not on the host's packages (the same version here): the
    // image's own login command is in its root and not in the host's, and its slurmctld is the one the image
    // records.
    const IMAGE_ONLY: &str = "/usr/local/sbin/login";
    assert!(
        !std::path::Path::new(IMAGE_ONLY).exists(),
        "{IMAGE_ONLY} on the host"
    );
    let on_image = hpc
        .pods
        .command(&ctld, "slurmctld", Some(&["test", "-x", IMAGE_ONLY]))
        .status()
        .unwrap();
    assert!(
        on_image.success(),
        "slurmctld's container is not on the SLURM image"
    );
    let image_slurmctld = hpc.slurm.package("slurmctld");
    assert!(
        image_slurmctld.starts_with(&controller),
        "slurmctld {controller}, SLURM image {image_slurmctld}"
    );
    let image_slurmd = e2e::hpc::image_package("slurmd");
    for v in hpc.login_ok(&["srun", "-N2", "slurmd", "-V"]).lines() {
        let node = version(v);
        assert!(
            image_slurmd.starts_with(&node),
            "node {node}, image {image_slurmd}"
        );
        e2e::hpc::slurm_compatible(&controller, &node).unwrap_or_else(|e| panic!("{e}"));
    }

    // A two-node step prints both hostnames, the inventory's names.
    let out = hpc.login_ok(&["srun", "-N2", "hostname"]);
    let mut hosts: Vec<&str> = out.lines().map(str::trim).collect();
    hosts.sort_unstable();
    assert_eq!(hosts, node_names(), "srun -N2 hostname: {out}");

    // A batch job completes, and accounting (slurmdbd, MariaDB) records it.
    let id = hpc
        .login_ok(&[
            "sbatch",
            "--parsable",
            "--output=/tmp/slurm-%j.out",
            "--wrap",
            "sleep 5 && hostname",
        ])
        .trim()
        .to_string();
    assert!(id.parse::<u32>().is_ok(), "sbatch --parsable: {id}");
    let mut record = String::new();
    let done = e2e::poll("the batch job in sacct", Duration::from_secs(120), || {
        record = hpc.login_ok(&[
            "sacct",
            "-j",
            &id,
            "-X",
            "-n",
            "-P",
            "-o",
            "JobID,State,ExitCode,NodeList",
        ]);
        record.contains("|COMPLETED|").then_some(())
    });
    done.unwrap_or_else(|e| {
        panic!(
            "{e}: sacct says {record:?}; squeue: {}",
            hpc.login_ok(&["squeue"])
        )
    });
    let fields: Vec<&str> = record.trim().split('|').collect();
    assert_eq!(fields[..3], [id.as_str(), "COMPLETED", "0:0"], "{record}");
    let ran_on = fields[3].to_string();
    assert!(node_names().contains(&ran_on), "{record}");
    // Its output, on the node it ran on, is that node's hostname.
    let output = hpc.login_ok(&[
        "srun",
        "-w",
        &ran_on,
        "cat",
        &format!("/tmp/slurm-{id}.out"),
    ]);
    assert_eq!(output.trim(), ran_on, "the job's output");

    // An LDAP user of the stack's seed, resolved on a node through sssd (anonymous bind to the directory).
    let id_alice = hpc.login_ok(&["srun", "-N1", "id", "alice"]);
    assert!(
        id_alice.contains("uid=10001(alice)")
            && id_alice.contains("gid=10000(hpc-users)")
            && id_alice.contains("10001(hpc-admins)"),
        "id alice on a node: {id_alice}"
    );
    let id_bob = hpc.login_ok(&["srun", "-N1", "id", "bob"]);
    assert!(
        id_bob.contains("uid=10002(bob)") && !id_bob.contains("hpc-admins"),
        "id bob on a node: {id_bob}"
    );

    // CVMFS: the client configuration the nodes received points at the stack's proxy address. (Not here: the
    // proxy itself — squid is not served by the Debian mirror CI installs from — and the client, which is
    // not in Debian; the CI image has neither `cvmfs2` nor autofs.)
    let conf = hpc.login_ok(&["srun", "-w", "compute-0", "cat", "/etc/cvmfs/default.local"]);
    assert!(
        conf.contains(&format!(
            "CVMFS_HTTP_PROXY=\"http://{CVMFS_PROXY_ADDRESS}:3128;DIRECT\""
        )),
        "{conf}"
    );
    assert!(conf.contains("CVMFS_REPOSITORIES="), "{conf}");

    // A node power-cycled through its BMC boots again from PXE and is idle again, untouched.
    let node = "compute-1";
    let boot_before = hpc.node_field(node, "BootTime").unwrap();
    let boots_before = hpc.lab.host_view(node)["boot"].as_u64().unwrap();
    say(&format!("power cycle of {node} through its BMC"));
    let out = hpc.bmc(&beowulf(), node, &["power", "cycle"]);
    assert!(out.starts_with(&format!("{node}: ")), "{out}");
    let t_cycle = Instant::now();
    let mut state = String::new();
    let back = e2e::poll(
        "the power-cycled node idle with a new boot",
        Duration::from_secs(900),
        || {
            let view = hpc.lab.host_view(node);
            let booted_again =
                view["boot"].as_u64() > Some(boots_before) && view["state"] == "booted";
            state = format!(
                "boot plane: {} (boot {}), slurm: {:?} BootTime={:?}",
                view["state"],
                view["boot"],
                hpc.node_field(node, "State"),
                hpc.node_field(node, "BootTime")
            );
            (booted_again
                && hpc
                    .node_field(node, "BootTime")
                    .is_some_and(|b| b != boot_before)
                && hpc.node_field(node, "State").as_deref() == Some("IDLE"))
            .then_some(())
        },
    );
    back.unwrap_or_else(|e| panic!("{e}: {state}\n{}", hpc.diagnostics()));
    say(&format!(
        "{node} idle again {:.0}s after its power cycle",
        t_cycle.elapsed().as_secs_f64()
    ));
    let out = hpc.login_ok(&["srun", "-w", node, "hostname"]);
    assert_eq!(out.trim(), node);
    wait_for("both nodes idle", Duration::from_secs(60), || {
        let s = hpc.node_states();
        node_names()
            .iter()
            .all(|n| s.iter().any(|(name, st)| name == n && st == "idle"))
            .then_some(())
    });
}
