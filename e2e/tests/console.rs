//! Serial consoles through a real BMC: a QEMU machine whose serial port is wired to ipmi_sim's Serial over LAN
//! (`e2e::serial_wire`) PXE-boots the test node from `beowulf standalone`, which captures the console over our
//! own SOL client while the host boots. Checked: the captured log holds the kernel's boot lines and this run's
//! marker (from the kernel command line) with the boot token redacted, in the API, on disk and through
//! `beowulf console --log`; an interactive `beowulf console` is refused while the server holds the console,
//! takes it over with --force, shows the node's output, puts what is typed on the wire to the machine, and
//! leaves with `~.`; the server then takes the console back, and reconnects by itself after the BMC crashed.
//! The host's page shows its power state as the BMC reports it (on while it boots, off after it is switched off).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beowulf::bmc::{BmcDriver, BootDevice, BootMode, BootOverride, PowerAction};
use e2e::pxe::{Firmware, LabImage, Node, PxeLab};
use e2e::qemu_bmc::{MachineSpec, QemuBmc};
use e2e::{require_root_and_peers, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_e2e-beowulf");
/// The BMC's network: the host end (ipmi_sim listens there) and the lab namespace's end (the server).
const BMC_HOST_END: &str = "10.253.0.1";
const BMC_NS_END: &str = "10.253.0.2";

/// The first run of 64 hex digits in `s` (a boot token).
fn token_in(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start == 64 {
            return Some(s[start..i].to_string());
        }
        i = i.max(start + 1);
    }
    None
}

fn captured(lab: &PxeLab) -> String {
    let (status, body) = lab.curl(None, "/api/hosts/consoled/console?lines=2000", &[]);
    assert_eq!(
        status,
        200,
        "console API: {}",
        String::from_utf8_lossy(&body)
    );
    String::from_utf8_lossy(&body).into_owned()
}

fn host_page(lab: &PxeLab) -> String {
    let (status, body) = lab.curl(None, "/hosts/consoled", &[]);
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn the_server_captures_the_console_and_an_operator_can_take_it_over() {
    require_root_and_peers();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let marker = format!(
        "run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let img_dir = tempfile::tempdir().unwrap();
    let mut image = LabImage::testnode(img_dir.path());
    // The kernel's own lines (not quiet) and a marker of this run on its command line.
    image.cmdline = image.cmdline.replace(
        "quiet loglevel=3",
        &format!("loglevel=6 beowulf.e2e={marker}"),
    );
    let mut node = Node::new("consoled", 0x42, Firmware::Bios);
    node.user_data.push_str("# testnode: stay on\n");
    let mut lab = PxeLab::start_with_image("console", vec![BIN.into()], vec![node.clone()], image);

    // The BMC network: a veth from the host (where ipmi_sim listens) into the lab's namespace.
    let uplink = format!("bwc{}", std::process::id() % 100000);
    e2e::run(Command::new("ip").args([
        "link",
        "add",
        &uplink,
        "type",
        "veth",
        "peer",
        "name",
        "bmc0",
        "netns",
        &lab.ns.name,
    ]));
    e2e::run(Command::new("ip").args([
        "addr",
        "add",
        &format!("{BMC_HOST_END}/24"),
        "dev",
        &uplink,
    ]));
    e2e::run(Command::new("ip").args(["link", "set", &uplink, "up"]));
    lab.ns
        .try_ip(&["addr", "add", &format!("{BMC_NS_END}/24"), "dev", "bmc0"])
        .unwrap();
    lab.ns.try_ip(&["link", "set", "bmc0", "up"]).unwrap();

    let mut spec = MachineSpec::new(&lab.ns.name, "br0", &node.mac);
    spec.sol = true;
    spec.bmc_ip = Some(BMC_HOST_END.parse::<Ipv4Addr>().unwrap());
    let mut machine = QemuBmc::start_with(spec);
    node.bmc = Some(machine.endpoint());
    lab.rewrite_inventory(vec![node.clone()]);
    wait_for(
        "the server to load the BMC entry",
        Duration::from_secs(20),
        || lab.log().contains("inventory reloaded").then_some(()),
    );

    let bmc = machine.ipmi_client();
    rt.block_on(bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Legacy,
    }))
    .unwrap();
    rt.block_on(bmc.power(PowerAction::On)).unwrap();

    // The server captures the boot: the kernel's lines with this run's marker.
    let log = wait_for(
        "the kernel's lines in the captured console",
        Duration::from_secs(120),
        || {
            let log = captured(&lab);
            assert!(
                machine.qemu_pid().is_some() || machine.serial().is_empty(),
                "QEMU exited.\nserial:\n{}\nbeowulf log:\n{}",
                machine.serial(),
                lab.log()
            );
            (log.contains("Linux version") && log.contains(&marker)).then_some(log)
        },
    );
    assert!(log.contains("[beowulf] console connected"), "{log}");
    // The host's page shows its power as the BMC tells it, and the console's lines.
    let page = host_page(&lab);
    assert!(page.contains("<td id=\"power\">on</td>"), "{page}");
    assert!(page.contains(&marker), "{page}");

    // An operator's console while the server holds it: refused, with what to do.
    let refused = Command::new(BIN)
        .args(["console", "consoled", "--inventory"])
        .arg(lab.inventory_path())
        .args(["--cipher-suite", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("already active on another session") && err.contains("--force"),
        "{err}"
    );

    // With --force, on a terminal (script(1) gives it a pty): it takes over and shows the node's output.
    let cmd = format!(
        "{BIN} console consoled --inventory {} --cipher-suite 3 --force",
        lab.inventory_path().display()
    );
    let mut op = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(Vec::new()));
    {
        let screen = screen.clone();
        let mut out = op.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let seen = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    wait_for(
        "the node's output on the operator's console",
        Duration::from_secs(90),
        || {
            let s = seen();
            (s.contains("[beowulf console: consoled") && s.contains("TESTNODE:")).then_some(())
        },
    );
    let typed = format!("hello-wire-{}", std::process::id());
    let mut keys = op.stdin.take().unwrap();
    keys.write_all(format!("{typed}\r").as_bytes()).unwrap();
    keys.flush().unwrap();
    let wire = machine.wire.as_ref().unwrap();
    wait_for(
        "the typed line on the wire to the machine",
        Duration::from_secs(15),
        || {
            String::from_utf8_lossy(&wire.to_machine())
                .contains(&typed)
                .then_some(())
        },
    );
    keys.write_all(b"~.").unwrap();
    keys.flush().unwrap();
    let status = wait_for(
        "the console to leave on ~.",
        Duration::from_secs(15),
        || op.try_wait().unwrap(),
    );
    assert!(status.success(), "{}", seen());
    assert!(seen().contains("[beowulf console: closed]"), "{}", seen());

    // The server notices it lost the console and takes it back once the operator has left.
    let log = wait_for(
        "the server to take the console back",
        Duration::from_secs(45),
        || {
            let log = captured(&lab);
            (log.matches("[beowulf] console connected").count() >= 2).then_some(log)
        },
    );
    assert!(log.contains("[beowulf] console taken over"), "{log}");

    // The BMC crashes and comes back: capture notices (keepalive) and reconnects by itself.
    machine.sim.crash_and_restart();
    let log = wait_for(
        "capture to reconnect after the BMC restarted",
        Duration::from_secs(60),
        || {
            let log = captured(&lab);
            (log.matches("[beowulf] console connected").count() >= 3).then_some(log)
        },
    );
    assert!(log.contains("[beowulf] console lost"), "{log}");

    // The boot token the kernel printed (its command line) is on the raw serial port, never in the capture.
    let raw = machine.serial();
    let token = token_in(&raw).unwrap_or_else(|| panic!("no token on the raw console:\n{raw}"));
    assert!(!log.contains(&token), "token in the API's console");
    assert!(log.contains("/nocloud/[redacted]/"), "{log}");
    let on_disk = std::fs::read_to_string(lab.state_dir().join("consoles/consoled.log")).unwrap();
    assert!(on_disk.contains(&marker) && !on_disk.contains(&token));
    assert!(!lab.log().contains(&token), "token in the server's log");

    // `beowulf console --log` reads the same capture from the server.
    let out = lab
        .ns
        .command(Duration::from_secs(20), BIN)
        .args([
            "console", "consoled", "--log", "--lines", "2000", "--server",
        ])
        .arg(lab.url(""))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains(&marker) && printed.contains("Linux version"),
        "{printed}"
    );
    assert!(!printed.contains(&token));

    rt.block_on(bmc.power(PowerAction::ForceOff)).unwrap();
    // The page asks the BMC again once its answer is a few seconds old.
    wait_for(
        "the page to show the power off",
        Duration::from_secs(30),
        || {
            host_page(&lab)
                .contains("<td id=\"power\">off</td>")
                .then_some(())
        },
    );
    rt.block_on(bmc.close());
    let _ = Command::new("ip").args(["link", "del", &uplink]).status();
}
