//! Parsing with validation: every problem names the file, line and column and says what was expected.
//!
//! The YAML is parsed with positions ([`crate::yaml`]), checked against the JSON Schema in `schemas/`
//! (errors mapped from JSON pointers back to line:column), and only then turned into the Rust types.
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::problem::Problem;
use crate::yaml::{self, Node};
use crate::{ClusterAddonConfig, CsctlConfig, Metadata};

/// The JSON Schema of `metadata.yaml`.
pub const METADATA_SCHEMA: &str = include_str!("../schemas/metadata.schema.json");
/// The JSON Schema of `csctl.yaml` / `csmctl.yaml`.
pub const CSCTL_SCHEMA: &str = include_str!("../schemas/csctl.schema.json");
/// The JSON Schema of `clusteraddon.yaml`.
pub const CLUSTERADDON_SCHEMA: &str = include_str!("../schemas/clusteraddon.schema.json");

/// A compiled JSON Schema that reports problems at YAML positions.
pub struct Schema {
    raw: serde_json::Value,
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles a schema. Formats are not asserted (Kubernetes uses its own, e.g. `int-or-string`).
    pub fn new(raw: serde_json::Value) -> Result<Self, String> {
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&raw)
            .map_err(|e| e.to_string())?;
        Ok(Self { raw, validator })
    }

    /// Every violation of the schema by `node`, at the line and column of the offending value.
    pub fn check(&self, node: &Node, file: &str) -> Vec<Problem> {
        let instance = node.to_json();
        let mut problems: Vec<Problem> = self
            .validator
            .iter_errors(&instance)
            .map(|err| {
                let pointer = err.instance_path().as_str().to_string();
                // An unexpected key is reported at the key itself, not at the object holding it.
                let unexpected_key = match err.kind() {
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                        unexpected
                            .first()
                            .and_then(|k| node.locate(&pointer).get_key(k))
                    }
                    _ => None,
                };
                let at = unexpected_key.unwrap_or_else(|| node.locate_for_report(&pointer));
                let schema_ptr = err.schema_path().as_str().to_string();
                let expected = expected_hint(&self.raw, &schema_ptr);
                let path = if pointer.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", display_path(&pointer))
                };
                let mut message = format!("{path}{err}");
                if let Some(hint) = expected {
                    message.push_str(&format!(" (expected {hint})"));
                }
                Problem::error(file, at.line, at.column, message)
            })
            .collect();
        problems.sort_by_key(|p| (p.line, p.column));
        problems.dedup();
        problems
    }
}

/// `/config/provider/type` → `config.provider.type`
pub fn display_path(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The `x-expected` annotation next to the failing keyword, if the schema has one.
fn expected_hint(schema: &serde_json::Value, keyword_ptr: &str) -> Option<String> {
    let parent = keyword_ptr.rsplit_once('/').map(|(p, _)| p)?;
    let at = schema.pointer(parent)?;
    if let Some(s) = at.get("x-expected").and_then(|v| v.as_str()) {
        return Some(s.to_string());
    }
    // A `$ref` keyword path passes through the referring node: look at the target.
    let target = at.get("$ref")?.as_str()?.strip_prefix('#')?;
    schema
        .pointer(target)?
        .get("x-expected")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn compiled(cell: &'static OnceLock<Schema>, text: &str) -> &'static Schema {
    cell.get_or_init(|| {
        #[allow(clippy::expect_used)] // the schemas are compiled in and covered by tests
        let raw = serde_json::from_str(text).expect("embedded schema is JSON");
        #[allow(clippy::expect_used)]
        Schema::new(raw).expect("embedded schema compiles")
    })
}

/// Parses YAML text (one document) and checks it against `schema`; all problems at once.
pub fn parse_checked(text: &str, file: &str, schema: &Schema) -> Result<Node, Vec<Problem>> {
    let node = yaml::parse_one(text).map_err(|e| {
        vec![Problem::error(
            file,
            e.line,
            e.column,
            format!("malformed YAML: {}", e.message),
        )]
    })?;
    let problems = schema.check(&node, file);
    if problems.is_empty() {
        Ok(node)
    } else {
        Err(problems)
    }
}

fn typed<T: DeserializeOwned>(node: &Node, file: &str) -> Result<T, Vec<Problem>> {
    serde_json::from_value(node.to_json())
        .map_err(|e| vec![Problem::error(file, node.line, node.column, e.to_string())])
}

static METADATA: OnceLock<Schema> = OnceLock::new();
static CSCTL: OnceLock<Schema> = OnceLock::new();
static CLUSTERADDON: OnceLock<Schema> = OnceLock::new();

/// Parses and validates `metadata.yaml`.
pub fn parse_metadata(text: &str, file: &str) -> Result<Metadata, Vec<Problem>> {
    let node = parse_checked(text, file, compiled(&METADATA, METADATA_SCHEMA))?;
    typed(&node, file)
}

/// Parses and validates `csctl.yaml` / `csmctl.yaml`.
pub fn parse_csctl_config(text: &str, file: &str) -> Result<CsctlConfig, Vec<Problem>> {
    let node = parse_checked(text, file, compiled(&CSCTL, CSCTL_SCHEMA))?;
    typed(&node, file)
}

/// Parses and validates `clusteraddon.yaml`; also returns the tree (for locating stages).
pub fn parse_cluster_addon_config(
    text: &str,
    file: &str,
) -> Result<(ClusterAddonConfig, Node), Vec<Problem>> {
    let node = parse_checked(text, file, compiled(&CLUSTERADDON, CLUSTERADDON_SCHEMA))?;
    Ok((typed(&node, file)?, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSCTL_OK: &str = "apiVersion: csctl.clusterstack.x-k8s.io/v1alpha1\nconfig:\n  kubernetesVersion: v1.33.4\n  clusterStackName: hpc\n  provider:\n    type: beowulf\n    apiVersion: beowulf.csctl.clusterstack.x-k8s.io/v1alpha1\n";

    #[test]
    fn valid_files_parse() {
        let c = parse_csctl_config(CSCTL_OK, "csctl.yaml").unwrap();
        assert_eq!(c.stack_prefix(), "beowulf-hpc-1-33");
        let m = parse_metadata(
            "apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1\nversions:\n  clusterStack: v0-sha.hipstsw\n  kubernetes: v1.27.7\n  components:\n    clusterAddon: v0-sha.hipstsw\n    nodeImage: v0-sha.hipstsw\n",
            "metadata.yaml",
        )
        .unwrap();
        assert_eq!(m.versions.cluster_stack.dash(), "v0-sha-hipstsw");
    }

    #[test]
    fn dash_in_names_and_bad_kubernetes_version_point_at_the_value() {
        let text = CSCTL_OK
            .replace("clusterStackName: hpc", "clusterStackName: my-hpc")
            .replace("v1.33.4", "1.33");
        let problems = parse_csctl_config(&text, "csctl.yaml").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!((problems[0].line, problems[0].column), (3, 22));
        assert!(
            problems[0].message.contains("vX.Y.Z"),
            "{}",
            problems[0].message
        );
        assert_eq!((problems[1].line, problems[1].column), (4, 21));
        assert!(
            problems[1].message.contains("no '-'"),
            "{}",
            problems[1].message
        );
        assert!(
            problems[1]
                .to_string()
                .starts_with("csctl.yaml:4:21: error:")
        );
    }

    #[test]
    fn node_image_is_required_and_versions_are_checked() {
        let problems = parse_metadata(
            "apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1\nversions:\n  clusterStack: v1.2\n  kubernetes: v1.27.7\n  components:\n    clusterAddon: v1\n",
            "metadata.yaml",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].line, 3);
        assert!(
            problems[0].message.contains("vN-<channel>.<patch>"),
            "{}",
            problems[0].message
        );
        // A missing key is reported at the key of the mapping that lacks it (`components:`, line 5).
        assert_eq!((problems[1].line, problems[1].column), (5, 3));
        assert!(
            problems[1].message.contains("nodeImage"),
            "{}",
            problems[1].message
        );
    }

    #[test]
    fn malformed_yaml_has_a_position() {
        let problems = parse_csctl_config("config: [\n  a: b\n", "csctl.yaml").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].line >= 1);
        assert!(problems[0].message.starts_with("malformed YAML"));
    }

    #[test]
    fn clusteraddon_stages() {
        let (cfg, _) = parse_cluster_addon_config(
            "apiVersion: clusteraddonconfig.x-k8s.io/v1alpha1\nclusterAddonVersion: clusteraddons.clusterstack.x-k8s.io/v1alpha1\naddonStages:\n  AfterControlPlaneInitialized:\n    - name: cni\n      action: apply\n  BeforeClusterUpgrade:\n    - name: cni\n      action: apply\n    - name: slurm\n      action: apply\n",
            "clusteraddon.yaml",
        )
        .unwrap();
        assert_eq!(cfg.stage_names(), ["cni", "slurm"]);
        let problems = parse_cluster_addon_config(
            "apiVersion: clusteraddonconfig.x-k8s.io/v1alpha1\naddonStages:\n  BeforeClusterUpgrade:\n    - name: cni\n      action: install\n",
            "clusteraddon.yaml",
        )
        .unwrap_err();
        assert_eq!(problems[0].line, 5);
        assert!(problems[0].message.contains("apply or delete"));
    }
}
