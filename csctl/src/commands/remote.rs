//! What the OCI subcommands share: registry flags, credentials, opening a registry or local layout.
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::oci::client::{ClientOptions, DEFAULT_CHUNK_SIZE};
use crate::oci::credentials::CredentialInputs;
use crate::oci::layout::{Layout, default_layout_dir};
use crate::oci::{Location, Reference, RegistryClient, Store};

/// Registry connection and credential flags.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry username; the password is read from stdin (--password-stdin). Without flags, credentials come
    /// from OCI_USERNAME/OCI_PASSWORD, OCI_ACCESS_TOKEN, then docker's config.json, else anonymous.
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the password for --username from stdin (keeps it out of argv and shell history).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Speak plain HTTP instead of HTTPS. Implied for loopback registries (localhost, 127.0.0.0/8, ::1);
    /// `--plain-http=false` forces HTTPS there too.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub plain_http: Option<bool>,

    /// Trust this CA certificate (PEM; may be repeated) in addition to the system roots.
    #[arg(long, value_name = "PEM_FILE")]
    pub ca_file: Vec<PathBuf>,

    /// Upload chunk size: blobs up to this size go in one PUT, bigger ones in PATCH requests of this size,
    /// streamed from the file. Bigger is faster; smaller loses less when a push is interrupted (the rerun
    /// resumes after the last complete chunk). GHCR accepts at most 4MiB per request.
    #[arg(long, value_parser = parse_size, default_value = "256MiB", value_name = "SIZE")]
    pub chunk_size: u64,

    /// Retries after transient registry errors (connection reset, 5xx, 429), with exponential backoff.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,

    /// Tags per request when listing (set by `list --page-size`).
    #[arg(skip)]
    pub tags_page_size: Option<u32>,
}

impl Default for RegistryArgs {
    fn default() -> Self {
        RegistryArgs {
            username: None,
            password_stdin: false,
            plain_http: None,
            ca_file: Vec::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            retries: 3,
            tags_page_size: None,
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 4MiB, 16MiB, 1048576"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if v < 1024 {
        Err("chunk size must be at least 1KiB".into())
    } else {
        Ok(v)
    }
}

/// A single-purpose async runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Parses a location given on the command line: `oci://…`, `oci:DIR[:TAG]`.
pub fn parse_location(s: &str) -> anyhow::Result<Location> {
    Ok(Location::parse(s)?)
}

/// The target when none is given: `OCI_REPOSITORY` (upstream's variable, host included, no scheme), else the
/// default local layout.
pub fn default_location() -> anyhow::Result<Location> {
    match std::env::var("OCI_REPOSITORY")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(repo) => Ok(Location::Registry(Reference::parse(&repo).with_context(
            || format!("OCI_REPOSITORY={repo:?} is not HOST[:PORT]/REPOSITORY"),
        )?)),
        None => Ok(Location::Layout {
            dir: default_layout_dir(),
            tag: None,
        }),
    }
}

impl RegistryArgs {
    fn client_options(&self, progress: bool) -> ClientOptions {
        ClientOptions {
            plain_http: self.plain_http.or(if self.ca_file.is_empty() {
                None
            } else {
                Some(false)
            }),
            ca_files: self.ca_file.clone(),
            chunk_size: self.chunk_size,
            retries: self.retries,
            progress,
            tags_page_size: self.tags_page_size.unwrap_or(1000),
            ..ClientOptions::default()
        }
    }

    /// Opens the store behind `location`. `push` asks for push rights (and, for a layout, creates it);
    /// the registry is pinged first so unreachable hosts and bad credentials fail before any work.
    pub async fn open(
        &self,
        location: &Location,
        push: bool,
        progress: bool,
    ) -> anyhow::Result<Store> {
        match location {
            Location::Layout { dir, .. } => {
                let layout = if push {
                    Layout::create(dir)?
                } else {
                    Layout::open(dir)?
                };
                Ok(Store::Layout(layout))
            }
            Location::Registry(reference) => {
                let password = if self.password_stdin {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("cannot read the password from stdin")?;
                    let s = s.trim_end_matches(['\n', '\r']).to_string();
                    anyhow::ensure!(!s.is_empty(), "--password-stdin: stdin was empty");
                    Some(s)
                } else {
                    None
                };
                let creds = CredentialInputs::from_env(self.username.clone(), password)
                    .resolve(&reference.registry)?;
                tracing::debug!(registry = %reference.registry, source = %creds.source, "credentials");
                let client = RegistryClient::new(reference, creds, self.client_options(progress))?;
                let scope = if push {
                    format!("repository:{}:pull,push", reference.repository)
                } else {
                    format!("repository:{}:pull", reference.repository)
                };
                client.ping(Some(&scope)).await?;
                Ok(Store::Registry {
                    client,
                    repository: reference.repository.clone(),
                })
            }
        }
    }
}

/// The latest stable release of every stack in `location`, as release directories holding `metadata.yaml`
/// and `hashes.json` (what stable mode compares), in a temporary directory. A repository or layout that
/// does not exist yet has no releases.
pub fn latest_releases(
    location: &Location,
    registry: &RegistryArgs,
) -> anyhow::Result<tempfile::TempDir> {
    use std::collections::BTreeMap;

    use crate::oci::pull::{release_manifest, titled_layers};
    use crate::release::ReleaseName;

    let tmp = tempfile::Builder::new()
        .prefix("csctl-remote-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    if let Location::Layout { dir, .. } = location
        && !dir.join("oci-layout").is_file()
    {
        return Ok(tmp);
    }
    runtime()?.block_on(async {
        let store = registry.open(location, false, false).await?;
        let tags = match store.tags().await {
            Ok(t) => t,
            Err(crate::oci::OciError::RepositoryNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut latest: BTreeMap<String, ReleaseName> = BTreeMap::new();
        for tag in tags {
            let Ok(name) = tag.parse::<ReleaseName>() else {
                continue;
            };
            if !name.version.is_stable() {
                continue;
            }
            let entry = latest
                .entry(name.stack_prefix())
                .or_insert_with(|| name.clone());
            if name.version.major > entry.version.major {
                *entry = name;
            }
        }
        for name in latest.values() {
            let tag = name.to_string();
            let (manifest, _) = release_manifest(&store, &tag).await?;
            let dir = tmp.path().join(&tag);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (title, layer) in titled_layers(&manifest) {
                if title == "metadata.yaml" || title == "hashes.json" {
                    store
                        .fetch_blob(&layer.digest, layer.size, &dir.join(title), title)
                        .await?;
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("1").is_err());
    }
}
