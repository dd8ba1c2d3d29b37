//! `BeowulfImage`: what a host boots.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A network-bootable image: kernel, initrd(s), optional live root filesystem and the command line.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "BeowulfImage",
    plural = "beowulfimages",
    shortname = "bwi",
    category = "cluster-api",
    namespaced,
    derive = "Default",
    derive = "PartialEq",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn = r#"{"name":"Format","type":"string","jsonPath":".spec.format"}"#,
    printcolumn = r#"{"name":"Kernel","type":"string","jsonPath":".spec.kernel.url","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BeowulfImageSpec {
    pub kernel: Artifact,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initrds: Vec<Artifact>,
    /// The live root filesystem (squashfs) for `format: live`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Artifact>,
    /// Kernel command line template; the boot plane fills in `{{ hostname }}`, `{{ bootif }}`, `{{ token }}`,
    /// `{{ server }}` and `{{ rootfs_url }}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
    #[serde(default)]
    pub format: ImageFormat,
}

/// One downloadable boot artifact.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Artifact {
    /// `http(s)://` URL, or a path relative to the boot plane's artifact root.
    pub url: String,
    /// Hex SHA-256 of the artifact, checked when the boot plane caches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// How the image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Stateless: the root filesystem is loaded into RAM on every boot.
    #[default]
    Live,
    /// Installed to the local disk by the image's own installer.
    Disk,
}
