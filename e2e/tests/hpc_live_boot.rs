//! The stateless HPC node image (`images/hpc-node`, the Debian-only CI variant) boots through `beowulf
//! standalone` in QEMU (TCG): iPXE loads kernel and dracut initrd from the boot plane, the initrd downloads the
//! squashfs named by `root=live:{{ rootfs_url }}` into RAM and boots it under an overlayfs, systemd starts
//! cloud-init, which reads its NoCloud data with the boot's token, runs the user-data and phones home.
//!
//! What proves it: the user-data carries a marker that exists nowhere else (not in the image, not on the
//! command line); its `runcmd` sends the marker, the instance id, the root filesystem type and the hostname to
//! a plain HTTP server the test runs in the lab. The test asserts those values, and that the boot plane
//! recorded the rootfs download and a callback (only possible with the boot's token) with the same instance id.
//! A blank disk the inventory declares as `/scratch` is formatted and mounted by the image's local-disk agent
//! before the user-data runs (the report carries its filesystem and label).
//!
//! The image build takes minutes the first time and is cached under the target directory, keyed by the hash
//! of the recipe (`images/hpc-node/build.sh` reuses an up-to-date output).
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::pxe::{BOOT_SERVER, Firmware, LabImage, Node, PxeLab};
use e2e::{Proc, require_root_and_peers, wait_for};

const REPORT_PORT: u16 = 8081;

fn beowulf() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_e2e-beowulf").into()]
}

#[test]
fn hpc_node_image_boots_live_over_http_and_runs_its_user_data() {
    require_root_and_peers();
    let t = Instant::now();
    let image = LabImage::hpc_node_ci();
    eprintln!(
        "hpc-node-ci image ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // A value only the user-data holds: the node can only report it if cloud-init ran this user-data.
    let marker = format!(
        "m{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut node = Node::new("hpc-0", 0x20, Firmware::Bios);
    node.user_data = format!(
        r#"#cloud-config
# e2e user-data for hpc-0
write_files:
  - path: /etc/beowulf-e2e/marker
    permissions: "0600"
    content: "{marker}\n"
runcmd:
  - - sh
    - -c
    - >-
      m=$(cat /etc/beowulf-e2e/marker);
      q="marker=$m&iid=$(cat /var/lib/cloud/data/instance-id)&root=$(findmnt -no FSTYPE /)&scratch=$(findmnt -no FSTYPE,LABEL /scratch | tr -s ' ' ,)&host=$(hostname)&pkgs=$(dpkg-query -W -f='${{Package}}=${{Version}},' cloud-init sssd-ldap munge slurmd)";
      echo "HPCNODE: report $q" > /dev/console;
      curl -sS --retry 5 --retry-connrefused -o /dev/null "http://{BOOT_SERVER}:{REPORT_PORT}/report?$q"
"#
    );
    // A blank disk the inventory keeps as /scratch: the image's agent formats and mounts it before cloud-init.
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = scratch_dir.path().join("scratch.raw");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    node.qemu = vec![
        "-drive".into(),
        format!("if=none,id=d0,format=raw,file={}", scratch.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d0,serial=SCRATCH0".into(),
    ];
    node.inventory_extra =
        "    localDisks: [{ name: scratch, mountPath: /scratch, disk: { serial: SCRATCH0 } }]\n"
            .into();
    let mut lab = PxeLab::start_with_image("hpclive", beowulf(), vec![node.clone()], image);

    // The observer: a plain HTTP server in the lab whose access log records the node's report.
    let www = lab.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("report"), "thanks\n").unwrap();
    let report_log = lab.dir.path().join("report.log");
    let _observer = Proc::spawn(
        "report server",
        lab.ns
            .cmd("python3")
            .args(["-m", "http.server", "--bind", BOOT_SERVER, "--directory"])
            .arg(&www)
            .arg(REPORT_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&report_log).unwrap()),
    );

    let t0 = Instant::now();
    let mut machine = lab.boot(&node);
    // The whole console log is kept next to the image for a post-mortem; a failure prints its tail.
    let serial_copy = e2e::target_dir().join("images/hpc_live_boot-serial.log");
    let fail = |why: String, serial: String, log: String| -> ! {
        let _ = std::fs::write(&serial_copy, &serial);
        let tail: Vec<&str> = serial.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{why}\nserial (last 80 lines; all in {}):\n{}\nbeowulf log:\n{log}",
            serial_copy.display(),
            tail.join("\n")
        );
    };
    let report = wait_for(
        "the node's user-data report and its callback",
        Duration::from_secs(500),
        || {
            if let Some(st) = machine.qemu.exited() {
                fail(
                    format!("QEMU exited ({st}) before the node reported"),
                    machine.serial(),
                    lab.log(),
                );
            }
            let serial = machine.serial();
            if serial.contains("Datasource DataSourceNone") {
                fail(
                    "cloud-init finished without the NoCloud datasource".into(),
                    serial,
                    lab.log(),
                );
            }
            let log = std::fs::read_to_string(&report_log).unwrap_or_default();
            let report = log
                .lines()
                .find(|l| l.contains("GET /report?"))
                .map(str::to_string)?;
            (lab.host_view(&node.name)["state"] == "booted").then_some(report)
        },
    );
    eprintln!(
        "hpc-0 ran its user-data and called back {:.1}s after power-on",
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::write(&serial_copy, machine.serial());

    // The report, as the observer saw it: from the node's address, with the user-data's marker, the
    // instance id of this boot, an overlay root (squashfs under a RAM upper layer) and the inventory's name.
    assert!(
        report.starts_with(&format!("{} ", node.ip)),
        "report from another address: {report}"
    );
    let query = report
        .split("GET /report?")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap();
    let field = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {query}"))
            .to_string()
    };
    assert_eq!(field("marker"), marker, "{report}");
    assert_eq!(field("root"), "overlay", "{report}");
    // The local disk: formatted by the image's agent, mounted where the inventory said, before the user-data ran.
    assert_eq!(field("scratch"), "ext4,bw-scratch", "{report}");
    let view = lab.host_view(&node.name);
    assert_eq!(view["local_disks"][0]["outcome"], "formatted", "{view}");
    assert_eq!(field("host"), node.name, "{report}");
    // The HPC packages are in the image the node runs (installed versions, from dpkg on the node).
    let pkgs = field("pkgs");
    for p in ["cloud-init=", "sssd-ldap=", "munge=", "slurmd="] {
        assert!(
            pkgs.split(',')
                .any(|e| e.starts_with(p) && e.len() > p.len()),
            "{p} missing in {pkgs}"
        );
    }

    // The callback came with the boot's token (nothing else is accepted) and carries the same instance id.
    let view = lab.host_view(&node.name);
    assert_eq!(view["state"], "booted", "{view}");
    assert_eq!(view["callback"]["hostname"], node.name.as_str(), "{view}");
    let iid = view["callback"]["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(iid.starts_with("e2e-hpc-0-"), "{view}");
    assert_eq!(field("iid"), iid, "{report}");
    // The boot plane served every stage: script, kernel, initrd, the squashfs (to the initrd's livenet), the
    // NoCloud data, the callback.
    let phases = view["phases"].as_object().unwrap();
    for p in [
        "dhcp-ack",
        "ipxe-script",
        "kernel",
        "initrd",
        "rootfs",
        "metadata",
        "callback",
    ] {
        assert!(phases.contains_key(p), "phase {p} missing: {view}");
    }
    // The serial console shows the node reporting from the live root (the systemd + cloud-init path).
    let serial = machine.serial();
    assert!(
        serial.contains(&format!("HPCNODE: report marker={marker}&")),
        "serial:\n{serial}"
    );
    // The marker never reached the boot plane's log (user-data is a secret).
    assert!(!lab.log().contains(&marker), "the user-data is in the log");
    drop(machine);
}
