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
        let conf = format!(
            "{tls_conf}SUSHY_EMULATOR_LISTEN_IP = '{ip}'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = '{state}'
SUSHY_EMULATOR_AUTH_FILE = '{auth}'
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {{'uuid': '{SYSTEM_0}', 'name': 'node-0', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:12:34:56', 'ip': '10.99.0.157'}}]}},
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
