//! `clusteraddon.yaml`: the multi-stage ("new") cluster-addon convention.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Hooks the cluster-stack-operator knows.
pub const KNOWN_HOOKS: [&str; 3] = [
    "AfterControlPlaneInitialized",
    "BeforeClusterUpgrade",
    "AfterClusterUpgrade",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAddonConfig {
    pub api_version: String,
    #[serde(default)]
    pub cluster_addon_version: Option<String>,
    /// Hook name → ordered stages.
    pub addon_stages: BTreeMap<String, Vec<Stage>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// The subchart directory `cluster-addon/<name>/`.
    pub name: String,
    pub action: String,
    #[serde(default)]
    pub wait_for_pre_condition: Option<serde_json::Value>,
    #[serde(default)]
    pub wait_for_post_condition: Option<serde_json::Value>,
}

impl ClusterAddonConfig {
    /// Every stage name, deduplicated, sorted.
    pub fn stage_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .addon_stages
            .values()
            .flatten()
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}
