//! Local disks on a live node, through the real boot plane and a real BMC: a QEMU machine behind ipmi_sim
//! (`e2e::qemu_bmc`) boots the test node from `beowulf standalone`; its inventory entry keeps two disks. The
//! blank one is formatted and mounted on the first boot, and a file the node writes there is still there after
//! a power cycle through the BMC (the node counts its boots on the disk); the one holding a filesystem it was
//! not told to take is never touched, byte for byte, and the host's view says so. Checked independently on
//! the disk images with e2fsprogs (`blkid`, `debugfs`) after QEMU has exited.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use beowulf::bmc::ipmi::IpmiClient;
use beowulf::bmc::{BmcDriver, BootDevice, BootMode, BootOverride, PowerAction, PowerState};
use e2e::pxe::{Firmware, Node, PxeLab};
use e2e::qemu_bmc::{MachineSpec, QemuBmc};
use e2e::{require_root_and_peers, wait_for};
use sha2::{Digest, Sha256};

fn beowulf() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_e2e-beowulf").into()]
}

fn sha256(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Powers the machine on from the network through its BMC and waits for the boot's callback and for the node
/// to settle (it stays on); returns the console of that boot.
fn boot(rt: &tokio::runtime::Runtime, bmc: &IpmiClient, machine: &QemuBmc, lab: &PxeLab) -> String {
    // The last boot's console goes (QEMU truncates it too, but only once it has started).
    std::fs::write(machine.serial_path(), b"").unwrap();
    rt.block_on(bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Legacy,
    }))
    .unwrap();
    rt.block_on(bmc.power(PowerAction::On)).unwrap();
    wait_for(
        "the node to boot and settle",
        Duration::from_secs(150),
        || {
            let serial = machine.serial();
            if serial.contains("TESTNODE: staying on") {
                return Some(serial);
            }
            assert!(
                machine.qemu_pid().is_some() || serial.is_empty(),
                "QEMU exited before the node settled.\nserial:\n{serial}\nbeowulf log:\n{}",
                lab.log()
            );
            None
        },
    )
}

fn power_off(rt: &tokio::runtime::Runtime, bmc: &IpmiClient, machine: &QemuBmc) {
    rt.block_on(bmc.power(PowerAction::ForceOff)).unwrap();
    rt.block_on(bmc.wait_power(PowerState::Off, Duration::from_secs(10)))
        .unwrap();
    wait_for("QEMU to exit", Duration::from_secs(15), || {
        machine.qemu_pid().is_none().then_some(())
    });
}

#[test]
fn a_blank_disk_is_formatted_kept_across_a_power_cycle_and_a_foreign_one_is_never_touched() {
    require_root_and_peers();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let disks = tempfile::tempdir().unwrap();
    let data = disks.path().join("data.raw");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // Someone's filesystem, with a file on it: the node must leave every byte as it is.
    let precious = disks.path().join("precious.raw");
    std::fs::File::create(&precious)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mkfs = sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "precious", "-E", "root_owner=0:0"])
        .arg(&precious));
    assert!(mkfs.trim().is_empty(), "mkfs.ext4: {mkfs}");
    let precious_sha = sha256(&precious);

    let mut node = Node::new("disky", 0x31, Firmware::Bios);
    node.user_data.push_str("# testnode: stay on\n");
    node.inventory_extra = "    localDisks:\n\
         \x20     - { name: data, mountPath: /data, disk: { serial: DATA1 } }\n\
         \x20     - { name: keep, mountPath: /keep, disk: { serial: PRECIOUS2 } }\n"
        .to_string();
    let lab = PxeLab::start("disks", beowulf(), vec![node.clone()]);
    let mut spec = MachineSpec::new(&lab.ns.name, "br0", &node.mac);
    spec.qemu_args = [
        "-drive",
        &format!("if=none,id=d0,format=raw,file={}", data.display()),
        "-device",
        "virtio-blk-pci,drive=d0,serial=DATA1",
        "-drive",
        &format!("if=none,id=d1,format=raw,file={}", precious.display()),
        "-device",
        "nvme,drive=d1,serial=PRECIOUS2",
    ]
    .map(str::to_string)
    .to_vec();
    let machine = QemuBmc::start_with(spec);
    let bmc = machine.ipmi_client();

    // First boot: the blank disk is formatted and mounted, the foreign one reported and left alone.
    let serial = boot(&rt, &bmc, &machine, &lab);
    assert!(
        serial.contains("BEOWULF-DISKS: data formatted vda /data"),
        "{serial}"
    );
    assert!(
        serial.contains("BEOWULF-DISKS: keep foreign nvme0n1 TYPE=ext4 LABEL=precious"),
        "{serial}"
    );
    assert!(serial.contains("BEOWULF-DISKS: report posted"), "{serial}");
    assert!(serial.contains("TESTNODE: disk /data boots=1"), "{serial}");
    let view = lab.host_view(&node.name);
    let disks_view = &view["local_disks"];
    assert_eq!(disks_view[0]["name"], "data", "{view}");
    assert_eq!(disks_view[0]["disk"], "serial=DATA1", "{view}");
    assert_eq!(disks_view[0]["outcome"], "formatted", "{view}");
    assert_eq!(disks_view[0]["device"], "vda", "{view}");
    assert_eq!(disks_view[1]["outcome"], "foreign", "{view}");
    assert_eq!(
        disks_view[1]["detail"], "TYPE=ext4 LABEL=precious",
        "{view}"
    );

    // A power cycle through the BMC: the same disk comes back with the node's file on it.
    power_off(&rt, &bmc, &machine);
    let serial = boot(&rt, &bmc, &machine, &lab);
    assert!(
        serial.contains("BEOWULF-DISKS: data mounted vda /data"),
        "{serial}"
    );
    assert!(serial.contains("TESTNODE: disk /data boots=2"), "{serial}");
    let view = lab.host_view(&node.name);
    assert_eq!(view["boot"], 2, "{view}");
    assert_eq!(view["local_disks"][0]["outcome"], "mounted", "{view}");
    power_off(&rt, &bmc, &machine);
    rt.block_on(bmc.close());

    // Independently, on the images: our filesystem with the node's file, and the foreign disk unchanged.
    let blkid = sh(Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&data));
    assert!(
        blkid.contains("TYPE=ext4") && blkid.contains("LABEL=bw-data"),
        "{blkid}"
    );
    let file = sh(Command::new("debugfs")
        .args(["-R", "cat /testnode-boots"])
        .arg(&data));
    assert_eq!(file.matches("boot\n").count(), 2, "{file}");
    assert_eq!(
        sha256(&precious),
        precious_sha,
        "the foreign disk was written to"
    );
}
