//! A stack's own YAML files (`metadata.yaml`, `csctl.yaml`, `clusteraddon.yaml`) and the YAML reader under
//! them. Invariant: a refusal names at least one problem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metadata_schema::{validate, yaml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = yaml::parse_documents(text);
    if let Err(p) = validate::parse_metadata(text, "metadata.yaml") {
        assert!(!p.is_empty());
    }
    if let Err(p) = validate::parse_csctl_config(text, "csctl.yaml") {
        assert!(!p.is_empty());
    }
    if let Err(p) = validate::parse_cluster_addon_config(text, "clusteraddon.yaml") {
        assert!(!p.is_empty());
    }
});
