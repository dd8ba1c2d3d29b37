//! A thin OCI distribution client on reqwest. Written in-house (not oci-client) because we need the exact
//! manifest bytes, resumable upload sessions and per-request control (see docs/architecture.md, "csctl OCI:
//! client, layout, publish/pull"). This file owns the client itself: options, construction, sending a request (retries, one
//! answered auth challenge) and mapping failure statuses to [`OciError`]. The protocol is split by topic:
//! `auth` (challenges, tokens, ping), `blobs` (HEAD, mount, push, fetch), `upload` (chunked and resumable
//! uploads), `manifests` (manifests and tag lists).
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::credentials::ResolvedCredential;
use super::digest::Digest;
use super::error::OciError;
use super::reference::Reference;

mod auth;
mod blobs;
mod manifests;
mod upload;

use auth::AuthState;
pub use blobs::BlobPush;

/// Default upload chunk. Every chunk is one PATCH streamed from the file (memory use does not depend on it).
/// Fewer chunks are faster: distribution syncs the upload file to disk at the end of every PATCH and the next
/// chunk cannot start before the answer (a 1 GiB push to a local registry: 9–15 s in 16 MiB chunks, 8–12 s
/// in one PATCH). More chunks lose less on an interruption: distribution drops a session whose last PATCH
/// was cut, so a rerun resumes from the last complete chunk. 256 MiB: a GiB in 4 requests, at most 256 MiB
/// sent again. Registries that cap request bodies need less (GHCR: `--chunk-size 4MiB`).
pub const DEFAULT_CHUNK_SIZE: u64 = 256 << 20;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `None`: plain HTTP for loopback registries, HTTPS otherwise.
    pub plain_http: Option<bool>,
    /// Extra CA certificates (PEM files) trusted in addition to the system roots.
    pub ca_files: Vec<PathBuf>,
    pub chunk_size: u64,
    /// Attempts after a transient failure (connection reset, 5xx, 429).
    pub retries: u32,
    /// Where interrupted upload sessions and known blob locations are remembered between runs.
    pub state_dir: Option<PathBuf>,
    pub progress: bool,
    /// Page size for tag lists (`n=`); registries may cap it.
    pub tags_page_size: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            plain_http: None,
            ca_files: Vec::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            retries: 3,
            state_dir: default_state_dir(),
            progress: false,
            tags_page_size: 1000,
        }
    }
}

/// `$XDG_STATE_HOME/csctl` or `~/.local/state/csctl`.
pub fn default_state_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_STATE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("csctl"))
}

/// A client for one registry.
pub struct RegistryClient {
    http: reqwest::Client,
    base: url::Url,
    registry: String,
    credential: ResolvedCredential,
    auth: Mutex<AuthState>,
    opts: ClientOptions,
    /// One progress bar per blob in flight, drawn together.
    bars: indicatif::MultiProgress,
}

impl RegistryClient {
    pub fn new(
        reference: &Reference,
        credential: ResolvedCredential,
        opts: ClientOptions,
    ) -> Result<Self, OciError> {
        let plain = opts.plain_http.unwrap_or_else(|| reference.is_loopback());
        let scheme = if plain { "http" } else { "https" };
        let base =
            url::Url::parse(&format!("{scheme}://{}/", reference.registry)).map_err(|e| {
                OciError::Tls(format!("bad registry address {}: {e}", reference.registry))
            })?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("csctl/", env!("CARGO_PKG_VERSION")));
        let mut certs = Vec::new();
        for file in &opts.ca_files {
            let pem = std::fs::read(file).map_err(|e| OciError::io(file, e))?;
            let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                OciError::Tls(format!(
                    "{}: not a PEM certificate bundle: {e}",
                    file.display()
                ))
            })?;
            if found.is_empty() {
                return Err(OciError::Tls(format!(
                    "{}: no PEM certificate found",
                    file.display()
                )));
            }
            certs.extend(found);
        }
        if !certs.is_empty() {
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| OciError::Tls(e.to_string()))?;
        Ok(RegistryClient {
            http,
            base,
            registry: reference.registry.clone(),
            credential,
            auth: Mutex::new(AuthState::default()),
            opts,
            bars: indicatif::MultiProgress::new(),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    fn unreachable(&self, url: &str, e: &reqwest::Error) -> OciError {
        let mut detail = e.to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = src {
            detail = format!("{detail}: {s}");
            src = s.source();
        }
        OciError::Unreachable {
            registry: self.registry.clone(),
            url: url.to_string(),
            detail,
        }
    }

    /// Sends a request, answering one auth challenge and retrying transient failures when `retry` is set.
    /// `decorate` adds headers/body; it is called again for every attempt.
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope: Option<&str>,
        decorate: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        retry: bool,
    ) -> Result<reqwest::Response, OciError> {
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        loop {
            let mut rb = decorate(self.http.request(method.clone(), url));
            if let Some(h) = self.authorization(scope) {
                rb = rb.header(AUTHORIZATION, h);
            }
            match rb.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !answered_challenge => {
                    answered_challenge = true;
                    if !self.answer_challenge(resp.headers(), scope).await? {
                        return Ok(resp);
                    }
                }
                Ok(resp)
                    if retry
                        && attempt < self.opts.retries
                        && (resp.status().is_server_error()
                            || resp.status() == StatusCode::TOO_MANY_REQUESTS) =>
                {
                    attempt += 1;
                    tracing::warn!(%url, status = resp.status().as_u16(), attempt, "transient registry error, retrying");
                    backoff(attempt).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e)
                    if retry
                        && attempt < self.opts.retries
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    attempt += 1;
                    tracing::warn!(%url, error = %e, attempt, "registry request failed, retrying");
                    backoff(attempt).await;
                }
                Err(e) => return Err(self.unreachable(url, &e)),
            }
        }
    }

    async fn protocol_error(
        &self,
        method: &str,
        url: &str,
        status: StatusCode,
        resp: reqwest::Response,
    ) -> OciError {
        OciError::Protocol {
            registry: self.registry.clone(),
            method: method.to_string(),
            url: url.to_string(),
            status: status.as_u16(),
            detail: error_detail(resp).await,
        }
    }

    /// Maps the common failure statuses of a repository-scoped request.
    async fn check(
        &self,
        method: &str,
        url: &str,
        repo: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, OciError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.auth_error(resp, Some(repo)).await);
        }
        let detail = error_detail(resp).await;
        if status == StatusCode::NOT_FOUND && detail.contains("NAME_UNKNOWN") {
            return Err(OciError::RepositoryNotFound {
                registry: self.registry.clone(),
                repository: repo.to_string(),
            });
        }
        Err(OciError::Protocol {
            registry: self.registry.clone(),
            method: method.into(),
            url: url.into(),
            status: status.as_u16(),
            detail,
        })
    }
}

async fn backoff(attempt: u32) {
    // Exponential backoff between attempts of an operation (not a synchronisation point).
    tokio::time::sleep(Duration::from_millis(250u64 << attempt.min(6))).await;
}

fn verify_returned_digest(resp: &reqwest::Response, expected: &Digest) -> Result<(), OciError> {
    if let Some(got) = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        && got != expected.as_str()
    {
        return Err(OciError::DigestMismatch {
            what: "the registry's copy".into(),
            expected: expected.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}

/// The registry's `{"errors":[{"code","message"}]}` body, as one line.
async fn error_detail(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_str::<Errors>(&text)
        && !e.errors.is_empty()
    {
        return e
            .errors
            .iter()
            .map(|i| {
                format!(
                    "{} {}",
                    i.code.as_deref().unwrap_or(""),
                    i.message.as_deref().unwrap_or("")
                )
                .trim()
                .to_string()
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        text.chars().take(300).collect()
    }
}

/// Writes `data` to a temporary file beside `path` and renames it into place.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::manifests::next_link;
    use super::upload::{range_end, with_digest};
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn parses_link_and_range() {
        let mut h = HeaderMap::new();
        h.insert(
            "Link",
            HeaderValue::from_static(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?last=x&n=2"));
        h.insert("Range", HeaderValue::from_static("0-1048575"));
        assert_eq!(range_end(&h), Some(1048576));
        assert_eq!(
            with_digest("http://h/u?_state=x", &Digest::of_bytes(b""))
                .matches('?')
                .count(),
            1
        );
    }
}
