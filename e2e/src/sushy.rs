//! sushy-tools' Redfish emulator (fake driver) as a test BMC, with basic auth from a bcrypt htpasswd. Each
//! instance gets its own loopback address and port and its own state directory; dropping it kills only its
//! own process.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "password";
/// The systems the emulator is configured with.
pub const SYSTEM_0: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
pub const SYSTEM_1: &str = "48295d40-6b2c-4c49-8e2b-4a3a0f7a1c11";
/// The MAC of SYSTEM_0's first NIC (every configuration).
pub const NIC_0: &str = "52:54:00:12:34:56";

/// What [`Sushy::start_with_inventory`] gives SYSTEM_0 besides [`NIC_0`]: a second NIC, and one storage
/// controller with two drives. The fake driver serves NICs by MAC (the MAC is also the interface's id, and no
/// speed), and drives with the configured id, name, capacity and protocol; its drive template fixes the rest
/// ([`DRIVE_MODEL`], [`DRIVE_SERIAL`], [`DRIVE_MEDIA`]). It serves no model, serial, SKU, BIOS version,
/// processor count or memory size for fake systems, and no SimpleStorage.
pub mod inventory {
    pub const NIC_1: &str = "52:54:00:ab:cd:02";
    pub const STORAGE_ID: &str = "1";
    /// `(id, name, capacity, protocol)` of the drives, in order.
    pub const DRIVES: [(&str, &str, u64, &str); 2] = [
        ("32ADF365C6C1B7BD", "Drive Sample", 899_527_000_000, "SAS"),
        ("58CFF987G8DZ0NE", "NVMe Sample", 1_600_321_314_816, "NVMe"),
    ];
    /// Fixed by sushy-tools' `drive.json` template, whatever the configuration.
    pub const DRIVE_MODEL: &str = "C123";
    pub const DRIVE_SERIAL: &str = "1234570";
    pub const DRIVE_MEDIA: &str = "HDD";
    /// `Manufacturer` of every system in sushy-tools' `system.json` template (feature set "full").
    pub const MANUFACTURER: &str = "Sushy Emulator";
}

pub fn venv() -> PathBuf {
    PathBuf::from(
        std::env::var("BEOWULF_PEERS_DIR").unwrap_or_else(|_| "/opt/beowulf-peers".into()),
    )
    .join("venv")
}

pub struct Sushy {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// With TLS: the PEM of the CA that signed the emulator's certificate.
    pub ca_pem: Option<PathBuf>,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sushy {
    /// Starts the emulator with two fake systems (`single`: only the first), both powered off.
    pub fn start(single: bool) -> Sushy {
        Self::start_with(single, false)
    }

    /// With `tls`, the emulator serves HTTPS with a certificate for its IP address signed by a fresh CA
    /// (`ca_pem`).
    pub fn start_with(single: bool, tls: bool) -> Sushy {
        Self::start_full(single, tls, false)
    }

    /// One system (SYSTEM_0) with the NICs and storage of [`inventory`], over plain HTTP.
    pub fn start_with_inventory() -> Sushy {
        Self::start_full(true, false, true)
    }

    fn start_full(single: bool, tls: bool, with_inventory: bool) -> Sushy {
        let ip = crate::ipmi_sim::random_loopback();
        let port = TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from((ip, port));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let py = venv().join("bin/python");
        let hash = Command::new(&py)
            .args(["-c", "import bcrypt,sys;print(bcrypt.hashpw(sys.stdin.readline().strip().encode(),bcrypt.gensalt(4)).decode())"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes())?;
                c.wait_with_output()
            })
            .expect("the peers venv has bcrypt (bash .ci/install)");
        std::fs::write(
            d.join("htpasswd"),
            format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout)),
        )
        .unwrap();
        let second = if single {
            String::new()
        } else {
            format!("{{'uuid': '{SYSTEM_1}', 'name': 'node-1', 'power_state': 'Off', 'nics': []}},")
        };
        let mut tls_conf = String::new();
        let mut ca_pem = None;
        if tls {
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            openssl(
                d,
                &[
                    &["req", "-x509"][..],
                    &ec,
                    &[
                        "-keyout",
                        "ca.key",
                        "-out",
                        "ca.pem",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=beowulf-test-ca",
                    ],
                ]
                .concat(),
            );
            openssl(
                d,
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=bmc"],
                ]
                .concat(),
            );
            std::fs::write(
                d.join("ext.cnf"),
                format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
            )
            .unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "srv.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "srv.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                ],
            );
            tls_conf = format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                d.join("srv.pem").display(),
                d.join("srv.key").display()
            );
            ca_pem = Some(d.join("ca.pem"));
        }
        let (extra_nic, storage_conf) = if with_inventory {
            use inventory::*;
            let drives: Vec<String> = DRIVES
                .iter()
                .map(|(id, name, size, proto)| {
                    format!("{{'Id': '{id}', 'Name': '{name}', 'CapacityBytes': {size}, 'Protocol': '{proto}'}}")
                })
                .collect();
            let ids: Vec<String> = DRIVES.iter().map(|d| format!("'{}'", d.0)).collect();
            (
                format!(", {{'mac': '{NIC_1}'}}"),
                format!(
                    "SUSHY_EMULATOR_STORAGE = {{'{SYSTEM_0}': [{{'Id': '{STORAGE_ID}', 'Name': 'Local Storage Controller', \
                     'StorageControllers': [{{'MemberId': '0', 'Name': 'Contoso Integrated RAID', 'SpeedGbps': 12}}], \
                     'Drives': [{}]}}]}}\nSUSHY_EMULATOR_DRIVES = {{('{SYSTEM_0}', '{STORAGE_ID}'): [{}]}}\n",
                    ids.join(", "),
                    drives.join(", ")
                ),
            )
        } else {
            (String::new(), String::new())
        };
        let conf = format!(
            "{tls_conf}{storage_conf}SUSHY_EMULATOR_LISTEN_IP = '{ip}'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = '{state}'
SUSHY_EMULATOR_AUTH_FILE = '{auth}'
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {{'uuid': '{SYSTEM_0}', 'name': 'node-0', 'power_state': 'Off', 'nics': [{{'mac': '{NIC_0}', 'ip': '10.99.0.157'}}{extra_nic}]}},
    {second}
]
",
            state = d.join("state").display(),
            auth = d.join("htpasswd").display(),
        );
        std::fs::write(d.join("emulator.conf"), conf).unwrap();
        let log = std::fs::File::create(d.join("sushy.log")).unwrap();
        let child = Command::new(venv().join("bin/sushy-emulator"))
            .arg("--config")
            .arg(d.join("emulator.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("sushy-emulator runs (bash .ci/install)");
        let s = Sushy {
            child: Some(child),
            addr,
            dir,
            ca_pem,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not listen on {addr}; log:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// `redfish+http://ip:port[/system]` (`redfish://…` with TLS).
    pub fn endpoint(&self, system: Option<&str>) -> String {
        let scheme = if self.ca_pem.is_some() {
            "redfish"
        } else {
            "redfish+http"
        };
        match system {
            Some(s) => format!("{scheme}://{}/{s}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sushy.log")).unwrap_or_default()
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
