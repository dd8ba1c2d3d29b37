//! The OCI 1.1 image manifest of a cluster-stack release: written byte for byte by us (fixed field order,
//! sorted annotations, no timestamps) so the same release always has the same digest.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const ARTIFACT_TYPE: &str = "application/vnd.scs.cluster-stacks.v1";
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// What oras (and so upstream csctl) uses for files without a specific media type.
pub const DEFAULT_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Upstream csctl's layer media types (`pkg/cmd/mediatype.go`), chosen by file name.
pub fn layer_media_type(file_name: &str) -> &'static str {
    match file_name {
        "clusteraddon.yaml" => "application/vnd.scs.cluster-addon.config.layer.v1+yaml",
        "metadata.yaml" => "application/vnd.scs.metadata.layer.v1+yaml",
        "node-images.yaml" => "application/vnd.scs.node-image.config.layer.v1+yaml",
        // sic: upstream says +yaml for the JSON file
        "hashes.json" => "application/vnd.scs.hashes.layer.v1+yaml",
        n if n.ends_with(".tgz") && n.contains("cluster-addon") => {
            "application/vnd.scs.cluster-addon.layer.v1.tar+gzip"
        }
        n if n.ends_with(".tgz") && n.contains("cluster-class") => {
            "application/vnd.scs.cluster-class.v1.tar+gzip"
        }
        n if n.ends_with(".tgz") && n.contains("node-image") => {
            "application/vnd.scs.node-image.layer.v1.tar+gzip"
        }
        _ => DEFAULT_LAYER_MEDIA_TYPE,
    }
}

/// A content descriptor. Field order here is the byte order on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE_ANNOTATION).map(String::as_str)
    }

    /// The empty config `{}`, inlined as `data` the way oras-go packs OCI 1.1 manifests.
    pub fn empty_config() -> Self {
        Descriptor {
            media_type: EMPTY_CONFIG_MEDIA_TYPE.to_string(),
            digest: Digest::of_bytes(EMPTY_CONFIG),
            size: EMPTY_CONFIG.len() as u64,
            artifact_type: None,
            data: Some("e30=".to_string()),
            annotations: BTreeMap::new(),
        }
    }
}

/// An OCI image manifest. Serialising this struct gives the canonical bytes we push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid JSON for an OCI image manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "{0} is an image index (several manifests), not a cluster-stack release; pick one manifest by digest"
    )]
    Index(String),
    #[error("unsupported manifest media type {0:?}: expected {MANIFEST_MEDIA_TYPE}")]
    MediaType(String),
}

impl ImageManifest {
    /// A cluster-stack release manifest: layers in the given order, annotations sorted by key.
    pub fn release(layers: Vec<Descriptor>, annotations: BTreeMap<String, String>) -> Self {
        ImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
            artifact_type: Some(ARTIFACT_TYPE.to_string()),
            config: Descriptor::empty_config(),
            layers,
            annotations,
        }
    }

    /// Canonical bytes: compact JSON in struct field order (serde_json keeps declaration order; maps are
    /// BTreeMaps, so sorted).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and maps with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses manifest bytes fetched from a registry or layout; `content_type` is the media type the
    /// server reported, if any.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        let media_type = probe
            .media_type
            .as_deref()
            .or(content_type)
            .unwrap_or(MANIFEST_MEDIA_TYPE);
        if probe.manifests.is_some()
            || media_type == INDEX_MEDIA_TYPE
            || media_type.contains("manifest.list")
        {
            return Err(ManifestError::Index(media_type.to_string()));
        }
        if media_type != MANIFEST_MEDIA_TYPE && media_type != DOCKER_MANIFEST_MEDIA_TYPE {
            return Err(ManifestError::MediaType(media_type.to_string()));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_upstream() {
        assert_eq!(
            layer_media_type("hashes.json"),
            "application/vnd.scs.hashes.layer.v1+yaml"
        );
        assert_eq!(
            layer_media_type("docker-ferrol-1-27-cluster-class-v1.tgz"),
            "application/vnd.scs.cluster-class.v1.tar+gzip"
        );
        assert_eq!(
            layer_media_type("docker-ferrol-1-27-cluster-addon-v1.tgz"),
            "application/vnd.scs.cluster-addon.layer.v1.tar+gzip"
        );
        assert_eq!(
            layer_media_type("cluster-addon-values.yaml"),
            DEFAULT_LAYER_MEDIA_TYPE
        );
    }

    #[test]
    fn manifest_bytes_are_canonical() {
        let layer = Descriptor {
            media_type: layer_media_type("metadata.yaml").into(),
            digest: Digest::of_bytes(b"x"),
            size: 1,
            artifact_type: None,
            data: None,
            annotations: [(TITLE_ANNOTATION.to_string(), "metadata.yaml".to_string())].into(),
        };
        let ann: BTreeMap<_, _> = [
            ("kubernetesVersion".to_string(), "v1.27.3".to_string()),
            ("hash".to_string(), "abcdefg".to_string()),
        ]
        .into();
        let m = ImageManifest::release(vec![layer], ann);
        let text = String::from_utf8(m.to_bytes()).unwrap();
        let expected = concat!(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""artifactType":"application/vnd.scs.cluster-stacks.v1","#,
            r#""config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"#,
            r#""layers":[{"mediaType":"application/vnd.scs.metadata.layer.v1+yaml","digest":"sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881","size":1,"annotations":{"org.opencontainers.image.title":"metadata.yaml"}}],"#,
            r#""annotations":{"hash":"abcdefg","kubernetesVersion":"v1.27.3"}}"#
        );
        assert_eq!(text, expected);
        assert_eq!(ImageManifest::parse(text.as_bytes(), None).unwrap(), m);
    }

    #[test]
    fn refuses_indexes() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(
            ImageManifest::parse(idx, None),
            Err(ManifestError::Index(_))
        ));
    }
}
