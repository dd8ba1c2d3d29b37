//! Parsing with validation: every problem names the file, line and column and says what was expected.
use serde::de::DeserializeOwned;

use crate::problem::Problem;
use crate::{ClusterAddonConfig, CsctlConfig, Metadata};

fn parse<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, Vec<Problem>> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        vec![Problem::error(file, line, col, e.to_string())]
    })
}

/// Parses and validates `metadata.yaml`.
pub fn parse_metadata(text: &str, file: &str) -> Result<Metadata, Vec<Problem>> {
    parse(text, file)
}

/// Parses and validates `csctl.yaml` / `csmctl.yaml`.
pub fn parse_csctl_config(text: &str, file: &str) -> Result<CsctlConfig, Vec<Problem>> {
    parse(text, file)
}

/// Parses and validates `clusteraddon.yaml`.
pub fn parse_cluster_addon_config(
    text: &str,
    file: &str,
) -> Result<ClusterAddonConfig, Vec<Problem>> {
    parse(text, file)
}
