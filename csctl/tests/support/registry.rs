//! A real distribution registry (`docker-registry serve`) on a free loopback port with its own storage.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With `Some((user, password))` the registry requires Basic auth (bcrypt htpasswd).
    pub fn start_with(auth: Option<(&str, &str)>) -> Self {
        Self::start_full(auth, false)
    }

    /// HTTPS with a certificate for 127.0.0.1 from a fresh test CA (`ca_file()`).
    pub fn start_tls() -> Self {
        Self::start_full(None, true)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn start_full(auth: Option<(&str, &str)>, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        if tls {
            // A CA and a leaf for 127.0.0.1 signed by it (webpki refuses a CA certificate as the server's).
            let d = dir.path();
            std::fs::write(
                d.join("leaf.ext"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            let steps: Vec<Vec<String>> = vec![
                [
                    &["req", "-x509"][..],
                    &ec[..],
                    &[
                        "-days",
                        "2",
                        "-subj",
                        "/CN=csctl test CA",
                        "-keyout",
                        "ca.key",
                        "-out",
                        "ca.crt",
                    ][..],
                ]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .collect(),
                [
                    &["req"][..],
                    &ec[..],
                    &[
                        "-subj",
                        "/CN=127.0.0.1",
                        "-keyout",
                        "tls.key",
                        "-out",
                        "leaf.csr",
                    ][..],
                ]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .collect(),
                [
                    "x509",
                    "-req",
                    "-in",
                    "leaf.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "leaf.ext",
                    "-out",
                    "tls.crt",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ];
            for args in steps {
                let st = Command::new("openssl")
                    .args(&args)
                    .current_dir(d)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("openssl");
                assert!(st.success(), "openssl {args:?}");
            }
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("tls.crt").display(),
                dir.path().join("tls.key").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry (run .ci/install)");
        let addr = wait_for("the registry to listen", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log_path).ok()?;
            let at = text.find("listening on ")?;
            let rest = &text[at + "listening on ".len()..];
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))?;
            Some(rest[..end].to_string())
        });
        Registry { addr, dir, child }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file holding a blob in the registry's filesystem storage.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.storage().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
