//! `csctl.yaml` (or the old name `csmctl.yaml`): what a stack directory is.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::version::KubernetesVersion;

/// File names accepted for the stack config, in lookup order.
pub const CSCTL_CONFIG_FILES: [&str; 2] = ["csctl.yaml", "csmctl.yaml"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsctlConfig {
    pub api_version: String,
    pub config: StackConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackConfig {
    pub kubernetes_version: KubernetesVersion,
    pub cluster_stack_name: String,
    pub provider: ProviderConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub api_version: Option<String>,
    /// Free-form; upstream runs a `csctl-<type>` plugin when it is non-empty.
    #[serde(default)]
    pub config: Option<BTreeMap<String, serde_json::Value>>,
}

impl CsctlConfig {
    /// `<provider>-<name>-<maj>-<min>`: the prefix of every release, chart and ClusterClass name.
    pub fn stack_prefix(&self) -> String {
        format!(
            "{}-{}-{}",
            self.config.provider.kind,
            self.config.cluster_stack_name,
            self.config.kubernetes_version.minor_dashed()
        )
    }
}
