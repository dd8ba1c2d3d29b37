//! `csctl publish`: push a release directory to a registry or to the local OCI layout.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::remote::{RegistryArgs, default_location, parse_location, runtime};
use crate::oci::Location;
use crate::oci::artifact::Artifact;
use crate::oci::client::default_state_dir;
use crate::oci::digest_cache::DigestCache;
use crate::oci::push::{PublishOutcome, publish};
use crate::output::Ctx;

#[derive(Debug, Args)]
#[command(after_long_help = "\
The artifact is an OCI 1.1 image manifest (artifactType application/vnd.scs.cluster-stacks.v1, empty
config, one layer per file titled org.opencontainers.image.title, annotations kubernetesVersion and hash)
tagged with the release name. It carries no timestamp: the same release always has the same digest.

Blobs the target already has are not sent again; large blobs go in chunks and an interrupted push resumes
when the same command is run again. A tag that already points to this release is a no-op (exit 0); a tag
that points to something else is refused unless --force.

Exit codes: 0 published or already there; 1 failure (unreachable, credentials, tag conflict, ...).")]
pub struct PublishArgs {
    /// Release directories (as written by `csctl create`, e.g. .release/beowulf-hpc-1-33-v1), or stack
    /// directories: those are first built into ./.release in stable mode against the releases already in
    /// the target (same as `csctl create --mode stable --remote <target> --publish`).
    #[arg(required = true, value_name = "RELEASE_DIR|STACK_DIR")]
    pub releases: Vec<PathBuf>,

    /// Target repository: oci://HOST[:PORT]/REPOSITORY (a registry) or oci:DIR (a local OCI image layout).
    /// Default: $OCI_REPOSITORY, else the local layout in $CSCTL_OCI_LAYOUT or ~/.local/share/csctl/oci.
    #[arg(long, value_name = "REPOSITORY")]
    pub to: Option<String>,

    /// Move the tag even if it points to a different manifest.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(ctx: &Ctx, args: &PublishArgs) -> anyhow::Result<()> {
    let target = match &args.to {
        Some(t) => parse_location(t)?,
        None => default_location()?,
    };
    if target.tag().is_some() {
        anyhow::bail!(
            "--to names a repository; the tag is always the release name, so drop `:{}`",
            target.tag().unwrap_or_default()
        );
    }
    let is_stack = |d: &PathBuf| d.join("csctl.yaml").is_file() || d.join("csmctl.yaml").is_file();
    if args.releases.iter().all(is_stack) {
        // Stack directories: build the next stable release against what the target already holds, then
        // publish it — exactly `csctl create --mode stable --remote <target> --publish`.
        let create = super::create::CreateArgs {
            stacks: args.releases.clone(),
            mode: super::create::Mode::Stable,
            output: PathBuf::from("./.release"),
            cluster_stack_version: None,
            cluster_addon_version: None,
            node_image_version: None,
            remote: Some(target.to_string()),
            publish: true,
            registry: args.registry.clone(),
        };
        return super::create::run(ctx, &create);
    }
    let (text, json) = runtime()?.block_on(publish_dirs(
        ctx,
        &args.releases,
        &target,
        &args.registry,
        args.force,
    ))?;
    ctx.emit(text, &serde_json::json!({ "published": json }));
    Ok(())
}

/// Publishes release directories to `target`; also used by `csctl create --publish`. Returns the text
/// report and the JSON array of results.
pub async fn publish_dirs(
    ctx: &Ctx,
    dirs: &[PathBuf],
    target: &Location,
    registry: &RegistryArgs,
    force: bool,
) -> anyhow::Result<(String, serde_json::Value)> {
    // Read and hash every release before talking to the target: a bad directory fails before any upload.
    let mut cache = DigestCache::open(default_state_dir().as_deref());
    let mut artifacts = Vec::new();
    for dir in dirs {
        artifacts.push(read_release(ctx, dir, &mut cache)?);
    }
    cache.save();
    let hashed_bytes = cache.hashed_bytes;
    let progress = !ctx.quiet && std::io::stderr().is_terminal();
    let store = registry
        .open(target, true, progress)
        .await
        .with_context(|| format!("cannot publish to {target}"))?;
    let mut results = Vec::new();
    let mut text = String::new();
    for artifact in &artifacts {
        let location = target.with_tag(&artifact.tag);
        ctx.progress(format!(
            "publishing {} ({} files, {} bytes) to {location}",
            artifact.tag,
            artifact.files.len(),
            artifact.total_size()
        ));
        let outcome = publish(&store, artifact, force)
            .await
            .with_context(|| format!("cannot publish {} to {location}", artifact.tag))?;
        match &outcome {
            PublishOutcome::Unchanged { digest } => {
                text.push_str(&format!(
                    "{location} is already published with digest {digest}; nothing to do\n"
                ));
                results.push(serde_json::json!({"tag": artifact.tag, "reference": location.to_string(), "digest": digest, "status": "unchanged", "hashedBytes": hashed_bytes}));
            }
            PublishOutcome::Published {
                digest,
                replaced,
                report,
            } => {
                text.push_str(&format!(
                    "published {location}@{digest}: {} blob(s) uploaded ({} bytes{}), {} already present, {} mounted{}\n",
                    report.uploaded,
                    report.uploaded_bytes,
                    if report.resumed > 0 { format!(", {} resumed", report.resumed) } else { String::new() },
                    report.existed,
                    report.mounted,
                    replaced.as_ref().map(|r| format!("; replaced {r}")).unwrap_or_default()
                ));
                results.push(serde_json::json!({
                    "tag": artifact.tag, "reference": location.to_string(), "digest": digest,
                    "status": if replaced.is_some() { "replaced" } else { "published" },
                    "uploadedBlobs": report.uploaded, "uploadedBytes": report.uploaded_bytes, "hashedBytes": hashed_bytes,
                    "existingBlobs": report.existed, "mountedBlobs": report.mounted, "resumedBlobs": report.resumed,
                }));
            }
        }
    }
    Ok((text, serde_json::Value::Array(results)))
}

fn read_release(ctx: &Ctx, dir: &Path, cache: &mut DigestCache) -> anyhow::Result<Artifact> {
    if dir.join("csctl.yaml").is_file() || dir.join("csmctl.yaml").is_file() {
        anyhow::bail!(
            "{} is a stack directory: give only stack directories (built into ./.release in stable mode, then published) or only release directories",
            dir.display()
        );
    }
    ctx.progress(format!("hashing {}", dir.display()));
    Artifact::from_release_dir_cached(dir, cache)
        .with_context(|| format!("cannot read release {}", dir.display()))
}
