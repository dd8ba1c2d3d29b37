//! Sovereign Cloud Stack's cluster-stack-operator (built from its Go module by `e2e/go-peers/build.sh`) as a
//! host process against the management cluster's API server, reading cluster-stack releases from an OCI
//! registry — over HTTPS only, as it speaks no plain HTTP: the registry's test CA reaches it as `SSL_CERT_FILE`,
//! which Go's TLS stack honours. It renders each release's cluster-class chart with `helm template` (the
//! peers' helm, first on its `PATH`) and applies the objects.
//!
//! Its flags leave no way to move the webhook server off port 9443 (all addresses) or its certificate
//! directory off `$TMPDIR/k8s-webhook-server/serving-certs`: the process gets a `TMPDIR` of its own with a
//! certificate there, and no two operators run at once in the suite. Its webhooks are not registered with the
//! API server (the tests create only valid objects); the metrics server is left at its default `:8080`,
//! which the operator gives no flag for either.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use super::capi::kubectl;
use super::control_plane::{ControlPlane, Logged, free_port, http_ok};
use super::peers::GoPeers;
use crate::harness::try_run;

/// The API group of the operator's CRDs.
pub const GROUP: &str = "clusterstack.x-k8s.io";

pub struct ClusterStackOperator {
    pub process: Logged,
    /// Where it downloads releases (`<dir>/cluster-stacks/<tag>/`).
    pub release_dir: PathBuf,
}

impl ClusterStackOperator {
    /// Installs the operator's CRDs, then starts it with the OCI source `registry/repository` (`HOST:PORT/
    /// path`, HTTPS with the CA in `ca`); waits until it is ready.
    pub async fn start(
        peers: &GoPeers,
        cp: &ControlPlane,
        registry: &str,
        repository: &str,
        ca: &Path,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        try_run(
            kubectl(peers, cp)
                .args(["apply", "--server-side", "-f"])
                .arg(peers.cluster_stack_operator_crds()),
        )
        .context("applying the cluster-stack-operator's CRDs")?;
        try_run(kubectl(peers, cp).args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/clusterstacks.{GROUP}"),
            &format!("crd/clusterstackreleases.{GROUP}"),
            &format!("crd/clusteraddons.{GROUP}"),
        ]))?;

        let serving = cp.pki.issue(
            "cluster-stack-operator",
            "/CN=cluster-stack-operator",
            &["IP:127.0.0.1".to_string()],
        )?;
        let tmp = dir.join("tmp");
        let hook_certs = dir.join("hook-certs");
        serving.install(&tmp.join("k8s-webhook-server/serving-certs"))?;
        serving.install(&hook_certs)?;
        let release_dir = dir.join("releases");
        let probe = free_port(Ipv4Addr::LOCALHOST)?;
        let mut cmd = Command::new(peers.bin("cluster-stack-operator"));
        cmd.env("KUBECONFIG", &cp.admin_kubeconfig)
            .env("PATH", peers.path_env())
            .env("TMPDIR", &tmp)
            .env("SSL_CERT_FILE", ca)
            .env("OCI_REGISTRY", registry)
            .env("OCI_REPOSITORY", format!("{registry}/{repository}"))
            .arg("--source=oci")
            .arg(format!("--release-dir={}", release_dir.display()))
            // One instance; outside a Pod it could not tell which namespace its Lease belongs in.
            .arg("--leader-elect=false")
            .arg(format!("--health-probe-bind-address=127.0.0.1:{probe}"))
            .arg(format!("--hook-port={}", free_port(Ipv4Addr::LOCALHOST)?))
            .arg(format!("--hook-cert-dir={}", hook_certs.display()));
        let mut process = Logged::spawn(
            "cluster-stack-operator",
            &mut cmd,
            &dir.join("cluster-stack-operator.log"),
        )?;
        let url = format!("http://127.0.0.1:{probe}/readyz");
        process
            .wait_ready(Duration::from_secs(60), || http_ok(&url))
            .await?;
        Ok(ClusterStackOperator {
            process,
            release_dir,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}
