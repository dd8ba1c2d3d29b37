//! Static pod manifests a cluster-class writes onto its nodes: kubeadm bootstrap `files` under
//! `/etc/kubernetes/manifests/` (e.g. kube-vip for the control-plane VIP). They are YAML inside a string, in a
//! KubeadmControlPlaneTemplate / KubeadmConfigTemplate or in a ClusterClass patch that adds them; the object
//! schemas see only a string, so each manifest is parsed and checked against the schema of its kind here.
//! Patch templates are rendered as CAPI would, with every variable at its declared default (a patch's
//! `enabledIf` is ignored: the manifest must be valid whenever it is enabled).
use metadata_schema::Problem;
use metadata_schema::yaml;
use serde_json::Value;

use crate::crds::{CrdSet, Lookup};

/// Where kubelet reads static pods (kubeadm's `staticPodPath`).
const MANIFEST_DIR: &str = "/etc/kubernetes/manifests/";

/// One bootstrap file found, with where to report its problems.
pub struct Found {
    /// Where it was found, for messages (`patch controlPlaneVIP`, `KubeadmControlPlaneTemplate x`).
    pub origin: String,
    /// The YAML node the file came from (a template entry or the patch's `template`/`value`).
    pub line: u64,
    pub column: u64,
    pub file: Value,
}

/// Checks every static pod manifest in `found`; problems are reported at `at(line, column)`.
pub fn check(
    found: &[Found],
    crds: &CrdSet,
    at: &dyn Fn(u64, u64) -> (String, u64, u64),
    problems: &mut Vec<Problem>,
) {
    for f in found {
        let Some(path) = f.file["path"].as_str() else {
            continue;
        };
        let Some(content) = f.file["content"].as_str() else {
            continue;
        };
        if !path.starts_with(MANIFEST_DIR)
            || f.file["encoding"].as_str().is_some_and(|e| !e.is_empty())
        {
            continue;
        }
        let (file, line, column) = at(f.line, f.column);
        let what = format!("static pod {path} ({})", f.origin);
        let docs = match yaml::parse_documents(content) {
            Ok(d) => d,
            Err(e) => {
                // cloud-init jinja (`{{ ds.… }}`) can make a manifest unparseable before the node renders it.
                problems.push(Problem::warning(
                    file,
                    line,
                    column,
                    format!(
                        "{what}: not checked, its content is not YAML here (line {}: {})",
                        e.line, e.message
                    ),
                ));
                continue;
            }
        };
        for doc in docs {
            let j = doc.to_json();
            if j.is_null() {
                continue;
            }
            let (Some(api_version), Some(kind)) = (j["apiVersion"].as_str(), j["kind"].as_str())
            else {
                problems.push(Problem::error(
                    file.clone(),
                    line,
                    column,
                    format!("{what}: the manifest has no apiVersion or kind"),
                ));
                continue;
            };
            let Lookup::Schema(schema) = crds.lookup(api_version, kind) else {
                problems.push(Problem::warning(
                    file.clone(),
                    line,
                    column,
                    format!("{what}: no schema for {kind} ({api_version}); not checked"),
                ));
                continue;
            };
            for p in schema.check(&doc, path) {
                problems.push(Problem::error(
                    file.clone(),
                    line,
                    column,
                    format!(
                        "{what}, line {} of the manifest: {kind}: {}",
                        p.line, p.message
                    ),
                ));
            }
        }
    }
}

/// The `files` of a KubeadmControlPlaneTemplate or KubeadmConfigTemplate, with their YAML nodes.
pub fn in_template(doc: &yaml::Node, json: &Value) -> Vec<Found> {
    let (pointer, origin) = match json["kind"].as_str() {
        Some("KubeadmControlPlaneTemplate") => (
            "/spec/template/spec/kubeadmConfigSpec/files",
            "KubeadmControlPlaneTemplate",
        ),
        Some("KubeadmConfigTemplate") => ("/spec/template/spec/files", "KubeadmConfigTemplate"),
        _ => return Vec::new(),
    };
    let name = json["metadata"]["name"].as_str().unwrap_or_default();
    json.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, file)| {
            let n = doc.locate(&format!("{pointer}/{i}"));
            Found {
                origin: format!("{origin} {name}"),
                line: n.line,
                column: n.column,
                file: file.clone(),
            }
        })
        .collect()
}

/// The files a ClusterClass's patches add to bootstrap `files` (a `value`, or a `valueFrom.template`
/// rendered with the variables' defaults). A template that does not render is an error at the patch.
pub fn in_class_patches(
    doc: &yaml::Node,
    class: &Value,
    problems_at: &mut dyn FnMut(u64, u64, String),
) -> Vec<Found> {
    let mut vars = serde_json::Map::new();
    for v in class["spec"]["variables"].as_array().into_iter().flatten() {
        if let Some(name) = v["name"].as_str() {
            vars.insert(
                name.to_string(),
                v["schema"]["openAPIV3Schema"]["default"].clone(),
            );
        }
    }
    let vars = Value::Object(vars);
    let mut out = Vec::new();
    for (pi, patch) in class["spec"]["patches"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let patch_name = patch["name"].as_str().unwrap_or_default();
        for (di, def) in patch["definitions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (ji, jp) in def["jsonPatches"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let target = jp["path"].as_str().unwrap_or_default();
                let one_file = target.ends_with("/files/-")
                    || target
                        .rsplit_once("/files/")
                        .is_some_and(|(_, i)| i.chars().all(|c| c.is_ascii_digit()));
                if !(target.ends_with("/files") || one_file) {
                    continue;
                }
                let base = format!("/spec/patches/{pi}/definitions/{di}/jsonPatches/{ji}");
                let (value, node) = if let Some(v) = jp.get("value") {
                    (v.clone(), doc.locate(&format!("{base}/value")))
                } else if let Some(tpl) = jp["valueFrom"]["template"].as_str() {
                    let node = doc.locate(&format!("{base}/valueFrom/template"));
                    let rendered = crate::render::render_str(tpl, &vars)
                        .map_err(|e| e.to_string())
                        .and_then(|text| {
                            yaml::parse_one(&text)
                                .map(|n| n.to_json())
                                .map_err(|e| format!("line {}: {}", e.line, e.message))
                        });
                    match rendered {
                        Ok(v) => (v, node),
                        Err(e) => {
                            problems_at(
                                node.line,
                                node.column,
                                format!(
                                    "patch {patch_name}: the template for {target} does not render with the variables' defaults: {e}"
                                ),
                            );
                            continue;
                        }
                    }
                } else {
                    continue;
                };
                let files = if one_file {
                    vec![value]
                } else {
                    value.as_array().cloned().unwrap_or_default()
                };
                out.extend(files.into_iter().map(|file| Found {
                    origin: format!("patch {patch_name}, rendered with the variables' defaults"),
                    line: node.line,
                    column: node.column,
                    file,
                }));
            }
        }
    }
    out
}
