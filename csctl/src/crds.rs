//! CustomResourceDefinitions the rendered objects are validated against: the CAPI v1.14.0 CRDs vendored in
//! `csctl/crds/capi-v1.14.0/` and the Beowulf provider's CRDs in `csctl/crds/beowulf-v1alpha1.yaml` (both
//! embedded), plus any given with `--crd-dir`; and the built-in Kubernetes kinds ([`crate::kube_schemas`]).
//!
//! A CRD's `openAPIV3Schema` is made strict before use: objects with `properties` reject unknown fields
//! (what `kubectl --validate=strict` and the API server's field validation report), unless they say
//! `x-kubernetes-preserve-unknown-fields`; `nullable` and `x-kubernetes-int-or-string` are honoured.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use metadata_schema::validate::Schema;

use crate::kube_schemas::{CoreKinds, CoreLookup};
use metadata_schema::{Problem, yaml};
use serde_json::{Value, json};

/// The Beowulf provider's CRDs (`beowulf crds`), vendored so that csctl needs no provider at run time; a test
/// keeps the file equal to what the provider generates.
pub const BEOWULF: (&str, &str) = (
    "beowulf-v1alpha1.yaml",
    include_str!("../crds/beowulf-v1alpha1.yaml"),
);

/// The vendored CAPI CRDs: (file name, contents).
pub const VENDORED: [(&str, &str); 3] = [
    (
        "cluster.x-k8s.io_clusterclasses.yaml",
        include_str!("../crds/capi-v1.14.0/cluster.x-k8s.io_clusterclasses.yaml"),
    ),
    (
        "controlplane.cluster.x-k8s.io_kubeadmcontrolplanetemplates.yaml",
        include_str!(
            "../crds/capi-v1.14.0/controlplane.cluster.x-k8s.io_kubeadmcontrolplanetemplates.yaml"
        ),
    ),
    (
        "bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml",
        include_str!("../crds/capi-v1.14.0/bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml"),
    ),
];

struct VersionEntry {
    served: bool,
    raw: Value,
    compiled: OnceLock<Result<Schema, String>>,
}

struct Crd {
    source: String,
    versions: BTreeMap<String, VersionEntry>,
}

/// Known CRDs by (group, kind), and the built-in Kubernetes kinds.
#[derive(Default)]
pub struct CrdSet {
    kinds: HashMap<(String, String), Crd>,
    core: CoreKinds,
}

/// What is known about an object's kind.
pub enum Lookup<'a> {
    Schema(&'a Schema),
    /// The CRD exists but does not serve this version.
    VersionNotServed {
        served: Vec<String>,
    },
    /// The CRD's schema does not compile.
    BadSchema(String),
    /// A kind of a built-in Kubernetes group that csctl does not know in this version; the versions it
    /// knows (empty: not a kind csctl knows at all) and the kinds it knows in the group.
    UnknownBuiltin {
        versions: Vec<&'static str>,
        kinds: Vec<&'static str>,
    },
    /// No CRD and not a built-in group.
    Unknown,
}

/// Makes a structural schema strict (see module docs).
pub(crate) fn strict(mut s: Value) -> Value {
    if let Value::Object(m) = &mut s {
        for key in ["properties", "patternProperties"] {
            if let Some(Value::Object(props)) = m.get_mut(key) {
                for v in props.values_mut() {
                    *v = strict(v.take());
                }
            }
        }
        for key in ["items", "additionalProperties", "not"] {
            if let Some(v) = m.get_mut(key)
                && v.is_object()
            {
                *v = strict(v.take());
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(list)) = m.get_mut(key) {
                for v in list.iter_mut() {
                    *v = strict(v.take());
                }
            }
        }
        let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if m.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true))
            && let Some(Value::Object(props)) = m.get_mut("properties")
        {
            props
                .entry("apiVersion")
                .or_insert(json!({"type": "string"}));
            props.entry("kind").or_insert(json!({"type": "string"}));
            props.entry("metadata").or_insert(json!({"type": "object"}));
        }
        if m.contains_key("properties") && !m.contains_key("additionalProperties") && !preserve {
            m.insert("additionalProperties".into(), Value::Bool(false));
        }
        if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            m.remove("type");
            m.insert("type".into(), json!(["integer", "string"]));
        }
        if m.get("nullable") == Some(&Value::Bool(true))
            && let Some(Value::String(t)) = m.get("type").cloned()
        {
            m.insert("type".into(), json!([t, "null"]));
        }
    }
    s
}

/// The API server accepts `apiVersion`, `kind` and `metadata` on every object even when a CRD's schema
/// does not list them (schemars-generated schemas, e.g. the Beowulf provider's, do not).
fn with_object_root(mut s: Value) -> Value {
    if let Value::Object(m) = &mut s
        && let Some(Value::Object(props)) = m.get_mut("properties")
    {
        props
            .entry("apiVersion")
            .or_insert(json!({"type": "string"}));
        props.entry("kind").or_insert(json!({"type": "string"}));
        props.entry("metadata").or_insert(json!({"type": "object"}));
    }
    s
}

impl CrdSet {
    /// The vendored CAPI and Beowulf CRDs.
    pub fn builtin() -> Self {
        let mut set = Self::default();
        for (name, text) in VENDORED.into_iter().chain([BEOWULF]) {
            // The vendored files are covered by tests; a failure here would be a build defect.
            let _ = set.add_text(&format!("(built in) {name}"), text);
        }
        set
    }

    /// Adds every CRD in a YAML text (several documents allowed; other kinds are ignored).
    pub fn add_text(&mut self, source: &str, text: &str) -> Result<usize, Vec<Problem>> {
        let docs = yaml::parse_documents(text).map_err(|e| {
            vec![Problem::error(
                source,
                e.line,
                e.column,
                format!("malformed YAML: {}", e.message),
            )]
        })?;
        let mut n = 0;
        for doc in docs {
            let j = doc.to_json();
            if j["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let group = j["spec"]["group"].as_str().unwrap_or_default().to_string();
            let kind = j["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if group.is_empty() || kind.is_empty() {
                return Err(vec![Problem::error(
                    source,
                    doc.line,
                    doc.column,
                    "CustomResourceDefinition without spec.group or spec.names.kind",
                )]);
            }
            let mut versions = BTreeMap::new();
            for v in j["spec"]["versions"].as_array().into_iter().flatten() {
                let name = v["name"].as_str().unwrap_or_default().to_string();
                versions.insert(
                    name,
                    VersionEntry {
                        served: v["served"].as_bool().unwrap_or(false),
                        raw: v["schema"]["openAPIV3Schema"].clone(),
                        compiled: OnceLock::new(),
                    },
                );
            }
            self.kinds.insert(
                (group, kind),
                Crd {
                    source: source.to_string(),
                    versions,
                },
            );
            n += 1;
        }
        Ok(n)
    }

    /// Adds a CRD file, or every `*.yaml`/`*.yml` file of a directory.
    pub fn add_path(&mut self, path: &Path) -> Result<usize, Vec<Problem>> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| {
            vec![Problem::error(
                &shown,
                0,
                0,
                format!("cannot read CRDs: {e}"),
            )]
        };
        let mut files = Vec::new();
        if path.is_dir() {
            for e in std::fs::read_dir(path).map_err(io)? {
                let p = e.map_err(io)?.path();
                if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut n = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(io)?;
            n += self.add_text(&f.display().to_string(), &text)?;
        }
        if n == 0 {
            return Err(vec![Problem::error(
                &shown,
                0,
                0,
                "no CustomResourceDefinition found",
            )]);
        }
        Ok(n)
    }

    /// The schema for `apiVersion`/`kind`.
    pub fn lookup(&self, api_version: &str, kind: &str) -> Lookup<'_> {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let Some(crd) = self.kinds.get(&(group.to_string(), kind.to_string())) else {
            return match self.core.lookup(api_version, kind) {
                CoreLookup::Schema(s) => Lookup::Schema(s),
                CoreLookup::BadSchema(e) => Lookup::BadSchema(e),
                CoreLookup::OtherVersions(versions) => Lookup::UnknownBuiltin {
                    versions,
                    kinds: Vec::new(),
                },
                CoreLookup::UnknownKind(kinds) => Lookup::UnknownBuiltin {
                    versions: Vec::new(),
                    kinds,
                },
                CoreLookup::NotBuiltin => Lookup::Unknown,
            };
        };
        match crd.versions.get(version) {
            Some(v) if v.served => {
                match v.compiled.get_or_init(|| {
                    Schema::new(strict(with_object_root(v.raw.clone())))
                        .map_err(|e| format!("{}: {e}", crd.source))
                }) {
                    Ok(s) => Lookup::Schema(s),
                    Err(e) => Lookup::BadSchema(e.clone()),
                }
            }
            _ => Lookup::VersionNotServed {
                served: crd
                    .versions
                    .iter()
                    .filter(|(_, v)| v.served)
                    .map(|(n, _)| n.clone())
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_crds_load_and_serve_v1beta1_and_v1beta2() {
        let set = CrdSet::builtin();
        assert!(matches!(
            set.lookup("cluster.x-k8s.io/v1beta2", "ClusterClass"),
            Lookup::Schema(_)
        ));
        assert!(matches!(
            set.lookup("cluster.x-k8s.io/v1beta1", "ClusterClass"),
            Lookup::Schema(_)
        ));
        assert!(matches!(
            set.lookup(
                "controlplane.cluster.x-k8s.io/v1beta2",
                "KubeadmControlPlaneTemplate"
            ),
            Lookup::Schema(_)
        ));
        assert!(matches!(
            set.lookup(
                "bootstrap.cluster.x-k8s.io/v1beta2",
                "KubeadmConfigTemplate"
            ),
            Lookup::Schema(_)
        ));
        match set.lookup("cluster.x-k8s.io/v1alpha3", "ClusterClass") {
            Lookup::VersionNotServed { served } => assert_eq!(served, ["v1beta1", "v1beta2"]),
            _ => panic!("v1alpha3 should not be served"),
        }
        assert!(matches!(
            set.lookup(
                "infrastructure.cluster.x-k8s.io/v1alpha1",
                "BeowulfMachineTemplate"
            ),
            Lookup::Schema(_)
        ));
        assert!(matches!(
            set.lookup("metallb.io/v1beta1", "IPAddressPool"),
            Lookup::Unknown
        ));
        assert!(matches!(
            set.lookup("apps/v1", "StatefulSet"),
            Lookup::Schema(_)
        ));
    }
}
