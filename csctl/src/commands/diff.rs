//! `csctl diff A B`: two releases (registry refs, layout refs or release directories) side by side —
//! component versions, which files changed, and inside the chart archives which files changed and how.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use clap::Args;

use super::inspect::{MetadataVersions, metadata_versions};
use super::remote::{RegistryArgs, parse_location, runtime};
use crate::archive;
use crate::oci::Location;
use crate::oci::digest::Digest;
use crate::oci::pull::{release_manifest, titled_layers};
use crate::output::Ctx;

/// Files bigger than this (node images) are compared by digest only.
const MAX_IN_MEMORY: u64 = 64 << 20;
/// Diff lines shown per changed file.
const MAX_DIFF_LINES: usize = 200;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// First release: oci://HOST/REPO:TAG, oci:DIR:TAG, or a release directory.
    #[arg(value_name = "A")]
    pub a: String,
    /// Second release, same forms.
    #[arg(value_name = "B")]
    pub b: String,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Content {
    Bytes(Vec<u8>),
    Large { digest: Digest, size: u64 },
}

struct Side {
    files: BTreeMap<String, Content>,
}

impl Side {
    fn versions(&self) -> MetadataVersions {
        match self.files.get("metadata.yaml") {
            Some(Content::Bytes(b)) => metadata_versions(b),
            _ => MetadataVersions::default(),
        }
    }
}

/// Archive names carry versions; compare them by role so a version bump shows as a change, not as add+remove.
fn role(name: &str) -> String {
    if name.ends_with(".tgz") {
        for r in ["cluster-class", "cluster-addon", "node-image"] {
            if name.contains(r) {
                return format!("<{r} archive>");
            }
        }
    }
    name.to_string()
}

async fn load(spec: &str, registry: &RegistryArgs) -> anyhow::Result<Side> {
    if !spec.starts_with("oci:") {
        return load_dir(Path::new(spec));
    }
    let location = parse_location(spec)?;
    let reference = match &location {
        Location::Registry(r) => r.reference(),
        Location::Layout { tag, .. } => tag.clone(),
    }
    .with_context(|| format!("{spec} has no tag or digest"))?;
    let store = registry.open(&location, false, false).await?;
    let (manifest, _) = release_manifest(&store, &reference).await?;
    let mut files = BTreeMap::new();
    for (title, layer) in titled_layers(&manifest) {
        let content = if layer.size > MAX_IN_MEMORY {
            Content::Large {
                digest: layer.digest.clone(),
                size: layer.size,
            }
        } else {
            Content::Bytes(store.fetch_blob_bytes(&layer.digest).await?)
        };
        files.insert(title.to_string(), content);
    }
    Ok(Side { files })
}

fn load_dir(dir: &Path) -> anyhow::Result<Side> {
    anyhow::ensure!(
        dir.is_dir(),
        "{} is neither a directory nor an oci: reference",
        dir.display()
    );
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let path = entry.path();
        let size = entry.metadata()?.len();
        let content = if size > MAX_IN_MEMORY {
            let (digest, size) = Digest::of_file(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Content::Large { digest, size }
        } else {
            Content::Bytes(
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            )
        };
        files.insert(entry.file_name().to_string_lossy().into_owned(), content);
    }
    Ok(Side { files })
}

/// A minimal line diff (LCS); only removed/added lines are printed.
fn line_diff(a: &str, b: &str) -> Vec<String> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        return vec![format!(
            "(too large for a line diff: {} → {} lines)",
            a.len(),
            b.len()
        )];
    }
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("-{}", a[i]));
            i += 1;
        } else {
            out.push(format!("+{}", b[j]));
            j += 1;
        }
    }
    out
}

fn describe(c: &Content) -> String {
    match c {
        Content::Bytes(b) => format!("{} bytes, {}", b.len(), Digest::of_bytes(b).short()),
        Content::Large { digest, size } => format!("{size} bytes, {}", digest.short()),
    }
}

fn text_diff(out: &mut String, indent: &str, a: &[u8], b: &[u8]) {
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(ta), Ok(tb)) => {
            let lines = line_diff(ta, tb);
            for l in lines.iter().take(MAX_DIFF_LINES) {
                out.push_str(&format!("{indent}{l}\n"));
            }
            if lines.len() > MAX_DIFF_LINES {
                out.push_str(&format!(
                    "{indent}… {} more line(s)\n",
                    lines.len() - MAX_DIFF_LINES
                ));
            }
        }
        _ => out.push_str(&format!(
            "{indent}(binary: {} → {} bytes)\n",
            a.len(),
            b.len()
        )),
    }
}

/// Computes the report; returns (text, json, differs).
fn compare(a: &Side, b: &Side) -> anyhow::Result<(String, serde_json::Value, bool)> {
    let mut text = String::new();
    let (va, vb) = (a.versions(), b.versions());
    text.push_str("component versions:\n");
    let mut differs = false;
    let rows = [
        ("clusterStack", &va.cluster_stack, &vb.cluster_stack),
        ("kubernetes", &va.kubernetes, &vb.kubernetes),
        ("clusterAddon", &va.cluster_addon, &vb.cluster_addon),
        ("nodeImage", &va.node_image, &vb.node_image),
    ];
    for (k, x, y) in rows {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        if x == y {
            text.push_str(&format!("  {k:<13} {}\n", show(x)));
        } else {
            text.push_str(&format!("  {k:<13} {} -> {}\n", show(x), show(y)));
        }
    }
    let by_role = |s: &Side| {
        s.files
            .iter()
            .map(|(n, c)| (role(n), (n.clone(), c.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let (ra, rb) = (by_role(a), by_role(b));
    let keys: BTreeSet<&String> = ra.keys().chain(rb.keys()).collect();
    let mut files_json = Vec::new();
    text.push_str("files:\n");
    for key in keys {
        match (ra.get(key), rb.get(key)) {
            (Some((na, _)), None) => {
                differs = true;
                text.push_str(&format!("  - {na}\n"));
                files_json.push(serde_json::json!({"file": na, "change": "removed"}));
            }
            (None, Some((nb, _))) => {
                differs = true;
                text.push_str(&format!("  + {nb}\n"));
                files_json.push(serde_json::json!({"file": nb, "change": "added"}));
            }
            (Some((na, ca)), Some((nb, cb))) if ca == cb => {
                let name = if na == nb {
                    na.clone()
                } else {
                    format!("{na} -> {nb}")
                };
                text.push_str(&format!("    {name} (same)\n"));
            }
            (Some((na, ca)), Some((nb, cb))) => {
                differs = true;
                let name = if na == nb {
                    na.clone()
                } else {
                    format!("{na} -> {nb}")
                };
                text.push_str(&format!(
                    "  ~ {name} ({} -> {})\n",
                    describe(ca),
                    describe(cb)
                ));
                let mut inner = Vec::new();
                match (ca, cb) {
                    (Content::Bytes(x), Content::Bytes(y)) if na.ends_with(".tgz") => {
                        let (fa, fb) = (
                            archive::read_files(x, 4 * MAX_IN_MEMORY)
                                .with_context(|| format!("{na}: cannot read it as a .tgz"))?,
                            archive::read_files(y, 4 * MAX_IN_MEMORY)
                                .with_context(|| format!("{nb}: cannot read it as a .tgz"))?,
                        );
                        let paths: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
                        for p in paths {
                            match (fa.get(p), fb.get(p)) {
                                (Some(_), None) => {
                                    text.push_str(&format!("      - {p}\n"));
                                    inner.push(serde_json::json!({"file": p, "change": "removed"}));
                                }
                                (None, Some(_)) => {
                                    text.push_str(&format!("      + {p}\n"));
                                    inner.push(serde_json::json!({"file": p, "change": "added"}));
                                }
                                (Some(x), Some(y)) if x != y => {
                                    text.push_str(&format!("      ~ {p}\n"));
                                    text_diff(&mut text, "          ", x, y);
                                    inner
                                        .push(serde_json::json!({"file": p, "change": "modified"}));
                                }
                                _ => {}
                            }
                        }
                    }
                    (Content::Bytes(x), Content::Bytes(y)) => text_diff(&mut text, "      ", x, y),
                    _ => {}
                }
                files_json.push(
                    serde_json::json!({"file": name, "change": "modified", "archive": inner}),
                );
            }
            (None, None) => {}
        }
    }
    differs |= va != vb;
    let json =
        serde_json::json!({"versions": {"a": va, "b": vb}, "files": files_json, "differ": differs});
    Ok((text, json, differs))
}

pub fn run(ctx: &Ctx, args: &DiffArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let a = load(&args.a, &args.registry)
            .await
            .with_context(|| format!("cannot read {}", args.a))?;
        let b = load(&args.b, &args.registry)
            .await
            .with_context(|| format!("cannot read {}", args.b))?;
        let (text, json, _) = compare(&a, &b)?;
        ctx.emit(text, &json);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_reports_changes_only() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), vec!["-b", "+x"]);
        assert!(line_diff("same\n", "same\n").is_empty());
    }

    #[test]
    fn archives_compare_by_role() {
        assert_eq!(
            role("beowulf-hpc-1-33-cluster-class-v1.tgz"),
            role("beowulf-hpc-1-33-cluster-class-v2.tgz")
        );
        assert_ne!(
            role("beowulf-hpc-1-33-cluster-class-v1.tgz"),
            role("beowulf-hpc-1-33-cluster-addon-v1.tgz")
        );
    }
}
