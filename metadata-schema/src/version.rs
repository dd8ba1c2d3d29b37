//! Cluster-stack versions (`v1`, `v0-sha.abc1234`) and Kubernetes versions (`v1.33.4`).
//!
//! A cluster-stack version has two spellings: the *dot form* `vN-<channel>.<patch>` used in `metadata.yaml`,
//! chart versions, archive names and ClusterClass names, and the *dash form* `vN-<channel>-<patch>` used in
//! release directory names and OCI tags. Both parse to the same [`Version`].
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a cluster-stack version must look like, for error messages.
pub const VERSION_GRAMMAR: &str = "`vN` or `vN-<channel>.<patch>` (regex ^v\\d+(-\\w+\\.\\w+)?$), e.g. v1, v0-sha.abc1234, v0-custom.pr12";

/// A parsed cluster-stack version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u64,
    /// `(channel, patch)`; `None` for a stable version `vN`.
    pub pre: Option<(String, String)>,
}

/// The version string does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {input:?}: expected {expected}")]
pub struct VersionError {
    pub input: String,
    pub expected: &'static str,
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Version {
    /// A stable version `vN`.
    pub fn stable(major: u64) -> Self {
        Self { major, pre: None }
    }

    /// Parses the dot form `vN` / `vN-<channel>.<patch>` (what metadata.yaml holds).
    pub fn parse_dot(s: &str) -> Result<Self, VersionError> {
        Self::parse_with(s, '.')
    }

    /// Parses the dash form `vN` / `vN-<channel>-<patch>` (what release names and tags hold).
    pub fn parse_dash(s: &str) -> Result<Self, VersionError> {
        Self::parse_with(s, '-')
    }

    fn parse_with(s: &str, sep: char) -> Result<Self, VersionError> {
        let err = || VersionError {
            input: s.to_string(),
            expected: if sep == '.' {
                VERSION_GRAMMAR
            } else {
                "`vN` or `vN-<channel>-<patch>`, e.g. v1, v0-sha-abc1234"
            },
        };
        let rest = s.strip_prefix('v').ok_or_else(err)?;
        let (major, pre) = match rest.split_once('-') {
            None => (rest, None),
            Some((major, pre)) => (major, Some(pre)),
        };
        if major.is_empty() || !major.chars().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        let major: u64 = major.parse().map_err(|_| err())?;
        let pre = match pre {
            None => None,
            Some(pre) => {
                let (channel, patch) = pre.split_once(sep).ok_or_else(err)?;
                if !is_word(channel) || !is_word(patch) {
                    return Err(err());
                }
                Some((channel.to_string(), patch.to_string()))
            }
        };
        Ok(Self { major, pre })
    }

    /// `true` for `vN` (the stable channel).
    pub fn is_stable(&self) -> bool {
        self.pre.is_none()
    }

    /// Dot form: `v1`, `v0-sha.abc1234`.
    pub fn dot(&self) -> String {
        match &self.pre {
            None => format!("v{}", self.major),
            Some((c, p)) => format!("v{}-{c}.{p}", self.major),
        }
    }

    /// Dash form: `v1`, `v0-sha-abc1234`.
    pub fn dash(&self) -> String {
        match &self.pre {
            None => format!("v{}", self.major),
            Some((c, p)) => format!("v{}-{c}-{p}", self.major),
        }
    }

    /// The next stable version (`vN` → `vN+1`).
    pub fn bump(&self) -> Self {
        Self::stable(self.major + 1)
    }
}

/// Displays the dot form.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dot())
    }
}

/// Parses the dot form.
impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_dot(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.dot())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_dot(&s).map_err(serde::de::Error::custom)
    }
}

/// A Kubernetes version `vX.Y.Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KubernetesVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

/// What a Kubernetes version must look like, for error messages.
pub const KUBERNETES_GRAMMAR: &str =
    "a Kubernetes version `vX.Y.Z` (regex ^v\\d+\\.\\d+\\.\\d+$), e.g. v1.33.4";

impl KubernetesVersion {
    /// `1-33`: the form used in stack directory names, chart names and release names.
    pub fn minor_dashed(&self) -> String {
        format!("{}-{}", self.major, self.minor)
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for KubernetesVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError {
            input: s.to_string(),
            expected: KUBERNETES_GRAMMAR,
        };
        let rest = s.strip_prefix('v').ok_or_else(err)?;
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(err());
        }
        let n = |p: &str| p.parse::<u64>().map_err(|_| err());
        Ok(Self {
            major: n(parts[0])?,
            minor: n(parts[1])?,
            patch: n(parts[2])?,
        })
    }
}

impl Serialize for KubernetesVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubernetesVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_dash_forms_round_trip() {
        let v = Version::parse_dot("v0-sha.hipstsw").unwrap();
        assert_eq!(v.dash(), "v0-sha-hipstsw");
        assert_eq!(Version::parse_dash("v0-sha-hipstsw").unwrap(), v);
        assert_eq!(Version::parse_dot("v12").unwrap(), Version::stable(12));
        assert_eq!(Version::stable(3).bump().dot(), "v4");
    }

    #[test]
    fn bad_versions_are_rejected() {
        for bad in [
            "", "v", "1", "v1.2", "v1-beta", "v1-beta.", "v1-.x", "v1-a.b.c", "vx", "v1-a-b", "v1 ",
        ] {
            assert!(Version::parse_dot(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Version::parse_dash("v1-a.b").is_err());
    }

    #[test]
    fn kubernetes_versions() {
        let k: KubernetesVersion = "v1.33.4".parse().unwrap();
        assert_eq!(k.minor_dashed(), "1-33");
        assert_eq!(k.to_string(), "v1.33.4");
        for bad in ["1.33.4", "v1.33", "v1.33.4.5", "v1.x.3", "v1.33.4-rc.1"] {
            assert!(
                bad.parse::<KubernetesVersion>().is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
