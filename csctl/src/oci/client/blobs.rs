//! Blobs: whether the registry has one (HEAD), pushing one (already there → mount from another repository
//! this machine pushed it to → upload), fetching one (streamed and verified), and the per-registry record of
//! where this machine pushed each blob (the mount candidates).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::auth::{scope_pull, scope_push};
use super::upload::with_digest;
use super::{RegistryClient, verify_returned_digest, write_atomic};
use crate::oci::digest::{Digest, Hasher};
use crate::oci::error::OciError;
use crate::oci::progress::Progress;

/// What happened to one blob during a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had it (HEAD).
    Existed,
    /// Mounted from another repository of the same registry, no bytes sent.
    Mounted { from: String },
    /// Uploaded; `resumed_at` is the offset an interrupted session was resumed from (0 = fresh upload).
    Uploaded { bytes_sent: u64, resumed_at: u64 },
}

impl RegistryClient {
    /// `HEAD /v2/<repo>/blobs/<digest>`: the size if the registry has the blob.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, OciError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let scope = scope_pull(repo);
        let resp = self
            .send(Method::HEAD, &url, Some(&scope), |rb| rb, true)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check("HEAD", &url, repo, resp).await?;
        Ok(resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Pushes the blob in `path` (whose digest and size the caller computed) unless the registry has it.
    pub async fn push_blob(
        &self,
        repo: &str,
        path: &Path,
        digest: &Digest,
        size: u64,
        label: &str,
    ) -> Result<BlobPush, OciError> {
        if self.blob_size(repo, digest).await?.is_some() {
            self.remember_blob(repo, digest);
            return Ok(BlobPush::Existed);
        }
        let scope = scope_push(repo);
        for from in self.known_locations(repo, digest) {
            let mount_scope = format!("{scope} {}", scope_pull(&from));
            let url = self.url(&format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            ));
            let resp = self
                .send(
                    Method::POST,
                    &url,
                    Some(&mount_scope),
                    |rb| rb.header(CONTENT_LENGTH, 0),
                    true,
                )
                .await?;
            if resp.status() == StatusCode::CREATED {
                self.remember_blob(repo, digest);
                return Ok(BlobPush::Mounted { from });
            }
            // 202 means "no mount, here is an upload session instead": cancel it and upload normally.
            if let Some(loc) = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                && let Ok(loc) = self.base.join(&loc)
            {
                let _ = self
                    .send(Method::DELETE, loc.as_str(), Some(&scope), |rb| rb, false)
                    .await;
            }
        }
        let progress = Progress::bytes(
            &self.bars,
            self.opts.progress && size >= 8 << 20,
            size,
            label,
        );
        let result = self
            .upload(repo, path, digest, size, label, &progress)
            .await;
        progress.finish();
        let pushed = result?;
        self.remember_blob(repo, digest);
        Ok(pushed)
    }

    /// Pushes a small in-memory blob (the empty config) unless the registry has it.
    pub async fn push_blob_bytes(&self, repo: &str, data: &[u8]) -> Result<BlobPush, OciError> {
        let digest = Digest::of_bytes(data);
        if self.blob_size(repo, &digest).await?.is_some() {
            return Ok(BlobPush::Existed);
        }
        let location = self.start_session(repo).await?;
        let url = with_digest(&location, &digest);
        let scope = scope_push(repo);
        let body = Bytes::copy_from_slice(data);
        let resp = self
            .send(
                Method::PUT,
                &url,
                Some(&scope),
                |rb| {
                    rb.header(CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                },
                true,
            )
            .await?;
        verify_returned_digest(&self.check("PUT", &url, repo, resp).await?, &digest)?;
        Ok(BlobPush::Uploaded {
            bytes_sent: data.len() as u64,
            resumed_at: 0,
        })
    }

    /// Other repositories of this registry that received `digest` from us: candidates for a mount.
    fn known_locations(&self, repo: &str, digest: &Digest) -> Vec<String> {
        let Some(file) = self.blob_index_file() else {
            return Vec::new();
        };
        let index: HashMap<String, Vec<String>> = std::fs::read(&file)
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default();
        index
            .get(digest.as_str())
            .map(|v| v.iter().filter(|r| *r != repo).cloned().collect())
            .unwrap_or_default()
    }

    /// Records that `repo` now holds `digest`: a mount candidate for pushes to other repositories.
    fn remember_blob(&self, repo: &str, digest: &Digest) {
        let Some(file) = self.blob_index_file() else {
            return;
        };
        let mut index: HashMap<String, Vec<String>> = std::fs::read(&file)
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default();
        let repos = index.entry(digest.to_string()).or_default();
        if repos.iter().any(|r| r == repo) {
            return;
        }
        repos.push(repo.to_string());
        repos.sort();
        if let Ok(text) = serde_json::to_vec(&index) {
            let _ = write_atomic(&file, &text);
        }
    }

    fn blob_index_file(&self) -> Option<PathBuf> {
        let key = Digest::of_bytes(self.registry.as_bytes());
        Some(
            self.opts
                .state_dir
                .as_ref()?
                .join("blobs")
                .join(format!("{}.json", &key.hex()[..16])),
        )
    }

    /// GET of a blob, answered 2xx (a 404 is [`OciError::BlobNotFound`]); with its URL, for errors.
    async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(String, reqwest::Response), OciError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let scope = scope_pull(repo);
        let resp = self
            .send(Method::GET, &url, Some(&scope), |rb| rb, true)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(OciError::BlobNotFound {
                location: format!("{}/{repo}", self.registry),
                digest: digest.clone(),
            });
        }
        let resp = self.check("GET", &url, repo, resp).await?;
        Ok((url, resp))
    }

    /// Streams a blob into `dest`, verifying its digest and size. The file is removed on failure.
    pub async fn fetch_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        dest: &Path,
        label: &str,
    ) -> Result<(), OciError> {
        let (url, mut resp) = self.get_blob(repo, digest).await?;
        let progress = Progress::bytes(
            &self.bars,
            self.opts.progress && size >= 8 << 20,
            size,
            label,
        );
        let result: Result<(), OciError> = async {
            use std::io::Write;
            let mut out = std::fs::File::create(dest).map_err(|e| OciError::io(dest, e))?;
            let mut hasher = Hasher::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(&url, &e))? {
                hasher.update(&chunk);
                out.write_all(&chunk).map_err(|e| OciError::io(dest, e))?;
                progress.inc(chunk.len() as u64);
            }
            out.sync_all().map_err(|e| OciError::io(dest, e))?;
            let (got, len) = hasher.finish();
            if &got != digest || len != size {
                return Err(OciError::DigestMismatch {
                    what: format!("blob {label}"),
                    expected: format!("{digest} ({size} bytes)"),
                    actual: format!("{got} ({len} bytes)"),
                });
            }
            Ok(())
        }
        .await;
        progress.finish();
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    /// Reads a (small) blob into memory, verified.
    pub async fn fetch_blob_bytes(&self, repo: &str, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let (url, resp) = self.get_blob(repo, digest).await?;
        let data = resp.bytes().await.map_err(|e| self.unreachable(&url, &e))?;
        let got = Digest::of_bytes(&data);
        if &got != digest {
            return Err(OciError::DigestMismatch {
                what: format!("blob from {}/{repo}", self.registry),
                expected: digest.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(data.to_vec())
    }
}
