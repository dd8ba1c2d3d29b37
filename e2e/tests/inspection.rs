//! In-band inspection through the real boot plane: QEMU machines of different shapes PXE-boot
//! `beowulf standalone`, which sends hosts without a hardware report to the inspection image
//! (`images/inspector`); its report (posted with the boot's token) must equal what QEMU was given. Then a
//! host's next boot is its own image, the report survives a restart of the server, and `beowulf inspect` sends
//! a host back to the inspector. An unknown machine on the discovery network becomes exactly one discovered
//! host with its hardware, on an address no reservation owns, and booting it again adds no second one.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use e2e::pxe::{Firmware, LabInspector, Machine, Node, PxeLab};
use e2e::{require_root_and_peers, wait_for};
use serde_json::Value;

fn beowulf() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_e2e-beowulf").into()]
}

/// A sparse raw disk image of `mib` MiB in the lab's directory.
fn disk(lab_dir: &std::path::Path, name: &str, mib: u64) -> String {
    let path = lab_dir.join(format!("{name}.raw"));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    path.display().to_string()
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Waits for the machine to power itself off (the inspector does after posting).
fn wait_off(m: &mut Machine, what: &str) {
    wait_for(what, Duration::from_secs(150), || {
        m.qemu.exited().map(|_| ())
    });
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {list}"))
}

#[test]
fn machines_of_different_shapes_are_inspected_through_the_boot_plane() {
    require_root_and_peers();
    let img = tempfile::tempdir().unwrap();
    let built = e2e::inspector::build(img.path());
    let inspector = LabInspector {
        kernel: built.kernel.clone(),
        initrd: built.initrd.clone(),
    };
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path();

    let mut big = Node::new("big", 1, Firmware::Bios);
    big.qemu = args(&format!(
        "-smp 4,sockets=2,cores=2,threads=1 -m 768 \
         -smbios type=1,manufacturer=AcmeHPC,product=Rack9000,serial=SN-BIG-1 \
         -drive if=none,id=d0,format=raw,file={} -device virtio-blk-pci,drive=d0,serial=VDBIG0 \
         -drive if=none,id=d1,format=raw,file={} -device nvme,drive=d1,serial=NVMEBIG1 \
         -netdev user,id=u1,restrict=on -device e1000,netdev=u1,mac=52:54:00:00:01:99,romfile=",
        disk(d, "big0", 64),
        disk(d, "big1", 128),
    ));
    let mut small = Node::new("small", 2, Firmware::Bios);
    small.qemu = args(&format!(
        "-smp 2 -m 1024 -drive if=none,id=d0,format=raw,file={} -device virtio-blk-pci,drive=d0,serial=VDSMALL0",
        disk(d, "small0", 32),
    ));
    // A reservation inside the discovery range (never booted): discovery must skip its address.
    let edge = Node::new("edge", 100, Firmware::Bios);
    assert_eq!(edge.ip, "10.99.0.200");
    // Not in the inventory at all.
    let stranger = Node::new("stranger", 0x42, Firmware::Bios);
    let mut lab = PxeLab::start_inspecting(
        "inspect",
        beowulf(),
        vec![big.clone(), small.clone(), edge],
        inspector,
    );
    assert_eq!(lab.host_view("big")["boots"], "inspector");

    let mut mb = lab.boot(&big);
    let mut ms = lab.boot(&small);
    let mut mx = lab.boot(&stranger);
    wait_off(&mut mb, "big to post its report and power off");
    wait_off(&mut ms, "small to post its report and power off");
    wait_off(
        &mut mx,
        "the unknown machine to post its report and power off",
    );
    for m in [&mb, &ms, &mx] {
        assert!(
            m.serial().contains("INSPECTOR: posted ok"),
            "{}:\n{}",
            m.node.name,
            m.serial()
        );
    }

    let view = lab.host_view("big");
    assert_eq!(view["last_phase"], "inspection", "{view}");
    let hw = &view["hardware"];
    assert_eq!(hw["cpu"]["architecture"], "x86_64");
    assert_eq!(
        (
            &hw["cpu"]["sockets"],
            &hw["cpu"]["cores"],
            &hw["cpu"]["threads"]
        ),
        (&Value::from(2), &Value::from(4), &Value::from(4)),
        "{hw}"
    );
    assert_eq!(hw["memory"]["bytes"], 768u64 << 20, "{hw}");
    let vd = find(&hw["disks"], "serial", "VDBIG0");
    assert_eq!(vd["sizeBytes"], 64u64 << 20);
    let nv = find(&hw["disks"], "serial", "NVMEBIG1");
    assert_eq!(
        (&nv["sizeBytes"], &nv["kind"]),
        (&Value::from(128u64 << 20), &Value::from("nvme"))
    );
    assert_eq!(find(&hw["nics"], "mac", &big.mac)["driver"], "virtio_net");
    assert_eq!(
        find(&hw["nics"], "mac", "52:54:00:00:01:99")["driver"],
        "e1000"
    );
    assert_eq!(
        hw["system"],
        serde_json::json!({"vendor": "AcmeHPC", "product": "Rack9000", "serial": "SN-BIG-1",
                           "biosVersion": hw["system"]["biosVersion"]}),
    );
    find(&hw["pci"], "class", "0x010802");
    // LLDP: the NIC on the lab's bridge hears the lab's switch (lldpd on br0); the other NIC hears nothing.
    let lab_nic = find(&hw["nics"], "mac", &big.mac)["name"].as_str().unwrap();
    assert_eq!(
        hw["lldp"],
        serde_json::json!([{"interface": lab_nic, "switch": e2e::pxe::LLDP_SWITCH, "port": "br0"}]),
        "{hw}"
    );
    assert_eq!(view["boots"], "testnode", "inspected: its own image next");

    let view = lab.host_view("small");
    let hw = &view["hardware"];
    assert_eq!(
        (&hw["cpu"]["threads"], &hw["memory"]["bytes"]),
        (&Value::from(2), &Value::from(1024u64 << 20))
    );
    assert_eq!(hw["disks"].as_array().unwrap().len(), 1, "{hw}");
    assert_eq!(
        find(&hw["disks"], "serial", "VDSMALL0")["sizeBytes"],
        32u64 << 20
    );
    assert_eq!(hw["nics"].as_array().unwrap().len(), 1, "{hw}");
    assert!(lab.log().contains("inspection report stored"));

    // The unknown machine: one discovered host, named by its MAC, on the first free address of the range.
    let discovered = |lab: &PxeLab| -> Vec<Value> {
        lab.api_hosts()
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["discovered"] == true)
            .cloned()
            .collect()
    };
    let found = discovered(&lab);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["name"], "discovered-525400000042");
    assert_eq!(found[0]["mac"], stranger.mac);
    assert_eq!(
        found[0]["ip"], "10.99.0.201",
        "10.99.0.200 is edge's reservation"
    );
    assert_eq!(found[0]["hardware"]["memory"]["bytes"], 512u64 << 20);
    assert_eq!(
        found[0]["boots"],
        Value::Null,
        "reported: not answered until accepted"
    );
    let listed = std::fs::read_to_string(lab.state_dir().join("discovered.yaml")).unwrap();
    assert_eq!(listed.matches("  - mac: ").count(), 1, "{listed}");
    assert!(
        listed
            .contains("  - mac: \"52:54:00:00:00:42\"\n    discovered: discovered-525400000042\n"),
        "{listed}"
    );
    // It boots again: no answer (counted as an unknown MAC), still one host.
    let unknown = |lab: &PxeLab| -> u64 {
        lab.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("beowulf_dhcp_unknown_mac_total "))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let before = unknown(&lab);
    let mut mx2 = lab.boot(&stranger);
    wait_for(
        "the second boot's DHCP request to go unanswered",
        Duration::from_secs(60),
        || (unknown(&lab) > before).then_some(()),
    );
    mx2.qemu.stop();
    assert_eq!(discovered(&lab).len(), 1);
    let listed = std::fs::read_to_string(lab.state_dir().join("discovered.yaml")).unwrap();
    assert_eq!(listed.matches("  - mac: ").count(), 1, "{listed}");

    // The next boot is the host's own image, to its callback.
    let mut again = lab.boot(&small);
    wait_off(
        &mut again,
        "small's second boot (its own image) to power off",
    );
    assert!(
        again.serial().contains("TESTNODE: callback ok"),
        "{}",
        again.serial()
    );
    assert_eq!(lab.host_view("small")["last_phase"], "callback");

    // A restart keeps the reports; `beowulf inspect` sends one host back to the inspector.
    let before = lab.host_view("big")["hardware"].clone();
    lab.restart_beowulf();
    assert_eq!(lab.host_view("big")["hardware"], before);
    assert_eq!(lab.host_view("big")["boots"], "testnode");
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"))
        .args(["inspect", "--inventory"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(lab.state_dir())
        .arg("big")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "big: inspection requested; its next network boot runs the inspection image\n"
    );
    assert_eq!(lab.host_view("big")["boots"], "inspector");
    assert_eq!(lab.host_view("small")["boots"], "testnode");
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"))
        .args(["inspect", "--inventory"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(lab.state_dir())
        .arg("nosuchhost")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the inventory has no host \"nosuchhost\"")
    );
}
