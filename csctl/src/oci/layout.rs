//! A local OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), readable by
//! `skopeo inspect --raw oci:DIR:TAG` and oras. Tags are `org.opencontainers.image.ref.name` annotations
//! in `index.json`. Every file is written to a temporary name and renamed, so a crash leaves no torn blob.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::client::write_atomic;
use super::digest::{Digest, Hasher};
use super::error::OciError;
use super::manifest::{Descriptor, INDEX_MEDIA_TYPE};

pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Where `csctl publish` writes when no registry is given: `$CSCTL_OCI_LAYOUT`, else
/// `$XDG_DATA_HOME/csctl/oci` (`~/.local/share/csctl/oci`).
pub fn default_layout_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("CSCTL_OCI_LAYOUT") {
        return d;
    }
    var("XDG_DATA_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("csctl/oci")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens an existing layout.
    pub fn open(dir: &Path) -> Result<Self, OciError> {
        let marker = dir.join(LAYOUT_FILE);
        if !marker.is_file() {
            return Err(OciError::Layout {
                dir: dir.to_path_buf(),
                detail:
                    "not an OCI image layout (no oci-layout file); publish something there first"
                        .into(),
            });
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens a layout, creating an empty one if the directory does not hold one yet.
    pub fn create(dir: &Path) -> Result<Self, OciError> {
        let marker = dir.join(LAYOUT_FILE);
        if !marker.is_file() {
            if dir.is_dir()
                && std::fs::read_dir(dir)
                    .map_err(|e| OciError::io(dir, e))?
                    .next()
                    .is_some()
            {
                return Err(OciError::Layout {
                    dir: dir.to_path_buf(),
                    detail:
                        "directory is not empty and not an OCI layout; refusing to write into it"
                            .into(),
                });
            }
            std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| OciError::io(dir, e))?;
            write_atomic(&dir.join("index.json"), br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#)
                .map_err(|e| OciError::io(dir.join("index.json"), e))?;
            write_atomic(&marker, LAYOUT_CONTENT).map_err(|e| OciError::io(&marker, e))?;
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        std::fs::metadata(self.blob_path(digest))
            .map(|m| m.len() == size)
            .unwrap_or(false)
    }

    /// Copies `src` into the blob store, verifying the digest while copying.
    pub fn put_blob_file(&self, src: &Path, digest: &Digest) -> Result<(), OciError> {
        let dest = self.blob_path(digest);
        let dir = self.dir.join("blobs/sha256");
        std::fs::create_dir_all(&dir).map_err(|e| OciError::io(&dir, e))?;
        let mut input = std::fs::File::open(src).map_err(|e| OciError::io(src, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| OciError::io(&dir, e))?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).map_err(|e| OciError::io(src, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| OciError::io(&dest, e))?;
        }
        let (got, _) = hasher.finish();
        if &got != digest {
            return Err(OciError::FileChanged {
                path: src.to_path_buf(),
                digest: digest.clone(),
            });
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| OciError::io(&dest, e))?;
        tmp.persist(&dest)
            .map_err(|e| OciError::io(&dest, e.error))?;
        Ok(())
    }

    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<Digest, OciError> {
        let digest = Digest::of_bytes(data);
        let dest = self.blob_path(&digest);
        if !self.has_blob(&digest, data.len() as u64) {
            write_atomic(&dest, data).map_err(|e| OciError::io(&dest, e))?;
        }
        Ok(digest)
    }

    /// Reads a blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let path = self.blob_path(digest);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::BlobNotFound {
                    location: format!("oci:{}", self.dir.display()),
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(OciError::io(&path, e)),
        };
        let got = Digest::of_bytes(&data);
        if &got != digest {
            return Err(OciError::DigestMismatch {
                what: path.display().to_string(),
                expected: digest.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(data)
    }

    fn read_index(&self) -> Result<Index, OciError> {
        let path = self.dir.join("index.json");
        let text = std::fs::read(&path).map_err(|e| OciError::io(&path, e))?;
        serde_json::from_slice(&text).map_err(|e| OciError::Layout {
            dir: self.dir.clone(),
            detail: format!("index.json is invalid: {e}"),
        })
    }

    /// The manifest descriptor tagged `tag`.
    pub fn resolve(&self, tag: &str) -> Result<Option<Descriptor>, OciError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(tag)))
    }

    /// Points `tag` at `manifest` (replacing an earlier entry with that tag); entries stay sorted by tag.
    pub fn set_tag(&self, tag: &str, mut manifest: Descriptor) -> Result<(), OciError> {
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) != Some(tag));
        manifest
            .annotations
            .insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
        index.manifests.push(manifest);
        index.manifests.sort_by(|a, b| {
            a.annotations
                .get(REF_NAME_ANNOTATION)
                .cmp(&b.annotations.get(REF_NAME_ANNOTATION))
        });
        index.media_type = Some(INDEX_MEDIA_TYPE.to_string());
        let text = serde_json::to_vec(&index).map_err(|e| OciError::Layout {
            dir: self.dir.clone(),
            detail: e.to_string(),
        })?;
        let path = self.dir.join("index.json");
        write_atomic(&path, &text).map_err(|e| OciError::io(&path, e))
    }

    pub fn tags(&self) -> Result<Vec<String>, OciError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|d| d.annotations.get(REF_NAME_ANNOTATION).cloned())
            .collect())
    }

    /// Tags and descriptors, for listing.
    pub fn entries(&self) -> Result<BTreeMap<String, Descriptor>, OciError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|d| {
                d.annotations
                    .get(REF_NAME_ANNOTATION)
                    .cloned()
                    .map(|t| (t, d))
            })
            .collect())
    }
}
