//! pyghmi's IPMI BMC server as a second, independent test BMC beside ipmi_sim: `pyghmi.ipmi.bmc.Bmc`, the
//! documented server class virtualbmc is built on (what Metal3 and Ironic labs run). A small subclass keeps
//! power and the boot device in memory and writes both to a state file on every change, so a test reads
//! what the BMC itself holds. pyghmi's reading of the specification differs from OpenIPMI's: it lists only
//! cipher suite 3 and answers every Open Session with suite 3's algorithms (a counter-offer, never a
//! refusal), and it has no notion of persistent or UEFI boot flags.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "password";

const BMC_PY: &str = r#"
import json, os, sys
import pyghmi.ipmi.bmc as bmc


class StateBmc(bmc.Bmc):
    def __init__(self, authdata, address, port, state):
        super().__init__(authdata, port=port, address=address)
        self.state_path = state
        self.power = 'off'
        self.boot = 'default'
        self.save()

    def save(self):
        tmp = self.state_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'power': self.power, 'boot': self.boot}, f)
        os.replace(tmp, self.state_path)

    def get_power_state(self):
        return self.power

    def power_on(self):
        self.power = 'on'
        self.save()

    def power_off(self):
        self.power = 'off'
        self.save()

    power_shutdown = power_off

    def power_cycle(self):
        self.power_on()

    power_reset = power_cycle

    def get_boot_device(self):
        return self.boot

    def set_boot_device(self, device):
        self.boot = device
        self.save()


address, port, state = sys.argv[1], int(sys.argv[2]), sys.argv[3]
StateBmc({os.environ['BMC_USER']: os.environ['BMC_PASSWORD']}, address, port, state).listen()
"#;

pub struct PyghmiBmc {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl PyghmiBmc {
    /// Starts a BMC on a fresh loopback address and port (user [`USER`], password [`PASSWORD`], powered
    /// off, no boot override); waits until it answers.
    pub fn start() -> PyghmiBmc {
        let ip = crate::ipmi_sim::random_loopback();
        let addr = SocketAddr::from((ip, crate::ipmi_sim::free_udp_port(ip)));
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("bmc.py");
        std::fs::write(&script, BMC_PY).unwrap();
        let log = std::fs::File::create(dir.path().join("bmc.log")).unwrap();
        let python = crate::sushy::venv().join("bin/python3");
        let child = Command::new(&python)
            .arg(&script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(dir.path().join("state.json"))
            .env("BMC_USER", USER)
            .env("BMC_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} runs pyghmi (bash .ci/install puts it in the peers venv): {e}",
                    python.display()
                )
            });
        let bmc = PyghmiBmc {
            child: Some(child),
            addr,
            dir,
        };
        assert!(
            crate::ipmi_sim::answers_ipmi(addr, Duration::from_secs(20)),
            "pyghmi's BMC at {addr} did not answer; log:\n{}",
            bmc.log()
        );
        bmc
    }

    pub fn endpoint(&self) -> String {
        format!("ipmi://{}", self.addr)
    }

    /// What the BMC holds: `(power, boot device)`, e.g. `("on", "network")`.
    pub fn state(&self) -> (String, String) {
        let path: PathBuf = self.dir.path().join("state.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        (
            v["power"].as_str().unwrap().to_string(),
            v["boot"].as_str().unwrap().to_string(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bmc.log")).unwrap_or_default()
    }
}

impl Drop for PyghmiBmc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
