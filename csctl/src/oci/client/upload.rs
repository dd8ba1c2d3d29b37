//! Uploading one blob's bytes: a monolithic PUT up to one chunk, PATCH chunks above that, each streamed from
//! the file; and the upload-session state kept between runs (`<state_dir>/uploads/`), so an interrupted push
//! resumes where the registry says the session stands.
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::auth::scope_push;
use super::blobs::BlobPush;
use super::{RegistryClient, backoff, verify_returned_digest, write_atomic};
use crate::oci::digest::Digest;
use crate::oci::error::OciError;
use crate::oci::progress::Progress;

/// An upload session remembered across runs, so an interrupted push resumes.
#[derive(Serialize, Deserialize)]
struct UploadState {
    location: String,
    offset: u64,
    size: u64,
}

impl RegistryClient {
    pub(super) async fn start_session(&self, repo: &str) -> Result<String, OciError> {
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

    pub(super) async fn upload(
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

pub(super) fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The registry refused to commit because the bytes it received do not hash to the digest we named.
fn digest_invalid(e: &OciError) -> bool {
    matches!(e, OciError::Protocol { status: 400, detail, .. } if detail.contains("DIGEST_INVALID"))
}

/// `Range: 0-<last>` of an upload session → the next offset.
pub(super) fn range_end(headers: &HeaderMap) -> Option<u64> {
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

fn save_state(file: &Path, state: &UploadState) {
    if let Ok(text) = serde_json::to_vec(state)
        && let Err(e) = write_atomic(file, &text)
    {
        tracing::debug!(error = %e, "cannot remember the upload session; an interruption will restart this blob");
    }
}
