//! Test certificates for the management cluster, made with the `openssl` command line tool: one CA that
//! signs the API server's serving certificate, the admin's client certificate and the webhook servers'
//! certificates, and the service-account signing key pair. EC P-256 keys (fast to make), valid two days.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::harness::try_run;

/// A certificate and its private key, both PEM files.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl KeyPair {
    /// Copies the pair into `dir` as `tls.crt`/`tls.key`, where controller-runtime's webhook servers look.
    pub fn install(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::copy(&self.cert, dir.join("tls.crt"))?;
        std::fs::copy(&self.key, dir.join("tls.key"))?;
        Ok(())
    }
}

/// A CA in a directory of its own.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: KeyPair,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    try_run(Command::new("openssl").current_dir(dir).args(args))
        .map(drop)
        .context("openssl (is the openssl package installed? `bash .ci/install`)")
}

impl Pki {
    /// Creates the CA under `dir` (created if missing).
    pub fn create(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=beowulf-e2e-ca",
                "-days",
                "2",
            ],
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca: KeyPair {
                cert: dir.join("ca.crt"),
                key: dir.join("ca.key"),
            },
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.ca.cert).with_context(|| format!("reading {}", self.ca.cert.display()))
    }

    /// Issues `name.crt`/`name.key` for `subject` (`/O=group/CN=user` for a client certificate) with the
    /// subject alternative names `sans` (`IP:127.0.0.1`, `DNS:localhost`), usable by servers and clients.
    pub fn issue(&self, name: &str, subject: &str, sans: &[String]) -> anyhow::Result<KeyPair> {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
        )?;
        let mut extensions = String::from("extendedKeyUsage=serverAuth,clientAuth\n");
        if !sans.is_empty() {
            extensions.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        std::fs::write(self.dir.join(&ext), extensions)?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
        Ok(KeyPair {
            cert: self.dir.join(crt),
            key: self.dir.join(key),
        })
    }

    /// The service-account token signing key pair (`sa.key`, `sa.pub`).
    pub fn service_account_keys(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        openssl(
            &self.dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                "sa.key",
            ],
        )?;
        openssl(
            &self.dir,
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        )?;
        Ok((self.dir.join("sa.key"), self.dir.join("sa.pub")))
    }
}
