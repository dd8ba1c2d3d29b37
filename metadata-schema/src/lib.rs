//! Types, JSON Schemas and validation for the files that govern a cluster stack:
//! `metadata.yaml`, `csctl.yaml` and `clusteraddon.yaml` (plus `hashes.json`).
pub mod clusteraddon;
pub mod csctl_config;
pub mod hashes;
pub mod metadata;
pub mod version;

pub use clusteraddon::{ClusterAddonConfig, Stage};
pub use csctl_config::{CSCTL_CONFIG_FILES, CsctlConfig};
pub use hashes::Hashes;
pub use metadata::{METADATA_API_VERSION, Metadata};
pub use version::{KubernetesVersion, Version, VersionError};
pub mod problem;
pub mod validate;
pub mod yaml;
pub use problem::{Problem, Severity};
