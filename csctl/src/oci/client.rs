//! A thin OCI distribution client on reqwest: `/v2/` ping, Basic and Bearer-token challenges, HEAD before
//! upload, cross-repository mount, chunked uploads that retry and resume across runs, manifests, and
//! paginated tag lists. Written in-house (not oci-client) because we need the exact manifest bytes, resumable
//! upload sessions and per-request control (see docs/architecture.md, "csctl OCI client").
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::credentials::{Credential, ResolvedCredential};
use super::digest::{Digest, Hasher};
use super::error::OciError;
use super::manifest::{DOCKER_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use super::progress::Progress;
use super::reference::Reference;

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

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope string.
    tokens: HashMap<String, String>,
}

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

/// An upload session remembered across runs, so an interrupted push resumes.
#[derive(Serialize, Deserialize)]
struct UploadState {
    location: String,
    offset: u64,
    size: u64,
}

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

/// `scope` strings for the token service: space-separated `repository:NAME:ACTIONS`.
fn scope_pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}
fn scope_push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
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

    /// `GET /v2/`: checks that the registry answers and learns how it wants to be authenticated. With
    /// `scope`, also obtains a token (or checks Basic credentials) so bad credentials fail early.
    pub async fn ping(&self, scope: Option<&str>) -> Result<(), OciError> {
        let url = self.url("/v2/");
        let resp = self.send(Method::GET, &url, None, |rb| rb, true).await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Err(self.auth_error(resp, None).await),
            s => Err(self.protocol_error("GET", &url, s, resp).await),
        }?;
        let challenge = self
            .auth
            .lock()
            .map(|a| a.challenge.clone())
            .unwrap_or(None);
        if let (Some(Challenge::Bearer { .. }), Some(scope)) = (challenge, scope) {
            self.token_for(scope).await?;
        }
        Ok(())
    }

    fn authorization(&self, scope: Option<&str>) -> Option<String> {
        let auth = self.auth.lock().ok()?;
        match (&auth.challenge, &self.credential.credential) {
            (_, Credential::Bearer(token)) if auth.challenge.is_some() => {
                Some(format!("Bearer {token}"))
            }
            (Some(Challenge::Basic), Credential::Basic { username, password }) => Some(format!(
                "Basic {}",
                B64.encode(format!("{username}:{password}"))
            )),
            (Some(Challenge::Bearer { .. }), _) => {
                let scope = scope.unwrap_or("");
                auth.tokens.get(scope).map(|t| format!("Bearer {t}"))
            }
            _ => None,
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
                    let Some(challenge) = parse_challenge(resp.headers()) else {
                        return Ok(resp);
                    };
                    let changed = {
                        let mut auth = self
                            .auth
                            .lock()
                            .map_err(|_| OciError::Tls("auth state poisoned".into()))?;
                        let changed = auth.challenge.as_ref() != Some(&challenge);
                        auth.challenge = Some(challenge.clone());
                        changed
                    };
                    match (&challenge, &self.credential.credential) {
                        (_, Credential::Anonymous) if matches!(challenge, Challenge::Basic) => {
                            return Ok(resp);
                        }
                        (Challenge::Bearer { .. }, cred)
                            if !matches!(cred, Credential::Bearer(_)) =>
                        {
                            let wanted = scope
                                .map(str::to_string)
                                .or_else(|| challenge_scope(resp.headers()));
                            if let Some(s) = wanted {
                                self.token_for(&s).await?;
                            } else if !changed {
                                return Ok(resp);
                            }
                        }
                        _ if !changed => return Ok(resp),
                        _ => {}
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

    /// Gets (and caches) a Bearer token for `scope` from the realm of the last challenge.
    async fn token_for(&self, scope: &str) -> Result<(), OciError> {
        let (realm, service) = {
            let auth = self
                .auth
                .lock()
                .map_err(|_| OciError::Tls("auth state poisoned".into()))?;
            if auth.tokens.contains_key(scope) {
                return Ok(());
            }
            match &auth.challenge {
                Some(Challenge::Bearer { realm, service }) => (realm.clone(), service.clone()),
                _ => return Ok(()),
            }
        };
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &service {
            query.push(("service", s.clone()));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s.to_string()));
        }
        // reqwest's query/form helpers are feature-gated; url's encoder does the same job.
        let encode = |pairs: &[(&str, String)]| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                ser.append_pair(k, v);
            }
            ser.finish()
        };
        let sep = if realm.contains('?') { '&' } else { '?' };
        let get_url = format!("{realm}{sep}{}", encode(&query));
        let resp = match &self.credential.credential {
            Credential::IdentityToken(refresh) => {
                let mut form = query.clone();
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", refresh.clone()));
                form.push(("client_id", "csctl".into()));
                self.http
                    .post(&realm)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(encode(&form))
                    .send()
                    .await
            }
            Credential::Basic { username, password } => {
                self.http
                    .get(&get_url)
                    .basic_auth(username, Some(password))
                    .send()
                    .await
            }
            _ => self.http.get(&get_url).send().await,
        }
        .map_err(|e| self.unreachable(&realm, &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_detail(resp).await;
            return Err(match self.credential.credential {
                Credential::Anonymous => OciError::NoCredentials {
                    registry: self.registry.clone(),
                },
                _ => OciError::Unauthorized {
                    registry: self.registry.clone(),
                    source_desc: self.credential.source.clone(),
                    detail: format!("token service {realm}: {detail}"),
                },
            });
        }
        if !status.is_success() {
            return Err(self.protocol_error("GET", &realm, status, resp).await);
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse = resp.json().await.map_err(|e| OciError::Protocol {
            registry: self.registry.clone(),
            method: "GET".into(),
            url: realm.clone(),
            status: status.as_u16(),
            detail: format!("token response is not JSON: {e}"),
        })?;
        let token = body.token.or(body.access_token).unwrap_or_default();
        if let Ok(mut auth) = self.auth.lock() {
            auth.tokens.insert(scope.to_string(), token);
        }
        Ok(())
    }

    async fn auth_error(&self, resp: reqwest::Response, repository: Option<&str>) -> OciError {
        let detail = error_detail(resp).await;
        match (&self.credential.credential, repository) {
            (Credential::Anonymous, _) => OciError::NoCredentials {
                registry: self.registry.clone(),
            },
            (_, Some(repo)) if detail.contains("DENIED") => OciError::Denied {
                registry: self.registry.clone(),
                repository: repo.to_string(),
                source_desc: self.credential.source.clone(),
                detail,
            },
            _ => OciError::Unauthorized {
                registry: self.registry.clone(),
                source_desc: self.credential.source.clone(),
                detail,
            },
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

    // ---- blobs ----

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

    async fn start_session(&self, repo: &str) -> Result<String, OciError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let scope = scope_push(repo);
        let resp = self
            .send(
                Method::POST,
                &url,
                Some(&scope),
                |rb| rb.header(CONTENT_LENGTH, 0),
                true,
            )
            .await?;
        let resp = self.check("POST", &url, repo, resp).await?;
        self.location(&resp, "POST", &url)
    }

    fn location(
        &self,
        resp: &reqwest::Response,
        method: &str,
        url: &str,
    ) -> Result<String, OciError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Protocol {
                registry: self.registry.clone(),
                method: method.into(),
                url: url.into(),
                status: resp.status().as_u16(),
                detail: "no Location header in the upload response".into(),
            })?;
        // Relative locations are relative to the registry; absolute ones are used as given.
        self.base
            .join(loc)
            .map(|u| u.to_string())
            .map_err(|e| OciError::Protocol {
                registry: self.registry.clone(),
                method: method.into(),
                url: url.into(),
                status: resp.status().as_u16(),
                detail: format!("bad Location {loc:?}: {e}"),
            })
    }

    /// Asks an upload session how many bytes it holds. `None` if the session is gone or unusable.
    async fn session_offset(
        &self,
        repo: &str,
        location: &str,
    ) -> Result<Option<(String, u64)>, OciError> {
        let scope = scope_push(repo);
        let resp = match self
            .send(Method::GET, location, Some(&scope), |rb| rb, true)
            .await
        {
            Ok(r) => r,
            Err(OciError::Unreachable { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return Ok(None);
        }
        let loc = self
            .location(&resp, "GET", location)
            .unwrap_or_else(|_| location.to_string());
        Ok(Some((loc, range_end(resp.headers()).unwrap_or(0))))
    }

    async fn upload(
        &self,
        repo: &str,
        path: &Path,
        digest: &Digest,
        size: u64,
        label: &str,
        progress: &Progress,
    ) -> Result<BlobPush, OciError> {
        let scope = scope_push(repo);
        let state_file = self.upload_state_file(repo, digest);
        // Fail early and clearly if the file is gone or no longer what was hashed; the bodies open it again.
        let len = std::fs::metadata(path)
            .map_err(|e| OciError::io(path, e))?
            .len();
        let changed = || OciError::FileChanged {
            path: path.to_path_buf(),
            digest: digest.clone(),
        };
        if len != size {
            return Err(changed());
        }
        let still_same_size = || std::fs::metadata(path).is_ok_and(|m| m.len() == size);
        // Resume a session an earlier run left behind, if the registry still has it.
        let mut session: Option<(String, u64)> = None;
        if let Some(sf) = &state_file
            && let Ok(text) = std::fs::read(sf)
            && let Ok(saved) = serde_json::from_slice::<UploadState>(&text)
            && saved.size == size
        {
            match self.session_offset(repo, &saved.location).await? {
                Some((loc, offset)) if offset <= size => {
                    tracing::info!(%digest, offset, "resuming interrupted upload");
                    session = Some((loc, offset));
                }
                _ => {
                    tracing::info!(%digest, "the interrupted upload session is gone; starting over")
                }
            }
        }
        let resumed_at = session.as_ref().map(|s| s.1).unwrap_or(0);
        let (mut location, mut offset) = match session {
            Some(s) => s,
            None => (self.start_session(repo).await?, 0),
        };
        progress.set(offset);
        let mut sent = 0u64;

        if offset == 0 && size <= self.opts.chunk_size {
            // Small enough for one request: a monolithic PUT, streamed from the file.
            let url = with_digest(&location, digest);
            let resp = self
                .send(
                    Method::PUT,
                    &url,
                    Some(&scope),
                    |rb| {
                        progress.set(0);
                        rb.header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, size)
                            .body(file_body(path, 0, size, progress))
                    },
                    true,
                )
                .await
                .map_err(|e| if still_same_size() { e } else { changed() })?;
            let resp = self
                .check("PUT", &url, repo, resp)
                .await
                .map_err(|e| if digest_invalid(&e) { changed() } else { e })?;
            verify_returned_digest(&resp, digest)?;
            progress.set(size);
            return Ok(BlobPush::Uploaded {
                bytes_sent: size,
                resumed_at: 0,
            });
        }

        let mut failures = 0u32;
        while offset < size {
            let end = (offset + self.opts.chunk_size).min(size);
            let range = format!("{}-{}", offset, end - 1);
            let before = offset;
            // The chunk streams from the file (read ahead on a blocking thread), so its size costs no memory.
            // No automatic retry here: after a failed PATCH the registry may hold part of the chunk, so we
            // ask it where it stands instead.
            let result = self
                .send(
                    Method::PATCH,
                    &location,
                    Some(&scope),
                    |rb| {
                        progress.set(before);
                        rb.header(CONTENT_TYPE, "application/octet-stream")
                            .header("Content-Range", range.clone())
                            .header(CONTENT_LENGTH, end - before)
                            .body(file_body(path, before, end - before, progress))
                    },
                    false,
                )
                .await;
            let failure = match result {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    location = self.location(&resp, "PATCH", &location)?;
                    offset = range_end(resp.headers()).unwrap_or(end);
                    sent += offset.saturating_sub(before);
                    None
                }
                Ok(resp)
                    if resp.status().is_client_error()
                        && resp.status() != StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(self
                        .check("PATCH", &location, repo, resp)
                        .await
                        .err()
                        .unwrap_or_else(|| OciError::Protocol {
                            registry: self.registry.clone(),
                            method: "PATCH".into(),
                            url: location.clone(),
                            status: 400,
                            detail: "upload refused".into(),
                        }));
                }
                Ok(resp) => {
                    tracing::warn!(status = resp.status().as_u16(), "chunk upload failed");
                    Some(format!("HTTP {}", resp.status()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "chunk upload failed");
                    Some(e.to_string())
                }
            };
            let Some(why) = failure else {
                progress.set(offset);
                if let Some(sf) = &state_file {
                    save_state(
                        sf,
                        &UploadState {
                            location: location.clone(),
                            offset,
                            size,
                        },
                    );
                }
                continue;
            };
            if !still_same_size() {
                return Err(changed());
            }
            failures += 1;
            if failures > self.opts.retries {
                return Err(OciError::Unreachable {
                    registry: self.registry.clone(),
                    url: location.clone(),
                    detail: format!(
                        "upload of {label} ({digest}) failed {failures} times, last: {why}; run the same command again to resume at byte {offset}"
                    ),
                });
            }
            backoff(failures).await;
            match self.session_offset(repo, &location).await? {
                Some((loc, at)) if at <= size => {
                    location = loc;
                    offset = at;
                }
                _ => {
                    location = self.start_session(repo).await?;
                    offset = 0;
                }
            }
            progress.set(offset);
        }
        let url = with_digest(&location, digest);
        let resp = self
            .send(
                Method::PUT,
                &url,
                Some(&scope),
                |rb| rb.header(CONTENT_LENGTH, 0),
                true,
            )
            .await?;
        let resp = self.check("PUT", &url, repo, resp).await;
        if let Some(sf) = &state_file {
            let _ = std::fs::remove_file(sf);
        }
        let resp = resp.map_err(|e| if digest_invalid(&e) { changed() } else { e })?;
        verify_returned_digest(&resp, digest)?;
        Ok(BlobPush::Uploaded {
            bytes_sent: sent.min(size),
            resumed_at,
        })
    }

    fn upload_state_file(&self, repo: &str, digest: &Digest) -> Option<PathBuf> {
        let dir = self.opts.state_dir.as_ref()?.join("uploads");
        let key = Digest::of_bytes(format!("{}/{repo}@{digest}", self.registry).as_bytes());
        Some(dir.join(format!("{}.json", key.hex())))
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

    fn remember_blob(&self, repo: &str, digest: &Digest) {
        // Small blobs are cheaper to upload than to track.
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

    /// Streams a blob into `dest`, verifying its digest and size. The file is removed on failure.
    pub async fn fetch_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        dest: &Path,
        label: &str,
    ) -> Result<(), OciError> {
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
        let mut resp = self.check("GET", &url, repo, resp).await?;
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

    // ---- manifests and tags ----

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

/// Bytes per read of a streamed upload, and how many read blocks may wait for the socket.
const READ_BLOCK: u64 = 1 << 20;
const READ_AHEAD: usize = 8;

/// A request body with `len` bytes of `path` from `offset`. A blocking thread reads ahead while earlier
/// blocks are on the wire (disk and network overlap; memory stays at a few MiB whatever the chunk size);
/// every block handed to the connection advances `progress`. A read error (the file shrank, an I/O error)
/// aborts the request.
fn file_body(path: &Path, offset: u64, len: u64, progress: &Progress) -> reqwest::Body {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let read = || -> std::io::Result<()> {
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut left = len;
            while left > 0 {
                let n = left.min(READ_BLOCK);
                let mut block = vec![0u8; n as usize];
                file.read_exact(&mut block).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                })?;
                left -= n;
                if tx.blocking_send(Ok(Bytes::from(block))).is_err() {
                    // The request was dropped (failed or cancelled): stop reading.
                    return Ok(());
                }
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let progress = progress.clone();
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).inspect(move |block| {
        if let Ok(b) = block {
            progress.inc(b.len() as u64);
        }
    });
    reqwest::Body::wrap_stream(stream)
}

async fn backoff(attempt: u32) {
    // Exponential backoff between attempts of an operation (not a synchronisation point).
    tokio::time::sleep(Duration::from_millis(250u64 << attempt.min(6))).await;
}

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The registry refused to commit because the bytes it received do not hash to the digest we named.
fn digest_invalid(e: &OciError) -> bool {
    matches!(e, OciError::Protocol { status: 400, detail, .. } if detail.contains("DIGEST_INVALID"))
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

/// `Range: 0-<last>` of an upload session → the next offset.
fn range_end(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get("Range")?.to_str().ok()?;
    let last: u64 = v
        .trim_start_matches("bytes=")
        .split('-')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    // distribution answers "0-0" for an empty session (and for a 1-byte one, which chunking never makes).
    Some(if last == 0 { 0 } else { last + 1 })
}

fn next_link(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("Link")?.to_str().ok()?;
    v.split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Some(part[start..end].to_string())
        })
}

fn parse_params(s: &str) -> HashMap<String, String> {
    // key="value" pairs; values may contain commas inside quotes.
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.insert(key, value);
    }
    out
}

fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let v = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let (scheme, params) = v.split_once(' ').unwrap_or((v, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let p = parse_params(params);
            Some(Challenge::Bearer {
                realm: p.get("realm")?.clone(),
                service: p.get("service").cloned(),
            })
        }
        _ => None,
    }
}

fn challenge_scope(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    parse_params(v.split_once(' ')?.1).get("scope").cloned()
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

fn save_state(file: &Path, state: &UploadState) {
    if let Ok(text) = serde_json::to_vec(state)
        && let Err(e) = write_atomic(file, &text)
    {
        tracing::debug!(error = %e, "cannot remember the upload session; an interruption will restart this blob");
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
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn parses_challenges() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
            ),
        );
        assert_eq!(
            parse_challenge(&h),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            challenge_scope(&h).as_deref(),
            Some("repository:a/b:pull,push")
        );
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="basic-realm""#),
        );
        assert_eq!(parse_challenge(&h), Some(Challenge::Basic));
    }

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
