//! An IPMI power-on of a QEMU machine ends with its PXE boot and callback, through the real boot plane.
//!
//! `beowulf standalone` serves DHCP/iPXE/HTTP/NoCloud/callback on a bridge in a namespace of this test
//! (`e2e::pxe::PxeLab`); ipmi_sim's chassis program starts QEMU on that bridge when powered on
//! (`e2e::qemu_bmc::QemuBmc`). Our IPMI driver (lanplus, suite 3) does the BMC side: bootdev pxe, power on,
//! status, power off; ipmitool confirms the power state independently.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use beowulf::bmc::{BmcDriver, BootDevice, BootMode, BootOverride, PowerAction, PowerState};
use e2e::pxe::{Firmware, Node, PxeLab};
use e2e::qemu_bmc::{QemuBmc, alive};
use e2e::{require_root_and_peers, wait_for};

fn beowulf() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_e2e-beowulf").into()]
}

#[test]
fn ipmi_power_on_of_a_qemu_machine_ends_with_its_pxe_boot_and_callback() {
    require_root_and_peers();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut node = Node::new("node-bmc", 0x30, Firmware::Bios);
    // The node stays up after its callback, so that it is the BMC that turns it off.
    node.user_data.push_str("# testnode: stay on\n");
    let lab = PxeLab::start("bmcpxe", beowulf(), vec![node.clone()]);
    let machine = QemuBmc::start(&lab.ns.name, "br0", &node.mac);
    let bmc = machine.ipmi_client();
    let ipmitool_power = || machine.sim.ipmitool(&["chassis", "power", "status"]);

    // Off, never booted.
    assert_eq!(rt.block_on(bmc.power_state()).unwrap(), PowerState::Off);
    assert_eq!(machine.qemu_pid(), None);
    assert_eq!(lab.host_view(&node.name)["state"], "idle");

    // Next boot PXE, then power on: the chassis program starts QEMU with `-boot n`.
    rt.block_on(bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Legacy,
    }))
    .unwrap();
    assert_eq!(
        rt.block_on(bmc.boot()).unwrap().device,
        Some(BootDevice::Pxe)
    );
    let t0 = Instant::now();
    rt.block_on(bmc.power(PowerAction::On)).unwrap();
    let qemu = wait_for("QEMU to start", Duration::from_secs(15), || {
        machine.qemu_pid()
    });
    assert_eq!(rt.block_on(bmc.power_state()).unwrap(), PowerState::On);
    let calls = machine.calls();
    assert!(
        calls.contains("set boot pxe") && calls.contains("set power 1"),
        "the chassis program was not asked for PXE and power on: {calls}"
    );

    // DHCP, iPXE script, kernel, initrd, rootfs, NoCloud data and the callback, all from our boot plane.
    wait_for(
        "the machine's callback to the boot plane",
        Duration::from_secs(150),
        || {
            if lab.host_view(&node.name)["state"] == "booted" {
                return Some(());
            }
            assert!(
                alive(qemu, "qemu"),
                "QEMU exited before the callback.\nserial:\n{}\nbeowulf log:\n{}",
                machine.serial(),
                lab.log()
            );
            None
        },
    );
    eprintln!(
        "IPMI power-on to boot-plane callback: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let view = lab.host_view(&node.name);
    for phase in [
        "dhcp-offer",
        "dhcp-ack",
        "ipxe-script",
        "kernel",
        "initrd",
        "rootfs",
        "metadata",
        "callback",
    ] {
        assert!(view["phases"].get(phase).is_some(), "no {phase}: {view}");
    }
    assert_eq!(view["callback"]["hostname"], node.name.as_str(), "{view}");
    assert_eq!(view["boot"], 1, "exactly one boot: {view}");

    // The node called back with the per-boot token the boot plane issued in its script (seed URL), and
    // received the inventory's user-data with it.
    let serial = machine.serial();
    let seed = serial
        .lines()
        .find_map(|l| l.trim().strip_prefix("TESTNODE: seed="))
        .unwrap_or_else(|| panic!("no seed URL on the console:\n{serial}"));
    let token = &seed[seed.find("/nocloud/").unwrap() + "/nocloud/".len()..][..64];
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{seed}");
    assert!(serial.contains("TESTNODE: callback ok"), "{serial}");
    assert!(
        serial.contains(&format!(
            "TESTNODE: got user-data bytes={} sha256={}",
            node.user_data.len(),
            node.user_data_sha256()
        )),
        "{serial}"
    );
    let (status, _) = lab.curl(None, &format!("/callback/{token}"), &[]);
    assert_eq!(status, 403, "the node's token is not accepted again");
    assert!(!lab.log().contains(token), "the token is in the log");

    // The machine stays on: our status and ipmitool's agree.
    wait_for("the node to settle", Duration::from_secs(20), || {
        machine
            .serial()
            .contains("TESTNODE: staying on")
            .then_some(())
    });
    assert_eq!(rt.block_on(bmc.power_state()).unwrap(), PowerState::On);
    assert!(alive(qemu, "qemu"));
    assert!(
        ipmitool_power().contains("Chassis Power is on"),
        "{}",
        ipmitool_power()
    );

    // Power off through the BMC stops QEMU; both clients read off.
    rt.block_on(bmc.power(PowerAction::ForceOff)).unwrap();
    rt.block_on(bmc.wait_power(PowerState::Off, Duration::from_secs(10)))
        .unwrap();
    wait_for("QEMU to exit", Duration::from_secs(10), || {
        (!alive(qemu, "qemu")).then_some(())
    });
    assert_eq!(machine.qemu_pid(), None);
    assert!(
        ipmitool_power().contains("Chassis Power is off"),
        "{}",
        ipmitool_power()
    );
    rt.block_on(bmc.close());
}
