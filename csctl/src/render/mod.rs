//! A renderer for the subset of Go text/template + Helm that cluster-class charts use, so that `csctl
//! validate` can check the rendered objects without Helm.
//!
//! Supported ("what csctl can render"): text and `{{ }}` actions with `{{-`/`-}}` trimming; comments
//! `{{/* */}}`; `.Release.Name/.Namespace/.Service`, `.Chart.*` (from Chart.yaml), `.Values.*` (values.yaml),
//! `.Capabilities.KubeVersion.Version`, `.Template.Name`; variables `$`, `$x := …`, `$x = …`; `if`/`else
//! if`/`else`, `range` (lists, maps in key order, integers; `$i, $v :=`), `with`/`else`, `define`,
//! `template`, `include`; parenthesised pipelines and `|` chains; functions `default`, `quote`, `squote`,
//! `trunc`, `trim`, `trimSuffix`, `trimPrefix`, `upper`, `lower`, `title`, `printf`, `print`, `println`,
//! `replace`, `contains`, `hasPrefix`, `hasSuffix`, `toYaml`, `toJson`, `indent`, `nindent`, `eq`, `ne`,
//! `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`, `len`, `index`, `list`, `dict`, `get`, `hasKey`, `empty`,
//! `required`, `ternary`, `join`, `toString`, `int`, `b64enc`, `sha256sum`, `fail`.
//! Anything else (`tpl`, `lookup`, `block`, `break`, methods such as `.Files.Get`, other Sprig functions, …) is a
//! clear error naming the construct, file and line. Numbers print as Go prints them (`2.0` → `2`), `toJson` writes
//! as Go's encoding/json; `csctl/tests/chart_differential.rs` compares the output with `helm template`.
mod exec;
mod funcs;
mod parse;
mod yaml_out;

use std::collections::{BTreeMap, HashMap};

pub use exec::Renderer;

/// A template that cannot be rendered, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RenderError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl RenderError {
    pub fn new(file: &str, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// A chart to render: its files relative to the chart root.
pub struct Chart<'a> {
    pub files: BTreeMap<&'a str, &'a [u8]>,
}

/// Release data for rendering.
pub struct ReleaseInfo {
    pub name: String,
    pub namespace: String,
    pub kube_version: String,
}

/// Chart.yaml keys become Helm's Go field names (`appVersion` → `AppVersion`, `apiVersion` → `APIVersion`).
fn chart_object(chart_yaml: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(m) = chart_yaml.as_object() {
        for (k, v) in m {
            let key = match k.as_str() {
                "apiVersion" => "APIVersion".to_string(),
                _ => {
                    let mut c = k.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                }
            };
            out.insert(key, v.clone());
        }
    }
    serde_json::Value::Object(out)
}

/// Renders every template of the chart (`templates/*`, except partials `_*` and `NOTES.txt`); returns
/// `(template path, rendered text)` in path order.
pub fn render_chart(
    chart: &Chart<'_>,
    release: &ReleaseInfo,
) -> Result<Vec<(String, String)>, Vec<RenderError>> {
    let load = |name: &str| -> Result<serde_json::Value, RenderError> {
        match chart.files.get(name) {
            None => Ok(serde_json::Value::Null),
            Some(d) => metadata_schema::yaml::parse_one(&String::from_utf8_lossy(d))
                .map(|n| n.to_json())
                .map_err(|e| {
                    RenderError::new(
                        name,
                        e.line as usize,
                        format!("malformed YAML: {}", e.message),
                    )
                }),
        }
    };
    let mut errors = Vec::new();
    let chart_yaml = load("Chart.yaml").unwrap_or_else(|e| {
        errors.push(e);
        serde_json::Value::Null
    });
    let mut values = load("values.yaml").unwrap_or_else(|e| {
        errors.push(e);
        serde_json::Value::Null
    });
    if values.is_null() {
        values = serde_json::json!({});
    }
    let mut renderer = Renderer::default();
    let mut mains = Vec::new();
    for (path, data) in &chart.files {
        let Some(rel) = path.strip_prefix("templates/") else {
            continue;
        };
        let base = rel.rsplit('/').next().unwrap_or(rel);
        if base == "NOTES.txt" {
            continue;
        }
        let text = String::from_utf8_lossy(data);
        match renderer.add(path, &text) {
            Ok(()) => {
                if !base.starts_with('_') {
                    mains.push(path.to_string());
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let root_for = |tpl: &str| {
        serde_json::json!({
            "Release": {"Name": release.name, "Namespace": release.namespace, "Service": "Helm",
                        "IsInstall": true, "IsUpgrade": false, "Revision": 1},
            "Chart": chart_object(&chart_yaml),
            "Values": values,
            "Capabilities": {"KubeVersion": {"Version": release.kube_version, "GitVersion": release.kube_version}},
            "Template": {"Name": tpl, "BasePath": "templates"},
        })
    };
    let mut out = Vec::new();
    for path in mains {
        match renderer.render(&path, &root_for(&path)) {
            Ok(text) => out.push((path, text)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Convenience for tests: render one template text with `data`.
pub fn render_str(text: &str, data: &serde_json::Value) -> Result<String, RenderError> {
    let mut r = Renderer::default();
    r.add("t", text)?;
    r.render("t", data)
}

#[allow(dead_code)]
type Defines = HashMap<String, Vec<parse::Node>>;

#[cfg(test)]
mod tests;
