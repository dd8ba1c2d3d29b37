//! Renders charts as Helm does: a differential test of csctl's chart renderer (`csctl::render::render_chart`, a
//! subset of Go text/template + Sprig) against `helm template` (the Go peer built by `.ci/install` into
//! `$BEOWULF_PEERS_DIR/go/current/bin/helm`), with the same release name, namespace and Kubernetes version.
//!
//! Charts: every chart under `providers/` and in the Cluster Stacks fixtures (`$CLUSTER_STACKS_FIXTURES_DIR`),
//! and real-world charts: test charts of Helm's own module and the chart `helm create` writes, copied by
//! `.ci/install` into `$BEOWULF_PEERS_DIR/go/helm-charts-current`; and csctl's own test charts, among them
//! `tests/fixtures/render-probe`, one use of each construct the renderer supports. Each chart is copied to a scratch directory
//! (symlinks followed), its `<< .ClusterClassVersion >>`-style markers replaced as `csctl create` does.
//!
//! Both outputs are split into YAML documents and read with csctl's reader (`metadata_schema::yaml`; comments,
//! such as Helm's `# Source:`, are not data); empty documents are dropped; objects are keyed by (apiVersion,
//! kind, namespace, name) and compared as JSON values. Per chart the outcome is identical objects, or an entry
//! of `ALLOWED` saying what differs and why: where csctl refuses a construct, its error must name it. An entry
//! that no longer applies fails the test too, as does a chart with subcharts not listed in `SKIPPED`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use csctl::helmignore::HelmIgnore;
use csctl::render::{ReleaseInfo, render_chart};
use serde_json::Value;

const RELEASE: &str = "beowulf-test";
const NAMESPACE: &str = "ns-test";
const KUBE_VERSION: &str = "v1.33.0";

/// What may differ between csctl and Helm for a chart.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Allowed {
    /// csctl refuses the chart; one of its errors names this construct (Helm may render it, or refuse too).
    Refuses(&'static str),
    /// Both render, and the objects differ; the object key (`apiVersion/kind/namespace/name`) that differs.
    Differs(&'static str),
}
use Allowed::{Differs, Refuses};

/// (chart label, allowed difference, why).
const ALLOWED: &[(&str, Allowed, &str)] = &[
    (
        "helm/albatross",
        Refuses("deliberateSyntaxError"),
        "Helm's lint test chart calls an undefined function on purpose; Helm refuses it too (\"function \
         \"deliberateSyntaxError\" not defined\")",
    ),
    (
        "helm/mariadb",
        Refuses(".Files.Glob"),
        "Bitnami's chart (a dependency in Helm's tests) reads files with `(.Files.Glob …).AsConfig`: csctl's \
         renderer has no `.Files` (cluster classes carry their data in values)",
    ),
    (
        "helm/mariadb",
        Refuses("randAlphaNum"),
        "the same chart generates passwords with `randAlphaNum`: random output, refused by design (a \
         rendered cluster class must be reproducible)",
    ),
    (
        "helm/v3-fail",
        Differs("v1/Service//beowulf-test-v3-fail"),
        "annotated `helm.sh/hook: crd-install` (a Helm 2 hook): `helm template` drops objects with a hook it does \
         not know (\"skipping unknown hook\"), a release-time filter, not rendering; csctl renders the template \
         as written",
    ),
    (
        "csctl-tests/render-probe",
        Differs("v1/ConfigMap//render-probe-helm-floats"),
        "Helm reads every number of values.yaml as float64 (sigs.k8s.io/yaml), so `{{ .Values.big }}` with \
         1000000 prints `1e+06` and `printf \"%d\"` prints `%!d(float64=42)`; csctl keeps integers integers, \
         which is what the author means (with Helm, charts pipe through `int` to get it)",
    ),
];

/// Charts not compared, with why: (chart label, why).
const SKIPPED: &[(&str, &str)] = &[
    (
        "fixtures/stacks/docker-ferrol-1-27/cluster-addon/ngnix",
        SUBCHARTS,
    ),
    (
        "fixtures/stacks/docker-ferrol-1-27/cluster-addon/metrics-server",
        SUBCHARTS,
    ),
    (
        "fixtures/releases/docker-ferrol-1-27-v0-sha-hipstsw/docker-ferrol-1-27-cluster-addon-v0-sha.hipstsw/ngnix",
        SUBCHARTS,
    ),
    (
        "fixtures/releases/docker-ferrol-1-27-v0-sha-hipstsw/docker-ferrol-1-27-cluster-addon-v0-sha.hipstsw/metrics-server",
        SUBCHARTS,
    ),
    (
        "csctl-tests/golden-stack/cluster-addon/cni",
        GOLDEN_SUBCHART,
    ),
];
const GOLDEN_SUBCHART: &str = "csctl's test stack: its cni chart carries a packaged dependency (charts/dep-1.0.0.tgz) \
                               to test packaging; csctl renders no subcharts";
const SUBCHARTS: &str = "an umbrella chart whose templates are all in a packaged dependency (charts/*.tgz): \
                         csctl renders one chart's own templates, never subcharts (addons are applied by the \
                         cluster-stack-operator with Helm)";

fn peers_dir() -> PathBuf {
    std::env::var_os("BEOWULF_PEERS_DIR")
        .unwrap_or_else(|| "/opt/beowulf-peers".into())
        .into()
}

fn helm() -> PathBuf {
    let bin = peers_dir().join("go/current/bin/helm");
    assert!(
        bin.is_file(),
        "{} is missing: run `bash .ci/install` (builds the Go test peers, e2e/go-peers)",
        bin.display()
    );
    bin
}

fn helm_charts() -> PathBuf {
    let dir = peers_dir().join("go/helm-charts-current");
    assert!(
        dir.join(".complete").is_file(),
        "{} is missing: run `bash .ci/install` (copies Helm's test charts from its Go module, seconds)",
        dir.display()
    );
    dir
}

/// Directories holding a `Chart.yaml` under `root` (symlinks followed), sorted, labelled `prefix/relative`.
fn charts_under(root: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_name() == "Chart.yaml")
        .map(|e| {
            let dir = e.path().parent().unwrap().to_path_buf();
            let rel = dir
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (format!("{prefix}/{rel}"), dir)
        })
        .collect();
    out.sort();
    out
}

fn all_charts() -> Vec<(String, PathBuf)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut charts = charts_under(&repo.join("providers"), "providers");
    charts.extend(charts_under(&common::fixtures_dir(), "fixtures"));
    charts.extend(charts_under(&helm_charts(), "helm"));
    // csctl's own test charts, among them `render-probe`: the constructs the renderer claims to support.
    charts.extend(charts_under(
        &repo.join("csctl/tests/fixtures"),
        "csctl-tests",
    ));
    charts
}

/// Copies the chart (symlinks followed) and substitutes csctl's version markers in Chart.yaml.
fn prepare(src: &Path, dest: &Path) {
    common::copy_tree(src, dest);
    let chart_yaml = dest.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml).unwrap();
    let text = text
        .replace("<< .ClusterClassVersion >>", "v1")
        .replace("<< .ClusterAddonVersion >>", "v1")
        .replace("<< .NodeImageVersion >>", "v1");
    std::fs::write(&chart_yaml, text).unwrap();
}

fn has_subcharts(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("charts")).is_ok_and(|mut d| d.next().is_some())
}

type Objects = BTreeMap<String, Vec<Value>>;

fn key(v: &Value) -> String {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!(
        "{}/{}/{}/{}",
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name")
    )
}

fn objects(texts: &[(String, String)]) -> Result<Objects, String> {
    let mut out = Objects::new();
    for (file, text) in texts {
        let docs = metadata_schema::yaml::parse_documents(text)
            .map_err(|e| format!("{file}: {}:{}: {}", e.line, e.column, e.message))?;
        for d in docs {
            let v = d.to_json();
            if !v.is_null() {
                out.entry(key(&v)).or_default().push(v);
            }
        }
    }
    Ok(out)
}

fn render_csctl(dir: &Path) -> Result<Objects, String> {
    // As `csctl validate` renders a chart: .helmignore applied, as Helm applies it.
    let ignore = std::fs::read_to_string(dir.join(".helmignore"))
        .map(|t| HelmIgnore::parse(&t))
        .unwrap_or_default();
    let mut data = common::chart_files(dir);
    data.retain(|rel, _| !ignore.ignored(rel));
    let chart = common::chart_of(&data);
    let release = ReleaseInfo {
        name: RELEASE.into(),
        namespace: NAMESPACE.into(),
        kube_version: KUBE_VERSION.into(),
    };
    let rendered = render_chart(&chart, &release).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    objects(&rendered).map_err(|e| format!("csctl's output is not YAML: {e}"))
}

fn render_helm(helm: &Path, dir: &Path) -> Result<Objects, String> {
    let out = Command::new(helm)
        .args(["template", RELEASE])
        .arg(dir)
        .args(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSION])
        .env("HELM_CACHE_HOME", dir.join("../helm-home/cache"))
        .env("HELM_CONFIG_HOME", dir.join("../helm-home/config"))
        .env("HELM_DATA_HOME", dir.join("../helm-home/data"))
        .output()
        .expect("run helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    objects(&[("helm template".into(), text)])
        .map_err(|e| format!("Helm's output is not YAML: {e}"))
}

/// Where two JSON values differ, as JSON pointers with both sides.
fn value_differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => value_differences(l, r, &p, out),
                    (l, r) => out.push(format!("{p}: csctl {l:?}, helm {r:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                value_differences(l, r, &format!("{path}/{i}"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: csctl {a}, helm {b}")),
    }
}

/// Object keys that differ, each with its first difference.
fn differences(ours: &Objects, helm: &Objects) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in ours.keys().chain(helm.keys()) {
        let d = match (ours.get(k), helm.get(k)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) if a.len() == b.len() => {
                let mut out = Vec::new();
                for (x, y) in a.iter().zip(b) {
                    value_differences(x, y, "", &mut out);
                }
                out.join("\n    ")
            }
            (Some(a), Some(b)) => {
                format!("{} object(s) from csctl, {} from helm", a.len(), b.len())
            }
            (Some(_), None) => "only csctl renders it".into(),
            (None, _) => "only helm renders it".into(),
        };
        out.insert(k.clone(), d);
    }
    out
}

#[test]
fn charts_render_as_helm_renders_them() {
    let helm = helm();
    let charts = all_charts();
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut used_allowed = vec![false; ALLOWED.len()];
    let mut used_skipped = vec![false; SKIPPED.len()];
    let mut compared = 0;
    for (n, (label, src)) in charts.iter().enumerate() {
        let dir = scratch.path().join(format!("{n}"));
        prepare(src, &dir);
        if let Some(i) = SKIPPED.iter().position(|(l, _)| l == label) {
            println!("{label}: skipped");
            used_skipped[i] = true;
            continue;
        }
        if has_subcharts(&dir) {
            failures.push(format!(
                "{label}: has subcharts (charts/); csctl renders no subcharts: list it in SKIPPED with why"
            ));
            continue;
        }
        compared += 1;
        let allowed: Vec<(usize, Allowed)> = ALLOWED
            .iter()
            .enumerate()
            .filter(|(_, (l, _, _))| l == label)
            .map(|(i, (_, a, _))| (i, *a))
            .collect();
        let ours = render_csctl(&dir);
        let theirs = render_helm(&helm, &dir);
        // Shown with `--nocapture`.
        println!(
            "{label}: {}",
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) if a == b => format!("identical ({} objects)", a.len()),
                (Ok(_), Ok(_)) => "objects differ".into(),
                (Err(_), Ok(_)) => "csctl refuses, Helm renders".into(),
                (Err(_), Err(_)) => "both refuse".into(),
                (Ok(_), Err(_)) => "Helm refuses, csctl renders".into(),
            }
        );
        match (&ours, &theirs) {
            (Err(e), _) => {
                // Every error must name an allow-listed construct, and every such entry must name an error.
                let mut unexplained = Vec::new();
                for line in e.lines() {
                    let hits: Vec<usize> = allowed
                        .iter()
                        .filter(|(_, a)| matches!(a, Refuses(c) if line.contains(c)))
                        .map(|(i, _)| *i)
                        .collect();
                    if hits.is_empty() {
                        unexplained.push(line);
                    }
                    for i in hits {
                        used_allowed[i] = true;
                    }
                }
                if !unexplained.is_empty() {
                    failures.push(format!(
                        "{label}: csctl refuses it (Helm {}), with errors naming no allow-listed construct:\n{}",
                        if theirs.is_ok() {
                            "renders it"
                        } else {
                            "refuses it too"
                        },
                        unexplained.join("\n")
                    ));
                }
            }
            (Ok(_), Err(e)) => {
                failures.push(format!("{label}: csctl renders it, Helm refuses it:\n{e}"))
            }
            (Ok(a), Ok(b)) => {
                let diffs = differences(a, b);
                let mut unexplained = Vec::new();
                for (k, d) in &diffs {
                    match allowed
                        .iter()
                        .find(|(_, a)| matches!(a, Differs(key) if key == k))
                    {
                        Some((i, _)) => used_allowed[*i] = true,
                        None => unexplained.push(format!("  {k}: {d}")),
                    }
                }
                if !unexplained.is_empty() {
                    failures.push(format!(
                        "{label}: csctl renders differently from Helm:\n{}",
                        unexplained.join("\n")
                    ));
                }
            }
        }
    }
    for (i, (label, a, why)) in ALLOWED.iter().enumerate() {
        if !used_allowed[i] {
            failures.push(format!(
                "stale ALLOWED entry ({label}, {a:?}, {why:?}): the chart is gone or this difference no \
                 longer occurs; remove the entry"
            ));
        }
    }
    for (i, (label, _)) in SKIPPED.iter().enumerate() {
        if !used_skipped[i] {
            failures.push(format!("stale SKIPPED entry {label}: no such chart"));
        }
    }
    assert!(
        compared >= 10,
        "only {compared} charts compared: {charts:?}"
    );
    assert!(
        failures.is_empty(),
        "{} problem(s) in {} charts:\n\n{}",
        failures.len(),
        charts.len(),
        failures.join("\n\n")
    );
}
