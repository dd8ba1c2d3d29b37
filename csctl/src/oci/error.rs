//! Errors of the OCI client, worded for the person at the terminal: what failed and what to do.
use std::path::PathBuf;

use super::credentials::CredentialError;
use super::digest::Digest;
use super::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "cannot reach registry {registry} at {url}: {detail}. Check host and port; a plain-HTTP registry needs --plain-http"
    )]
    Unreachable {
        registry: String,
        url: String,
        detail: String,
    },
    #[error(
        "registry {registry} rejected the credentials from {source_desc}: {detail}. Check the username and password (or token)"
    )]
    Unauthorized {
        registry: String,
        source_desc: String,
        detail: String,
    },
    #[error(
        "registry {registry} requires authentication and no credentials were found: pass --username with --password-stdin, set OCI_USERNAME and OCI_PASSWORD (or OCI_ACCESS_TOKEN), or log in with docker/podman/oras"
    )]
    NoCredentials { registry: String },
    #[error(
        "access to {repository} on {registry} denied for the credentials from {source_desc}: {detail}"
    )]
    Denied {
        registry: String,
        repository: String,
        source_desc: String,
        detail: String,
    },
    #[error("repository {repository} does not exist on registry {registry}")]
    RepositoryNotFound {
        registry: String,
        repository: String,
    },
    #[error("{reference} not found: the repository has no such tag or manifest")]
    ManifestNotFound { reference: String },
    #[error("blob {digest} not found in {location}")]
    BlobNotFound { location: String, digest: Digest },
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual}; the data was corrupted in transit or at rest"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{path} changed while it was being published: its bytes no longer match the digest computed before the upload ({digest}). Nothing was tagged; run the command again once the file is final"
    )]
    FileChanged { path: PathBuf, digest: Digest },
    #[error("registry {registry} answered {method} {url} with HTTP {status}: {detail}")]
    Protocol {
        registry: String,
        method: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest of {reference}: {source}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("local OCI layout {dir}: {detail}")]
    Layout { dir: PathBuf, detail: String },
}

impl OciError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OciError::Io {
            path: path.into(),
            source,
        }
    }
}
