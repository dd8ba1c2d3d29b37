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
# The machine runs while its process lives, is not a zombie (a PID 1 that does not reap leaves those) and
# still leads the session `setsid` gave it: a machine that exited leaves its pid to be reused (pids wrap at
# 32768 in a long test run), and a power off must not kill whatever has it now.
running() {
  [ -f "$STATE/vm.pid" ] || return 1
  read -r pid < "$STATE/vm.pid" && [ -r "/proc/$pid/stat" ] || return 1
  read -r st < "/proc/$pid/stat" 2>/dev/null || return 1
  set -- ${st##*) }
  [ "$1" != Z ] && [ "$4" = "$pid" ]
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
          running && kill "$pid" 2>/dev/null; rm -f "$STATE/vm.pid"
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
        Self::start_fresh(None, None, true, None, None)
    }

    pub fn start_at(addr: SocketAddr) -> IpmiSim {
        Self::start_full(addr, None, true, None, None)
    }

    /// A simulator whose MC 0x20 serves `image` as the FRU inventory of device 0: the file `fru.bin` in its
    /// directory, which ipmi_sim reads on every Read FRU Data (a test may rewrite it). Build images with
    /// [`fru::Image`].
    pub fn start_with_fru(image: &[u8]) -> IpmiSim {
        Self::start_fresh(None, None, true, None, Some(image))
    }

    /// A simulator with an IPMI v2.0 BMC key (Kg): ASCII, at most 19 characters, no spaces (ipmi_sim's
    /// config takes keys as quoted ASCII, zero-padded to 20 bytes). Clients need it to open a session.
    pub fn start_with_bmc_key(key: &str) -> IpmiSim {
        assert!(key.len() < 20 && key.bytes().all(|b| b.is_ascii_graphic() && b != b'"'));
        Self::start_fresh(None, None, true, Some(key), None)
    }

    /// A simulator without the chassis program: power status is ipmi_sim's own (always off) and power
    /// changes are refused. Reads then cost the BMC no process spawn (used by the benchmark).
    pub fn start_plain(addr: SocketAddr) -> IpmiSim {
        Self::start_full(addr, None, false, None, None)
    }

    /// A simulator whose power-on runs `vmcmd STATE_DIR` detached (the "machine"), and whose power-off kills
    /// it; power status is then "is that process alive".
    pub fn start_with_machine(vmcmd: &Path) -> IpmiSim {
        Self::start_fresh(None, Some(vmcmd), true, None, None)
    }

    /// [`IpmiSim::start_with_machine`] whose serial console (SOL) is the TCP server on 127.0.0.1:`sol_port`
    /// (a [`crate::serial_wire::SerialWire`]), on address `ip` if given.
    pub fn start_with_machine_and_sol(
        ip: Option<Ipv4Addr>,
        vmcmd: &Path,
        sol_port: u16,
    ) -> IpmiSim {
        Self::start_fresh_sol(ip, Some(vmcmd), true, None, None, Some(sol_port))
    }

    /// [`IpmiSim::start_with_machine`] on address `ip` (a management network's), on a free port.
    pub fn start_with_machine_on(ip: Ipv4Addr, vmcmd: &Path) -> IpmiSim {
        Self::start_fresh(Some(ip), Some(vmcmd), true, None, None)
    }

    /// On `ip` (else a fresh loopback address) and a free port. The port is free when chosen but cannot be held
    /// until ipmi_sim binds it, so another process (a concurrent test's client socket) can take it first:
    /// then ipmi_sim exits with "Address already in use" and another port (and address) is tried.
    fn start_fresh(
        ip: Option<Ipv4Addr>,
        vmcmd: Option<&Path>,
        chassis: bool,
        bmc_key: Option<&str>,
        fru: Option<&[u8]>,
    ) -> IpmiSim {
        Self::start_fresh_sol(ip, vmcmd, chassis, bmc_key, fru, None)
    }

    fn start_fresh_sol(
        ip: Option<Ipv4Addr>,
        vmcmd: Option<&Path>,
        chassis: bool,
        bmc_key: Option<&str>,
        fru: Option<&[u8]>,
        sol: Option<u16>,
    ) -> IpmiSim {
        let mut last = String::new();
        for _ in 0..5 {
            let ip = ip.unwrap_or_else(random_loopback);
            let addr = SocketAddr::from((ip, free_udp_port(ip)));
            match Self::try_start_full(addr, vmcmd, chassis, bmc_key, fru, sol) {
                Ok(sim) => return sim,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("ipmi_sim found no free port in 5 tries; last:\n{last}")
    }

    fn start_full(
        addr: SocketAddr,
        vmcmd: Option<&Path>,
        chassis: bool,
        bmc_key: Option<&str>,
        fru: Option<&[u8]>,
    ) -> IpmiSim {
        Self::try_start_full(addr, vmcmd, chassis, bmc_key, fru, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts ipmi_sim on `addr` and waits until it answers; `Err` with its log when it does not within 10 s
    /// or exits first.
    fn try_start_full(
        addr: SocketAddr,
        vmcmd: Option<&Path>,
        chassis: bool,
        bmc_key: Option<&str>,
        fru: Option<&[u8]>,
        sol: Option<u16>,
    ) -> Result<IpmiSim, String> {
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
        let emu = match fru {
            None => EMU.to_string(),
            Some(image) => {
                assert!(
                    !image.is_empty() && image.len() <= 0xffff,
                    "a FRU image has 1 to 65535 bytes"
                );
                let file = d.join("fru.bin");
                std::fs::write(&file, image).unwrap();
                // Before mc_enable: the MC starts with its FRU in place.
                EMU.replace(
                    "mc_enable 0x20",
                    &format!(
                        "mc_add_fru_data 0x20 0 {:#x} file 0 \"{}\"\nmc_enable 0x20",
                        image.len(),
                        file.display()
                    ),
                )
            }
        };
        std::fs::write(d.join("bmc.emu"), emu).unwrap();
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
  {sol_line}
  user 1 true  ""      "test" user  10 none md2 md5 straight
  user 2 true  "{USER}" "{PASSWORD}" admin 10 none md2 md5 straight
"#,
            ip = addr.ip(),
            port = addr.port(),
            key_line = bmc_key
                .map(|k| format!("bmc_key \"{k}\""))
                .unwrap_or_default(),
            sol_line = sol
                .map(|port| format!("sol \"tcp:127.0.0.1:{port}\" 115200"))
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
        let child = spawn(d);
        let mut sim = IpmiSim {
            child: Some(child),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if answers_ipmi(sim.addr, Duration::from_millis(500)) {
                return Ok(sim);
            }
            let exited = sim
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                return Err(format!(
                    "ipmi_sim at {} did not answer within 10s; log:\n{}",
                    sim.addr,
                    sim.log()
                ));
            }
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

    /// The BMC crashes and comes back: SIGKILL to the simulator only (a machine it started keeps running, as a
    /// server does when its BMC reboots), then the same simulator again on the same address and state; returns
    /// once it answers.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = Some(spawn(self.dir.path()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ipmi(self.addr, Duration::from_millis(500)) {
            assert!(
                Instant::now() < deadline,
                "ipmi_sim did not come back at {}; log:\n{}",
                self.addr,
                self.log()
            );
        }
    }

    /// Kills the simulator (and only it), and the machine it started, if any.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let machine = read_state(&self.state_dir(), "vm.pid").and_then(|p| p.parse().ok());
        if let Some(pid) = machine.filter(|&pid| leads_its_session(pid)) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// Is `pid` a live process that leads its session, as the machine the chassis program started with
/// `setsid` does? (A machine that exited leaves its pid to whatever process gets it next.)
fn leads_its_session(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) STATE PPID PGRP SESSION …": comm may contain spaces, the fields follow the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    fields.first().is_some_and(|s| *s != "Z") && fields.get(3) == Some(&pid.to_string().as_str())
}

/// Runs ipmi_sim on the configuration in `d` (its log appended to `sim.out`).
fn spawn(d: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("sim.out"))
        .unwrap();
    Command::new("ipmi_sim")
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
        .expect("ipmi_sim runs (bash .ci/install installs openipmi)")
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

/// Builds IPMI FRU images (Platform Management FRU Information Storage Definition v1.0) for the simulator:
/// the common header, then the chassis, board and product info areas that were given, each padded to a
/// multiple of 8 bytes and closed with its checksum. Written from the specification, independently of the
/// provider's parser.
pub mod fru {
    /// A field of an info area.
    #[derive(Debug, Clone)]
    pub enum Field {
        /// 8-bit ASCII (type 11b).
        Ascii(String),
        /// 6-bit packed ASCII (type 10b): characters 0x20–0x5f only (digits, upper case, punctuation).
        Packed(String),
        /// An empty field.
        Empty,
    }

    impl Field {
        pub fn ascii(s: &str) -> Field {
            Field::Ascii(s.to_string())
        }

        fn encode(&self) -> Vec<u8> {
            let (kind, data) = match self {
                Field::Ascii(s) => (0b11, s.as_bytes().to_vec()),
                Field::Packed(s) => (0b10, pack6(s)),
                Field::Empty => (0b11, Vec::new()),
            };
            assert!(data.len() < 64, "a FRU field holds at most 63 bytes");
            let mut v = vec![(kind << 6) | data.len() as u8];
            v.extend(data);
            v
        }
    }

    /// Four characters in three bytes, the first character in the low bits of the first byte.
    pub fn pack6(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes() {
            assert!((0x20..0x60).contains(&c), "{c:#x} has no 6-bit ASCII code");
            acc |= u32::from(c - 0x20) << bits;
            bits += 6;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(acc as u8);
        }
        out
    }

    fn area(fixed: &[u8], fields: &[Field]) -> Vec<u8> {
        let mut a = vec![0x01, 0];
        a.extend_from_slice(fixed);
        for f in fields {
            a.extend(f.encode());
        }
        a.push(0xc1);
        while (a.len() + 1) % 8 != 0 {
            a.push(0);
        }
        a[1] = ((a.len() + 1) / 8) as u8;
        a.push(checksum(&a));
        a
    }

    fn checksum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x)).wrapping_neg()
    }

    /// The areas of a FRU image; `None`: the area is absent.
    #[derive(Debug, Clone, Default)]
    pub struct Image {
        /// Chassis type, part number, serial.
        pub chassis: Option<(u8, Vec<Field>)>,
        /// Manufacturing date (minutes since 1996-01-01 00:00 UTC, 0: unspecified); manufacturer, product
        /// name, serial, part number (, FRU file id, …).
        pub board: Option<(u32, Vec<Field>)>,
        /// Manufacturer, name, part/model number, version, serial, asset tag (, FRU file id, …).
        pub product: Option<Vec<Field>>,
    }

    impl Image {
        pub fn bytes(&self) -> Vec<u8> {
            let mut header = vec![0x01, 0, 0, 0, 0, 0, 0];
            let mut body = Vec::new();
            let areas = [
                (2, self.chassis.as_ref().map(|(t, f)| area(&[*t], f))),
                (
                    3,
                    self.board.as_ref().map(|(date, f)| {
                        let d = date.to_le_bytes();
                        area(&[25, d[0], d[1], d[2]], f)
                    }),
                ),
                (4, self.product.as_ref().map(|f| area(&[25], f))),
            ];
            for (slot, a) in areas {
                if let Some(a) = a {
                    header[slot] = ((8 + body.len()) / 8) as u8;
                    body.extend(a);
                }
            }
            header.push(checksum(&header));
            header.extend(body);
            header
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_session_leader_counts_as_the_machine() {
        let mut leader = Command::new("setsid")
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        // setsid(1) runs sleep in the same process (the child of a spawn leads no process group).
        let leads = crate::harness::poll("setsid to exec sleep", Duration::from_secs(5), || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", leader.id())).ok()?;
            stat.contains("(sleep)")
                .then_some(leads_its_session(leader.id()))
        });
        assert!(leads.unwrap());
        assert!(!leads_its_session(other.id()));
        for c in [&mut leader, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(
            !leads_its_session(leader.id()),
            "a reaped pid is no machine"
        );
    }
}
