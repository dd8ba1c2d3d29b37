//! `BeowulfMachine` / `BeowulfMachineTemplate`: the CAPI InfraMachine.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Initialization, LocalRef, MachineAddress, TemplateMeta};
use crate::hardware::requirements::HardwareRequirements;

/// One CAPI machine, fulfilled by claiming a [`super::BeowulfHost`] and network-booting it.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "BeowulfMachine",
    plural = "beowulfmachines",
    shortname = "bwm",
    category = "cluster-api",
    namespaced,
    status = "BeowulfMachineStatus",
    derive = "Default",
    derive = "PartialEq",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.hostRef.name"}"#,
    printcolumn = r#"{"name":"ProviderID","type":"string","jsonPath":".spec.providerID"}"#,
    printcolumn = r#"{"name":"Provisioned","type":"boolean","jsonPath":".status.initialization.provisioned"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.lastBootPhase","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BeowulfMachineSpec {
    /// `beowulf://<namespace>/<host>`, set once the host called back; equals the Node's providerID.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// The image to boot.
    pub image_ref: LocalRef,
    /// Which hosts may be claimed; empty selects every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selector: Option<LabelSelector>,
    /// What the host's inspected hardware (`BeowulfHost.status.hardware`) must offer: architecture, CPU
    /// threads, memory, disks, GPUs, NIC speed. Hosts that miss one are never claimed; a non-empty
    /// requirement never matches a host that was not inspected. Checked at the claim only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_requirements: Option<HardwareRequirements>,
    /// Local disks the node keeps (`/var/lib/etcd`, `/scratch`, …), by serial, wwn or byPath, or by `kind`
    /// and `minSizeBytes` from the claimed host's inspected hardware. Added to the host's own `localDisks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_disks: Vec<crate::storage::LocalDisk>,
    /// The claimed host. Set by the controller after the claim (kept in spec so `clusterctl move` keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ref: Option<LocalRef>,
}

/// Status under the CAPI v1beta2 contract (plus `ready` for v1beta1 readers).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeowulfMachineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// v1beta1 contract compatibility: mirrors `initialization.provisioned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    /// The rack the claimed host sits in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// The claimed host's last boot phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_boot_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The InfraMachineTemplate (MachineDeployments, KubeadmControlPlane and ClusterClass clone it).
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "BeowulfMachineTemplate",
    plural = "beowulfmachinetemplates",
    shortname = "bwmt",
    category = "cluster-api",
    namespaced,
    derive = "Default",
    derive = "PartialEq",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.template.spec.imageRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct BeowulfMachineTemplateSpec {
    pub template: BeowulfMachineTemplateResource,
}

/// `spec.template` of a [`BeowulfMachineTemplate`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct BeowulfMachineTemplateResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMeta>,
    pub spec: BeowulfMachineSpec,
}
