//! `BeowulfRemediation` / `BeowulfRemediationTemplate`: Cluster API's external remediation.
//!
//! A MachineHealthCheck whose `spec.remediation.templateRef` names a `BeowulfRemediationTemplate` creates, for
//! each unhealthy Machine, a `BeowulfRemediation` with the Machine's name (owned by it) from the template's
//! `spec.template`. The remediation controller then works through the strategy: power-cycle the Machine's host
//! through its BMC, re-provision the same host, and finally give up (the host is marked unhealthy, the Machine
//! deleted, and its MachineSet or control plane replaces it). MachineHealthCheck deletes the object as soon as
//! the Machine is healthy again, which ends the remediation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::TemplateMeta;

/// The remediation of one unhealthy Machine (same name and namespace as the Machine).
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "BeowulfRemediation",
    plural = "beowulfremediations",
    shortname = "bwr",
    category = "cluster-api",
    namespaced,
    status = "BeowulfRemediationStatus",
    derive = "Default",
    derive = "PartialEq",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"PowerCycles","type":"integer","jsonPath":".status.powerCycles"}"#,
    printcolumn = r#"{"name":"Reprovisioned","type":"boolean","jsonPath":".status.reprovisioned"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".status.host"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BeowulfRemediationSpec {
    #[serde(default)]
    pub strategy: RemediationStrategy,
}

/// Power cycles, then a re-provisioning, then giving up; each step waits for MachineHealthCheck to find the
/// Machine healthy (it then deletes the remediation) before the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationStrategy {
    /// Power cycles through the BMC before anything else (0 skips them). The host boots its image again
    /// with the same bootstrap data.
    #[serde(default = "default_power_cycles")]
    #[schemars(range(max = 10))]
    pub power_cycles: u32,
    /// How long to wait after the first power cycle for the Machine to become healthy; each further power
    /// cycle waits twice as long as the one before (at most 4 × this).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: u32,
    /// After the power cycles: provision the same host again (a fresh boot attempt with the same bootstrap
    /// data, with the provisioning timeouts and retries) before giving up.
    #[serde(default = "default_true")]
    pub reprovision: bool,
    /// How long the re-provisioning may take, the wait for health included. A host that ends in `error`
    /// ends it at once.
    #[serde(default = "default_reprovision_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub reprovision_timeout_seconds: u32,
}

fn default_power_cycles() -> u32 {
    1
}
fn default_timeout() -> u32 {
    300
}
fn default_true() -> bool {
    true
}
fn default_reprovision_timeout() -> u32 {
    1800
}

impl Default for RemediationStrategy {
    fn default() -> Self {
        RemediationStrategy {
            power_cycles: default_power_cycles(),
            timeout_seconds: default_timeout(),
            reprovision: true,
            reprovision_timeout_seconds: default_reprovision_timeout(),
        }
    }
}

/// Where a remediation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RemediationPhase {
    /// A power cycle was asked for or done; waiting for the Machine to become healthy.
    PowerCycling,
    /// The host is provisioned again; waiting for it and then for the Machine to become healthy.
    Reprovisioning,
    /// Nothing helped: the host is marked unhealthy and the Machine deleted (Cluster API replaces it).
    GaveUp,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeowulfRemediationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RemediationPhase>,
    /// Power cycles asked for so far.
    #[serde(default)]
    pub power_cycles: u32,
    /// Whether the re-provisioning was asked for.
    #[serde(default)]
    pub reprovisioned: bool,
    /// When the last step was asked for (its wait for health counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_remediated: Option<Time>,
    /// The step handed to the BeowulfMachine controller and not carried out yet (its request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// The BeowulfHost being remediated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `Paused`, and `Remediating` (True while steps remain; False with reason `GaveUp` at the end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a MachineHealthCheck's `spec.remediation.templateRef` names.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "BeowulfRemediationTemplate",
    plural = "beowulfremediationtemplates",
    shortname = "bwrt",
    category = "cluster-api",
    namespaced,
    derive = "Default",
    derive = "PartialEq",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn = r#"{"name":"PowerCycles","type":"integer","jsonPath":".spec.template.spec.strategy.powerCycles"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct BeowulfRemediationTemplateSpec {
    pub template: BeowulfRemediationTemplateResource,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct BeowulfRemediationTemplateResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMeta>,
    pub spec: BeowulfRemediationSpec,
}
