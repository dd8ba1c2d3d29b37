//! Real clients in network namespaces: busybox udhcpc, and EDK2 (OVMF in QEMU) chaining to iPXE through our
//! DHCP and TFTP.

use super::*;

/// A network namespace this test owns (unique name), removed on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create(tag: &str) -> Self {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("bw-{tag}-{}-{n}", std::process::id());
        let ns = NetNs { name };
        ns.cmd(&["ip", "netns", "add", &ns.name]);
        ns
    }

    /// Runs a command (on the host; `ip -n` / `ip netns exec` put it in the namespace) and returns stdout.
    fn cmd(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} failed (these tests need root and iproute2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        self.cmd(&all)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A real DHCP client: busybox `udhcpc` on one end of a veth pair, the server bound (SO_BINDTODEVICE) to the
/// other end, both inside a namespace of our own. Real broadcasts, real ports 67/68 — but not the host's.
#[test]
fn busybox_udhcpc_gets_and_configures_the_reservation() {
    let ns = NetNs::create("udhcpc");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&[
        "link", "add", "bwsrv", "type", "veth", "peer", "name", "bwcli",
    ]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "bwsrv"]);
    ns.ip(&["link", "set", "bwsrv", "up"]);
    ns.ip(&["link", "set", "bwcli", "up"]);

    let dir = Arc::new(TestDirectory::one_host());
    let (metrics_tx, metrics_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns_path = format!("/var/run/netns/{}", ns.name);
    let server_dir = dir.clone();
    // The server runs on a thread that has entered the namespace; its sockets live there.
    let server = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = DhcpConfig::new(SERVER);
            cfg.interface = Some("bwsrv".into());
            let server = DhcpServer::bind(cfg, server_dir).unwrap();
            metrics_tx.send(server.metrics()).unwrap();
            server
                .run(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    let metrics = metrics_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("DHCP server did not start");

    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script");
    let env_out = tmp.path().join("env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nenv > {}.$$\nmv {}.$$ {}\nip addr add \"$ip/$subnet\" dev \"$interface\"\n",
            env_out.display(),
            env_out.display(),
            env_out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let udhcpc_run = |extra: &[&str]| -> std::process::Output {
        let _ = std::fs::remove_file(&env_out);
        let script = script.to_str().unwrap();
        let mut args = vec![
            "timeout", "30", "ip", "netns", "exec", &ns.name, "busybox", "udhcpc", "-i", "bwcli",
            "-f", "-q", "-n", "-T", "1", "-s", script,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap()
    };
    let udhcpc = |extra: &[&str]| -> std::collections::HashMap<String, String> {
        let out = udhcpc_run(extra);
        assert!(
            out.status.success(),
            "udhcpc got no lease: {}\nserver counters: {:?}",
            String::from_utf8_lossy(&out.stderr),
            metrics
                .samples()
                .iter()
                .filter(|s| s.value > 0)
                .map(|s| (s.name, s.label, s.value))
                .collect::<Vec<_>>()
        );
        std::fs::read_to_string(&env_out)
            .expect("udhcpc did not run its bound script")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };

    // The veth's random MAC is not in the inventory: no answer at all, and the server counts it.
    let out = udhcpc_run(&["-t", "2"]);
    assert!(!out.status.success(), "an unknown MAC got a lease");
    assert!(!env_out.exists());
    assert_eq!(metrics.unknown_mac.get(), metrics.discover.get());
    assert!(metrics.unknown_mac.get() >= 1);
    assert_eq!(metrics.offer.get(), 0);
    let unknown = metrics.unknown_mac.get();

    ns.ip(&["link", "set", "bwcli", "address", &MAC.to_string()]);
    // An OS client: the lease and its options, no boot file.
    let env = udhcpc(&[]);
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("ip"), Some("10.99.0.10"));
    assert_eq!(get("subnet"), Some("255.255.255.0"));
    assert_eq!(get("router"), Some("10.99.0.254"));
    assert_eq!(get("dns").map(str::trim), Some("10.99.0.53 10.99.0.54"));
    assert_eq!(get("domain"), Some("cluster.test"));
    assert_eq!(get("hostname"), Some("node1"));
    assert_eq!(get("mtu"), Some("9000"));
    assert_eq!(get("lease"), Some("3600"));
    assert_eq!(get("serverid"), Some("10.99.0.1"));
    assert_eq!(get("boot_file"), None);
    let addrs = ns.ip(&["-4", "addr", "show", "dev", "bwcli"]);
    assert!(
        addrs.contains("inet 10.99.0.10/24"),
        "udhcpc did not configure the address: {addrs}"
    );
    ns.ip(&["addr", "flush", "dev", "bwcli"]);

    // The same client announcing itself as x86-64 UEFI PXE: the boot file and next-server come along.
    let env = udhcpc(&["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"]);
    assert_eq!(env.get("ip").map(String::as_str), Some("10.99.0.10"));
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("snponly.efi")
    );
    assert_eq!(env.get("siaddr").map(String::as_str), Some("10.99.0.1"));

    let phases = dir.phases();
    assert_eq!(
        phases,
        vec![
            (MAC, Phase::DhcpOffer),
            (MAC, Phase::DhcpAck),
            (MAC, Phase::DhcpOffer),
            (MAC, Phase::DhcpAck)
        ]
    );
    assert_eq!((metrics.offer.get(), metrics.ack.get()), (2, 2));
    assert_eq!(metrics.unknown_mac.get(), unknown);
    stop_tx.send(()).unwrap();
    server.join().unwrap();
}

/// A QEMU started as `ip netns exec NS timeout … qemu-system-x86_64 …` (`ip netns exec` execs, so the child is
/// `timeout`). Dropping it sends SIGTERM, which `timeout` passes on to QEMU; SIGKILL would orphan QEMU.
struct Qemu(std::process::Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.0.wait();
    }
}

/// Real firmware against both UDP services: OVMF's own (EDK2) PXE client asks our DHCP, fetches `snponly.efi`
/// from our TFTP, iPXE starts, asks our DHCP again (user class iPXE) and fetches its script over TFTP.
#[test]
fn edk2_pxe_chains_to_ipxe_through_our_dhcp_and_tftp() {
    let ns = NetNs::create("edk2");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["tuntap", "add", "dev", "bwtap0", "mode", "tap"]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "bwtap0"]);
    ns.ip(&["link", "set", "bwtap0", "up"]);

    let tftp_root = tempfile::tempdir().unwrap();
    std::fs::copy(
        "/usr/lib/ipxe/snponly.efi",
        tftp_root.path().join("snponly.efi"),
    )
    .expect("Debian's ipxe package (bash .ci/install)");
    std::fs::write(
        tftp_root.path().join("boot.ipxe"),
        "#!ipxe\necho BEOWULF-NET-OK ${net0/ip} ${filename}\n",
    )
    .unwrap();
    let mut dir = TestDirectory::one_host();
    dir.scripts.insert(MAC, "tftp://10.99.0.1/boot.ipxe".into());
    let dir = Arc::new(dir);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns_path = format!("/var/run/netns/{}", ns.name);
    let (server_dir, root) = (dir.clone(), tftp_root.path().to_path_buf());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let servers = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut d = DhcpConfig::new(SERVER);
            d.interface = Some("bwtap0".into());
            let dhcp = DhcpServer::bind(d, server_dir.clone()).unwrap();
            let mut t = crate::boot::tftp::TftpConfig::new(root);
            t.interface = Some("bwtap0".into());
            let tftp = crate::boot::tftp::TftpServer::bind(t, server_dir).unwrap();
            ready_tx.send((dhcp.metrics(), tftp.metrics())).unwrap();
            let dhcp = tokio::spawn(dhcp.run(std::future::pending()));
            let tftp = tokio::spawn(tftp.run(std::future::pending()));
            let _ = stop_rx.await;
            dhcp.abort();
            tftp.abort();
        });
    });
    let (dhcp_metrics, tftp_metrics) = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("servers did not start");

    let serial = tftp_root.path().join("serial.log");
    let mut qemu = Qemu(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "timeout",
                "120",
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                "-m",
                "512",
            ])
            .args([
                "-smp",
                "1",
                "-nographic",
                "-no-reboot",
                "-bios",
                "/usr/share/ovmf/OVMF.fd",
            ])
            .args(["-netdev", "tap,id=n0,ifname=bwtap0,script=no,downscript=no"])
            .args([
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
            ])
            .args([
                "-boot", "n", "-monitor", "none", "-display", "none", "-serial",
            ])
            .arg(format!("file:{}", serial.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (bash .ci/install)"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(110);
    let log = loop {
        let log = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if log.contains("BEOWULF-NET-OK") || std::time::Instant::now() > deadline {
            break log;
        }
        if let Ok(Some(_)) = qemu.0.try_wait() {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(qemu);
    stop_tx.send(()).unwrap();
    servers.join().unwrap();
    let counters: Vec<_> = dhcp_metrics
        .samples()
        .into_iter()
        .chain(tftp_metrics.samples())
        .filter(|s| s.value > 0)
        .map(|s| (s.name, s.label, s.value))
        .collect();
    assert!(
        log.contains("BEOWULF-NET-OK 10.99.0.10 tftp://10.99.0.1/boot.ipxe"),
        "iPXE did not run its script; counters {counters:?}\nserial:\n{log}"
    );
    // Firmware retransmits DISCOVERs at will: compare the sequence of distinct consecutive phases.
    let mut phases: Vec<Phase> = dir.phases().into_iter().map(|(_, p)| p).collect();
    phases.dedup();
    // EDK2 probes the size of snponly.efi first and aborts that transfer (counted, not a phase).
    assert_eq!(tftp_metrics.transfers_aborted.get(), 1, "{counters:?}");
    assert_eq!(tftp_metrics.transfers_completed.get(), 2, "{counters:?}");
    assert_eq!(
        phases,
        vec![
            Phase::DhcpOffer,
            Phase::DhcpAck,
            Phase::Tftp,
            Phase::DhcpOffer,
            Phase::DhcpAck,
            Phase::Tftp
        ]
    );
}
