//! Where an artifact lives: `oci://HOST[:PORT]/REPO[:TAG|@DIGEST]` on a registry, or `oci:DIR[:TAG]` in a
//! local OCI image layout (skopeo's syntax).
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use super::digest::Digest;

/// A repository on a registry, optionally with a tag or digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host` or `host:port`, as written (used for credentials lookup and the base URL).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// A registry reference or a local layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Registry(Reference),
    Layout { dir: PathBuf, tag: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "invalid reference {0:?}: expected oci://HOST[:PORT]/REPOSITORY[:TAG] (a registry) or oci:DIR[:TAG] (a local OCI layout)"
    )]
    Syntax(String),
    #[error(
        "invalid repository name {repo:?} in {input:?}: use lowercase letters, digits and separators . _ - /"
    )]
    Repository { input: String, repo: String },
    #[error(
        "invalid tag {tag:?} in {input:?}: up to 128 characters of letters, digits, _ . - (not starting with . or -)"
    )]
    Tag { input: String, tag: String },
    #[error("invalid digest in {input:?}: {source}")]
    Digest {
        input: String,
        #[source]
        source: super::digest::DigestError,
    },
}

impl Reference {
    /// Parses `HOST[:PORT]/REPO[:TAG|@DIGEST]`, with or without the `oci://` prefix.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let rest = input.strip_prefix("oci://").unwrap_or(input);
        let rest = rest.trim_end_matches('/');
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| ReferenceError::Syntax(input.to_string()))?;
        if registry.is_empty() || path.is_empty() || registry.contains(['@', ' ']) {
            return Err(ReferenceError::Syntax(input.to_string()));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                let digest = d.parse().map_err(|source| ReferenceError::Digest {
                    input: input.to_string(),
                    source,
                })?;
                (p, Some(digest))
            }
            None => (path, None),
        };
        // A ':' after the last '/' separates the tag.
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if !valid_repository(repo) {
            return Err(ReferenceError::Repository {
                input: input.to_string(),
                repo: repo.to_string(),
            });
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(ReferenceError::Tag {
                input: input.to_string(),
                tag: t.clone(),
            });
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repo.to_string(),
            tag,
            digest,
        })
    }

    /// The host without the port, brackets removed.
    pub fn host(&self) -> &str {
        host_of(&self.registry)
    }

    /// Loopback registries are spoken to over plain HTTP unless told otherwise.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost"
            || host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Self {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The tag or digest to resolve, if any.
    pub fn reference(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|d| d.to_string())
            .or_else(|| self.tag.clone())
    }

    /// `oci://host/repo` without tag.
    pub fn repository_url(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Location {
    /// `oci://…` is a registry; `oci:DIR[:TAG]` is a local layout.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.starts_with("oci://") {
            return Reference::parse(input).map(Location::Registry);
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            if rest.is_empty() {
                return Err(ReferenceError::Syntax(input.to_string()));
            }
            // A tag never contains '/', so `DIR:TAG` splits at the last ':' only if what follows is a tag.
            return Ok(match rest.rsplit_once(':') {
                Some((dir, tag)) if !dir.is_empty() && valid_tag(tag) => Location::Layout {
                    dir: PathBuf::from(dir),
                    tag: Some(tag.to_string()),
                },
                _ => Location::Layout {
                    dir: PathBuf::from(rest),
                    tag: None,
                },
            });
        }
        Err(ReferenceError::Syntax(input.to_string()))
    }

    pub fn tag(&self) -> Option<&str> {
        match self {
            Location::Registry(r) => r.tag.as_deref(),
            Location::Layout { tag, .. } => tag.as_deref(),
        }
    }

    pub fn with_tag(&self, tag: &str) -> Self {
        match self {
            Location::Registry(r) => Location::Registry(r.with_tag(tag)),
            Location::Layout { dir, .. } => Location::Layout {
                dir: dir.clone(),
                tag: Some(tag.to_string()),
            },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => r.fmt(f),
            Location::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Location::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
        }
    }
}

/// OCI distribution spec: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|component| {
            let b = component.as_bytes();
            let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter()
                    .all(|&c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
                && !component.contains("..")
                && !component.contains("___")
        })
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_references() {
        let r = Reference::parse("oci://127.0.0.1:5000/kaas/cluster-stacks:docker-ferrol-1-27-v1")
            .unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "kaas/cluster-stacks");
        assert_eq!(r.tag.as_deref(), Some("docker-ferrol-1-27-v1"));
        assert!(r.is_loopback());
        let r = Reference::parse("registry.scs.community/kaas/cluster-stacks").unwrap();
        assert_eq!(r.host(), "registry.scs.community");
        assert_eq!(r.tag, None);
        assert!(!r.is_loopback());
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("oci://localhost/x@{d}")).unwrap();
        assert_eq!(r.digest.unwrap().as_str(), d);
        assert!(
            Reference::parse("oci://[::1]:5000/a")
                .unwrap()
                .is_loopback()
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "oci://host",
            "oci://host/",
            "oci://host/UPPER",
            "oci://host/a:bad:tag:",
            "oci://host/a/../b",
            "oci://host/a:-x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn parses_layout_locations() {
        assert_eq!(
            Location::parse("oci:/tmp/layout:tag-v1").unwrap(),
            Location::Layout {
                dir: "/tmp/layout".into(),
                tag: Some("tag-v1".into())
            }
        );
        assert_eq!(
            Location::parse("oci:dir").unwrap(),
            Location::Layout {
                dir: "dir".into(),
                tag: None
            }
        );
        assert!(Location::parse("http://x/y").is_err());
    }
}
