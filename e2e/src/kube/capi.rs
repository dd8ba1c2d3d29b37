//! Cluster API in the management cluster, as a user installs it: `clusterctl init` from local repositories
//! (Cluster API's rendered from its module by `e2e/go-peers/build.sh`, ours written by `beowulf release`),
//! then Cluster API's three managers as host processes, each with the kubeconfig of the ServiceAccount its
//! components file creates (so the API server enforces Cluster API's own RBAC, aggregation included).
//!
//! What a cluster would do and this harness does instead, because nothing runs Pods here:
//! - cert-manager: its CRDs are applied before `clusterctl init`, which then finds it "installed"; nothing
//!   issues the Certificates, so the harness makes one webhook serving certificate (for 127.0.0.1) itself;
//! - the webhook Services have no endpoints: every webhook configuration and CRD conversion webhook of a
//!   Cluster API provider is pointed at its manager's host port (`url` + `caBundle`, what CAPI's own envtest
//!   does).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};

use super::control_plane::{ControlPlane, Logged, free_port, http_ok};
use super::peers::GoPeers;

/// One of Cluster API's managers: its clusterctl provider, where its components install, its binary.
pub struct ManagerSpec {
    /// clusterctl's provider label (`cluster-api`, `bootstrap-kubeadm`, `control-plane-kubeadm`).
    pub label: &'static str,
    pub namespace: &'static str,
    pub service_account: &'static str,
    pub binary: &'static str,
    pub feature_gates: &'static str,
}

/// Cluster API's managers, in the order `clusterctl init` installs them.
pub const MANAGERS: [ManagerSpec; 3] = [
    ManagerSpec {
        label: "cluster-api",
        namespace: "capi-system",
        service_account: "capi-manager",
        binary: "capi-manager",
        feature_gates: "ClusterTopology=true",
    },
    ManagerSpec {
        label: "bootstrap-kubeadm",
        namespace: "capi-kubeadm-bootstrap-system",
        service_account: "capi-kubeadm-bootstrap-manager",
        binary: "capi-kubeadm-bootstrap-manager",
        feature_gates: "",
    },
    ManagerSpec {
        label: "control-plane-kubeadm",
        namespace: "capi-kubeadm-control-plane-system",
        service_account: "capi-kubeadm-control-plane-manager",
        binary: "capi-kubeadm-control-plane-manager",
        feature_gates: "ClusterTopology=true",
    },
];

/// `clusterctl.yaml` with the four providers in local repositories; returns its path.
pub fn write_clusterctl_config(
    peers: &GoPeers,
    beowulf_components: &Path,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let provider = |name: &str, kind: &str, url: &Path| {
        format!("- name: {name}\n  type: {kind}\n  url: {}\n", url.display())
    };
    let text = [
        "# Every provider from a local repository: {label}/{version}/{components}.yaml + metadata.yaml.\n"
            .to_string(),
        "providers:\n".to_string(),
        provider(
            "cluster-api",
            "CoreProvider",
            &peers.capi_components("cluster-api", "core-components.yaml"),
        ),
        provider(
            "kubeadm",
            "BootstrapProvider",
            &peers.capi_components("bootstrap-kubeadm", "bootstrap-components.yaml"),
        ),
        provider(
            "kubeadm",
            "ControlPlaneProvider",
            &peers.capi_components("control-plane-kubeadm", "control-plane-components.yaml"),
        ),
        provider("beowulf", "InfrastructureProvider", beowulf_components),
    ]
    .concat();
    let path = dir.join("clusterctl.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A `clusterctl` command against the control plane: its own config, no version check against GitHub,
/// `CLUSTER_TOPOLOGY=true` (the README's instructions), state under `dir`.
pub fn clusterctl(peers: &GoPeers, cp: &ControlPlane, config: &Path, dir: &Path) -> Command {
    let mut c = Command::new(peers.bin("clusterctl"));
    c.arg("--config")
        .arg(config)
        .arg("--kubeconfig")
        .arg(&cp.admin_kubeconfig)
        .env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true")
        .env("CLUSTER_TOPOLOGY", "true")
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("HOME", dir)
        .env("PATH", peers.path_env());
    c
}

/// A `kubectl` command with the admin kubeconfig.
pub fn kubectl(peers: &GoPeers, cp: &ControlPlane) -> Command {
    let mut c = Command::new(peers.bin("kubectl"));
    c.arg("--kubeconfig").arg(&cp.admin_kubeconfig);
    c
}

/// Cluster API's three managers, running.
pub struct CapiManagers {
    pub managers: Vec<Logged>,
    /// Each manager's webhook port, in `managers`' order.
    webhook_ports: Vec<u16>,
}

impl CapiManagers {
    /// Each manager's state, for a failed test: a webhook call refused (as once in CI, with nothing else to
    /// go on) is either a manager that exited, shown with its log, or one that stopped serving.
    pub fn states(&mut self) -> Vec<String> {
        let mut states = Vec::new();
        for (m, port) in self.managers.iter_mut().zip(&self.webhook_ports) {
            let webhook = match std::net::TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, *port).into(),
                Duration::from_secs(2),
            ) {
                Ok(_) => format!("its webhook port {port} accepts connections"),
                Err(e) => format!("its webhook port {port} does not: {e}"),
            };
            states.push(m.state(&webhook));
        }
        states
    }

    /// Points the webhooks at host ports and starts the managers (after `clusterctl init`); waits until each
    /// is ready (its webhook server serves).
    pub async fn start(peers: &GoPeers, cp: &ControlPlane, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let serving = cp.pki.issue(
            "webhooks",
            "/CN=capi-webhooks",
            &["IP:127.0.0.1".to_string()],
        )?;
        let cert_dir = dir.join("webhook-certs");
        serving.install(&cert_dir)?;

        let mut webhook_ports = BTreeMap::new();
        for m in &MANAGERS {
            webhook_ports.insert(m.namespace.to_string(), free_port(Ipv4Addr::LOCALHOST)?);
        }
        point_webhooks_at_host(cp, &webhook_ports).await?;

        let mut managers = Vec::new();
        for m in &MANAGERS {
            let kubeconfig = cp
                .service_account_kubeconfig(
                    m.namespace,
                    m.service_account,
                    &dir.join(format!("{}.kubeconfig", m.label)),
                )
                .await?;
            let health = free_port(Ipv4Addr::LOCALHOST)?;
            let mut cmd = Command::new(peers.bin(m.binary));
            cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--webhook-port={}", webhook_ports[m.namespace]))
                .arg(format!("--webhook-cert-dir={}", cert_dir.display()))
                .arg(format!("--health-addr=127.0.0.1:{health}"))
                .arg(format!(
                    "--diagnostics-address=127.0.0.1:{}",
                    free_port(Ipv4Addr::LOCALHOST)?
                ))
                .arg("--insecure-diagnostics")
                // No leader election: one instance each, and outside a Pod controller-runtime cannot tell
                // the namespace its Lease would go to (the managers have no flag for it).
                .arg("--leader-elect=false")
                // The managers log every reconcile at the default level; 1 keeps the logs readable.
                .arg("--v=1");
            if !m.feature_gates.is_empty() {
                cmd.arg(format!("--feature-gates={}", m.feature_gates));
            }
            let mut proc =
                Logged::spawn(m.binary, &mut cmd, &dir.join(format!("{}.log", m.label)))?;
            let url = format!("http://127.0.0.1:{health}/readyz");
            proc.wait_ready(Duration::from_secs(90), || http_ok(&url))
                .await?;
            managers.push(proc);
        }
        let webhook_ports = MANAGERS
            .iter()
            .map(|m| webhook_ports[m.namespace])
            .collect();
        Ok(CapiManagers {
            managers,
            webhook_ports,
        })
    }
}

/// Rewrites a Service-based webhook client config to `https://127.0.0.1:<port><path>` with the test CA.
/// `false` when it belongs to none of `ports`' namespaces.
fn to_host(cc: &mut WebhookClientConfig, ports: &BTreeMap<String, u16>, ca: &[u8]) -> bool {
    let svc = cc.service.as_ref();
    let Some(url) = svc.and_then(|s| host_url(ports, &s.namespace, s.path.as_deref())) else {
        return false;
    };
    cc.url = Some(url);
    cc.service = None;
    cc.ca_bundle = Some(ByteString(ca.to_vec()));
    true
}

/// The host URL of the manager serving the webhooks of Service namespace `namespace`.
fn host_url(ports: &BTreeMap<String, u16>, namespace: &str, path: Option<&str>) -> Option<String> {
    let port = ports.get(namespace)?;
    Some(format!("https://127.0.0.1:{port}{}", path.unwrap_or("/")))
}

async fn point_webhooks_at_host(
    cp: &ControlPlane,
    ports: &BTreeMap<String, u16>,
) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let ca = cp.pki.ca_pem()?;
    let pp = PostParams::default();
    let mut pointed = 0;

    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for mut c in validating.list(&ListParams::default()).await?.items {
        let mut changed = false;
        for w in c.webhooks.iter_mut().flatten() {
            changed |= to_host(&mut w.client_config, ports, &ca);
        }
        if changed {
            let name = c.metadata.name.clone().unwrap_or_default();
            validating.replace(&name, &pp, &c).await?;
            pointed += 1;
        }
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for mut c in mutating.list(&ListParams::default()).await?.items {
        let mut changed = false;
        for w in c.webhooks.iter_mut().flatten() {
            changed |= to_host(&mut w.client_config, ports, &ca);
        }
        if changed {
            let name = c.metadata.name.clone().unwrap_or_default();
            mutating.replace(&name, &pp, &c).await?;
            pointed += 1;
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for mut crd in crds.list(&ListParams::default()).await?.items {
        // The same rewrite for a CRD's conversion webhook (a type of its own in apiextensions).
        let changed = crd
            .spec
            .conversion
            .as_mut()
            .and_then(|c| c.webhook.as_mut())
            .and_then(|w| w.client_config.as_mut())
            .is_some_and(|cc| {
                let svc = cc.service.as_ref();
                let Some(url) = svc.and_then(|s| host_url(ports, &s.namespace, s.path.as_deref()))
                else {
                    return false;
                };
                cc.url = Some(url);
                cc.service = None;
                cc.ca_bundle = Some(ByteString(ca.clone()));
                true
            });
        if changed {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.replace(&name, &pp, &crd).await?;
            pointed += 1;
        }
    }
    if pointed == 0 {
        bail!("no webhook of Cluster API found to point at the host: did `clusterctl init` run?");
    }
    Ok(())
}

/// Runs `clusterctl init` with the four providers; returns its output (stdout and stderr).
pub fn clusterctl_init(
    peers: &GoPeers,
    cp: &ControlPlane,
    config: &Path,
    dir: &Path,
    infrastructure: &str,
) -> anyhow::Result<String> {
    let capi = peers.version("cluster-api");
    let out = clusterctl(peers, cp, config, dir)
        .arg("init")
        .arg(format!("--core=cluster-api:{capi}"))
        .arg(format!("--bootstrap=kubeadm:{capi}"))
        .arg(format!("--control-plane=kubeadm:{capi}"))
        .arg(format!("--infrastructure={infrastructure}"))
        .output()
        .context("running clusterctl")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("clusterctl init failed ({}):\n{text}", out.status);
    }
    Ok(text)
}
