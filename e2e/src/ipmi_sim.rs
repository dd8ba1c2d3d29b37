//! OpenIPMI's `ipmi_sim` as a test BMC, in `chassis_control` mode (power and boot device both work), with
//! `ipmitool` as the independent client. Each instance gets its own loopback address (127.0.0.x), a free
//! UDP port, and its own state directory; dropping it kills only its own process.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "password";

/// The chassis_control program: `chassis.sh STATE MC get power|boot` / `chassis.sh STATE MC set power 1 …`.
/// State lives in files under STATE, every call is logged to STATE/calls.log.
const CHASSIS_SH: &str = r#"#!/bin/sh
# Shell builtins only on the read path: ipmi_sim runs this once per Get Chassis Status, and every extra
# process it forks is BMC time that both clients of the benchmark wait for.
STATE=$1; shift
echo "$*" >> "$STATE/calls.log"
mc=$1; shift; op=$1; shift
# "KEY:VALUE" from STATE/KEY, or the default (no command substitution: that would fork a subshell).
val() { v=$2; [ -f "$STATE/$1" ] && read -r v < "$STATE/$1"; echo "$1:$v"; }
# The machine runs while its process lives and is not a zombie (a PID 1 that does not reap leaves those).
running() {
  [ -f "$STATE/vm.pid" ] || return 1
  read -r pid < "$STATE/vm.pid" && [ -r "/proc/$pid/stat" ] || return 1
  read -r st < "/proc/$pid/stat" 2>/dev/null || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}
case $op in
get)
  for p in "$@"; do
    case $p in
      power) if [ -f "$STATE/vm.pid" ]; then
               if running; then echo "power:1"; else echo "power:0"; fi
             else val power 0; fi ;;
      boot)  val boot none ;;
      *) echo "$p:0" ;;
    esac
  done ;;
set)
  while [ $# -gt 1 ]; do
    p=$1; v=$2; shift 2
    case $p in
      power)
        echo "$v" > "$STATE/power"
        # With a machine command: power on starts it (detached, stdio closed so popen() returns), off kills it.
        if [ "$v" = 1 ] && [ -f "$STATE/vmcmd" ] && ! running; then
          setsid "$(cat "$STATE/vmcmd")" "$STATE" </dev/null >/dev/null 2>&1 &
          echo $! > "$STATE/vm.pid"
        elif [ "$v" = 0 ] && [ -f "$STATE/vm.pid" ]; then
          kill "$(cat "$STATE/vm.pid")" 2>/dev/null; rm -f "$STATE/vm.pid"
        fi ;;
      boot) echo "$v" > "$STATE/boot" ;;
      *) echo "$p $v" >> "$STATE/events" ;;
    esac
  done ;;
esac
exit 0
"#;

const EMU: &str = "mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
";

pub struct IpmiSim {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// A loopback address 127.0.0.x unlikely to be used by another test at the same time.
pub fn random_loopback() -> Ipv4Addr {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = (std::process::id() as u64).wrapping_mul(7919) ^ nanos() ^ k.wrapping_mul(1031);
    Ipv4Addr::new(127, 0, ((n >> 8) % 200 + 20) as u8, (n % 250 + 2) as u8)
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// Polls `addr` with Get Channel Authentication Capabilities (IPMI v1.5, no session) until a BMC answers;
/// false if none did within `timeout`.
pub fn answers_ipmi(addr: SocketAddr, timeout: Duration) -> bool {
    let probe: [u8; 23] = [
        0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x20, 0x18, 0xc8, 0x81, 0x00,
        0x38, 0x8e, 0x04, 0xb5,
    ];
    let local = if addr.ip().is_loopback() {
        Ipv4Addr::LOCALHOST
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let sock = UdpSocket::bind((local, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = sock.send_to(&probe, addr);
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && n > 20
        {
            return true;
        }
    }
    false
}

/// A UDP port free on `ip` right now.
pub fn free_udp_port(ip: Ipv4Addr) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl IpmiSim {
    /// Starts a simulator on a fresh loopback address and port; waits until it answers.
    pub fn start() -> IpmiSim {
        let ip = random_loopback();
        Self::start_at(SocketAddr::from((ip, free_udp_port(ip))))
    }

    pub fn start_at(addr: SocketAddr) -> IpmiSim {
        Self::start_full(addr, None, true, None)
    }

    /// A simulator with an IPMI v2.0 BMC key (Kg): ASCII, at most 19 characters, no spaces (ipmi_sim's
    /// config takes keys as quoted ASCII, zero-padded to 20 bytes). Clients need it to open a session.
    pub fn start_with_bmc_key(key: &str) -> IpmiSim {
        assert!(key.len() < 20 && key.bytes().all(|b| b.is_ascii_graphic() && b != b'"'));
        let ip = random_loopback();
        Self::start_full(
            SocketAddr::from((ip, free_udp_port(ip))),
            None,
            true,
            Some(key),
        )
    }

    /// A simulator without the chassis program: power status is ipmi_sim's own (always off) and power
    /// changes are refused. Reads then cost the BMC no process spawn (used by the benchmark).
    pub fn start_plain(addr: SocketAddr) -> IpmiSim {
        Self::start_full(addr, None, false, None)
    }

    /// A simulator whose power-on runs `vmcmd STATE_DIR` detached (the "machine"), and whose power-off kills
    /// it; power status is then "is that process alive".
    pub fn start_with_machine(vmcmd: &Path) -> IpmiSim {
        let ip = random_loopback();
        Self::start_with_machine_at(SocketAddr::from((ip, free_udp_port(ip))), vmcmd)
    }

    /// [`IpmiSim::start_with_machine`] listening on `addr` (a management network's address).
    pub fn start_with_machine_at(addr: SocketAddr, vmcmd: &Path) -> IpmiSim {
        Self::start_full(addr, Some(vmcmd), true, None)
    }

    fn start_full(
        addr: SocketAddr,
        vmcmd: Option<&Path>,
        chassis: bool,
        bmc_key: Option<&str>,
    ) -> IpmiSim {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).unwrap();
        if let Some(v) = vmcmd {
            std::fs::write(d.join("state/vmcmd"), v.as_os_str().as_encoded_bytes()).unwrap();
        }
        std::fs::create_dir_all(d.join("simstate")).unwrap();
        let script = d.join("chassis.sh");
        std::fs::write(&script, CHASSIS_SH).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("bmc.emu"), EMU).unwrap();
        let conf = format!(
            r#"name "testbmc"
set_working_mc 0x20
  startlan 1
    addr {ip} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
    {key_line}
  endlan
  {chassis_line}
  user 1 true  ""      "test" user  10 none md2 md5 straight
  user 2 true  "{USER}" "{PASSWORD}" admin 10 none md2 md5 straight
"#,
            ip = addr.ip(),
            port = addr.port(),
            key_line = bmc_key
                .map(|k| format!("bmc_key \"{k}\""))
                .unwrap_or_default(),
            chassis_line = if chassis {
                format!(
                    "chassis_control \"{} {} 0x20\"",
                    script.display(),
                    d.join("state").display()
                )
            } else {
                String::new()
            },
        );
        std::fs::write(d.join("lan.conf"), conf).unwrap();
        let log = std::fs::File::create(d.join("sim.out")).unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("bmc.emu"))
            .arg("-s")
            .arg(d.join("simstate"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ipmi_sim runs (bash .ci/install installs openipmi)");
        let sim = IpmiSim {
            child: Some(child),
            addr,
            dir,
        };
        sim.wait_ready(Duration::from_secs(10));
        sim
    }

    fn wait_ready(&self, timeout: Duration) {
        if !answers_ipmi(self.addr, timeout) {
            panic!(
                "ipmi_sim at {} did not answer within {timeout:?}; log:\n{}",
                self.addr,
                self.log()
            );
        }
    }

    pub fn endpoint(&self) -> String {
        format!("ipmi://{}", self.addr)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The chassis program's call log ("get power", "set power 1", …).
    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("calls.log")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.out")).unwrap_or_default()
    }

    /// Runs `ipmitool -I lanplus -C 3 …` against this simulator (password through the environment, not argv).
    pub fn ipmitool(&self, args: &[&str]) -> String {
        ipmitool_at(self.addr, args)
    }

    /// Kills the simulator (and only it), and the machine it started, if any.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = read_state(&self.state_dir(), "vm.pid") {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
}

/// `ipmitool -I lanplus -C 3` against any address; panics with its output when it fails.
pub fn ipmitool_at(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-N", "1", "-R", "3", "-H"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", USER, "-E"])
        .args(args)
        .env("IPMI_PASSWORD", PASSWORD)
        .output()
        .expect("ipmitool runs (bash .ci/install installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ipmitool {args:?} failed: {text}");
    text
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the chassis program keeps a value (for assertions on the simulator's side).
pub fn read_state(dir: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(key))
        .ok()
        .map(|s| s.trim().to_string())
}
