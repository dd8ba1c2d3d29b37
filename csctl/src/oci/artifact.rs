//! A release directory as an OCI artifact: one layer per file (sorted by name), upstream media types,
//! titles, and the `kubernetesVersion` / `hash` manifest annotations. No clock, no host: same release,
//! same manifest digest.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::digest::Digest;
use super::digest_cache::DigestCache;
use super::manifest::{Descriptor, ImageManifest, TITLE_ANNOTATION, layer_media_type};
use super::reference::valid_tag;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} is not a release directory: it has no metadata.yaml (build one with `csctl create`)"
    )]
    NotARelease(PathBuf),
    #[error("{path}: cannot read versions.kubernetes: {detail}")]
    Metadata { path: PathBuf, detail: String },
    #[error("{path}: release directories are flat; {what} is not allowed here")]
    NotFlat { path: PathBuf, what: String },
    #[error("release directory name {0:?} is not usable as an OCI tag")]
    BadTag(String),
}

#[derive(Clone, Debug)]
pub struct ArtifactFile {
    pub name: String,
    pub path: PathBuf,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct Artifact {
    pub tag: String,
    pub files: Vec<ArtifactFile>,
    pub annotations: BTreeMap<String, String>,
}

impl Artifact {
    /// Reads a release directory (as written by `csctl create`); hashes every file.
    pub fn from_release_dir(dir: &Path) -> Result<Self, ArtifactError> {
        Self::from_release_dir_cached(dir, &mut DigestCache::open(None))
    }

    /// Like `from_release_dir`, reusing digests of unchanged big files from `cache`.
    pub fn from_release_dir_cached(
        dir: &Path,
        cache: &mut DigestCache,
    ) -> Result<Self, ArtifactError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ArtifactError::Io { path, source }
        };
        let meta_path = dir.join("metadata.yaml");
        if !meta_path.is_file() {
            return Err(ArtifactError::NotARelease(dir.to_path_buf()));
        }
        let canonical = dir.canonicalize().map_err(io(dir))?;
        let tag = canonical
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !valid_tag(&tag) {
            return Err(ArtifactError::BadTag(tag));
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = entry.file_type().map_err(io(&path))?;
            if ft.is_symlink() {
                return Err(ArtifactError::NotFlat {
                    path,
                    what: "a symbolic link".into(),
                });
            }
            if ft.is_dir() {
                return Err(ArtifactError::NotFlat {
                    path,
                    what: "a subdirectory".into(),
                });
            }
            if !ft.is_file() {
                return Err(ArtifactError::NotFlat {
                    path,
                    what: "a special file".into(),
                });
            }
            let (digest, size) = cache.digest(&path).map_err(io(&path))?;
            files.push(ArtifactFile {
                media_type: layer_media_type(&name).to_string(),
                name,
                path,
                digest,
                size,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));

        let mut annotations = BTreeMap::new();
        annotations.insert(
            "kubernetesVersion".to_string(),
            kubernetes_version(&meta_path)?,
        );
        if let Some(hash) = stack_hash(&dir.join("hashes.json")) {
            annotations.insert("hash".to_string(), hash);
        }
        Ok(Artifact {
            tag,
            files,
            annotations,
        })
    }

    pub fn manifest(&self) -> ImageManifest {
        let layers = self
            .files
            .iter()
            .map(|f| Descriptor {
                media_type: f.media_type.clone(),
                digest: f.digest.clone(),
                size: f.size,
                artifact_type: None,
                data: None,
                annotations: [(TITLE_ANNOTATION.to_string(), f.name.clone())].into(),
            })
            .collect();
        ImageManifest::release(layers, self.annotations.clone())
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn kubernetes_version(path: &Path) -> Result<String, ArtifactError> {
    #[derive(Deserialize)]
    struct Meta {
        versions: Versions,
    }
    #[derive(Deserialize)]
    struct Versions {
        kubernetes: String,
    }
    let text = std::fs::read_to_string(path).map_err(|source| ArtifactError::Io {
        path: path.into(),
        source,
    })?;
    let meta: Meta = serde_saphyr::from_str(&text).map_err(|e| ArtifactError::Metadata {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(meta.versions.kubernetes)
}

/// Upstream's `hash` annotation: the first 7 characters of the whole-stack hash in `hashes.json`.
fn stack_hash(path: &Path) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Hashes {
        cluster_stack: String,
    }
    let text = std::fs::read(path).ok()?;
    let h: Hashes = serde_json::from_slice(&text).ok()?;
    Some(h.cluster_stack.chars().take(7).collect())
}
