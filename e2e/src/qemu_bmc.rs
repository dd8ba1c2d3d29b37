//! A BMC in front of a real machine: OpenIPMI's `ipmi_sim` whose chassis program starts a QEMU PXE machine on
//! power-on and stops it on power-off.
//!
//! ```ignore
//! // The caller owns a network namespace with a bridge on which a boot plane serves DHCP/TFTP/HTTP.
//! let bmc = QemuBmc::start(&ns.name, "br0", "52:54:00:00:00:10");
//! let ep = bmc.endpoint();            // "ipmi://127.0.x.y:PORT", user ipmi_sim::USER, ipmi_sim::PASSWORD
//! // … drive it with any IPMI client (suite 3): bootdev pxe, power on → QEMU starts and PXE-boots …
//! wait_for("boot", Duration::from_secs(120), || bmc.serial().contains("TESTNODE: callback ok").then_some(()));
//! assert!(bmc.qemu_pid().is_some());  // running; after an IPMI power off: None
//! ```
//!
//! The machine: QEMU (TCG, SeaBIOS with QEMU's iPXE ROM, virtio-net with the given MAC, 512 MiB, serial console
//! to a file), wrapped in `timeout` (default 150 s of life), started in the given namespace on a tap of its own
//! attached to the given bridge. It boots from the network when the BMC's boot device is PXE (`-boot n`),
//! otherwise from the (absent) disk. IPMI power status is "is that machine's process alive", so a machine that
//! powers itself off reads off. Dropping the `QemuBmc` stops the simulator and the machine and removes the tap.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::ipmi_sim::IpmiSim;
use crate::serial_wire::SerialWire;

/// What the machine looks like; `QemuBmc::start` uses the defaults.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// Network namespace the machine's tap lives in (must exist, owned by the caller).
    pub netns: String,
    /// Bridge in that namespace the tap is attached to (must exist and be up).
    pub bridge: String,
    /// The NIC's MAC address, `52:54:00:…`.
    pub mac: String,
    pub memory_mib: u32,
    /// The machine is killed after this long whatever happens (`timeout`), so a hung test leaves nothing.
    pub max_runtime: Duration,
    /// Where the BMC listens; `None`: a fresh loopback address.
    pub bmc_ip: Option<std::net::Ipv4Addr>,
    /// More QEMU arguments (disks: `-drive …`, `-device …`); the same at every power-on.
    pub qemu_args: Vec<String>,
    /// Wire the serial port to the BMC's Serial-over-LAN (a [`SerialWire`]) as well as to the log file.
    pub sol: bool,
}

impl MachineSpec {
    pub fn new(netns: &str, bridge: &str, mac: &str) -> MachineSpec {
        MachineSpec {
            netns: netns.to_string(),
            bridge: bridge.to_string(),
            mac: mac.to_string(),
            memory_mib: 512,
            max_runtime: Duration::from_secs(150),
            bmc_ip: None,
            qemu_args: Vec::new(),
            sol: false,
        }
    }
}

pub struct QemuBmc {
    // Field order is drop order: the simulator (and with it the machine) before the files.
    pub sim: IpmiSim,
    /// The serial cable to the BMC, when the spec asks for SOL.
    pub wire: Option<SerialWire>,
    pub spec: MachineSpec,
    pub tap: String,
    dir: tempfile::TempDir,
}

impl QemuBmc {
    /// An ipmi_sim BMC (own 127.0.x.y address and port) whose power-on starts a QEMU PXE machine with `mac`
    /// on `bridge` in `netns`.
    pub fn start(netns: &str, bridge: &str, mac: &str) -> QemuBmc {
        Self::start_with(MachineSpec::new(netns, bridge, mac))
    }

    pub fn start_with(spec: MachineSpec) -> QemuBmc {
        static TAPS: AtomicU32 = AtomicU32::new(0);
        let tap = format!("qbmc{}", TAPS.fetch_add(1, Ordering::Relaxed));
        let ip = |args: &[&str]| {
            crate::run(Command::new("ip").arg("-n").arg(&spec.netns).args(args));
        };
        ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
        ip(&["link", "set", &tap, "master", &spec.bridge]);
        ip(&["link", "set", &tap, "up"]);

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("serial.log"), b"").unwrap();
        let wire = spec.sol.then(|| SerialWire::start(d));
        let serial = match &wire {
            // QEMU's own copy of the serial output stays in serial.log.
            Some(w) => format!(
                "-chardev socket,id=ser0,path={},server=off,logfile={} -serial chardev:ser0",
                w.machine_socket().display(),
                d.join("serial.log").display()
            ),
            None => format!("-serial file:{}", d.join("serial.log").display()),
        };
        // Run by the chassis program as `machine.sh STATE_DIR`, detached; `exec` keeps the pid it records
        // (that of `timeout`, which passes SIGTERM on to QEMU). A power-on right after a power-off first lets
        // the previous QEMU (still exiting, still holding the tap) go, for at most 10 s; a zombie has let go.
        let script = format!(
            "#!/bin/sh\n\
             case $(cat \"$1/boot\" 2>/dev/null) in pxe) B=n;; *) B=c;; esac\n\
             old=$(cat {pidfile} 2>/dev/null); i=0\n\
             while [ -n \"$old\" ] && [ $i -lt 100 ] && read -r st < /proc/$old/stat 2>/dev/null \
             && st=${{st##*) }} && [ \"${{st%% *}}\" != Z ]; do sleep 0.1; i=$((i+1)); done\n\
             rm -f {pidfile}\n\
             exec ip netns exec {ns} timeout {secs} qemu-system-x86_64 -accel tcg -m {mem} -smp 1 \
             -nographic -no-reboot -monitor none -display none -boot $B \
             -netdev tap,id=n0,ifname={tap},script=no,downscript=no \
             -device virtio-net-pci,netdev=n0,mac={mac} \
             {serial} -pidfile {pidfile} {extra}\n",
            ns = spec.netns,
            secs = spec.max_runtime.as_secs().max(1),
            mem = spec.memory_mib,
            mac = spec.mac,
            pidfile = d.join("qemu.pid").display(),
            extra = spec
                .qemu_args
                .iter()
                .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
                .collect::<Vec<_>>()
                .join(" "),
        );
        let machine = d.join("machine.sh");
        std::fs::write(&machine, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&machine, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sim = match (&wire, spec.bmc_ip) {
            (Some(w), ip) => IpmiSim::start_with_machine_and_sol(ip, &machine, w.bmc_port),
            (None, Some(ip)) => IpmiSim::start_with_machine_on(ip, &machine),
            (None, None) => IpmiSim::start_with_machine(&machine),
        };
        QemuBmc {
            sim,
            wire,
            spec,
            tap,
            dir,
        }
    }

    /// `ipmi://127.0.x.y:PORT`; credentials `ipmi_sim::USER` / `ipmi_sim::PASSWORD`, cipher suite 3.
    pub fn endpoint(&self) -> String {
        self.sim.endpoint()
    }

    /// Our own IPMI driver for this BMC (its user and password, cipher suite 3, as ipmi_sim has no 17).
    pub fn ipmi_client(&self) -> beowulf::bmc::ipmi::IpmiClient {
        use beowulf::bmc::{Credentials, Endpoint, Limits, Options};
        beowulf::bmc::ipmi::IpmiClient::new(
            Endpoint::parse(&self.endpoint()).unwrap(),
            Credentials::new(crate::ipmi_sim::USER, crate::ipmi_sim::PASSWORD),
            Options {
                cipher_suite: beowulf::bmc::ipmi::CipherChoice::Suite3,
                ..Options::default()
            },
            Limits::default(),
        )
    }

    /// The machine's serial console so far (empty before the first power-on).
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.serial_path()).unwrap_or_default()).into_owned()
    }

    pub fn serial_path(&self) -> PathBuf {
        self.dir.path().join("serial.log")
    }

    /// The running QEMU's pid (from its `-pidfile`), or `None` when no QEMU of this machine is alive.
    pub fn qemu_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.path().join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid, "qemu").then_some(pid)
    }

    /// What the BMC's chassis program was asked to do (`get power`, `set power 1`, `set boot pxe`, …).
    pub fn calls(&self) -> String {
        self.sim.calls()
    }
}

/// Is `pid` a live (not zombie) process whose command name starts with `comm`? (The chassis program's
/// detached processes may end up under a PID 1 that does not reap them.)
pub fn alive(pid: u32, comm: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": comm may contain spaces, the state follows the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let name = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    name.starts_with(comm) && state.is_some_and(|s| s != 'Z' && s != 'X')
}

impl Drop for QemuBmc {
    fn drop(&mut self) {
        let qemu = self.qemu_pid();
        self.sim.kill();
        // The tap can only go once QEMU has let go of it (bounded: `timeout` forwards SIGTERM at once).
        if let Some(pid) = qemu {
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid, "qemu") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid, "qemu") {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["-n", &self.spec.netns, "link", "del", &self.tap])
            .status();
    }
}
