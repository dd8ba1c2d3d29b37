//! Real PXE boots through `beowulf standalone`: a BIOS machine (QEMU's iPXE ROM) and a UEFI machine (OVMF with
//! EDK2's own PXE chain-loading `snponly.efi` over our TFTP) boot the test node image in parallel, fetch their
//! NoCloud data with their tokens, and call back. Plus the negatives: unknown MAC, another host's token, a
//! token replayed after its boot completed, and the server's log checked for secrets.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::pxe::{Firmware, Node, PxeLab};
use e2e::{require_root_and_peers, wait_for};

fn beowulf() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_e2e-beowulf").into()]
}

const BIOS_PHASES: &[&str] = &[
    "dhcp-offer",
    "dhcp-ack",
    "ipxe-script",
    "kernel",
    "initrd",
    "rootfs",
    "metadata",
    "callback",
];
const UEFI_PHASES: &[&str] = &[
    "dhcp-offer",
    "dhcp-ack",
    "tftp",
    "ipxe-script",
    "kernel",
    "initrd",
    "rootfs",
    "metadata",
    "callback",
];

/// The host's phases from /api/hosts, in time order; asserts they are exactly `expected` in that order.
fn assert_phases(lab: &PxeLab, node: &Node, expected: &[&str]) {
    let view = lab.host_view(&node.name);
    assert_eq!(view["state"], "booted", "{view}");
    let phases = view["phases"].as_object().unwrap();
    let mut got: Vec<(String, String)> = phases
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    // RFC 3339 UTC timestamps of equal format sort as times; ties keep the phase order (BTreeMap by phase).
    let order = |p: &str| expected.iter().position(|e| *e == p).unwrap_or(99);
    got.sort_by(|a, b| a.1.cmp(&b.1).then(order(&a.0).cmp(&order(&b.0))));
    let names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names, expected,
        "{} phases out of order or incomplete: {view}",
        node.name
    );
}

#[test]
fn bios_and_uefi_machines_boot_to_the_callback() {
    require_root_and_peers();
    let bios = Node::new("node-bios", 0x10, Firmware::Bios);
    let uefi = Node::new("node-uefi", 0x11, Firmware::UefiPxe);
    let probe = Node::new("probe", 0x70, Firmware::Bios);
    let mut lab = PxeLab::start(
        "pxe",
        beowulf(),
        vec![bios.clone(), uefi.clone(), probe.clone()],
    );

    // The UEFI machine starts first; the BIOS one joins once the UEFI firmware has its iPXE over TFTP (EDK2's
    // TFTP client under TCG, with both machines emulated on 2 cores, gave up mid-transfer with PXE-E99).
    let t0 = Instant::now();
    let mut machines = vec![lab.boot(&uefi)];
    wait_for("node-uefi's TFTP download", Duration::from_secs(60), || {
        let v = lab.host_view(&uefi.name);
        (v["phases"].get("ipxe-script").is_some()).then_some(())
    });
    eprintln!(
        "node-uefi has its script after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    machines.insert(0, lab.boot(&bios));

    // Meanwhile, a DHCP client on a veth: the probe's MAC gets its reservation, an unknown MAC gets nothing.
    lab.ns
        .ip(&["link", "add", "pa", "type", "veth", "peer", "name", "pb"]);
    lab.ns.ip(&["link", "set", "pa", "master", "br0"]);
    lab.ns.ip(&["link", "set", "pa", "up"]);
    lab.ns.ip(&["link", "set", "pb", "address", &probe.mac]);
    lab.ns.ip(&["link", "set", "pb", "up"]);
    let udhcpc = |lab: &PxeLab| {
        lab.ns
            .cmd("busybox")
            .args([
                "udhcpc",
                "-i",
                "pb",
                "-n",
                "-q",
                "-t",
                "3",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let known = udhcpc(&lab);
    let known_out = String::from_utf8_lossy(&known.stdout).to_string()
        + &String::from_utf8_lossy(&known.stderr);
    assert!(
        known.status.success(),
        "the probe's own MAC must get a lease: {known_out}"
    );
    assert!(
        known_out.contains(&probe.ip),
        "offered address: {known_out}"
    );
    lab.ns.ip(&["link", "set", "pb", "down"]);
    lab.ns
        .ip(&["link", "set", "pb", "address", "52:54:00:de:ad:01"]);
    lab.ns.ip(&["link", "set", "pb", "up"]);
    let unknown = udhcpc(&lab);
    assert!(
        !unknown.status.success(),
        "an unknown MAC must get no offer: {}",
        String::from_utf8_lossy(&unknown.stdout)
    );
    let m = lab.metrics();
    let unknown_count: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("beowulf_dhcp_unknown_mac_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(unknown_count >= 1, "unknown MAC not counted:\n{m}");

    // Wait for both callbacks (the status flips to booted), then for QEMU to power off.
    for mach in &mut machines {
        let name = mach.node.name.clone();
        wait_for(
            &format!("{name} to call back"),
            Duration::from_secs(100),
            || {
                if lab.host_view(&name)["state"] == "booted" {
                    return Some(());
                }
                if let Some(st) = mach.qemu.exited() {
                    panic!(
                        "{name}'s QEMU exited ({st}) before the callback.\nserial:\n{}\nbeowulf log:\n{}",
                        mach.serial(),
                        lab.log()
                    );
                }
                None
            },
        );
        eprintln!("{name} booted after {:.1}s", t0.elapsed().as_secs_f64());
        wait_for(
            &format!("{name} to power off"),
            Duration::from_secs(30),
            || mach.qemu.exited(),
        );
    }

    // Phases complete and in order; what the node received is what the inventory holds.
    assert_phases(&lab, &bios, BIOS_PHASES);
    assert_phases(&lab, &uefi, UEFI_PHASES);
    for mach in &machines {
        let n = &mach.node;
        let got = mach
            .testnode_line("got user-data ")
            .unwrap_or_else(|| panic!("{}", mach.serial()));
        assert_eq!(
            got,
            format!(
                "bytes={} sha256={}",
                n.user_data.len(),
                n.user_data_sha256()
            ),
            "{}: the user-data the node received differs from the inventory's",
            n.name
        );
        let md = mach.testnode_line("got meta-data ").unwrap();
        assert!(md.starts_with("bytes="), "{md}");
        assert_eq!(mach.testnode_line("callback ").as_deref(), Some("ok"));
        let view = lab.host_view(&n.name);
        assert_eq!(view["callback"]["hostname"], n.name.as_str(), "{view}");
    }

    // Another host's token: the probe starts a boot (its script gives it a live token), then a request from
    // node-bios's address presents it. The probe's own request is the control.
    lab.ns
        .ip(&["addr", "add", &format!("{}/24", probe.ip), "dev", "pb"]);
    lab.ns
        .ip(&["addr", "add", &format!("{}/24", bios.ip), "dev", "pb"]);

    // A token is refused after its boot completed (the node's own, replayed from its address, now that the
    // machine is off and its address is on the veth).
    let bios_token = machines[0].token().expect("the node printed its seed URL");
    let (status, body) = lab.curl(
        Some(&bios.ip),
        &format!("/nocloud/{bios_token}/user-data"),
        &[],
    );
    assert_eq!((status, body.as_slice()), (403, &b"forbidden\n"[..]));
    let (status, _) = lab.curl(Some(&bios.ip), &format!("/callback/{bios_token}"), &[]);
    assert_eq!(status, 403, "a second callback with a consumed token");
    let script_path = format!("/boot/{}.ipxe", probe.mac.replace(':', "-"));
    let (status, script) = lab.curl(Some(&probe.ip), &script_path, &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&script));
    let script = String::from_utf8(script).unwrap();
    let i = script.find("/nocloud/").unwrap() + "/nocloud/".len();
    let probe_token = &script[i..i + 64];
    let (status, _) = lab.curl(
        Some(&bios.ip),
        &format!("/nocloud/{probe_token}/user-data"),
        &[],
    );
    assert_eq!(status, 403, "node-bios presenting the probe's token");
    let (status, _) = lab.curl(Some(&bios.ip), &script_path, &[]);
    assert_eq!(status, 403, "node-bios asking for the probe's script");
    let (status, body) = lab.curl(
        Some(&probe.ip),
        &format!("/nocloud/{probe_token}/user-data"),
        &[],
    );
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (200, probe.user_data.clone())
    );
    let m = lab.metrics();
    assert!(
        m.contains("beowulf_boot_token_rejections_total{reason=\"wrong-host\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("beowulf_boot_phase_total{phase=\"callback\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("beowulf_tftp_"),
        "TFTP counters on /metrics:\n{m}"
    );

    // The operator's status page shows both as booted.
    let page = String::from_utf8(lab.curl(None, "/", &[]).1).unwrap();
    assert!(page.contains("2 booted"), "{page}");

    // Secrets never reach the log (it is at debug level): no token, no user-data.
    let log = lab.log();
    assert!(
        log.contains("boot completed"),
        "the log was captured: {log}"
    );
    let uefi_token = machines[1].token().unwrap();
    for secret in [bios_token.as_str(), uefi_token.as_str(), probe_token] {
        assert!(!log.contains(secret), "a token is in the log");
    }
    for n in [&bios, &uefi, &probe] {
        let marker = n.user_data.lines().nth(1).unwrap();
        assert!(
            !log.contains(marker),
            "{}'s user-data is in the log",
            n.name
        );
    }
}
