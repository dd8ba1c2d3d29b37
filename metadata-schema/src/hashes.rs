//! `hashes.json`: content hashes of a release's inputs, used by stable mode to decide what changed.
use serde::{Deserialize, Serialize};

/// Upstream's four keys (same names, same algorithm: cleaned Go `dirhash` h1), so upstream csctl can read our
/// releases, plus per-component hashes of the inputs upstream does not track. Go's JSON decoder ignores the
/// extra keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hashes {
    /// The whole stack directory.
    #[serde(default)]
    pub cluster_stack: String,
    /// `cluster-addon/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_addon_dir: String,
    /// `cluster-addon-values.yaml` (old convention).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_addon_values: String,
    /// `node-image/` (singular, upstream's name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_image_dir: String,
    /// `cluster-class/` (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_class_dir: Option<String>,
    /// `clusteraddon.yaml` (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_addon_config: Option<String>,
    /// `csctl.yaml` / `csmctl.yaml` (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csctl_config: Option<String>,
    /// `node-images/` (plural, what provider plugins use; ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_images_dir: Option<String>,
}

impl Hashes {
    /// Indented JSON like upstream's (2 spaces, no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
