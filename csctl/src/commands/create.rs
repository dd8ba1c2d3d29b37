//! `csctl create`: its flags resolve into a [`BuildPlan`]; running a build plan (also what `csctl publish
//! STACK_DIR` resolves to) turns stack directories into release directories, then publishes them with the
//! shared step in `oci::publish` if asked.
//!
//! Everything is checked and built in memory first; only then is anything written, each release into a
//! temporary directory inside the output root that is renamed into place. A bad stack, a clash with an
//! existing different release, or a failed write leaves no half release behind.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use metadata_schema::{Problem, Version};

use super::plan::{BuildPlan, Plan, Previous, Versions};
use super::remote::{self, RegistryArgs};
use crate::build::{self, Built, StableDecision};
use crate::error::{InvalidInput, UsageError};
use crate::hash::sha256_hex;
use crate::oci::publish::{Published, publish_release_dirs};
use crate::output::Ctx;
use crate::release::{self, ReleaseDir};
use crate::stack::{Stack, expand_stack_dirs};
use crate::substitute::ReleaseVersions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `vN`: bump from the latest release in `--remote` (first release: v1/v1/v1); unchanged parts keep
    /// their versions; nothing changed → exit 0 without a release.
    Stable,
    /// `v0-sha.<7 chars of the content hash>` for all three versions.
    Hash,
    /// The versions given by `--cluster-stack-version`, `--cluster-addon-version`, `--node-image-version`.
    Custom,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Stack directories (`providers/<provider>/<name>/<maj>-<min>`); several at once, e.g.
    /// `providers/beowulf/hpc/*`. A directory without csctl.yaml whose subdirectories have one stands for
    /// those subdirectories.
    #[arg(required = true, value_name = "STACK_DIR")]
    pub stacks: Vec<PathBuf>,

    /// How versions are chosen.
    #[arg(long, short, value_enum, default_value_t = Mode::Stable)]
    pub mode: Mode,

    /// Output root; each release goes to `<output>/<release-name>/`.
    #[arg(long, short, default_value = "./.release", value_name = "DIR")]
    pub output: PathBuf,

    /// Custom mode: the cluster-stack version (dot form, e.g. v0-custom.pr12).
    #[arg(long, value_name = "VERSION")]
    pub cluster_stack_version: Option<String>,

    /// Custom mode: the cluster-addon version.
    #[arg(long, value_name = "VERSION")]
    pub cluster_addon_version: Option<String>,

    /// Custom mode: the node-image version.
    #[arg(long, value_name = "VERSION")]
    pub node_image_version: Option<String>,

    /// Stable mode: where the previous releases are: a directory of release directories, or an OCI
    /// repository (oci://HOST[:PORT]/REPOSITORY, or oci:DIR for a local layout). Default: the output
    /// directory. With --publish, an OCI remote is also where the releases go.
    #[arg(long, value_name = "DIR|oci://…")]
    pub remote: Option<String>,

    /// Publish the releases after building (like `csctl publish`): to --remote if it is an OCI repository,
    /// else to $OCI_REPOSITORY, else to the local OCI layout.
    #[arg(long)]
    pub publish: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl CreateArgs {
    /// Checks the flags and resolves them into a [`Plan::Build`].
    pub fn resolve(&self) -> anyhow::Result<Plan> {
        let publish = match (self.publish, &self.remote) {
            (false, _) => None,
            (true, Some(r)) if r.starts_with("oci:") => Some(remote::parse_location(r)?),
            (true, _) => Some(remote::default_location()?),
        };
        if self.mode != Mode::Custom
            && (self.cluster_stack_version.is_some()
                || self.cluster_addon_version.is_some()
                || self.node_image_version.is_some())
        {
            return Err(
                UsageError("the --*-version flags only apply to --mode custom".into()).into(),
            );
        }
        let versions = match self.mode {
            Mode::Stable => Versions::Stable {
                previous: match &self.remote {
                    Some(r) if r.starts_with("oci:") => Previous::Oci(remote::parse_location(r)?),
                    Some(r) => Previous::Dir(PathBuf::from(r)),
                    None => Previous::Output,
                },
            },
            Mode::Hash => Versions::Hash,
            Mode::Custom => Versions::Custom(custom_versions(self)?),
        };
        Ok(Plan::Build(BuildPlan {
            stacks: expand_stack_dirs(&self.stacks),
            versions,
            output: self.output.clone(),
            publish,
            registry: self.registry.clone(),
        }))
    }
}

fn custom_versions(args: &CreateArgs) -> anyhow::Result<ReleaseVersions> {
    let mut problems = Vec::new();
    let mut get = |flag: &str, v: &Option<String>| -> Option<Version> {
        match v {
            None => None,
            Some(s) => match Version::parse_dot(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(Problem::error(format!("--{flag}"), 0, 0, e.to_string()));
                    None
                }
            },
        }
    };
    let cs = get("cluster-stack-version", &args.cluster_stack_version);
    let ca = get("cluster-addon-version", &args.cluster_addon_version);
    let ni = get("node-image-version", &args.node_image_version);
    if !problems.is_empty() {
        return Err(InvalidInput { problems }.into());
    }
    match (cs, ca, ni) {
        (Some(cluster_stack), Some(cluster_addon), Some(node_image)) => Ok(ReleaseVersions {
            cluster_stack,
            cluster_addon,
            node_image,
        }),
        _ => Err(UsageError(
            "--mode custom needs --cluster-stack-version, --cluster-addon-version and --node-image-version"
                .into(),
        )
        .into()),
    }
}

/// One stack's outcome.
enum Outcome {
    Build {
        built: Box<Built>,
        previous: Option<String>,
        changed: Vec<&'static str>,
    },
    NoChange {
        latest: String,
    },
}

/// Carries out a build plan.
pub fn run(ctx: &Ctx, plan: &BuildPlan) -> anyhow::Result<()> {
    // 1. Load and check every stack before anything else.
    let mut stacks = Vec::new();
    let mut problems = Vec::new();
    for dir in &plan.stacks {
        ctx.progress(format!("reading {}", dir.display()));
        match Stack::load(dir) {
            Ok(s) => stacks.push(s),
            Err(e) => problems.extend(e.problems),
        }
    }
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    for s in &stacks {
        if let Some(other) = seen.insert(s.prefix(), &s.dir) {
            problems.push(Problem::error(
                s.dir.display().to_string(),
                0,
                0,
                format!(
                    "same provider, name and Kubernetes minor ({}) as {}",
                    s.prefix(),
                    other.display()
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(InvalidInput { problems }.into());
    }

    // 2. Previous releases (stable mode).
    // An OCI remote is materialised as a temporary directory holding the latest stable release of each
    // stack (metadata.yaml and hashes.json only), so stable mode reads it like a directory remote.
    let mut oci_previous: Option<tempfile::TempDir> = None;
    let previous: Vec<ReleaseDir> = if let Versions::Stable { previous } = &plan.versions {
        let remote = match previous {
            Previous::Oci(location) => {
                ctx.progress(format!("looking up the latest releases in {location}"));
                let tmp = remote::latest_releases(location, &plan.registry)
                    .with_context(|| format!("reading previous releases in {location}"))?;
                let p = tmp.path().to_path_buf();
                oci_previous = Some(tmp);
                p
            }
            Previous::Dir(p) => {
                if !p.is_dir() {
                    return Err(
                        UsageError(format!("--remote {}: no such directory", p.display())).into(),
                    );
                }
                p.clone()
            }
            Previous::Output => plan.output.clone(),
        };
        if remote.is_dir() {
            release::list_release_dirs(&remote)
                .with_context(|| format!("reading previous releases in {}", remote.display()))?
        } else {
            Vec::new()
        }
    } else {
        Vec::new()
    };

    // 3. Build everything in memory.
    let mut outcomes = Vec::new();
    for stack in &stacks {
        ctx.progress(format!(
            "building {} ({} mode)",
            stack.dir.display(),
            plan.versions.mode()
        ));
        let hashes = build::hashes(stack);
        let (versions, prev, changed) = match &plan.versions {
            Versions::Hash => (build::hash_mode_versions(&hashes), None, vec![]),
            Versions::Custom(custom) => (custom.clone(), None, vec![]),
            Versions::Stable { .. } => {
                let probe = build::release_name(
                    stack,
                    &ReleaseVersions {
                        cluster_stack: Version::stable(1),
                        cluster_addon: Version::stable(1),
                        node_image: Version::stable(1),
                    },
                );
                match build::stable_versions(&hashes, release::latest_stable(&previous, &probe)) {
                    StableDecision::NoChange { latest } => {
                        outcomes.push((stack, Outcome::NoChange { latest }));
                        continue;
                    }
                    StableDecision::Release {
                        versions,
                        previous,
                        changed,
                    } => (versions, previous, changed),
                }
            }
        };
        let built = build::build(stack, &versions, hashes)?;
        outcomes.push((
            stack,
            Outcome::Build {
                built: Box::new(built),
                previous: prev,
                changed,
            },
        ));
    }

    // 4. Refuse to overwrite a different existing release, before writing anything.
    for (_, o) in &outcomes {
        if let Outcome::Build { built, .. } = o {
            let target = plan.output.join(built.name.to_string());
            if target.exists() && !same_content(&target, built)? {
                anyhow::bail!(
                    "{} already exists with different content; remove it or choose another --output",
                    target.display()
                );
            }
        }
    }

    // 5. Write.
    let mut report = Vec::new();
    let mut text = String::new();
    for (stack, o) in &outcomes {
        match o {
            Outcome::NoChange { latest } => {
                text.push_str(&format!(
                    "no change in {} since {latest}: nothing to release\n",
                    stack.dir.display()
                ));
                report.push(serde_json::json!({
                    "stack": stack.dir.display().to_string(),
                    "status": "no-change",
                    "latest": latest,
                }));
            }
            Outcome::Build {
                built,
                previous,
                changed,
            } => {
                let target = plan.output.join(built.name.to_string());
                let status = if target.exists() {
                    "exists"
                } else {
                    write_release(&plan.output, &target, built)?;
                    "created"
                };
                let v = &built.metadata.versions;
                text.push_str(&format!(
                    "{} {}\n  cluster stack {}, cluster addon {}, node image {}, Kubernetes {}{}\n",
                    if status == "created" {
                        "created"
                    } else {
                        "already up to date:"
                    },
                    target.display(),
                    v.cluster_stack,
                    v.components.cluster_addon,
                    v.components.node_image,
                    v.kubernetes,
                    match previous {
                        Some(p) => format!(" (after {p}; changed: {})", changed.join(", ")),
                        None => String::new(),
                    }
                ));
                let mut files = Vec::new();
                for (name, data) in &built.files {
                    let sum = sha256_hex(data);
                    text.push_str(&format!(
                        "  {name:<52} {:>8} bytes  sha256:{sum}\n",
                        data.len()
                    ));
                    files
                        .push(serde_json::json!({"name": name, "size": data.len(), "sha256": sum}));
                }
                report.push(serde_json::json!({
                    "stack": stack.dir.display().to_string(),
                    "status": status,
                    "release": built.name.to_string(),
                    "path": target.display().to_string(),
                    "previous": previous,
                    "changed": changed,
                    "versions": {
                        "clusterStack": v.cluster_stack.dot(),
                        "clusterAddon": v.components.cluster_addon.dot(),
                        "nodeImage": v.components.node_image.dot(),
                        "kubernetes": v.kubernetes.to_string(),
                    },
                    "files": files,
                }));
            }
        }
    }
    if plan.publish.is_none() {
        for r in report.iter().filter(|r| r["status"] != "no-change") {
            text.push_str(&format!(
                "next: csctl publish {} --to oci://<registry>/<repository>   (or: csctl inspect / csctl diff)\n",
                r["path"].as_str().unwrap_or_default()
            ));
        }
    }
    drop(oci_previous);
    let mut json = serde_json::json!({ "releases": report });
    if let Some(target) = &plan.publish {
        // New releases, and unchanged ones whose release directory is here (publishing is idempotent: a
        // release already at the target is a no-op), so that running the same command again after a
        // `create` without `--publish` still publishes.
        let dirs: Vec<PathBuf> = report
            .iter()
            .filter_map(|r| match r["path"].as_str() {
                Some(p) => Some(PathBuf::from(p)),
                None => r["latest"]
                    .as_str()
                    .map(|l| plan.output.join(l))
                    .filter(|d| d.join("metadata.yaml").is_file()),
            })
            .collect();
        if !dirs.is_empty() {
            let published = remote::runtime()?.block_on(publish_release_dirs(
                ctx,
                &dirs,
                target,
                false,
                |progress| plan.registry.open(target, true, progress),
            ))?;
            text.extend(published.iter().map(Published::text));
            for p in &published {
                text.push_str(&format!(
                    "next: csctl inspect {}   (to a registry the cluster-stack-operator reads: csctl publish <release dir> --to oci://<registry>/<repository>)\n",
                    p.reference
                ));
            }
            json["published"] = published.iter().map(Published::json).collect();
        }
    }
    ctx.emit(text, &json);
    Ok(())
}

fn same_content(target: &Path, built: &Built) -> anyhow::Result<bool> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(target).with_context(|| format!("reading {}", target.display()))?
    {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    if names.iter().ne(built.files.keys()) {
        return Ok(false);
    }
    for (name, data) in &built.files {
        if std::fs::read(target.join(name))? != *data {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes into `<output>/.csctl-tmp-*` and renames it to `target`.
fn write_release(output: &Path, target: &Path, built: &Built) -> anyhow::Result<()> {
    std::fs::create_dir_all(output)
        .with_context(|| format!("creating the output directory {}", output.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".csctl-tmp-")
        .tempdir_in(output)
        .with_context(|| format!("creating a temporary directory in {}", output.display()))?;
    for (name, data) in &built.files {
        let path = tmp.path().join(name);
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        set_mode(&path, 0o644)?;
    }
    set_mode(tmp.path(), 0o755)?;
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, target) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(e).with_context(|| format!("moving the release into {}", target.display()));
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))
}
