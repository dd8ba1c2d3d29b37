//! A boot in progress survives restarts of `beowulf standalone`: a QEMU test node is held at two points of its
//! boot (after its script, kernel, initrd and rootfs: before its NoCloud data; and before its callback) while
//! the server is stopped (SIGTERM) and started again on the same state directory. The node's later requests
//! with the token it already has still succeed, the boot keeps its phases and their times, no second token or
//! boot is started, and the journal in the state directory holds no token in the clear.
//! A restart in the middle of iPXE's kernel download (the node's link slowed with `tc` so the restart lands
//! inside it): iPXE's download fails, the script's retry fetches it again, and the boot completes.
//! A restart when iPXE asks for its script (the one request iPXE does not retry): with the HTTP socket held
//! as systemd holds a `.socket` unit's, the node's connection waits in the backlog while no server runs and is
//! answered by the next one.
//! A restart in the middle of a UEFI firmware's TFTP download of iPXE (which EDK2 would not ask for again):
//! the stopping server lets the transfer finish first, and the boot goes on with the next server.
//! A download cut by a restart completes on the client's retry: curl, rate-limited so the restart lands mid
//! transfer, resumes with a Range request (`--retry -C -`) and ends with every byte of the kernel.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use e2e::pxe::HTTP_PORT;
use e2e::pxe::{BOOT_SERVER, Firmware, LabImage, Machine, Node, PxeLab};
use e2e::{Proc, require_root_and_peers, run, wait_for};

const GATE_PORT: u16 = 8082;

fn beowulf() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_e2e-beowulf").into()]
}

fn wait_console(m: &mut Machine, line: &str, lab: &PxeLab) {
    wait_for(line, Duration::from_secs(120), || {
        // The serial first: the node may print the line and power off between two polls.
        if m.serial().contains(line) {
            return Some(());
        }
        if let Some(st) = m.qemu.exited() {
            if m.serial().contains(line) {
                return Some(());
            }
            panic!(
                "QEMU exited ({st}) before {line:?}:\n{}\nlog:\n{}",
                m.serial(),
                lab.log()
            );
        }
        m.serial().contains(line).then_some(())
    });
}

/// Waits for `node`'s callback and checks it booted once, without a failure on its console; its host view.
fn booted_once(m: &mut Machine, lab: &PxeLab, node: &Node) -> serde_json::Value {
    wait_console(m, "TESTNODE: callback ok", lab);
    let serial = m.serial();
    assert!(!serial.contains("TESTNODE: FAILED"), "{serial}");
    let done = lab.host_view(&node.name);
    assert_eq!(done["state"], "booted", "{done}");
    assert_eq!(done["boot"], 1, "one boot: {done}");
    done
}

#[test]
fn a_boot_in_progress_survives_restarts_of_the_standalone_server() {
    require_root_and_peers();
    let img = tempfile::tempdir().unwrap();
    let mut image = LabImage::testnode(img.path());
    let gate = |point: &str| format!("http://{BOOT_SERVER}:{GATE_PORT}/go-{point}");
    image.cmdline = format!(
        "{} testnode.gate_metadata={} testnode.gate_callback={}",
        image.cmdline,
        gate("metadata"),
        gate("callback")
    );
    let node = Node::new("steady", 0x33, Firmware::Bios);
    let mut lab = PxeLab::start_with_image("restart", beowulf(), vec![node.clone()], image);
    // The gates: a plain HTTP server in the lab; a gate opens when its file exists.
    let gates = lab.dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let _gate_server = Proc::spawn(
        "gate server",
        lab.ns
            .cmd("python3")
            .args(["-m", "http.server", "--bind", BOOT_SERVER, "--directory"])
            .arg(&gates)
            .arg(GATE_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );

    let mut m = lab.boot(&node);
    wait_console(&mut m, "TESTNODE: waiting at metadata", &lab);
    let before = lab.host_view(&node.name);
    assert_eq!(before["state"], "booting", "{before}");
    assert_eq!(before["boot"], 1, "{before}");
    for phase in ["ipxe-script", "kernel", "initrd", "rootfs"] {
        assert!(
            before["phases"].get(phase).is_some(),
            "no {phase}: {before}"
        );
    }

    // Restart 1, between the rootfs and the NoCloud data.
    lab.restart_beowulf();
    let after = lab.host_view(&node.name);
    assert_eq!(after["phases"], before["phases"], "the phases were lost");
    assert_eq!(after["boot"], 1);
    std::fs::write(gates.join("go-metadata"), "go\n").unwrap();
    wait_console(&mut m, "TESTNODE: waiting at callback", &lab);
    let serial = m.serial();
    assert!(
        serial.contains(&format!(
            "TESTNODE: got user-data bytes={} sha256={}",
            node.user_data.len(),
            node.user_data_sha256()
        )),
        "the token was refused after the restart:\n{serial}"
    );
    assert!(!serial.contains("TESTNODE: FAILED"), "{serial}");

    // Restart 2, between the NoCloud data and the callback.
    lab.restart_beowulf();
    std::fs::write(gates.join("go-callback"), "go\n").unwrap();
    wait_console(&mut m, "TESTNODE: callback ok", &lab);
    let done = lab.host_view(&node.name);
    assert_eq!(done["state"], "booted", "{done}");
    assert_eq!(done["boot"], 1, "one boot, one token: {done}");
    assert_eq!(done["callback"]["hostname"], node.name.as_str(), "{done}");
    for phase in ["ipxe-script", "kernel", "initrd", "rootfs"] {
        assert_eq!(done["phases"][phase], before["phases"][phase], "{done}");
    }
    assert!(done["phases"].get("metadata").is_some(), "{done}");

    // Restart 3, after the callback: the boot stays completed, with its callback report.
    lab.restart_beowulf();
    let later = lab.host_view(&node.name);
    assert_eq!(later["state"], "booted", "{later}");
    assert_eq!(later["callback"], done["callback"], "{later}");

    // The token the node used is nowhere in the clear: not in the journal, not in the log.
    let token = m.token().expect("the node printed its seed URL");
    let journal = std::fs::read_to_string(lab.state_dir().join("boots.journal")).unwrap();
    assert!(!journal.is_empty());
    assert!(!journal.contains(&token), "{journal}");
    assert!(!lab.log().contains(&token));
}

#[test]
fn a_download_cut_by_a_restart_completes_on_the_clients_retry() {
    require_root_and_peers();
    let node = Node::new("idle", 0x34, Firmware::Bios);
    let mut lab = PxeLab::start("restart-dl", beowulf(), vec![node.clone()]);
    // A kernel-sized file several times larger than what socket buffers hold (which would carry a small
    // file through the restart): 48 MiB of a pattern, named by the inventory like any kernel.
    let kernel = lab.dir.path().join("big-vmlinuz");
    let pattern: Vec<u8> = (0..48u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&kernel, &pattern).unwrap();
    let size = pattern.len() as u64;
    lab.image.kernel = kernel.clone();
    lab.rewrite_inventory(vec![node]);
    wait_for(
        "the server to load the new image",
        Duration::from_secs(20),
        || lab.log().contains("inventory reloaded").then_some(()),
    );
    let name = "big-vmlinuz";
    let out = lab.dir.path().join("kernel.download");
    let url = lab.url(&format!("/images/{}/{name}", lab.image.name));
    // At 4 MiB/s the download takes 12 s: the restart lands in the middle of it.
    let mut curl = Proc::spawn(
        "curl",
        lab.ns
            .cmd("curl")
            .args(["--no-progress-meter", "--fail", "--limit-rate", "4M"])
            .args(["--retry", "10", "--retry-all-errors", "--retry-delay", "1"])
            .args(["-C", "-", "-o"])
            .arg(&out)
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(lab.dir.path().join("curl.err")).unwrap()),
    );
    wait_for(
        "the download to be under way",
        Duration::from_secs(20),
        || (std::fs::metadata(&out).map_or(0, |m| m.len()) >= 4 << 20).then_some(()),
    );
    lab.restart_beowulf();
    let cut_at = std::fs::metadata(&out).unwrap().len();
    assert!(cut_at < size, "the download finished before the restart");
    let status = wait_for(
        "curl to finish after the restart",
        Duration::from_secs(60),
        || curl.exited(),
    );
    let said = std::fs::read_to_string(lab.dir.path().join("curl.err")).unwrap();
    assert!(
        status.success(),
        "curl: {status}\n{said}\nlog:\n{}",
        lab.log()
    );
    // It did retry (the restart cut it), and what it assembled is the kernel, byte for byte.
    assert!(said.contains("Will retry"), "{said}");
    assert_eq!(
        sha256_of(&std::fs::read(&out).unwrap()),
        sha256_of(&pattern)
    );
}

fn sha256_of(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn a_restart_during_the_kernel_download_is_retried_by_the_script() {
    require_root_and_peers();
    let node = Node::new("retried", 0x35, Firmware::Bios);
    let mut lab = PxeLab::start("restart-k", beowulf(), vec![node.clone()]);
    let kernel = std::fs::metadata(&lab.image.kernel).unwrap().len();
    let mut m = lab.boot(&node);
    // The machine's link at 16 Mbit/s: its kernel takes seconds to arrive, longer than the server's 2 s
    // shutdown grace, so the restart cuts the transfer.
    lab.ns.ip(&["link", "show", "tap0"]);
    e2e::run(lab.ns.cmd("tc").args([
        "qdisc", "add", "dev", "tap0", "root", "tbf", "rate", "16mbit", "burst", "32kb", "latency",
        "500ms",
    ]));
    assert!(
        kernel > 4 << 20,
        "a kernel of {kernel} bytes arrives too fast to cut"
    );
    wait_for(
        "the kernel download to start",
        Duration::from_secs(120),
        || {
            lab.host_view(&node.name)["phases"]
                .get("kernel")
                .is_some()
                .then_some(())
        },
    );
    lab.restart_beowulf();
    booted_once(&mut m, &lab, &node);
    let serial = m.serial();
    // iPXE's first download failed, the script fetched the kernel again, and the boot went on.
    assert!(
        serial.matches("/vmlinuz...").count() >= 2,
        "the kernel was fetched once, the restart did not cut it:\n{serial}"
    );
}

#[test]
fn a_restart_when_ipxe_asks_for_its_script_is_bridged_by_the_held_socket() {
    require_root_and_peers();
    let node = Node::new("scripted", 0x36, Firmware::Bios);
    let mut lab = PxeLab::start("restart-s", beowulf(), vec![node.clone()]);
    lab.hold_http_socket();
    // The node's first attempts to connect to the HTTP port are dropped: iPXE sends its SYN again (for about
    // 15 s), so the restart lands between its DHCP lease and its script, whatever the machine's speed.
    let port = HTTP_PORT.to_string();
    let rule = [
        "INPUT", "-p", "tcp", "--syn", "--dport", &port, "-s", &node.ip, "-j", "DROP",
    ];
    run(lab.ns.cmd("iptables").arg("-I").args(rule));
    let dropped = |lab: &PxeLab| -> u64 {
        let out = lab
            .ns
            .cmd("iptables")
            .args(["-L", "INPUT", "1", "-v", "-n", "-x"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        out.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut m = lab.boot(&node);
    wait_for(
        "iPXE to ask for its script",
        Duration::from_secs(120),
        || (dropped(&lab) > 0).then_some(()),
    );
    lab.stop_beowulf();
    run(lab.ns.cmd("iptables").arg("-D").args(rule));
    // No server runs: the node's connection waits in the held socket's backlog (without it: a reset, and
    // iPXE gives up its boot with "Connection refused").
    wait_for(
        "the node's connection in the held socket's backlog",
        Duration::from_secs(20),
        || (lab.http_backlog() >= 1).then_some(()),
    );
    lab.start_beowulf();
    let done = booted_once(&mut m, &lab, &node);
    assert!(done["phases"].get("ipxe-script").is_some(), "{done}");
    assert!(
        lab.log()
            .contains("HTTP: serving the socket passed by the service manager"),
        "the server did not take the held socket"
    );
}

/// `beowulf_tftp_transfers_total{outcome="…"}` from the lab's metrics.
fn tftp_transfers(lab: &PxeLab, outcome: &str) -> u64 {
    let name = format!("beowulf_tftp_transfers_total{{outcome=\"{outcome}\"}} ");
    lab.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_restart_during_the_firmwares_tftp_download_lets_it_finish() {
    require_root_and_peers();
    let node = Node::new("tftp", 0x37, Firmware::UefiPxe);
    let mut lab = PxeLab::start("restart-t", beowulf(), vec![node.clone()]);
    let mut m = lab.boot(&node);
    // The machine's link at 512 kbit/s: iPXE (snponly.efi, 170 KB) takes about 3 s to arrive over TFTP.
    // (A queue of 5 s: nothing is dropped, EDK2's TFTP gives up on lost blocks under TCG.)
    let slow = [
        "dev", "tap0", "root", "tbf", "rate", "512kbit", "burst", "4kb", "latency", "5s",
    ];
    run(lab.ns.cmd("tc").args(["qdisc", "add"]).args(slow));
    // In flight: accepted, and neither finished nor abandoned (EDK2 may probe the size first and abort).
    wait_for(
        "the firmware's TFTP transfer to be under way",
        Duration::from_secs(120),
        || {
            let started = tftp_transfers(&lab, "started");
            let ended = tftp_transfers(&lab, "completed") + tftp_transfers(&lab, "aborted");
            (started > ended).then_some(())
        },
    );
    lab.restart_beowulf();
    run(lab
        .ns
        .cmd("tc")
        .args(["qdisc", "del", "dev", "tap0", "root"]));
    let log = lab.log();
    let stopping = log
        .find("shutting down")
        .expect("the server logged its shutdown");
    assert!(
        log[stopping..].contains("TFTP: letting the transfers in flight finish"),
        "the restart did not land in the transfer:\n{log}"
    );
    assert!(
        log[stopping..].contains("TFTP transfer complete"),
        "the transfer was not finished by the stopping server:\n{log}"
    );
    booted_once(&mut m, &lab, &node);
}
