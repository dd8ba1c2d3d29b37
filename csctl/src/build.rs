//! From a loaded stack to the bytes of a release: hashes, versions (by mode), archives, metadata.
//! Pure: nothing here touches the disk, so a release is either written whole or not at all.
use std::collections::BTreeMap;

use metadata_schema::yaml;
use metadata_schema::{Hashes, Metadata, Problem, Version};

use crate::archive::{self, Entry};
use crate::error::InvalidInput;
use crate::hash::{dir_hash, file_hash};
use crate::helmignore::HelmIgnore;
use crate::release::{ReleaseDir, ReleaseName};
use crate::stack::{Convention, Stack};
use crate::substitute::{ReleaseVersions, set_chart_version, substitute};

/// The hashes of every input of the stack (upstream's four keys plus ours).
pub fn hashes(stack: &Stack) -> Hashes {
    let opt_dir = |d: &str| stack.has_dir(d).then(|| dir_hash(stack.under(d)));
    let opt_file = |f: &str| stack.files.get(f).map(|d| file_hash(d));
    Hashes {
        cluster_stack: dir_hash(stack.files.iter().map(|(k, v)| (k.as_str(), v.as_slice()))),
        cluster_addon_dir: opt_dir("cluster-addon").unwrap_or_default(),
        cluster_addon_values: opt_file("cluster-addon-values.yaml").unwrap_or_default(),
        node_image_dir: opt_dir("node-image").unwrap_or_default(),
        cluster_class_dir: opt_dir("cluster-class"),
        cluster_addon_config: opt_file("clusteraddon.yaml"),
        csctl_config: opt_file(&stack.config_file),
        node_images_dir: opt_dir("node-images"),
    }
}

/// Hash mode: `v0-sha.<first 7 characters of the cleaned whole-stack hash>` for all three versions.
pub fn hash_mode_versions(h: &Hashes) -> ReleaseVersions {
    let short: String = h.cluster_stack.chars().take(7).collect();
    let v = Version {
        major: 0,
        pre: Some(("sha".into(), short)),
    };
    ReleaseVersions {
        cluster_stack: v.clone(),
        cluster_addon: v.clone(),
        node_image: v,
    }
}

/// What stable mode decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StableDecision {
    /// Build a release with these versions. `changed` lists the components that changed (for the report).
    Release {
        versions: ReleaseVersions,
        previous: Option<String>,
        changed: Vec<&'static str>,
    },
    /// Nothing changed since `latest`.
    NoChange { latest: String },
}

/// Stable mode: first release v1/v1/v1; otherwise any change bumps the stack version, and the addon and
/// node-image versions move only when their own inputs changed. A previous release without `hashes.json`
/// counts as "everything changed".
pub fn stable_versions(current: &Hashes, previous: Option<&ReleaseDir>) -> StableDecision {
    let Some(prev) = previous else {
        return StableDecision::Release {
            versions: ReleaseVersions {
                cluster_stack: Version::stable(1),
                cluster_addon: Version::stable(1),
                node_image: Version::stable(1),
            },
            previous: None,
            changed: vec!["first release"],
        };
    };
    let pv = &prev.metadata.versions;
    let (addon_changed, node_changed, mut changed) = match &prev.hashes {
        None => (true, true, vec!["previous release has no hashes.json"]),
        Some(ph) => {
            if ph.cluster_stack == current.cluster_stack {
                return StableDecision::NoChange {
                    latest: prev.name.to_string(),
                };
            }
            let addon = ph.cluster_addon_dir != current.cluster_addon_dir
                || ph.cluster_addon_values != current.cluster_addon_values
                || ph.cluster_addon_config != current.cluster_addon_config;
            let node = ph.node_image_dir != current.node_image_dir
                || ph.node_images_dir != current.node_images_dir;
            let mut what = Vec::new();
            if ph.cluster_class_dir != current.cluster_class_dir {
                what.push("cluster-class");
            }
            if ph.csctl_config != current.csctl_config {
                what.push("csctl.yaml");
            }
            (addon, node, what)
        }
    };
    if addon_changed {
        changed.push("cluster-addon");
    }
    if node_changed {
        changed.push("node-images");
    }
    if changed.is_empty() {
        changed.push("other stack files");
    }
    StableDecision::Release {
        versions: ReleaseVersions {
            cluster_stack: pv.cluster_stack.bump(),
            cluster_addon: if addon_changed {
                pv.components.cluster_addon.bump()
            } else {
                pv.components.cluster_addon.clone()
            },
            node_image: if node_changed {
                pv.components.node_image.bump()
            } else {
                pv.components.node_image.clone()
            },
        },
        previous: Some(prev.name.to_string()),
        changed,
    }
}

/// A release, in memory.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: ReleaseName,
    pub metadata: Metadata,
    pub hashes: Hashes,
    /// File name → bytes (a release is flat).
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The release name a stack gets with these versions.
pub fn release_name(stack: &Stack, v: &ReleaseVersions) -> ReleaseName {
    let k = stack.config.config.kubernetes_version;
    ReleaseName {
        provider: stack.config.config.provider.kind.clone(),
        name: stack.config.config.cluster_stack_name.clone(),
        k8s_major: k.major,
        k8s_minor: k.minor,
        version: v.cluster_stack.clone(),
    }
}

/// The `name:` of a Chart.yaml and where it is.
fn chart_name(stack: &Stack, chart_yaml_rel: &str, data: &[u8]) -> Result<String, Problem> {
    let file = stack.display(chart_yaml_rel);
    let doc = yaml::parse_one(&String::from_utf8_lossy(data)).map_err(|e| {
        Problem::error(
            &file,
            e.line,
            e.column,
            format!("malformed YAML: {}", e.message),
        )
    })?;
    doc.get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .ok_or_else(|| Problem::error(&file, doc.line, doc.column, "Chart.yaml has no `name`"))
}

/// A Helm chart archive: top-level directory = chart name, `.helmignore` applied, Chart.yaml `version` set.
fn helm_archive(
    stack: &Stack,
    dir: &str,
    chart_name: &str,
    version: &Version,
    v: &ReleaseVersions,
) -> std::io::Result<Vec<u8>> {
    let ignore = stack
        .files
        .get(&format!("{dir}/.helmignore"))
        .map(|d| HelmIgnore::parse(&String::from_utf8_lossy(d)))
        .unwrap_or_default();
    let entries: Vec<Entry> = stack
        .under(dir)
        .filter(|(rel, _)| !ignore.ignored(rel))
        .map(|(rel, data)| {
            let mut data = substitute(data, v);
            if rel == "Chart.yaml" {
                data = set_chart_version(&data, &version.dot());
            }
            Entry::file(format!("{chart_name}/{rel}"), data)
        })
        .collect();
    archive::tar_gz(&entries, false)
}

/// Builds every file of the release.
pub fn build(stack: &Stack, v: &ReleaseVersions, hashes: Hashes) -> anyhow::Result<Built> {
    let name = release_name(stack, v);
    let prefix = stack.prefix();
    let mut problems = Vec::new();

    // The cluster-class chart must be named <prefix>-cluster-class: CSO and the ClusterClass name rely on it.
    let cc_rel = "cluster-class/Chart.yaml";
    let expected_cc = format!("{prefix}-cluster-class");
    match chart_name(stack, cc_rel, &substitute(&stack.files[cc_rel], v)) {
        Ok(n) if n == expected_cc => {}
        Ok(n) => problems.push(Problem::error(
            stack.display(cc_rel),
            0,
            0,
            format!("chart name is {n:?}, expected {expected_cc:?} (<provider>-<name>-<maj>-<min>-cluster-class)"),
        )),
        Err(p) => problems.push(p),
    }
    if !problems.is_empty() {
        return Err(InvalidInput { problems }.into());
    }

    let mut files = BTreeMap::new();
    files.insert(
        name.cluster_class_archive(),
        helm_archive(stack, "cluster-class", &expected_cc, &v.cluster_stack, v)?,
    );
    let addon_file = name.cluster_addon_archive(&v.cluster_addon);
    match &stack.convention {
        Convention::Umbrella => {
            let rel = "cluster-addon/Chart.yaml";
            let chart = chart_name(stack, rel, &substitute(&stack.files[rel], v))
                .map_err(InvalidInput::one)?;
            files.insert(
                addon_file,
                helm_archive(stack, "cluster-addon", &chart, &v.cluster_addon, v)?,
            );
            if let Some(values) = stack.files.get("cluster-addon-values.yaml") {
                files.insert("cluster-addon-values.yaml".into(), substitute(values, v));
            }
        }
        Convention::MultiStage(_) => {
            // No top-level directory: first-level directories are the stage subcharts.
            let entries: Vec<Entry> = stack
                .under("cluster-addon")
                .map(|(rel, data)| Entry::file(rel, substitute(data, v)))
                .collect();
            files.insert(addon_file, archive::tar_gz(&entries, true)?);
            files.insert(
                "clusteraddon.yaml".into(),
                substitute(&stack.files["clusteraddon.yaml"], v),
            );
        }
    }
    let metadata = Metadata::new(
        v.cluster_stack.clone(),
        stack.config.config.kubernetes_version,
        v.cluster_addon.clone(),
        v.node_image.clone(),
    );
    files.insert("metadata.yaml".into(), metadata.to_yaml().into_bytes());
    files.insert("hashes.json".into(), hashes.to_json().into_bytes());
    Ok(Built {
        name,
        metadata,
        hashes,
        files,
    })
}
