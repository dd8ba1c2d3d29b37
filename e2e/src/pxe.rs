//! A PXE lab: a namespace with a bridge, `beowulf standalone` serving an inventory of QEMU machines, IPv6 RAs
//! from dnsmasq (RA only: iPXE otherwise waits ~13 s for IPv6 autoconfiguration), and the test node image.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{Netns, Proc, run, wait_for};

pub const BOOT_SERVER: &str = "10.99.0.1";
pub const HTTP_PORT: u16 = 8080;
/// The discovery range of a lab with an inspector (`PxeLab::start_inspecting`); `Node::new(_, 100)`'s
/// reservation, 10.99.0.200, is inside it.
pub const DISCOVERY_RANGE: &str = "10.99.0.200-10.99.0.210";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM (iPXE does DHCP itself and asks for the script directly).
    Bios,
    /// OVMF with EDK2's own PXE (`romfile=` removes the iPXE ROM): DHCP → TFTP `snponly.efi` → iPXE → script.
    UefiPxe,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub mac: String,
    pub ip: String,
    pub firmware: Firmware,
    pub user_data: String,
    /// The node's BMC in the inventory (`ipmi://…` of an `ipmi_sim`, with its user and password), so that
    /// `beowulf bmc --inventory` drives it.
    pub bmc: Option<String>,
    /// More QEMU arguments for this machine (its hardware: `-smp`, `-m`, disks, NICs, `-smbios`), after the
    /// lab's own (QEMU takes the last `-m`/`-smp`).
    pub qemu: Vec<String>,
    /// More of the host's inventory entry, YAML lines indented by four spaces (`    localDisks: …`).
    pub inventory_extra: String,
}

impl Node {
    pub fn new(name: &str, n: u8, firmware: Firmware) -> Node {
        Node {
            name: name.to_string(),
            mac: format!("52:54:00:00:00:{n:02x}"),
            ip: format!("10.99.0.{}", 100 + n as u32),
            firmware,
            user_data: format!(
                "#cloud-config\n# e2e user-data for {name}: marker-{name}-{}\nruncmd: [\"echo hello from {name}\"]\n",
                std::process::id()
            ),
            bmc: None,
            qemu: Vec::new(),
            inventory_extra: String::new(),
        }
    }

    pub fn user_data_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.user_data.as_bytes()))
    }
}

/// The image every host of a lab boots: its files and the command line template the inventory gives it.
#[derive(Debug, Clone)]
pub struct LabImage {
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    pub cmdline: String,
    /// QEMU's memory (MiB) and the `timeout` around QEMU (seconds) for machines booting this image.
    pub memory_mib: u32,
    pub qemu_timeout_s: u32,
}

impl LabImage {
    /// Builds (or reuses: the recipe's hash is checked) the CI variant of the HPC node image
    /// (`images/hpc-node`) under `$CARGO_TARGET_DIR` or `target/`; minutes the first time.
    pub fn hpc_node_ci() -> LabImage {
        let out = crate::build_ci_image("hpc-node");
        LabImage {
            name: "hpc-node-ci".into(),
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.img"),
            rootfs: out.join("rootfs.squashfs"),
            cmdline: "console=ttyS0,115200 BOOTIF={{ bootif }} ip=dhcp rd.neednet=1 \
                root=live:{{ rootfs_url }} rd.live.overlay.overlayfs=1 \
                ds=nocloud-net;s={{ nocloud_url }}"
                .into(),
            memory_mib: 2048,
            qemu_timeout_s: 540,
        }
    }

    /// Builds the tiny test node image (`images/testnode`) into `dir`.
    pub fn testnode(dir: &Path) -> LabImage {
        run(Command::new("bash")
            .arg(crate::repo_root().join("images/testnode/build.sh"))
            .arg(dir)
            .stdout(Stdio::null()));
        LabImage {
            name: "testnode".into(),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
            rootfs: dir.join("rootfs.img"),
            cmdline: "console=ttyS0,115200 quiet loglevel=3 panic=-1 BOOTIF={{ bootif }} \
                root=live:{{ rootfs_url }} rd.live.overlay.overlayfs=1 \
                ds=nocloud;s={{ nocloud_url }} cb={{ callback_url }}"
                .into(),
            memory_mib: 512,
            qemu_timeout_s: 120,
        }
    }
}

/// The inspection image of a lab (`images/inspector`, built by [`crate::inspector::build`]): hosts without an
/// inspection report boot it before their own image.
#[derive(Debug, Clone)]
pub struct LabInspector {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

pub struct PxeLab {
    // Field order is drop order: processes before the namespace.
    pub beowulf: Proc,
    _ra: Proc,
    /// With an inspector: lldpd on the lab's bridge, the switch the machines' NICs hear (system name
    /// [`LLDP_SWITCH`], port ID `br0`).
    _lldp: Option<Proc>,
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub image: LabImage,
    pub inspector: Option<LabInspector>,
    taps: usize,
    command: BeowulfCmd,
    /// The HTTP port's listening socket when the lab holds it as systemd holds a `.socket` unit's
    /// ([`PxeLab::hold_http_socket`]).
    held_http: Option<std::net::TcpListener>,
}

/// The command that runs `beowulf` (the e2e tests' copy of the CLI, or the demo re-executing itself).
pub type BeowulfCmd = Vec<OsString>;

impl PxeLab {
    /// Builds the test node image, writes the inventory for `nodes`, creates the namespace and starts the
    /// servers.
    pub fn start(test: &str, beowulf: BeowulfCmd, nodes: Vec<Node>) -> PxeLab {
        let dir = tempfile::tempdir().unwrap();
        let image = LabImage::testnode(&dir.path().join("img"));
        Self::start_in(dir, test, beowulf, nodes, image, None)
    }

    /// Like [`PxeLab::start`], with inspection on: hosts boot `inspector` until their report is in.
    pub fn start_inspecting(
        test: &str,
        beowulf: BeowulfCmd,
        nodes: Vec<Node>,
        inspector: LabInspector,
    ) -> PxeLab {
        let dir = tempfile::tempdir().unwrap();
        let image = LabImage::testnode(&dir.path().join("img"));
        Self::start_in(dir, test, beowulf, nodes, image, Some(inspector))
    }

    /// Like [`PxeLab::start`], with every host booting `image`.
    pub fn start_with_image(
        test: &str,
        beowulf: BeowulfCmd,
        nodes: Vec<Node>,
        image: LabImage,
    ) -> PxeLab {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            test,
            beowulf,
            nodes,
            image,
            None,
        )
    }

    fn start_in(
        dir: tempfile::TempDir,
        test: &str,
        beowulf: BeowulfCmd,
        nodes: Vec<Node>,
        image: LabImage,
        inspector: Option<LabInspector>,
    ) -> PxeLab {
        let inventory = dir.path().join("hosts.yaml");
        std::fs::write(
            &inventory,
            inventory_yaml(&image, inspector.as_ref(), &nodes),
        )
        .unwrap();

        let (ns, ra) = boot_network(test, dir.path());

        let lldp = inspector.as_ref().map(|_| lldp_switch(&ns, dir.path()));
        let beowulf_cmd = beowulf;
        let beowulf = spawn_beowulf(&ns, &beowulf_cmd, dir.path(), None);
        PxeLab {
            beowulf,
            _ra: ra,
            _lldp: lldp,
            ns,
            dir,
            nodes,
            image,
            inspector,
            taps: 0,
            command: beowulf_cmd,
            held_http: None,
        }
    }

    /// Stops `beowulf standalone` (SIGTERM, as an upgrade or a service restart would) and starts it again on
    /// the same inventory and state directory; returns when it serves again. Its log goes on in the same file.
    pub fn restart_beowulf(&mut self) {
        self.stop_beowulf();
        self.start_beowulf();
    }

    /// Stops `beowulf standalone` (SIGTERM); [`PxeLab::start_beowulf`] starts it again.
    pub fn stop_beowulf(&mut self) {
        self.beowulf.stop();
    }

    /// Starts `beowulf standalone` again (after [`PxeLab::stop_beowulf`]); returns when it serves.
    pub fn start_beowulf(&mut self) {
        self.beowulf = spawn_beowulf(
            &self.ns,
            &self.command,
            self.dir.path(),
            self.held_http.as_ref(),
        );
    }

    /// From now on the lab holds the HTTP port's listening socket and passes it to each `beowulf standalone`
    /// it starts (systemd socket activation: fd 3, `LISTEN_FDS=1`), so a connection made while none runs
    /// waits in the socket's backlog. Restarts the server to hand it over.
    pub fn hold_http_socket(&mut self) {
        self.stop_beowulf();
        let addr = format!("{BOOT_SERVER}:{HTTP_PORT}").parse().unwrap();
        self.held_http = Some(self.ns.listen_tcp(addr).unwrap());
        self.start_beowulf();
    }

    /// Connections to the held HTTP socket ([`PxeLab::hold_http_socket`]) waiting to be accepted (`ss`'s
    /// Recv-Q of a listening socket).
    pub fn http_backlog(&self) -> usize {
        let out = self
            .ns
            .cmd("ss")
            .args(["-Hltn", "sport", "=", &format!(":{HTTP_PORT}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
            .sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{BOOT_SERVER}:{HTTP_PORT}{path}")
    }

    /// Starts QEMU for `node` on a new tap (PXE boot, TCG, serial to a file, no reboot: `poweroff -f` ends it).
    pub fn boot(&mut self, node: &Node) -> Machine {
        let tap = format!("tap{}", self.taps);
        self.taps += 1;
        self.ns.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
        self.ns.ip(&["link", "set", &tap, "master", "br0"]);
        self.ns.ip(&["link", "set", &tap, "up"]);
        let serial = self.dir.path().join(format!("serial-{}.log", node.name));
        std::fs::write(&serial, b"").unwrap();
        let mut device = format!("virtio-net-pci,netdev=n0,mac={}", node.mac);
        let mut cmd = self.ns.cmd("timeout");
        cmd.arg(self.image.qemu_timeout_s.to_string())
            .args(["qemu-system-x86_64", "-accel", "tcg", "-m"])
            .arg(self.image.memory_mib.to_string())
            .args(["-smp", "1"])
            .args([
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
                "-display",
                "none",
            ])
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
            .args(["-boot", "n", "-serial"])
            .arg(format!("file:{}", serial.display()));
        if node.firmware == Firmware::UefiPxe {
            cmd.args(["-bios", "/usr/share/ovmf/OVMF.fd"]);
            device.push_str(",romfile=");
        }
        cmd.arg("-device").arg(device);
        cmd.args(&node.qemu);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        Machine {
            qemu: Proc::spawn(&format!("qemu {}", node.name), &mut cmd),
            serial,
            node: node.clone(),
        }
    }

    /// `curl` inside the namespace, from source address `from`: (status, body).
    pub fn curl(&self, from: Option<&str>, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
        curl_in(&self.ns, from, &self.url(path), extra)
    }

    pub fn api_hosts(&self) -> serde_json::Value {
        let (status, body) = self.curl(None, "/api/hosts", &[]);
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    pub fn host_view(&self, name: &str) -> serde_json::Value {
        self.api_hosts()
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in /api/hosts"))
    }

    pub fn metrics(&self) -> String {
        String::from_utf8(self.curl(None, "/metrics", &[]).1).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("beowulf.log")).unwrap_or_default()
    }

    /// `beowulf standalone --state-dir` of the lab.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.dir.path().join("hosts.yaml")
    }

    /// Rewrites the inventory for `nodes` (atomically: the server never reads a half-written file) and writes
    /// the BMC password file the entries with a `bmc` name.
    pub fn rewrite_inventory(&mut self, nodes: Vec<Node>) {
        std::fs::write(
            self.dir.path().join("bmc-password"),
            crate::ipmi_sim::PASSWORD,
        )
        .unwrap();
        let tmp = self.dir.path().join("hosts.yaml.new");
        std::fs::write(
            &tmp,
            inventory_yaml(&self.image, self.inspector.as_ref(), &nodes),
        )
        .unwrap();
        std::fs::rename(&tmp, self.inventory_path()).unwrap();
        self.nodes = nodes;
    }
}

pub struct Machine {
    pub qemu: Proc,
    pub serial: PathBuf,
    pub node: Node,
}

impl Machine {
    pub fn serial(&self) -> String {
        let raw = std::fs::read(&self.serial).unwrap_or_default();
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// The value of a `TESTNODE: <key>...` line the node printed.
    pub fn testnode_line(&self, prefix: &str) -> Option<String> {
        let serial = self.serial();
        serial.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&format!("TESTNODE: {prefix}"))
                .map(str::to_string)
        })
    }

    /// The token the node booted with (from the seed URL it printed).
    pub fn token(&self) -> Option<String> {
        let seed = self.testnode_line("seed=")?;
        let i = seed.find("/nocloud/")? + "/nocloud/".len();
        seed.get(i..i + 64).map(str::to_string)
    }
}

/// The system name the lab's LLDP sender announces.
pub const LLDP_SWITCH: &str = "lab-switch";

/// lldpd on `br0` in `ns`, sending every second (its own control socket and configuration in `dir`, so labs
/// do not meet). Only sends on the lab's bridge, inside the namespace.
fn lldp_switch(ns: &Netns, dir: &Path) -> Proc {
    let conf = dir.join("lldpd.conf");
    std::fs::write(
        &conf,
        format!(
            "configure system hostname {LLDP_SWITCH}\nconfigure lldp tx-interval 1\nconfigure lldp portidsubtype ifname\n"
        ),
    )
    .unwrap();
    Proc::spawn(
        "lldpd",
        ns.cmd("lldpd")
            .args(["-d", "-I", "br0", "-u"])
            .arg(dir.join("lldpd.sock"))
            .arg("-O")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// Starts `beowulf standalone` for the lab in `dir` (inventory `hosts.yaml`, state `state/`, log appended to
/// `beowulf.log`) and waits for its HTTP server.
fn spawn_beowulf(
    ns: &Netns,
    beowulf: &BeowulfCmd,
    dir: &Path,
    held_http: Option<&std::net::TcpListener>,
) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("beowulf.log"))
        .unwrap();
    let (prog, args) = beowulf.split_first().expect("a beowulf command");
    let mut cmd = match held_http {
        None => ns.cmd(prog),
        Some(listener) => {
            // As systemd does: the socket as fd 3, and LISTEN_PID naming the process (`ip netns exec` and
            // `exec` keep the shell's pid).
            use std::os::fd::AsRawFd as _;
            use std::os::unix::process::CommandExt as _;
            let fd = listener.as_raw_fd();
            let mut c = ns.cmd("sh");
            c.args(["-c", r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$@""#, "sh"])
                .arg(prog);
            #[allow(unsafe_code)]
            // SAFETY: between fork and exec only dup2/fcntl, both async-signal-safe.
            unsafe {
                c.pre_exec(move || {
                    let r = if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, 3)
                    };
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            c
        }
    };
    cmd.args(args)
        .args(["standalone", "--inventory"])
        .arg(dir.join("hosts.yaml"))
        .args(["--interface", "br0", "--http-port", &HTTP_PORT.to_string()])
        .args(["--poll-interval", "200", "--state-dir"])
        .arg(dir.join("state"))
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut proc = Proc::spawn("beowulf standalone", &mut cmd);
    wait_for("beowulf's HTTP server", Duration::from_secs(30), || {
        if let Some(st) = proc.exited() {
            panic!(
                "beowulf standalone exited ({st}):\n{}",
                std::fs::read_to_string(dir.join("beowulf.log")).unwrap_or_default()
            );
        }
        let (status, _) = curl_in(
            ns,
            None,
            &format!("http://{BOOT_SERVER}:{HTTP_PORT}/api/hosts"),
            &[],
        );
        (status == 200).then_some(())
    });
    proc
}

fn curl_in(ns: &Netns, from: Option<&str>, url: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let mut cmd = ns.cmd("curl");
    cmd.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(f) = from {
        cmd.args(["--interface", f]);
    }
    let out = cmd.args(extra).arg(url).output().unwrap();
    let mut body = out.stdout;
    let Some(nl) = body.iter().rposition(|&b| b == b'\n') else {
        return (0, body);
    };
    let status = std::str::from_utf8(&body[nl + 1..])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    body.truncate(nl);
    (status, body)
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn inventory_yaml(img: &LabImage, inspector: Option<&LabInspector>, nodes: &[Node]) -> String {
    let mut y = format!(
        r#"namespace: e2e
networks:
  - name: lab
    subnet: 10.99.0.0/24
    gateway: {BOOT_SERVER}
    dns: [{BOOT_SERVER}]
    domain: lab.example
    leaseSeconds: 600
    bootServer: {BOOT_SERVER}
images:
  - name: {name}
    format: live
    kernel: {{ path: {kp}, sha256: {k} }}
    initrds:
      - {{ path: {ip}, sha256: {i} }}
    rootfs: {{ path: {rp}, sha256: {r} }}
    cmdline: {cmdline}
hosts:
"#,
        name = img.name,
        kp = img.kernel.display(),
        ip = img.initrd.display(),
        rp = img.rootfs.display(),
        k = sha256_file(&img.kernel),
        i = sha256_file(&img.initrd),
        r = sha256_file(&img.rootfs),
        cmdline = serde_json::to_string(&img.cmdline).unwrap(),
    );
    if let Some(i) = inspector {
        // Unknown MACs are discovered (network `lab`, the only one: inserted after its `bootServer`).
        y = y.replacen(
            &format!("    bootServer: {BOOT_SERVER}\n"),
            &format!(
                "    bootServer: {BOOT_SERVER}\n    discovery: {{ range: {DISCOVERY_RANGE} }}\n"
            ),
            1,
        );
        // Before `hosts:`, which the format string above ends with.
        let hosts = y.split_off(y.len() - "hosts:\n".len());
        y.push_str(&format!(
            "  - name: inspector\n    format: live\n    kernel: {{ path: {} }}\n    initrds: [{{ path: {} }}]\n    \
             cmdline: \"console=ttyS0,115200 quiet panic=-1 BOOTIF={{{{ bootif }}}} beowulf.lldp_wait=5 beowulf.inspect={{{{ inspection_url }}}}\"\n\
             inspection:\n  image: inspector\n{hosts}",
            i.kernel.display(),
            i.initrd.display(),
        ));
    }
    for n in nodes {
        y.push_str(&format!(
            "  - name: {}\n    mac: \"{}\"\n    ip: {}\n    image: {}\n    userData: {}\n",
            n.name,
            n.mac,
            n.ip,
            img.name,
            serde_json::to_string(&n.user_data).unwrap()
        ));
        if let Some(bmc) = &n.bmc {
            y.push_str(&format!(
                "    bmc: {{ address: \"{bmc}\", username: {}, passwordFile: bmc-password }}\n",
                crate::ipmi_sim::USER
            ));
        }
        y.push_str(&n.inventory_extra);
    }
    y
}

/// dnsmasq sending IPv6 router advertisements only on `bridge` in `ns` (iPXE otherwise waits ~13 s for them);
/// the bridge needs an IPv6 address in `fd99::/64`. `dir` holds its pid file.
pub fn ipv6_router(ns: &Netns, bridge: &str, dir: &Path) -> anyhow::Result<Proc> {
    Proc::try_spawn(
        "dnsmasq (RA only)",
        ns.cmd("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                &format!("--interface={bridge}"),
                "--bind-interfaces",
                "--enable-ra",
                "--dhcp-range=fd99::,ra-only,64",
                "--leasefile-ro",
            ])
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// The boot network of a lab: a namespace for `test` with bridge `br0` holding [`BOOT_SERVER`] and an IPv6
/// router (dnsmasq sending RAs only: iPXE otherwise waits for them). `dir` holds dnsmasq's pid file.
pub fn boot_network(test: &str, dir: &Path) -> (Netns, Proc) {
    let ns = Netns::new(test);
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "up"]);
    ns.ip(&["addr", "add", &format!("{BOOT_SERVER}/24"), "dev", "br0"]);
    ns.ip(&["addr", "add", "fd99::1/64", "dev", "br0", "nodad"]);
    let ra = ipv6_router(&ns, "br0", dir).unwrap_or_else(|e| panic!("{e:#}"));
    (ns, ra)
}
