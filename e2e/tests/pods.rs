//! `e2e::pods` keeps a container's effects inside it: what it writes to its root stays in its RAM layer, its
//! `/dev` is its own, and nothing it started outlives the `PodHost` — not even a process that changed its
//! user (which loses the parent-death signal, as mariadbd and slurmctld do).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use e2e::pods::{Manifests, PodHost};
use e2e::{Netns, require_root_and_peers, wait_for};

#[test]
fn no_process_of_a_container_outlives_its_pod_host_and_its_writes_stay_inside() {
    require_root_and_peers();
    let ns = Netns::new("pods");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "up"]);
    let dir = tempfile::tempdir().unwrap();
    // A sleep of a duration no other process has: how the test finds it.
    let marker = 900_000 + std::process::id();
    let written = format!("/etc/e2e-pods-{marker}");
    let yaml = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: sleeper, namespace: t}}
spec:
  template:
    spec:
      containers:
        - name: sleeper
          image: example.org/unused
          command: [/bin/sh, -ec]
          args:
            - echo hello > {written} && chmod 0600 /dev/null && exec setpriv --reuid=nobody --regid=nogroup --clear-groups sleep {marker}
"#
    );
    let dev_null_mode = || {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata("/dev/null").unwrap().permissions().mode() & 0o7777
    };
    let host_dev_null = dev_null_mode();
    let mut host = PodHost::new(&ns, "br0", dir.path(), Manifests::parse(&yaml));
    let pod = host.pod("Deployment", "sleeper");
    host.start(&pod, &[]);
    let sleeping = || {
        let out = Command::new("pgrep")
            .args(["-u", "nobody", "-f", &format!("^sleep {marker}$")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    wait_for(
        "the container's process, as nobody",
        Duration::from_secs(20),
        || (sleeping() == 1).then_some(()),
    );
    assert!(
        !std::path::Path::new(&written).exists(),
        "{written} reached the host"
    );
    assert_eq!(
        dev_null_mode(),
        host_dev_null,
        "the container's chmod of /dev/null reached the host's"
    );
    drop(host);
    wait_for(
        "the container's process to be gone",
        Duration::from_secs(10),
        || (sleeping() == 0).then_some(()),
    );
}

/// A container gets its memory limit as a cgroup it sees as its own root (ns-slapd sizes its database cache by
/// it), and a bounded open-files limit, as under a container runtime (ns-slapd sizes its connection table by
/// the hard limit and dies on an unbounded one); when a daemon that logs only into its volume dies, the
/// failure says what the daemon wrote there.
#[test]
fn containers_get_their_limits_and_failures_show_the_daemons_own_logs() {
    require_root_and_peers();
    let ns = Netns::new("podlim");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: daemon, namespace: t}
spec:
  template:
    spec:
      volumes: [{name: data, emptyDir: {}}]
      containers:
        - name: daemon
          image: example.org/unused
          command: [/bin/sh, -ec]
          args: ["mkdir -p /data/logs && echo 'CRIT - cannot allocate the connection table' > /data/logs/errors && exit 1"]
          ports: [{containerPort: 3389}]
          resources: {limits: {memory: 64Mi}}
          volumeMounts: [{name: data, mountPath: /data}]
"#;
    let mut host = PodHost::new(&ns, "br0", dir.path(), Manifests::parse(yaml));
    let pod = host.pod("Deployment", "daemon");
    let out = host
        .command(
            &pod,
            "daemon",
            Some(&[
                "sh",
                "-c",
                "ulimit -S -n; ulimit -H -n; \
                 cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
            ]),
        )
        .output()
        .unwrap();
    let limits: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        limits.len() == 3 && limits[0] <= 1024 && limits[1] <= 65536,
        "open-files limits (soft, hard) in a container: {limits:?} ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        limits[2],
        64 << 20,
        "the container's memory limit as it sees it"
    );
    host.start(&pod, &[]);
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        host.wait_ready(&pod, &[], Duration::from_secs(20))
    }))
    .expect_err("a pod whose container exited is not ready");
    let msg = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("exited") && msg.contains("CRIT - cannot allocate the connection table"),
        "the failure names the exit and shows the daemon's log: {msg}"
    );
    drop(host);
    let leftover: Vec<_> = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("beowulf-pods-{}-", std::process::id())))
        .collect();
    assert!(leftover.is_empty(), "cgroups left behind: {leftover:?}");
}
