//! One interface over the two places an artifact can live: a registry repository or a local OCI layout.
use std::path::Path;

use super::client::{BlobPush, RegistryClient};
use super::digest::Digest;
use super::error::OciError;
use super::layout::Layout;
use super::manifest::{Descriptor, MANIFEST_MEDIA_TYPE};

#[allow(clippy::large_enum_variant)] // one Store per command; boxing buys nothing
pub enum Store {
    Registry {
        client: RegistryClient,
        repository: String,
    },
    Layout(Layout),
}

impl Store {
    /// `oci://host/repo` or `oci:DIR`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Registry { client, repository } => {
                format!("oci://{}/{repository}", client.registry())
            }
            Store::Layout(l) => format!("oci:{}", l.dir().display()),
        }
    }

    pub async fn resolve(&self, tag: &str) -> Result<Option<Digest>, OciError> {
        match self {
            Store::Registry { client, repository } => client.resolve(repository, tag).await,
            Store::Layout(l) => Ok(l.resolve(tag)?.map(|d| d.digest)),
        }
    }

    /// Manifest bytes and digest for a tag or digest.
    pub async fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Digest), OciError> {
        match self {
            Store::Registry { client, repository } => client
                .fetch_manifest(repository, reference)
                .await
                .map(|(b, d, _)| (b, d)),
            Store::Layout(l) => {
                let digest = match reference.parse::<Digest>() {
                    Ok(d) => d,
                    Err(_) => {
                        l.resolve(reference)?
                            .ok_or_else(|| OciError::ManifestNotFound {
                                reference: format!("{}:{reference}", self.describe()),
                            })?
                            .digest
                    }
                };
                let bytes = l.read_blob(&digest)?;
                Ok((bytes, digest))
            }
        }
    }

    pub async fn push_blob(
        &self,
        path: &Path,
        digest: &Digest,
        size: u64,
        label: &str,
    ) -> Result<BlobPush, OciError> {
        match self {
            Store::Registry { client, repository } => {
                client
                    .push_blob(repository, path, digest, size, label)
                    .await
            }
            Store::Layout(l) => {
                if l.has_blob(digest, size) {
                    return Ok(BlobPush::Existed);
                }
                l.put_blob_file(path, digest)?;
                Ok(BlobPush::Uploaded {
                    bytes_sent: size,
                    resumed_at: 0,
                })
            }
        }
    }

    pub async fn push_blob_bytes(&self, data: &[u8]) -> Result<BlobPush, OciError> {
        match self {
            Store::Registry { client, repository } => {
                client.push_blob_bytes(repository, data).await
            }
            Store::Layout(l) => {
                if l.has_blob(&Digest::of_bytes(data), data.len() as u64) {
                    return Ok(BlobPush::Existed);
                }
                l.put_blob_bytes(data)?;
                Ok(BlobPush::Uploaded {
                    bytes_sent: data.len() as u64,
                    resumed_at: 0,
                })
            }
        }
    }

    /// Stores the manifest and points `tag` at it.
    pub async fn push_manifest(
        &self,
        tag: &str,
        bytes: &[u8],
        artifact_type: Option<&str>,
    ) -> Result<Digest, OciError> {
        self.put_manifest(Some(tag), bytes, MANIFEST_MEDIA_TYPE, artifact_type)
            .await
    }

    /// Stores a manifest or image index of `media_type`, tagged `tag` or untagged (then a registry receives
    /// it under its digest, and a layout keeps it as a blob that an index refers to).
    pub async fn put_manifest(
        &self,
        tag: Option<&str>,
        bytes: &[u8],
        media_type: &str,
        artifact_type: Option<&str>,
    ) -> Result<Digest, OciError> {
        match self {
            Store::Registry { client, repository } => {
                let digest = Digest::of_bytes(bytes);
                let reference = tag.unwrap_or(digest.as_str());
                client
                    .push_manifest(repository, reference, bytes, media_type)
                    .await
            }
            Store::Layout(l) => {
                let digest = l.put_blob_bytes(bytes)?;
                if let Some(tag) = tag {
                    l.set_tag(
                        tag,
                        Descriptor {
                            media_type: media_type.to_string(),
                            digest: digest.clone(),
                            size: bytes.len() as u64,
                            artifact_type: artifact_type.map(str::to_string),
                            data: None,
                            annotations: Default::default(),
                        },
                    )?;
                }
                Ok(digest)
            }
        }
    }

    /// Writes a blob to `dest`, verified.
    pub async fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        dest: &Path,
        label: &str,
    ) -> Result<(), OciError> {
        match self {
            Store::Registry { client, repository } => {
                client
                    .fetch_blob(repository, digest, size, dest, label)
                    .await
            }
            Store::Layout(l) => {
                let src = l.blob_path(digest);
                let (got, len) = Digest::of_file(&src).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => OciError::BlobNotFound {
                        location: self.describe(),
                        digest: digest.clone(),
                    },
                    _ => OciError::io(&src, e),
                })?;
                if &got != digest || len != size {
                    return Err(OciError::DigestMismatch {
                        what: format!("blob {label} in {}", self.describe()),
                        expected: format!("{digest} ({size} bytes)"),
                        actual: format!("{got} ({len} bytes)"),
                    });
                }
                std::fs::copy(&src, dest).map_err(|e| OciError::io(dest, e))?;
                Ok(())
            }
        }
    }

    pub async fn fetch_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        match self {
            Store::Registry { client, repository } => {
                client.fetch_blob_bytes(repository, digest).await
            }
            Store::Layout(l) => l.read_blob(digest),
        }
    }

    pub async fn tags(&self) -> Result<Vec<String>, OciError> {
        match self {
            Store::Registry { client, repository } => client.list_tags(repository).await,
            Store::Layout(l) => l.tags(),
        }
    }
}
