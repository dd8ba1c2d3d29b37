//! Manifests and tags: resolving a tag, fetching and pushing manifests (digests checked on both ways), and
//! listing tags page by page (`Link` headers).
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::auth::{scope_pull, scope_push};
use super::{RegistryClient, error_detail, verify_returned_digest};
use crate::oci::digest::Digest;
use crate::oci::error::OciError;
use crate::oci::manifest::{DOCKER_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};

impl RegistryClient {
    /// Sends `method` for a manifest, accepting every manifest type we read; returns the URL (for errors) and the
    /// unchecked response.
    async fn manifest_request(
        &self,
        method: Method,
        repo: &str,
        reference: &str,
    ) -> Result<(String, reqwest::Response), OciError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let scope = scope_pull(repo);
        let accept = [
            MANIFEST_MEDIA_TYPE,
            INDEX_MEDIA_TYPE,
            DOCKER_MANIFEST_MEDIA_TYPE,
        ]
        .join(", ");
        let resp = self
            .send(
                method,
                &url,
                Some(&scope),
                |rb| rb.header(ACCEPT, accept.clone()),
                true,
            )
            .await?;
        Ok((url, resp))
    }

    /// Resolves a tag to the digest of its manifest, `None` if the tag does not exist.
    pub async fn resolve(&self, repo: &str, tag: &str) -> Result<Option<Digest>, OciError> {
        let (url, resp) = self.manifest_request(Method::HEAD, repo, tag).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check("HEAD", &url, repo, resp).await?;
        if let Some(d) = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            && let Ok(d) = d.parse()
        {
            return Ok(Some(d));
        }
        Ok(Some(self.fetch_manifest(repo, tag).await?.1))
    }

    /// `GET` a manifest: its bytes (verified against a digest reference), digest and media type.
    pub async fn fetch_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Digest, Option<String>), OciError> {
        let (url, resp) = self.manifest_request(Method::GET, repo, reference).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            let detail = error_detail(resp).await;
            // distribution answers MANIFEST_UNKNOWN for a missing repository too; the tag list tells them apart.
            if detail.contains("NAME_UNKNOWN") || !self.repository_exists(repo).await {
                return Err(OciError::RepositoryNotFound {
                    registry: self.registry.clone(),
                    repository: repo.into(),
                });
            }
            return Err(OciError::ManifestNotFound {
                reference: format!("oci://{}/{repo}:{reference}", self.registry),
            });
        }
        let resp = self.check("GET", &url, repo, resp).await?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let data = resp.bytes().await.map_err(|e| self.unreachable(&url, &e))?;
        let digest = Digest::of_bytes(&data);
        if let Ok(expected) = reference.parse::<Digest>()
            && expected != digest
        {
            return Err(OciError::DigestMismatch {
                what: format!("manifest {reference}"),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok((data.to_vec(), digest, media_type))
    }

    /// False only if the registry says the repository is unknown.
    async fn repository_exists(&self, repo: &str) -> bool {
        let url = self.url(&format!("/v2/{repo}/tags/list?n=1"));
        let scope = scope_pull(repo);
        match self
            .send(Method::GET, &url, Some(&scope), |rb| rb, false)
            .await
        {
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                !error_detail(resp).await.contains("NAME_UNKNOWN")
            }
            _ => true,
        }
    }

    /// `PUT` a manifest under `tag`; checks the registry computed the same digest we did.
    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, OciError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let scope = scope_push(repo);
        let body = Bytes::copy_from_slice(bytes);
        let resp = self
            .send(
                Method::PUT,
                &url,
                Some(&scope),
                |rb| rb.header(CONTENT_TYPE, media_type).body(body.clone()),
                true,
            )
            .await?;
        let resp = self.check("PUT", &url, repo, resp).await?;
        let ours = Digest::of_bytes(bytes);
        verify_returned_digest(&resp, &ours)?;
        Ok(ours)
    }

    /// All tags of `repo`, following `Link: <…>; rel="next"` pagination.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, OciError> {
        let scope = scope_pull(repo);
        let mut url = self.url(&format!(
            "/v2/{repo}/tags/list?n={}",
            self.opts.tags_page_size
        ));
        let mut tags = Vec::new();
        loop {
            let resp = self
                .send(Method::GET, &url, Some(&scope), |rb| rb, true)
                .await?;
            let resp = self.check("GET", &url, repo, resp).await?;
            let next = next_link(resp.headers());
            #[derive(Deserialize)]
            struct TagList {
                tags: Option<Vec<String>>,
            }
            let page: TagList = resp.json().await.map_err(|e| OciError::Protocol {
                registry: self.registry.clone(),
                method: "GET".into(),
                url: url.clone(),
                status: 200,
                detail: format!("tag list is not JSON: {e}"),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => url = self.base.join(&n).map(|u| u.to_string()).unwrap_or(n),
                None => break,
            }
        }
        Ok(tags)
    }
}

pub(super) fn next_link(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("Link")?.to_str().ok()?;
    v.split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Some(part[start..end].to_string())
        })
}
