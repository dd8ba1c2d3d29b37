use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::watch::watch;
use super::*;
use crate::boot::directory::DirectoryHandle;

const GOOD: &str = r#"namespace: rack1
networks:
  - name: boot
    subnet: 10.99.0.0/24
    gateway: 10.99.0.1
    dns: [10.99.0.1]
    domain: rack1.example
    mtu: 1500
    leaseSeconds: 600
    bootServer: 10.99.0.1
images:
  - name: testnode
    kernel: { path: vmlinuz }
    initrds:
      - { path: initrd.gz }
    rootfs: { url: "http://mirror.example/images/rootfs.squashfs" }
    cmdline: "console=ttyS0 BOOTIF={{ bootif }} root=live:{{ rootfs_url }} ds=nocloud;s={{ nocloud_url }}"
hosts:
  - name: node-0
    mac: "52:54:00:12:34:56"
    ip: 10.99.0.157
    image: testnode
    userData: |
      #cloud-config
      runcmd: [echo hi]
    bmc:
      address: ipmi://127.0.0.1:6230
      username: admin
      passwordEnv: NODE0_BMC_PASSWORD
  - name: node-1
    mac: 52-54-00-12-34-57
    ip: 10.99.0.158
    network: boot
    image: testnode
    userDataFile: node-1.yaml
"#;

fn dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(d.path().join("initrd.gz"), b"initrd bytes").unwrap();
    std::fs::write(d.path().join("node-1.yaml"), b"#cloud-config\n{}\n").unwrap();
    d
}

fn parse(text: &str, base: &Path) -> Result<Inventory, Vec<Problem>> {
    Inventory::parse(text, base)
}

/// Parses `text` and expects exactly one problem, at `line`, whose message contains `needle`.
fn one_problem(text: &str, line: u64, needle: &str) -> Problem {
    let d = dir();
    let problems = parse(text, d.path()).expect_err("should be rejected");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = problems.into_iter().next().unwrap();
    assert_eq!(p.line, line, "{p:?}");
    assert!(p.column > 0, "{p:?}");
    assert!(
        p.message.contains(needle),
        "{p:?} should mention {needle:?}"
    );
    p
}

#[test]
fn good_inventory_loads() {
    let d = dir();
    let inv = parse(GOOD, d.path()).unwrap();
    let dir = &inv.directory;
    assert_eq!(dir.namespace, "rack1");
    assert_eq!(dir.hosts.len(), 2);
    let n0 = dir
        .host_by_mac(&"52:54:00:12:34:56".parse().unwrap())
        .unwrap();
    assert_eq!(n0.name, "node-0");
    assert_eq!(n0.user_data.expose(), "#cloud-config\nruncmd: [echo hi]\n");
    assert_eq!(
        inv.bmc("node-0").unwrap().password,
        Some(PasswordRef::Env("NODE0_BMC_PASSWORD".into()))
    );
    let n1 = dir.host_by_ip("10.99.0.158".parse().unwrap()).unwrap();
    assert_eq!(n1.user_data.expose(), "#cloud-config\n{}\n");
    let net = dir.network_of(n1);
    assert_eq!(
        (net.lease_secs, net.mtu, net.subnet.to_string()),
        (600, Some(1500), "10.99.0.0/24".into())
    );
    let img = &dir.images["testnode"];
    assert_eq!(img.kernel.name, "vmlinuz");
    assert_eq!(img.rootfs.as_ref().unwrap().name, "rootfs.squashfs");
    assert_eq!(
        img.kernel.source,
        ArtifactSource::File(d.path().join("vmlinuz"))
    );
    // The files the watcher polls: the user-data file and the local boot files.
    let mut files = inv.referenced_files().to_vec();
    files.sort();
    assert_eq!(
        files,
        vec![
            d.path().join("initrd.gz"),
            d.path().join("node-1.yaml"),
            d.path().join("vmlinuz")
        ]
    );
}

/// Numbers read as go-yaml v2 (kubectl, Helm) reads them: a leading `0` is octal (csctl/tests/yaml_differential.rs).
#[test]
fn a_leading_zero_is_octal_as_in_yaml_1_1() {
    let d = dir();
    let text = GOOD.replace("leaseSeconds: 600", "leaseSeconds: 01130");
    let inv = parse(&text, d.path()).unwrap();
    let n1 = inv
        .directory
        .host_by_ip("10.99.0.158".parse().unwrap())
        .unwrap();
    assert_eq!(inv.directory.network_of(n1).lease_secs, 600);
}

#[test]
fn debug_output_hides_user_data() {
    let d = dir();
    let inv = parse(GOOD, d.path()).unwrap();
    let dbg = format!("{inv:?}");
    assert!(!dbg.contains("echo hi"), "{dbg}");
}

#[test]
fn bad_mac_points_at_its_line() {
    one_problem(
        &GOOD.replace("\"52:54:00:12:34:56\"", "52:54:00:12:34"),
        20,
        "invalid MAC address",
    );
}

#[test]
fn unknown_image_reference() {
    one_problem(
        &GOOD.replacen(
            "    image: testnode\n    userData",
            "    image: nosuch\n    userData",
            1,
        ),
        22,
        "image \"nosuch\", which is not defined",
    );
}

#[test]
fn duplicate_address() {
    one_problem(
        &GOOD.replace("10.99.0.158", "10.99.0.157"),
        32,
        "already used by host \"node-0\"",
    );
}

#[test]
fn address_outside_the_network() {
    one_problem(
        &GOOD.replace("10.99.0.158", "10.98.0.158"),
        32,
        "outside network",
    );
}

#[test]
fn gateway_address_for_a_host() {
    one_problem(
        &GOOD.replace("10.99.0.158", "10.99.0.1"),
        32,
        "gateway or boot server",
    );
}

#[test]
fn unknown_field_is_rejected_with_position() {
    let p = one_problem(
        &GOOD.replace("    leaseSeconds: 600", "    leaseSecs: 600"),
        9,
        "leaseSecs",
    );
    assert_eq!(p.column, 5);
}

#[test]
fn yaml_syntax_error_has_position() {
    let d = dir();
    let problems = parse(
        &GOOD.replace("dns: [10.99.0.1]", "dns: [10.99.0.1"),
        d.path(),
    )
    .unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].line >= 7, "{problems:?}");
}

#[test]
fn missing_user_data_file() {
    one_problem(
        &GOOD.replace("node-1.yaml", "missing.yaml"),
        35,
        "cannot read userData file",
    );
}

#[test]
fn checksum_mismatch_and_good_checksum() {
    let d = dir();
    let want = hex::encode(Sha256::digest(b"kernel bytes"));
    let ok = GOOD.replace(
        "{ path: vmlinuz }",
        &format!("{{ path: vmlinuz, sha256: {want} }}"),
    );
    assert!(parse(&ok, d.path()).is_ok());
    let bad = GOOD.replace(
        "{ path: vmlinuz }",
        &format!("{{ path: vmlinuz, sha256: {} }}", "0".repeat(64)),
    );
    let problems = parse(&bad, d.path()).unwrap_err();
    assert_eq!(problems[0].line, 13);
    assert!(problems[0].message.contains(&want), "{problems:?}");
}

#[test]
fn template_with_unknown_variable() {
    one_problem(
        &GOOD.replace("{{ bootif }}", "{{ boot_if }}"),
        17,
        "undefined",
    );
}

#[test]
fn rootfs_variable_without_rootfs() {
    let text = GOOD.replace(
        "    rootfs: { url: \"http://mirror.example/images/rootfs.squashfs\" }\n",
        "",
    );
    one_problem(&text, 16, "undefined");
}

#[test]
fn inspection_and_discovery_are_checked() {
    let d = dir();
    let with = |network_extra: &str, tail: &str| {
        GOOD.replace(
            "    bootServer: 10.99.0.1\n",
            &format!("    bootServer: 10.99.0.1\n{network_extra}"),
        ) + tail
    };
    let ok = parse(
        &with(
            "    discovery: { range: 10.99.0.200-10.99.0.250, leaseSeconds: 120 }\n",
            "inspection:\n  image: testnode\n",
        ),
        d.path(),
    )
    .unwrap();
    assert_eq!(ok.directory.inspection_image.as_deref(), Some("testnode"));
    assert_eq!(
        ok.directory.networks[0].discovery,
        Some(DiscoveryRange {
            first: [10, 99, 0, 200].into(),
            last: [10, 99, 0, 250].into(),
            lease_secs: 120
        })
    );
    let inspection = "inspection:\n  image: testnode\n";
    // Line 11 is the `discovery` line; the inspection section is appended after the hosts (its image: line 37).
    for (net, tail, line, needle) in [
        (
            "    discovery: { range: 10.99.0.9 }\n",
            inspection,
            11,
            "is not FIRST-LAST",
        ),
        (
            "    discovery: { range: 10.99.0.250-10.99.0.200 }\n",
            inspection,
            11,
            "must be ascending",
        ),
        (
            "    discovery: { range: 10.99.0.200-10.99.1.5 }\n",
            inspection,
            11,
            "inside the subnet",
        ),
        (
            "    discovery: { range: 10.99.0.1-10.99.0.5 }\n",
            inspection,
            11,
            "contains the gateway",
        ),
        (
            "    discovery: { range: 10.99.0.200-10.99.0.210 }\n",
            "",
            11,
            "discovery needs an inspection image",
        ),
        (
            "",
            "inspection:\n  image: nosuch\n",
            37,
            "inspection image \"nosuch\" is not one of `images`",
        ),
    ] {
        let problems = parse(&with(net, tail), d.path()).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, line, "{problems:?}");
        assert!(problems[0].message.contains(needle), "{problems:?}");
    }
}

#[test]
fn several_problems_are_all_reported_in_order() {
    let d = dir();
    let text = GOOD
        .replace("10.99.0.158", "10.99.0.999")
        .replace("\"52:54:00:12:34:56\"", "nope");
    let problems = parse(&text, d.path()).unwrap_err();
    let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![20, 32], "{problems:#?}");
    let err = InventoryError {
        path: "hosts.yaml".into(),
        problems,
    };
    let shown = err.to_string();
    assert!(shown.contains("hosts.yaml:20:"), "{shown}");
    assert!(shown.contains("hosts.yaml:32:"), "{shown}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = Inventory::load(Path::new("/nonexistent/hosts.yaml")).unwrap_err();
    assert!(
        err.to_string().contains("cannot read the inventory file"),
        "{err}"
    );
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GOOD written to a fresh directory and watched every `interval`: the directory, the file, the handle in
/// service, the host count of every directory a reload put in service, and the watcher's task.
type Watched = (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<DirectoryHandle>,
    Arc<std::sync::Mutex<Vec<usize>>>,
    tokio::task::JoinHandle<()>,
);

fn watched(interval: Duration) -> Watched {
    let d = dir();
    let path = d.path().join("hosts.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let inv = Inventory::load(&path).unwrap();
    let referenced = inv.referenced_files().to_vec();
    let handle = Arc::new(DirectoryHandle::new(inv.directory));
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = served.clone();
    let task = tokio::spawn(watch(
        handle.clone(),
        path.clone(),
        referenced,
        interval,
        move |inv| s2.lock().unwrap().push(inv.directory.hosts.len()),
    ));
    (d, path, handle, served, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reloads_good_edits_and_keeps_the_last_good_one_on_bad_edits() {
    let (d, path, handle, served, task) = watched(Duration::from_millis(50));
    let reloads = || served.lock().unwrap().len();

    // A broken edit is rejected. It is made at once (the watcher's baseline is taken when it is created) and
    // changes the length, so it is seen even within one mtime tick.
    std::fs::write(&path, GOOD.replace("10.99.0.158", "10.99.0.1580")).unwrap();
    let h2 = handle.clone();
    tokio::task::spawn_blocking(move || {
        // Nothing to wait for on a rejection except time passing: poll that the handle still serves node-1.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            assert!(h2.get().host("node-1").is_some());
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(reloads(), 0);

    // A good edit is picked up.
    std::fs::write(&path, GOOD.replace("name: node-1", "name: node-9")).unwrap();
    let h3 = handle.clone();
    tokio::task::spawn_blocking(move || wait_for("reload", || h3.get().host("node-9").is_some()))
        .await
        .unwrap();
    assert!(handle.get().host("node-1").is_none());
    assert_eq!(reloads(), 1);

    // So is a change to a referenced user-data file.
    std::fs::write(
        d.path().join("node-1.yaml"),
        b"#cloud-config\nchanged: true\n",
    )
    .unwrap();
    let h4 = handle.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("user-data reload", || {
            h4.get()
                .host("node-9")
                .is_some_and(|h| h.user_data.expose().contains("changed"))
        })
    })
    .await
    .unwrap();
    task.abort();
}

/// `cp`, `>` and most editors truncate the file, then write it; an empty file is a valid inventory without
/// hosts. A watcher that read the file in between put that in service (and kept it, when the write landed
/// before it took the new fingerprint). Here the file stays empty for half a poll interval, five times: no
/// reload may ever serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_caught_between_truncation_and_write_is_never_served() {
    let interval = Duration::from_millis(200);
    let (_d, path, handle, served, task) = watched(interval);
    for round in 0..5 {
        std::fs::write(&path, "").unwrap();
        // The edit's own duration (the stimulus), not a wait for the watcher.
        tokio::time::sleep(interval / 2).await;
        let name = format!("node-r{round}");
        std::fs::write(
            &path,
            GOOD.replace("name: node-1", &format!("name: {name}")),
        )
        .unwrap();
        let h = handle.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("the rewritten file", || h.get().host(&name).is_some())
        })
        .await
        .unwrap();
    }
    task.abort();
    let served = served.lock().unwrap().clone();
    assert!(
        served.iter().all(|&hosts| hosts > 0),
        "an empty inventory was served: {served:?}"
    );
}

#[test]
fn local_disks_load_by_stable_identifier_and_bad_ones_say_why() {
    let with = |disks: &str| {
        GOOD.replace(
            "    userDataFile: node-1.yaml\n",
            &format!("    userDataFile: node-1.yaml\n    localDisks:\n{disks}"),
        )
    };
    let d = dir();
    let inv = parse(
        &with("      - { name: scratch, mountPath: /scratch, disk: { wwn: \"naa.5000c500a1b2c3d4\" } }\n"),
        d.path(),
    )
    .unwrap();
    let n1 = inv.directory.host("node-1").unwrap();
    assert_eq!(n1.local_disks.len(), 1);
    assert_eq!(
        n1.local_disks[0].kernel_arg(),
        "beowulf.disk=scratch,wwn=naa.5000c500a1b2c3d4,/scratch,ext4"
    );
    assert!(inv.directory.host("node-0").unwrap().local_disks.is_empty());

    // Each problem is reported at the host (line 30), saying what to do.
    one_problem(
        &with("      - { name: s, mountPath: /scratch, disk: { kind: nvme } }\n"),
        30,
        "names disks by serial, wwn or byPath (`beowulf inspect node-1` shows them)",
    );
    one_problem(
        &with("      - { name: s, mountPath: /proc/x, disk: { serial: A } }\n"),
        30,
        "live system's own",
    );
    one_problem(
        &with(
            "      - { name: a, mountPath: /a, disk: { serial: A } }\n      - { name: a, mountPath: /b, disk: { serial: B } }\n",
        ),
        30,
        "declared twice",
    );
    // A misspelt key is refused where it is.
    let p = parse(
        &with("      - { name: s, mountpath: /s, disk: { serial: A } }\n"),
        d.path(),
    )
    .unwrap_err();
    assert!(p[0].message.contains("unknown field `mountpath`"), "{p:?}");
}
