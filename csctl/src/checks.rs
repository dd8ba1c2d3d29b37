//! The offline checks of `csctl validate`, over a loaded stack. Every check adds to one list of problems;
//! nothing stops at the first.
use std::collections::{BTreeMap, BTreeSet};

use metadata_schema::clusteraddon::KNOWN_HOOKS;
use metadata_schema::yaml::{self, Node};
use metadata_schema::{Problem, Version};
use serde_json::Value;

use crate::crds::{CrdSet, Lookup};
use crate::helmignore::HelmIgnore;
use crate::render::{self, Chart, ReleaseInfo};
use crate::stack::{Convention, Stack};
use crate::substitute::{ReleaseVersions, substitute};

/// The versions used to render the charts for validation (what a first stable release gets).
fn placeholder_versions() -> ReleaseVersions {
    ReleaseVersions {
        cluster_stack: Version::stable(1),
        cluster_addon: Version::stable(1),
        node_image: Version::stable(1),
    }
}

/// Checks a Chart.yaml: apiVersion v2, a name, a version, a renderable type. Returns the parsed name.
fn check_chart_yaml(
    stack: &Stack,
    rel: &str,
    problems: &mut Vec<Problem>,
) -> Option<(String, Node)> {
    let file = stack.display(rel);
    let Some(data) = stack.files.get(rel) else {
        problems.push(Problem::error(
            &file,
            0,
            0,
            "missing Chart.yaml: every chart needs one",
        ));
        return None;
    };
    let text = String::from_utf8_lossy(&substitute(data, &placeholder_versions())).into_owned();
    let doc = match yaml::parse_one(&text) {
        Ok(d) => d,
        Err(e) => {
            problems.push(Problem::error(
                &file,
                e.line,
                e.column,
                format!("malformed YAML: {}", e.message),
            ));
            return None;
        }
    };
    let at = |key: &str| {
        doc.get(key)
            .map(|n| (n.line, n.column))
            .unwrap_or((doc.line, doc.column))
    };
    match doc.get("apiVersion").and_then(Node::as_str) {
        Some("v2") => {}
        Some(other) => {
            let (l, c) = at("apiVersion");
            problems.push(Problem::error(
                &file,
                l,
                c,
                format!("apiVersion is {other:?}, expected \"v2\" (Helm 3 charts)"),
            ));
        }
        None => problems.push(Problem::error(
            &file,
            doc.line,
            doc.column,
            "missing `apiVersion: v2`",
        )),
    }
    if doc.get("version").is_none() {
        problems.push(Problem::error(
            &file,
            doc.line,
            doc.column,
            "missing `version` (Helm requires one)",
        ));
    }
    if let Some(t) = doc.get("type").and_then(Node::as_str)
        && t != "application"
    {
        let (l, c) = at("type");
        problems.push(Problem::error(
            &file,
            l,
            c,
            format!("type is {t:?}: a library chart cannot be installed; expected \"application\""),
        ));
    }
    match doc.get("name").and_then(Node::as_str) {
        Some(n) if !n.is_empty() => Some((n.to_string(), doc)),
        _ => {
            problems.push(Problem::error(
                &file,
                doc.line,
                doc.column,
                "missing `name`",
            ));
            None
        }
    }
}

/// Maps a position in a template's rendered output back to the template source when the line is static
/// (it occurs exactly once in the source); otherwise says it is a rendered position.
fn source_position(
    file: &str,
    source: &str,
    rendered: &str,
    line: u64,
    column: u64,
) -> (String, u64, u64) {
    let text = rendered
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .unwrap_or("")
        .trim();
    if !text.is_empty() {
        let hits: Vec<(usize, &str)> = source
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == text)
            .collect();
        if hits.len() == 1 {
            let (i, l) = hits[0];
            let indent = l.len() - l.trim_start().len();
            let rendered_indent = rendered
                .lines()
                .nth(line.saturating_sub(1) as usize)
                .map(|r| r.len() - r.trim_start().len())
                .unwrap_or(0);
            let col = (column as i64 - rendered_indent as i64 + indent as i64).max(1) as u64;
            return (file.to_string(), i as u64 + 1, col);
        }
    }
    (format!("{file} (rendered)"), line, column)
}

/// An object found in the rendered cluster-class.
struct Rendered {
    api_version: String,
    kind: String,
    name: String,
}

/// References `{apiVersion, kind, name}` under `ref`/`templateRef` keys in a ClusterClass spec (patches and
/// variables excluded), with their JSON pointers.
fn class_refs(v: &Value, ptr: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if ptr == "/spec" && (k == "patches" || k == "variables") {
                    continue;
                }
                let p = format!("{ptr}/{k}");
                if (k == "ref" || k == "templateRef")
                    && child.get("kind").is_some()
                    && child.get("name").is_some()
                {
                    out.push((p, child.clone()));
                } else {
                    class_refs(child, &p, out);
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                class_refs(child, &format!("{ptr}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// All checks of one stack.
pub fn check_stack(stack: &Stack, crds: &CrdSet) -> Vec<Problem> {
    let mut problems = Vec::new();
    let prefix = stack.prefix();

    // The directory name should be the Kubernetes minor (providers/<p>/<n>/<maj>-<min>).
    let minor = stack.config.config.kubernetes_version.minor_dashed();
    if let Some(dir_name) = stack.dir.file_name().and_then(|n| n.to_str())
        && dir_name.split('-').count() == 2
        && dir_name
            .split('-')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && dir_name != minor
    {
        problems.push(Problem::warning(
            stack.display(&stack.config_file),
            0,
            0,
            format!(
                "kubernetesVersion {} is minor {minor}, but the directory is {dir_name}",
                stack.config.config.kubernetes_version
            ),
        ));
    }
    if stack
        .config
        .config
        .provider
        .config
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        problems.push(Problem::warning(
            stack.display(&stack.config_file),
            0,
            0,
            "provider.config is set: upstream csctl would run a csctl-<type> plugin for node images; this csctl does not run plugins",
        ));
    }

    // Cluster-class chart.
    let expected = format!("{prefix}-cluster-class");
    if let Some((name, doc)) = check_chart_yaml(stack, "cluster-class/Chart.yaml", &mut problems)
        && name != expected
    {
        let n = doc.get("name").unwrap_or(&doc);
        problems.push(Problem::error(
            stack.display("cluster-class/Chart.yaml"),
            n.line,
            n.column,
            format!("chart name is {name:?}, expected {expected:?} (<provider>-<name>-<k8s-major>-<k8s-minor>-cluster-class)"),
        ));
    }
    check_cluster_class(stack, crds, &mut problems);
    check_addons(stack, crds, &mut problems);

    // Cluster addons.
    match &stack.convention {
        Convention::Umbrella => {
            let expected = format!("{prefix}-cluster-addon");
            if let Some((name, doc)) =
                check_chart_yaml(stack, "cluster-addon/Chart.yaml", &mut problems)
                && name != expected
            {
                let n = doc.get("name").unwrap_or(&doc);
                problems.push(Problem::warning(
                    stack.display("cluster-addon/Chart.yaml"),
                    n.line,
                    n.column,
                    format!("chart name is {name:?}; upstream stacks call it {expected:?}"),
                ));
            }
            if !stack.files.contains_key("cluster-addon-values.yaml") {
                problems.push(Problem::warning(
                    stack.display("cluster-addon-values.yaml"),
                    0,
                    0,
                    "no cluster-addon-values.yaml: the addon chart gets no per-cluster values",
                ));
            }
        }
        Convention::MultiStage(cfg) => check_stages(stack, cfg, &mut problems),
    }
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.to_string()));
    problems
}

fn check_stages(
    stack: &Stack,
    cfg: &metadata_schema::ClusterAddonConfig,
    problems: &mut Vec<Problem>,
) {
    let file = stack.display("clusteraddon.yaml");
    let text = String::from_utf8_lossy(&stack.files["clusteraddon.yaml"]).into_owned();
    let doc = yaml::parse_one(&text).ok();
    let stages_node = doc.as_ref().and_then(|d| d.get("addonStages"));
    let subcharts: BTreeSet<String> = stack
        .under("cluster-addon")
        .filter_map(|(rel, _)| rel.split_once('/').map(|(d, _)| d.to_string()))
        .collect();
    for (hook, stages) in &cfg.addon_stages {
        let hook_node = stages_node.and_then(|n| n.get_key(hook));
        if !KNOWN_HOOKS.contains(&hook.as_str()) {
            let (l, c) = hook_node.map(|n| (n.line, n.column)).unwrap_or((0, 0));
            problems.push(Problem::warning(
                &file,
                l,
                c,
                format!(
                    "unknown hook {hook:?}: the cluster-stack-operator runs {}",
                    KNOWN_HOOKS.join(", ")
                ),
            ));
        }
        for (i, stage) in stages.iter().enumerate() {
            if !stack
                .files
                .contains_key(&format!("cluster-addon/{}/Chart.yaml", stage.name))
            {
                let at = stages_node
                    .and_then(|n| n.get(hook))
                    .map(|n| n.locate(&format!("/{i}/name")))
                    .map(|n| (n.line, n.column))
                    .unwrap_or((0, 0));
                problems.push(Problem::error(
                    &file,
                    at.0,
                    at.1,
                    format!(
                        "stage {:?} has no subchart: expected cluster-addon/{}/Chart.yaml (subcharts: {})",
                        stage.name,
                        stage.name,
                        subcharts.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    let used: BTreeSet<String> = cfg.stage_names().into_iter().collect();
    for sub in &subcharts {
        if !used.contains(sub) {
            problems.push(Problem::warning(
                stack.display(&format!("cluster-addon/{sub}")),
                0,
                0,
                "subchart is not used by any stage in clusteraddon.yaml (it is shipped but never applied)",
            ));
        } else {
            check_chart_yaml(stack, &format!("cluster-addon/{sub}/Chart.yaml"), problems);
        }
    }
}

/// One object of a rendered chart, with where it came from.
struct Doc {
    /// The template, for messages.
    file: String,
    /// The template source and its rendered text (positions are mapped between them).
    source: String,
    text: String,
    doc: Node,
    json: Value,
}

impl Doc {
    fn at(&self, line: u64, column: u64) -> (String, u64, u64) {
        source_position(&self.file, &self.source, &self.text, line, column)
    }
}

/// Renders the chart in `dir` (a stack-relative directory) the way csctl would package it (.helmignore
/// applied, release markers substituted, `version:` set to `chart_version`) and parses every rendered
/// document. Render and YAML problems are added to `problems`.
fn render_docs(
    stack: &Stack,
    dir: &str,
    chart_version: &str,
    release: &ReleaseInfo,
    problems: &mut Vec<Problem>,
) -> Vec<Doc> {
    let v = placeholder_versions();
    // What `helm package` would ship: .helmignore applies.
    let ignore = stack
        .files
        .get(&format!("{dir}/.helmignore"))
        .map(|d| HelmIgnore::parse(&String::from_utf8_lossy(d)))
        .unwrap_or_default();
    for line in &ignore.unsupported {
        problems.push(Problem::warning(
            stack.display(&format!("{dir}/.helmignore")),
            0,
            0,
            format!(
                "pattern {line:?} is not supported by csctl (negations and `**`); it is ignored"
            ),
        ));
    }
    let substituted: BTreeMap<String, Vec<u8>> = stack
        .under(dir)
        .filter(|(rel, _)| !ignore.ignored(rel))
        .map(|(rel, d)| (rel.to_string(), substitute(d, &v)))
        .collect();
    let mut files: BTreeMap<&str, &[u8]> = substituted
        .iter()
        // Subcharts under charts/ are not rendered (see check_addon_chart).
        .filter(|(k, _)| !k.starts_with("charts/"))
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let chart_yaml = files
        .get("Chart.yaml")
        .map(|d| crate::substitute::set_chart_version(d, chart_version));
    if let Some(c) = &chart_yaml {
        files.insert("Chart.yaml", c.as_slice());
    }
    let rendered = match render::render_chart(&Chart { files }, release) {
        Ok(r) => r,
        Err(errs) => {
            for e in errs {
                problems.push(Problem::error(
                    stack.display(&format!("{dir}/{}", e.file)),
                    e.line as u64,
                    0,
                    format!("cannot render: {}", e.message),
                ));
            }
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (tpl, text) in rendered {
        let file = stack.display(&format!("{dir}/{tpl}"));
        let source = String::from_utf8_lossy(&substituted[tpl.as_str()]).into_owned();
        let docs = match yaml::parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                let (f, l, c) = source_position(&file, &source, &text, e.line, e.column);
                problems.push(Problem::error(
                    f,
                    l,
                    c,
                    format!("renders to malformed YAML: {}", e.message),
                ));
                continue;
            }
        };
        for doc in docs {
            let json = doc.to_json();
            // An empty document (e.g. a template whose `if` was false) is not an object.
            if json.is_null() {
                continue;
            }
            out.push(Doc {
                file: file.clone(),
                source: source.clone(),
                text: text.clone(),
                doc,
                json,
            });
        }
    }
    out
}

/// Checks every rendered object against the schema of its kind: CRDs shipped in the stack's own charts
/// (`local`) first, then the built-in CRDs and Kubernetes kinds (`crds`). Returns the objects found.
fn check_objects(
    docs: &[Doc],
    crds: &CrdSet,
    local: &CrdSet,
    unknown_is_error: bool,
    problems: &mut Vec<Problem>,
) -> Vec<Rendered> {
    let mut objects = Vec::new();
    for d in docs {
        let j = &d.json;
        let (Some(api_version), Some(kind)) = (j["apiVersion"].as_str(), j["kind"].as_str()) else {
            let (f, l, c) = d.at(d.doc.line, d.doc.column);
            problems.push(Problem::error(
                f,
                l,
                c,
                "rendered object has no apiVersion or kind",
            ));
            continue;
        };
        let name = j["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let (f, l, c) = d.at(d.doc.line, d.doc.column);
            problems.push(Problem::error(
                f,
                l,
                c,
                format!("{kind} has no metadata.name"),
            ));
        }
        let lookup = match local.lookup(api_version, kind) {
            Lookup::Unknown => crds.lookup(api_version, kind),
            found => found,
        };
        match lookup {
            Lookup::Schema(schema) => {
                for p in schema.check(&d.doc, &d.file) {
                    let (f, l, c) = d.at(p.line, p.column);
                    problems.push(Problem::error(
                        f,
                        l,
                        c,
                        format!("{kind} {name}: {}", p.message),
                    ));
                }
            }
            Lookup::VersionNotServed { served } => {
                let n = d.doc.get("apiVersion").unwrap_or(&d.doc);
                let (f, l, c) = d.at(n.line, n.column);
                problems.push(Problem::error(
                    f,
                    l,
                    c,
                    format!(
                        "{kind} is not served as {api_version}; served versions: {}",
                        served.join(", ")
                    ),
                ));
            }
            Lookup::BadSchema(e) => problems.push(Problem::error(
                &d.file,
                0,
                0,
                format!("schema for {kind} does not compile: {e}"),
            )),
            Lookup::UnknownBuiltin { versions, kinds } => {
                let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                let message = if versions.is_empty() {
                    format!(
                        "unknown kind {kind} in {api_version}: not a Kubernetes {} kind of group {:?}; known kinds there: {}",
                        crate::kube_schemas::KUBERNETES_VERSION,
                        group,
                        kinds.join(", ")
                    )
                } else {
                    format!(
                        "{kind} is not served as {api_version} in Kubernetes {}; use version {}",
                        crate::kube_schemas::KUBERNETES_VERSION,
                        versions.join(" or ")
                    )
                };
                let n = d.doc.get("kind").unwrap_or(&d.doc);
                let (f, l, c) = d.at(n.line, n.column);
                problems.push(Problem::error(f, l, c, message));
            }
            Lookup::Unknown => {
                let n = d.doc.get("kind").unwrap_or(&d.doc);
                let (f, l, c) = d.at(n.line, n.column);
                let message = format!(
                    "no CRD known for {kind} ({api_version}): not validated; ship its CRD in the chart or add it with --crd-dir"
                );
                problems.push(if unknown_is_error {
                    Problem::error(f, l, c, message)
                } else {
                    Problem::warning(f, l, c, message)
                });
            }
        }
        objects.push(Rendered {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            name,
        });
    }
    objects
}

/// The addon charts: each stage's subchart (multi-stage) or the umbrella chart, rendered with its own
/// values as `helm template cluster-addon <chart> --namespace kube-system` would, and every object checked:
/// CRDs that the charts ship are collected first, so their custom resources are validated against them.
fn check_addons(stack: &Stack, crds: &CrdSet, problems: &mut Vec<Problem>) {
    let dirs: Vec<String> = match &stack.convention {
        Convention::Umbrella => vec!["cluster-addon".to_string()],
        Convention::MultiStage(cfg) => {
            let mut names: Vec<String> = cfg.stage_names().into_iter().collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|n| format!("cluster-addon/{n}"))
                .filter(|d| stack.files.contains_key(&format!("{d}/Chart.yaml")))
                .collect()
        }
    };
    let v = placeholder_versions();
    let release = ReleaseInfo {
        name: "cluster-addon".into(),
        namespace: "kube-system".into(),
        kube_version: stack.config.config.kubernetes_version.to_string(),
    };
    let mut all = Vec::new();
    for dir in &dirs {
        let has_subcharts = stack.under(dir).any(|(rel, _)| rel.starts_with("charts/"));
        let declares = stack
            .files
            .get(&format!("{dir}/Chart.yaml"))
            .and_then(|d| yaml::parse_one(&String::from_utf8_lossy(d)).ok())
            .is_some_and(|doc| doc.get("dependencies").is_some());
        if has_subcharts || declares {
            problems.push(Problem::warning(
                stack.display(&format!("{dir}/Chart.yaml")),
                0,
                0,
                "chart has dependencies (`dependencies:` or charts/): csctl renders and validates only the chart's own templates",
            ));
        }
        all.extend(render_docs(
            stack,
            dir,
            &v.cluster_addon.dot(),
            &release,
            problems,
        ));
    }
    let mut local = CrdSet::default();
    for d in all.iter().filter(|d| {
        d.json["kind"] == "CustomResourceDefinition"
            && d.json["apiVersion"] == "apiextensions.k8s.io/v1"
    }) {
        // A malformed CRD is reported by the schema check below; here it only does not count.
        if let Ok(text) = serde_json::to_string(&d.json) {
            let _ = local.add_text(&d.file, &text);
        }
    }
    check_objects(&all, crds, &local, true, problems);
}

fn check_cluster_class(stack: &Stack, crds: &CrdSet, problems: &mut Vec<Problem>) {
    let v = placeholder_versions();
    let release = ReleaseInfo {
        name: stack.prefix(),
        namespace: "default".into(),
        kube_version: stack.config.config.kubernetes_version.to_string(),
    };
    let docs = render_docs(
        stack,
        "cluster-class",
        &v.cluster_stack.dot(),
        &release,
        problems,
    );
    let objects = check_objects(&docs, crds, &CrdSet::default(), false, problems);
    for d in &docs {
        let mut found = crate::static_pods::in_template(&d.doc, &d.json);
        if d.json["kind"] == "ClusterClass" {
            found.extend(crate::static_pods::in_class_patches(
                &d.doc,
                &d.json,
                &mut |line, column, message| {
                    let (f, l, c) = d.at(line, column);
                    problems.push(Problem::error(f, l, c, message));
                },
            ));
        }
        crate::static_pods::check(&found, crds, &|line, column| d.at(line, column), problems);
    }
    let classes: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.json["kind"] == "ClusterClass")
        .collect();
    match classes.len() {
        0 => problems.push(Problem::error(
            stack.display("cluster-class/templates"),
            0,
            0,
            "the cluster-class chart renders no ClusterClass",
        )),
        1 => {}
        n => problems.push(Problem::warning(
            stack.display("cluster-class/templates"),
            0,
            0,
            format!("the cluster-class chart renders {n} ClusterClasses; the cluster-stack-operator expects one"),
        )),
    }
    let expected_name = format!("{}-{}", stack.prefix(), v.cluster_stack.dot());
    for d in &classes {
        let j = &d.json;
        let at = |ptr: &str| {
            let n = d.doc.locate(ptr);
            d.at(n.line, n.column)
        };
        let name = j["metadata"]["name"].as_str().unwrap_or_default();
        if name != expected_name {
            let (f, l, c) = at("/metadata/name");
            problems.push(Problem::error(
                f,
                l,
                c,
                format!("ClusterClass is named {name:?}; the cluster-stack-operator expects {expected_name:?} ({{{{ .Release.Name }}}}-{{{{ .Chart.Version }}}})"),
            ));
        }
        let mut refs = Vec::new();
        class_refs(j, "", &mut refs);
        for (ptr, r) in refs {
            let (rk, rn) = (
                r["kind"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default(),
            );
            let ra = r["apiVersion"].as_str().unwrap_or_default();
            let found = objects.iter().find(|o| o.kind == rk && o.name == rn);
            match found {
                None => {
                    let (f, l, c) = at(&format!("{ptr}/name"));
                    problems.push(Problem::error(
                        f,
                        l,
                        c,
                        format!("references {rk} {rn:?}, which the chart does not contain"),
                    ));
                }
                Some(o) if !ra.is_empty() && o.api_version != ra => {
                    let (f, l, c) = at(&format!("{ptr}/apiVersion"));
                    problems.push(Problem::error(
                        f,
                        l,
                        c,
                        format!(
                            "references {rk} {rn:?} as {ra}, but the chart renders it as {}",
                            o.api_version
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
}
