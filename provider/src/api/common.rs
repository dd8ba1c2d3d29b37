//! Small types shared by several kinds.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object of a known kind in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct LocalRef {
    /// Name of the object.
    pub name: String,
}

/// A key in a Secret in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data; defaults to `value` (the CAPI bootstrap-data key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The object that holds a claim on a host (normally a `BeowulfMachine` in the same namespace).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The consumer's UID: a claim by a deleted-and-recreated object of the same name is not honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The API server endpoint of a cluster (CAPI `APIEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ApiEndpoint {
    /// Host name or IP address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// TCP port.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl ApiEndpoint {
    /// Both host and port are set.
    pub fn is_set(&self) -> bool {
        !self.host.is_empty() && self.port != 0
    }
}

/// One address of a machine (CAPI `MachineAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MachineAddress {
    /// One of `Hostname`, `ExternalIP`, `InternalIP`, `ExternalDNS`, `InternalDNS`.
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

/// `status.initialization` of the CAPI v1beta2 contract.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Initialization {
    /// True once the infrastructure is provisioned; never flips back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

/// `metadata` of a template's `spec.template` (labels and annotations only, as CAPI's `ObjectMeta`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TemplateMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
