//! A real OCI registry for the suite and the benchmarks: Debian's `docker-registry` (the CNCF distribution
//! registry) on a free loopback port, with its own storage, over plain HTTP or over HTTPS with a certificate
//! from a test CA (clients that speak HTTPS only, like the cluster-stack-operator, trust that CA). Killed on
//! drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::kube::pki::Pki;

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA that signed the registry's certificate (PEM), when it speaks HTTPS.
    pub ca: Option<PathBuf>,
    log: PathBuf,
}

impl Registry {
    /// Plain HTTP; storage, configuration and log under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, None)
    }

    /// HTTPS with a certificate for 127.0.0.1 issued by a fresh test CA under `dir` ([`Registry::ca`]).
    pub fn start_tls(dir: &Path) -> anyhow::Result<Self> {
        let pki = Pki::create(&dir.join("pki"))?;
        let serving = pki.issue("registry", "/CN=127.0.0.1", &["IP:127.0.0.1".into()])?;
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            serving.cert.display(),
            serving.key.display()
        );
        let mut registry = Self::start_with(dir, Some(&tls))?;
        registry.ca = Some(pki.ca.cert);
        Ok(registry)
    }

    fn start_with(dir: &Path, tls: Option<&str>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("config.yml");
        // Level info: the registry prints the address it bound ("listening on 127.0.0.1:PORT").
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n{}",
                dir.join("data").display(),
                tls.unwrap_or_default()
            ),
        )?;
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("docker-registry not found: run `bash .ci/install`")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(at) = text.find("listening on ") {
                let rest = &text[at + "listening on ".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .unwrap_or(rest.len());
                return Ok(Registry {
                    child,
                    addr: rest[..end].to_string(),
                    ca: None,
                    log: log_path,
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("docker-registry exited ({status}): {text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("docker-registry did not start within 20 s: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The registry's log (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU seconds (user + system) the registry has used so far, from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
            .unwrap_or(f64::NAN);
        ticks / clock_ticks_per_second()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_second() -> f64 {
    // `getconf CLK_TCK`; 100 on every Linux this runs on, asked anyway.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
