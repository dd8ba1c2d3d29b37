//! A release: its name `<provider>-<name>-<maj>-<min>-<version-with-dashes>` and its flat directory
//! (`metadata.yaml`, `hashes.json`, the cluster-class and cluster-addon archives, `clusteraddon.yaml` or
//! `cluster-addon-values.yaml`). Shared by `create` (stable mode reads previous releases) and the OCI
//! commands (tags are release names; layers are the files of the directory).
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use metadata_schema::{Hashes, Metadata, Version};

/// The name of a release (= directory name = OCI tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseName {
    pub provider: String,
    pub name: String,
    pub k8s_major: u64,
    pub k8s_minor: u64,
    pub version: Version,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid release name {0:?}: expected <provider>-<name>-<k8s-major>-<k8s-minor>-<version>, e.g. beowulf-hpc-1-33-v2 or docker-ferrol-1-27-v0-sha-hipstsw (no '-' in provider or name)"
)]
pub struct ReleaseNameError(pub String);

impl ReleaseName {
    /// `<provider>-<name>-<maj>-<min>` (also the Helm release name CSO uses for the cluster-class).
    pub fn stack_prefix(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.provider, self.name, self.k8s_major, self.k8s_minor
        )
    }

    /// Does this release belong to the same stack and Kubernetes minor?
    pub fn same_stack(&self, other: &ReleaseName) -> bool {
        self.provider == other.provider
            && self.name == other.name
            && self.k8s_major == other.k8s_major
            && self.k8s_minor == other.k8s_minor
    }

    /// `<prefix>-cluster-class-<version-with-dot>.tgz`
    pub fn cluster_class_archive(&self) -> String {
        format!(
            "{}-cluster-class-{}.tgz",
            self.stack_prefix(),
            self.version.dot()
        )
    }

    /// `<prefix>-cluster-addon-<addon-version-with-dot>.tgz` (the addon version may differ from the stack's).
    pub fn cluster_addon_archive(&self, addon_version: &Version) -> String {
        format!(
            "{}-cluster-addon-{}.tgz",
            self.stack_prefix(),
            addon_version.dot()
        )
    }

    /// The ClusterClass name the chart renders: `<prefix>-<version-with-dot>`.
    pub fn cluster_class_name(&self) -> String {
        format!("{}-{}", self.stack_prefix(), self.version.dot())
    }
}

impl fmt::Display for ReleaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.stack_prefix(), self.version.dash())
    }
}

impl FromStr for ReleaseName {
    type Err = ReleaseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ReleaseNameError(s.to_string());
        let parts: Vec<&str> = s.split('-').collect();
        // 5 parts for vN, 7 for vN-<channel>-<patch>.
        if parts.len() != 5 && parts.len() != 7 {
            return Err(err());
        }
        let num = |p: &str| -> Result<u64, ReleaseNameError> {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            p.parse().map_err(|_| err())
        };
        let word = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric());
        if !word(parts[0]) || !word(parts[1]) {
            return Err(err());
        }
        let version = Version::parse_dash(&parts[4..].join("-")).map_err(|_| err())?;
        Ok(Self {
            provider: parts[0].to_string(),
            name: parts[1].to_string(),
            k8s_major: num(parts[2])?,
            k8s_minor: num(parts[3])?,
            version,
        })
    }
}

/// Problems reading a release directory.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a release directory: {source}")]
    Name {
        path: PathBuf,
        #[source]
        source: ReleaseNameError,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A release directory on disk.
#[derive(Debug, Clone)]
pub struct ReleaseDir {
    pub path: PathBuf,
    pub name: ReleaseName,
    pub metadata: Metadata,
    /// `None` when the release has no `hashes.json` (old upstream releases).
    pub hashes: Option<Hashes>,
}

impl ReleaseDir {
    /// Reads `metadata.yaml` (required) and `hashes.json` (optional) of the release at `path`; the directory
    /// name must be a release name.
    pub fn open(path: &Path) -> Result<Self, ReleaseError> {
        let dir_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let name: ReleaseName = dir_name.parse().map_err(|source| ReleaseError::Name {
            path: path.to_path_buf(),
            source,
        })?;
        let md_path = path.join("metadata.yaml");
        let text = std::fs::read_to_string(&md_path).map_err(|source| ReleaseError::Io {
            path: md_path.clone(),
            source,
        })?;
        let metadata =
            metadata_schema::validate::parse_metadata(&text, &md_path.display().to_string())
                .map_err(|problems| ReleaseError::Invalid {
                    path: md_path.clone(),
                    message: problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                })?;
        let hashes_path = path.join("hashes.json");
        let hashes =
            match std::fs::read_to_string(&hashes_path) {
                Ok(text) => Some(serde_json::from_str::<Hashes>(&text).map_err(|e| {
                    ReleaseError::Invalid {
                        path: hashes_path.clone(),
                        message: format!("not valid hashes.json: {e}"),
                    }
                })?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(ReleaseError::Io {
                        path: hashes_path,
                        source,
                    });
                }
            };
        Ok(Self {
            path: path.to_path_buf(),
            name,
            metadata,
            hashes,
        })
    }

    /// The regular files of the release, sorted by name (a release is flat).
    pub fn files(&self) -> Result<Vec<PathBuf>, ReleaseError> {
        let io = |source| ReleaseError::Io {
            path: self.path.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_type().map_err(io)?.is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }
}

/// Every release directory directly under `root` (entries whose names are not release names are skipped;
/// unreadable releases are errors). Sorted by name.
pub fn list_release_dirs(root: &Path) -> Result<Vec<ReleaseDir>, ReleaseError> {
    let io = |source| ReleaseError::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_type().map_err(io)?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.parse::<ReleaseName>().is_err() {
            continue;
        }
        out.push(ReleaseDir::open(&entry.path())?);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The latest stable release (`vN`, highest N) of the same stack among `releases`.
pub fn latest_stable<'a>(releases: &'a [ReleaseDir], of: &ReleaseName) -> Option<&'a ReleaseDir> {
    releases
        .iter()
        .filter(|r| r.name.same_stack(of) && r.name.version.is_stable())
        .max_by_key(|r| r.name.version.major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stable_and_hash_names() {
        let n: ReleaseName = "beowulf-hpc-1-33-v2".parse().unwrap();
        assert_eq!(n.provider, "beowulf");
        assert_eq!(n.name, "hpc");
        assert_eq!((n.k8s_major, n.k8s_minor), (1, 33));
        assert_eq!(n.version, Version::stable(2));
        assert_eq!(n.to_string(), "beowulf-hpc-1-33-v2");
        assert_eq!(
            n.cluster_class_archive(),
            "beowulf-hpc-1-33-cluster-class-v2.tgz"
        );

        let h: ReleaseName = "docker-ferrol-1-27-v0-sha-hipstsw".parse().unwrap();
        assert_eq!(h.version.dot(), "v0-sha.hipstsw");
        assert_eq!(h.to_string(), "docker-ferrol-1-27-v0-sha-hipstsw");
        assert_eq!(h.cluster_class_name(), "docker-ferrol-1-27-v0-sha.hipstsw");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "beowulf-hpc-1-33",
            "beowulf-hpc-1-33-2",
            "beo-wulf-hpc-1-33-v2",
            "beowulf-hpc-x-33-v2",
            "beowulf-hpc-1-33-v0-sha.abc",
            "beowulf-hpc-1-33-v1-a",
        ] {
            assert!(bad.parse::<ReleaseName>().is_err(), "{bad} accepted");
        }
    }
}
