//! The clusterctl provider repository: `beowulf release` writes
//! `<out>/infrastructure-beowulf/<version>/` with `metadata.yaml`, `infrastructure-components.yaml`, the
//! cluster templates and the ClusterClass. Same version in → same bytes out.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::api::{CONTRACT, crds};

/// clusterctl's provider label.
pub const PROVIDER_LABEL: &str = "infrastructure-beowulf";
/// The namespace the components install into (clusterctl `--target-namespace` rewrites it).
pub const NAMESPACE: &str = "beowulf-system";
/// The default manager image repository.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/beowulf-hpc/beowulf";

pub mod image;

/// The manager image by tag only (`beowulf release` without `--binaries`: no image was built here).
pub fn default_image(v: &Version) -> String {
    format!("{IMAGE_REPOSITORY}:{}", v.tag)
}

/// The default cluster template.
pub const CLUSTER_TEMPLATE: &str = include_str!("cluster-template.yaml");
/// Flavor `topology`.
pub const CLUSTER_TEMPLATE_TOPOLOGY: &str = include_str!("cluster-template-topology.yaml");
/// ClusterClass `beowulf-default`.
pub const CLUSTERCLASS_DEFAULT: &str = include_str!("clusterclass-beowulf-default.yaml");

/// Release failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid version {0:?}: expected vMAJOR.MINOR.PATCH, for example v0.1.0")]
    Version(String),
    #[error("rendering YAML: {0}")]
    Yaml(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A parsed `vX.Y.Z`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub tag: String,
    pub major: u64,
    pub minor: u64,
}

impl Version {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::Version(s.to_string());
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let v = semver::Version::parse(rest).map_err(|_| bad())?;
        Ok(Version {
            tag: s.to_string(),
            major: v.major,
            minor: v.minor,
        })
    }
}

/// `metadata.yaml`: clusterctl v1alpha3, one release series per minor, contract v1beta2.
pub fn metadata_yaml(v: &Version) -> String {
    format!(
        "# clusterctl provider metadata: which CAPI contract each release series implements.\n\
         apiVersion: clusterctl.cluster.x-k8s.io/v1alpha3\n\
         kind: Metadata\n\
         releaseSeries:\n\
         - major: {}\n  minor: {}\n  contract: {CONTRACT}\n",
        v.major, v.minor
    )
}

fn provider_labels() -> Value {
    json!({"cluster.x-k8s.io/provider": PROVIDER_LABEL})
}

fn with_provider_label(mut obj: Value) -> Value {
    let labels = obj["metadata"]
        .as_object_mut()
        .map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(Value::Object(l)) = labels {
        l.insert("cluster.x-k8s.io/provider".into(), json!(PROVIDER_LABEL));
    }
    obj
}

/// Every object of `infrastructure-components.yaml`, in install order.
/// The components; the Deployment runs `image` unless `BEOWULF_IMAGE` says otherwise.
pub fn components(image: &str) -> Result<Vec<Value>, Error> {
    let mut out = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": provider_labels()},
    })];
    for crd in crds::all() {
        out.push(with_provider_label(
            serde_json::to_value(&crd).map_err(|e| Error::Yaml(e.to_string()))?,
        ));
    }
    out.push(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "beowulf-manager", "namespace": NAMESPACE, "labels": provider_labels()},
    }));
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "beowulf-manager-role", "labels": provider_labels()},
        "rules": [
            {"apiGroups": ["infrastructure.cluster.x-k8s.io"],
             "resources": ["beowulfhosts", "beowulfimages", "beowulfclusters", "beowulfclustertemplates",
                           "beowulfmachines", "beowulfmachinetemplates", "beowulfremediations",
                           "beowulfremediationtemplates"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": ["infrastructure.cluster.x-k8s.io"],
             "resources": ["beowulfhosts/status", "beowulfclusters/status", "beowulfmachines/status",
                           "beowulfremediations/status"],
             "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["cluster.x-k8s.io"], "resources": ["clusters", "machines"],
             "verbs": ["get", "list", "watch"]},
            // Remediation's last step: delete the Machine, for its owner to replace.
            {"apiGroups": ["cluster.x-k8s.io"], "resources": ["machines"], "verbs": ["delete"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "create", "update"]},
            // The diagnostics endpoint has the API server check each scraper's token.
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ],
    }));
    // What a scraper (Prometheus' ServiceAccount) is bound to, to read `/metrics`.
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "beowulf-metrics-reader", "labels": provider_labels()},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
    }));
    // What an operator is bound to, to read hosts' captured consoles from the diagnostics endpoint.
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "beowulf-console-reader", "labels": provider_labels()},
        "rules": [{"apiGroups": ["infrastructure.cluster.x-k8s.io"], "resources": ["beowulfhosts/console"],
                   "verbs": ["get"]}],
    }));
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "beowulf-manager-rolebinding", "labels": provider_labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "beowulf-manager-role"},
        "subjects": [{"kind": "ServiceAccount", "name": "beowulf-manager", "namespace": NAMESPACE}],
    }));
    let image = format!("${{BEOWULF_IMAGE:={image}}}");
    out.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "beowulf-controller-manager", "namespace": NAMESPACE, "labels": provider_labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"control-plane": "beowulf-controller-manager"}},
            // The boot plane binds host ports (DHCP 67, TFTP 69): never two managers on one node.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": {"control-plane": "beowulf-controller-manager",
                                        "cluster.x-k8s.io/provider": PROVIDER_LABEL}},
                "spec": {
                    "serviceAccountName": "beowulf-manager",
                    // DHCP and TFTP must see the provisioning network's broadcast traffic.
                    "hostNetwork": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {"${BEOWULF_NODE_SELECTOR_KEY:=beowulf.io/boot-plane}": "${BEOWULF_NODE_SELECTOR_VALUE:=true}"},
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "manager",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/beowulf"],
                        "args": [
                            "manager",
                            "--leader-elect",
                            // `*`: unset. clusterctl treats a variable with an empty default as required.
                            "--namespace=${BEOWULF_WATCH_NAMESPACE:=*}",
                            "--watch-filter=${BEOWULF_WATCH_FILTER:=*}",
                            "--diagnostics-address=${BEOWULF_DIAGNOSTICS_ADDRESS:=:8443}",
                            "--insecure-diagnostics=${BEOWULF_INSECURE_DIAGNOSTICS:=false}",
                            "--health-bind-address=${BEOWULF_HEALTH_BIND_ADDRESS:=:9440}",
                            // `*`: all interfaces; the boot plane's address is the node's ($HOST_IP below).
                            "--boot-interface=${BEOWULF_BOOT_INTERFACE:=*}",
                            "--boot-server-ip=${BEOWULF_BOOT_SERVER_IP:=*}",
                            "--boot-http-port=${BEOWULF_BOOT_HTTP_PORT:=8081}",
                            // `*`: no inspection; a BeowulfImage name in the hosts' namespace turns it on.
                            "--inspection-image=${BEOWULF_INSPECTION_IMAGE:=*}",
                            "--discovery-namespace=${BEOWULF_DISCOVERY_NAMESPACE:=*}",
                            "--discovery-network=${BEOWULF_DISCOVERY_NETWORK:=*}",
                            "--discovery-range=${BEOWULF_DISCOVERY_RANGE:=*}",
                        ],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        ],
                        "ports": [{"name": "healthz", "containerPort": 9440, "protocol": "TCP"}],
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "healthz"}},
                        "securityContext": {
                            // The image's user is nonroot; the boot plane needs the three capabilities
                            // below, which Kubernetes grants a non-root process only in its bounding set.
                            "runAsUser": 0,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]},
                        },
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                      "limits": {"memory": "512Mi"}},
                    }],
                    "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                },
            },
        },
    }));
    Ok(out)
}

/// `infrastructure-components.yaml` as text. Every string is quoted: clusterctl substitutes variables in the
/// text before parsing it, and an unquoted `${VAR:=true}` would turn into a boolean where Kubernetes wants a
/// string (a nodeSelector value; clusterctl then fails with "unrecognized type: string").
pub fn components_yaml(image: &str) -> Result<String, Error> {
    let options = serde_saphyr::ser_options! { quote_all: true };
    let mut s = String::new();
    for obj in components(image)? {
        s.push_str("---\n");
        s.push_str(
            &serde_saphyr::to_string_with_options(&obj, options)
                .map_err(|e| Error::Yaml(e.to_string()))?,
        );
    }
    Ok(s)
}

/// The files of one release, name → content.
pub fn files(v: &Version, image: &str) -> Result<Vec<(&'static str, String)>, Error> {
    Ok(vec![
        ("metadata.yaml", metadata_yaml(v)),
        ("infrastructure-components.yaml", components_yaml(image)?),
        ("cluster-template.yaml", CLUSTER_TEMPLATE.to_string()),
        (
            "cluster-template-topology.yaml",
            CLUSTER_TEMPLATE_TOPOLOGY.to_string(),
        ),
        (
            "clusterclass-beowulf-default.yaml",
            CLUSTERCLASS_DEFAULT.to_string(),
        ),
    ])
}

/// Writes the release under `out/infrastructure-beowulf/<version>/`; each file is written to a temporary
/// name and renamed, so an interrupted run never leaves a half-written file. Returns the directory.
pub fn write(out: &Path, v: &Version, image: &str) -> Result<PathBuf, Error> {
    let dir = out.join(PROVIDER_LABEL).join(&v.tag);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for (name, content) in files(v, image)? {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests;
