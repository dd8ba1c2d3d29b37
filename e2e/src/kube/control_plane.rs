//! etcd + kube-apiserver (+ kube-controller-manager) as host processes, started the way controller-runtime's
//! envtest starts them: a test CA for serving and client certificates, a service-account signing key,
//! `--authorization-mode=RBAC` — and, beyond envtest, an audit log (every request with its user and status
//! code, so a test can list what was forbidden) and kube-controller-manager's garbage collector, namespace
//! and ClusterRole aggregation controllers (so deletion and aggregated RBAC behave as in a real cluster).
//!
//! The API server listens on one address given by the caller (the host end of the management network, see
//! `kube::mgmt`), etcd and the controller manager on loopback. Everything lives under one directory; the
//! processes stop on drop.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::Value;

use super::peers::{GoPeers, tail};
use super::pki::{KeyPair, Pki};
use crate::harness::Proc;

/// A TCP port free on `ip` right now.
pub fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))
        .with_context(|| format!("no free TCP port on {ip}"))?
        .local_addr()?
        .port())
}

/// A started process and where its output goes.
pub struct Logged {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Logged {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Logged> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(file.try_clone()?).stderr(file);
        Ok(Logged {
            proc: Proc::try_spawn(name, cmd)?,
            log: log.to_path_buf(),
        })
    }

    /// An error naming the process, with the tail of its log.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} {what}; last lines of {}:\n{}",
            self.proc.name,
            self.log.display(),
            tail(&self.log, 30)
        )
    }

    /// "NAME running[; `detail`]", or "NAME exited (STATUS)" with the tail of its log.
    pub fn state(&mut self, detail: &str) -> String {
        match self.proc.exited() {
            None if detail.is_empty() => format!("{} running", self.proc.name),
            None => format!("{} running; {detail}", self.proc.name),
            Some(status) => self.failure(&format!("exited ({status})")).to_string(),
        }
    }

    /// Polls `ready` (every 100 ms) until it is true; fails when the process exits or after `timeout`,
    /// naming the process and showing the tail of its log.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        timeout: Duration,
        mut ready: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.exited() {
                return Err(self.failure(&format!("exited during start-up ({status})")));
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("did not become ready within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A plain HTTP GET answered with 200 (health endpoints of etcd and of the managers).
pub async fn http_ok(url: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build();
    match client {
        Ok(c) => c
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    }
}

pub struct ControlPlane {
    // Field order is drop order: the controller manager and the API server before etcd.
    pub controller_manager: Option<Logged>,
    pub apiserver: Logged,
    pub etcd: Logged,
    pub pki: Pki,
    pub dir: PathBuf,
    /// `https://IP:PORT`.
    pub url: String,
    pub admin_kubeconfig: PathBuf,
    pub audit_log: PathBuf,
    pub kubernetes_version: String,
}

/// The audit policy: every request's metadata (user, verb, resource, status code), once it completed.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

impl ControlPlane {
    /// Starts etcd, the API server on `bind_ip` and the controller manager; writes an admin kubeconfig.
    /// Fails naming the process that did not come up, with the tail of its log.
    pub async fn start(peers: &GoPeers, dir: &Path, bind_ip: Ipv4Addr) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pki = Pki::create(&dir.join("pki"))?;
        let serving = pki.issue(
            "apiserver",
            "/CN=kube-apiserver",
            &[
                format!("IP:{bind_ip}"),
                "IP:127.0.0.1".into(),
                "DNS:localhost".into(),
                "DNS:kubernetes.default.svc".into(),
            ],
        )?;
        let admin = pki.issue("admin", "/O=system:masters/CN=e2e-admin", &[])?;
        let (sa_key, sa_pub) = pki.service_account_keys()?;

        let etcd_port = free_port(Ipv4Addr::LOCALHOST)?;
        let peer_port = free_port(Ipv4Addr::LOCALHOST)?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Logged::spawn(
            "etcd",
            Command::new(peers.bin("etcd"))
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}"))
                // A test cluster: losing it on a crash is fine, waiting for fsync is not.
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn"),
            &dir.join("etcd.log"),
        )?;
        let health = format!("{etcd_url}/health");
        etcd.wait_ready(Duration::from_secs(30), || http_ok(&health))
            .await?;

        let port = free_port(bind_ip)?;
        let url = format!("https://{bind_ip}:{port}");
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        let audit_log = dir.join("audit.log");
        let mut apiserver = Logged::spawn(
            "kube-apiserver",
            Command::new(peers.bin("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg(format!("--bind-address={bind_ip}"))
                .arg(format!("--advertise-address={bind_ip}"))
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", dir.join("pki").display()))
                .arg(format!("--tls-cert-file={}", serving.cert.display()))
                .arg(format!("--tls-private-key-file={}", serving.key.display()))
                .arg(format!("--client-ca-file={}", pki.ca.cert.display()))
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                .arg("--allow-privileged=true")
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", sa_pub.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    sa_key.display()
                ))
                .arg(format!("--audit-policy-file={}", audit_policy.display()))
                .arg(format!("--audit-log-path={}", audit_log.display()))
                .arg("--audit-log-mode=blocking"),
            &dir.join("kube-apiserver.log"),
        )?;

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &url,
            &pki.ca.cert,
            Credentials::Cert(&admin),
        )?;
        let client = client_from(&admin_kubeconfig).await?;
        apiserver
            .wait_ready(Duration::from_secs(60), || {
                let client = client.clone();
                async move {
                    let req = http::Request::get("/readyz").body(Vec::new());
                    match req {
                        Ok(r) => client.request_text(r).await.is_ok_and(|t| t == "ok"),
                        Err(_) => false,
                    }
                }
            })
            .await?;
        let kubernetes_version = client
            .apiserver_version()
            .await
            .context("reading the API server's version")?
            .git_version;

        // Garbage collection (owner references), namespace deletion and ClusterRole aggregation (Cluster API's
        // managers get their rules through aggregated ClusterRoles): without them deleted objects' dependents
        // and terminating namespaces stay forever, and Cluster API's managers are forbidden their own kinds.
        let controller_manager = Logged::spawn(
            "kube-controller-manager",
            Command::new(peers.bin("kube-controller-manager"))
                .arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
                .arg("--controllers=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller")
                .arg("--leader-elect=false")
                .arg("--secure-port=0")
                .stdin(Stdio::null()),
            &dir.join("kube-controller-manager.log"),
        )?;

        let mut cp = ControlPlane {
            controller_manager: Some(controller_manager),
            apiserver,
            etcd,
            pki,
            dir: dir.to_path_buf(),
            url,
            admin_kubeconfig,
            audit_log,
            kubernetes_version,
        };
        if let Some(kcm) = cp.controller_manager.as_mut() {
            // It has no health port here (--secure-port=0); alive after a few seconds means configured.
            let started = Instant::now();
            kcm.wait_ready(Duration::from_secs(10), || {
                let up = started.elapsed() > Duration::from_secs(2);
                async move { up }
            })
            .await?;
        }
        Ok(cp)
    }

    /// A client with the admin's certificate (group `system:masters`).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_from(&self.admin_kubeconfig).await
    }

    /// Writes `path`: a kubeconfig for ServiceAccount `namespace/name` with a token from the TokenRequest API
    /// (valid one hour) — what the ServiceAccount's pod would get mounted, so the real API server enforces
    /// exactly the RBAC rules bound to it.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> anyhow::Result<PathBuf> {
        let token = self.service_account_token(namespace, name).await?;
        write_kubeconfig(
            path,
            &self.url,
            &self.pki.ca.cert,
            Credentials::Token(&token),
        )?;
        Ok(path.to_path_buf())
    }

    /// Writes what the kubelet projects into a Pod of ServiceAccount `namespace/name` at
    /// `/var/run/secrets/kubernetes.io/serviceaccount`: `token` (TokenRequest, one hour), `ca.crt`,
    /// `namespace` — world-readable, as the kubelet's default mode (0644) makes them.
    pub async fn service_account_mount(
        &self,
        namespace: &str,
        name: &str,
        dir: &Path,
    ) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let token = self.service_account_token(namespace, name).await?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("token"), token)?;
        std::fs::copy(&self.pki.ca.cert, dir.join("ca.crt"))?;
        std::fs::write(dir.join("namespace"), namespace)?;
        for f in ["token", "ca.crt", "namespace"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest API, valid one hour.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = sas
            .create_token_request(name, &PostParams::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?
            .status
            .map(|s| s.token)
            .with_context(|| format!("TokenRequest for {namespace}/{name} returned no token"))?;
        Ok(token)
    }

    /// Writes `path`: a kubeconfig for user `name` in group `group` with a client certificate of the test CA.
    pub fn user_kubeconfig(&self, name: &str, group: &str, path: &Path) -> anyhow::Result<PathBuf> {
        let kp = self
            .pki
            .issue(name, &format!("/O={group}/CN={name}"), &[])?;
        write_kubeconfig(path, &self.url, &self.pki.ca.cert, Credentials::Cert(&kp))?;
        Ok(path.to_path_buf())
    }

    /// Every request of `user` the API server answered with 403 Forbidden, as `verb resource ns/name`.
    pub fn forbidden(&self, user: &str) -> Vec<String> {
        let mut lines = Vec::new();
        scan_audit(&self.audit_log, user, |l| {
            if l.contains("\"code\":403") {
                lines.push(l);
            }
        });
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["user"]["username"] == user && e["responseStatus"]["code"] == 403)
            .map(|e| {
                let o = &e["objectRef"];
                let resource = match o["subresource"].as_str() {
                    Some(sub) => format!("{}/{sub}", o["resource"].as_str().unwrap_or("")),
                    None => o["resource"].as_str().unwrap_or("").to_string(),
                };
                format!(
                    "{} {}.{} {}/{} ({})",
                    e["verb"].as_str().unwrap_or(""),
                    resource,
                    o["apiGroup"].as_str().unwrap_or(""),
                    o["namespace"].as_str().unwrap_or(""),
                    o["name"].as_str().unwrap_or(""),
                    e["requestURI"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// How many requests `user` made (a test that asserts "nothing was forbidden" also checks there were
    /// requests at all).
    pub fn requests_by(&self, user: &str) -> usize {
        count_requests(&self.audit_log, user)
    }
}

/// How many requests of `user` an audit log records.
pub fn count_requests(audit_log: &Path, user: &str) -> usize {
    let mut n = 0;
    scan_audit(audit_log, user, |_| n += 1);
    n
}

/// Calls `visit` with each audit log line about `user`, reading line by line (a benchmark's log has hundreds
/// of thousands; holding or parsing them all would dwarf what it measures).
fn scan_audit(audit_log: &Path, user: &str, mut visit: impl FnMut(String)) {
    use std::io::BufRead as _;
    let needle = format!("\"user\":{{\"username\":\"{user}\"");
    let Ok(file) = std::fs::File::open(audit_log) else {
        return;
    };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if line.contains(&needle) {
            visit(line);
        }
    }
}

enum Credentials<'a> {
    Cert(&'a KeyPair),
    Token(&'a str),
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    creds: Credentials<'_>,
) -> anyhow::Result<()> {
    let user = match creds {
        Credentials::Cert(kp) => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            kp.cert.display(),
            kp.key.display()
        ),
        Credentials::Token(t) => format!("    token: {t}\n"),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: e2e\n  user:\n{user}contexts:\n- name: e2e\n  \
         context: {{cluster: e2e, user: e2e}}\ncurrent-context: e2e\n",
        ca = ca.display()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    kube::Client::try_from(cfg).context("building a Kubernetes client")
}

/// Fails unless `cond` holds within `timeout` (polled every 250 ms); the error names `what` and shows the
/// last observation `cond` returned.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match cond().await {
            Ok(v) => return Ok(v),
            Err(last) => {
                if Instant::now() >= deadline {
                    bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_an_exited_process_with_its_log_and_a_running_one_with_the_detail() {
        let dir = tempfile::tempdir().unwrap();
        let mut exits = Logged::spawn(
            "exits",
            Command::new("sh").args(["-c", "echo first; echo boom >&2; exit 3"]),
            &dir.path().join("exits.log"),
        )
        .unwrap();
        crate::harness::poll("sh to exit", Duration::from_secs(10), || {
            exits.proc.exited()
        })
        .unwrap();
        let state = exits.state("unused");
        assert!(
            state.starts_with("exits exited (exit status: 3)"),
            "{state}"
        );
        assert!(state.contains("first\nboom"), "{state}");

        let mut runs = Logged::spawn(
            "runs",
            Command::new("sleep").arg("30"),
            &dir.path().join("runs.log"),
        )
        .unwrap();
        assert_eq!(runs.state("port 1 open"), "runs running; port 1 open");
        assert_eq!(runs.state(""), "runs running");
    }
}
