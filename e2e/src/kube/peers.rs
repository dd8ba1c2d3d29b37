//! Where `.ci/install` put the Go-built peers (`e2e/go-peers/build.sh`): `$BEOWULF_PEERS_DIR/go/current/`
//! with `bin/` (kube-apiserver, etcd, kube-controller-manager, kubectl, Cluster API's three managers,
//! clusterctl, kustomize, helm, the cluster-stack-operator), `repository/` (clusterctl repositories of Cluster
//! API's providers, rendered from the module), `cert-manager-crds.yaml`, `cluster-stack-operator-crds.yaml`
//! and `versions`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Debug, Clone)]
pub struct GoPeers {
    pub root: PathBuf,
    /// `kubernetes`, `cluster-api`, `helm`, `cert-manager`, `cluster-stack-operator` → `vX.Y.Z`.
    pub versions: BTreeMap<String, String>,
}

impl GoPeers {
    /// The installed peers, or an error that says how to install them.
    pub fn find() -> anyhow::Result<GoPeers> {
        let root = crate::peers_dir().join("go/current");
        let versions_file = root.join("versions");
        let text = std::fs::read_to_string(&versions_file).with_context(|| {
            format!(
                "the Go-built test peers are not installed ({} is missing): run `bash .ci/install` \
                 (needs Go and the Go module proxy; builds e2e/go-peers, about 10 minutes the first time)",
                versions_file.display()
            )
        })?;
        let versions = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let peers = GoPeers { root, versions };
        for name in BINARIES {
            if !peers.bin(name).is_file() {
                bail!(
                    "{} is missing: run `bash .ci/install`",
                    peers.bin(name).display()
                );
            }
        }
        Ok(peers)
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }

    pub fn version(&self, component: &str) -> &str {
        self.versions
            .get(component)
            .map_or("unknown", String::as_str)
    }

    /// clusterctl's local repositories of Cluster API's providers: `{label}/{version}/…`.
    pub fn repository(&self) -> PathBuf {
        self.root.join("repository")
    }

    /// A Cluster API provider's components file in [`Self::repository`].
    pub fn capi_components(&self, label: &str, file: &str) -> PathBuf {
        self.repository()
            .join(label)
            .join(self.version("cluster-api"))
            .join(file)
    }

    pub fn cert_manager_crds(&self) -> PathBuf {
        self.root.join("cert-manager-crds.yaml")
    }

    /// The cluster-stack-operator's CRDs (ClusterStack, ClusterStackRelease, ClusterAddon), from its module.
    pub fn cluster_stack_operator_crds(&self) -> PathBuf {
        self.root.join("cluster-stack-operator-crds.yaml")
    }

    /// `PATH` with the peers' `bin/` first (clusterctl and the cluster-stack-operator find `kubectl`/`helm`).
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.root.join("bin")];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).unwrap_or_default()
    }
}

const BINARIES: [&str; 13] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "capi-manager",
    "capi-kubeadm-bootstrap-manager",
    "capi-kubeadm-control-plane-manager",
    "clusterctl",
    "kustomize",
    "helm",
    "cluster-stack-operator",
    // not binaries, but the harness cannot work without them either
    "../cert-manager-crds.yaml",
    "../cluster-stack-operator-crds.yaml",
];

/// The last `n` lines of a log file (for errors that name a process that failed).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
