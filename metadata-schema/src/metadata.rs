//! `metadata.yaml`: the versions a release is made of.
use serde::{Deserialize, Serialize};

use crate::version::{KubernetesVersion, Version};

/// The only `apiVersion` that exists for metadata.yaml.
pub const METADATA_API_VERSION: &str = "metadata.clusterstack.x-k8s.io/v1alpha1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub api_version: String,
    pub versions: Versions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    pub cluster_stack: Version,
    pub kubernetes: KubernetesVersion,
    pub components: Components,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Components {
    pub cluster_addon: Version,
    /// Always written: the cluster-stack-operator rejects a release without it.
    pub node_image: Version,
}

impl Metadata {
    pub fn new(
        cluster_stack: Version,
        kubernetes: KubernetesVersion,
        cluster_addon: Version,
        node_image: Version,
    ) -> Self {
        Self {
            api_version: METADATA_API_VERSION.to_string(),
            versions: Versions {
                cluster_stack,
                kubernetes,
                components: Components {
                    cluster_addon,
                    node_image,
                },
            },
        }
    }

    /// The exact bytes upstream csctl writes (yaml.v3, 2-space indent, this key order), so that releases
    /// compare equal across tools.
    pub fn to_yaml(&self) -> String {
        let v = &self.versions;
        format!(
            "apiVersion: {}\nversions:\n  clusterStack: {}\n  kubernetes: {}\n  components:\n    clusterAddon: {}\n    nodeImage: {}\n",
            self.api_version,
            v.cluster_stack.dot(),
            v.kubernetes,
            v.components.cluster_addon.dot(),
            v.components.node_image.dot()
        )
    }
}
