//! The publish step that `csctl publish` and `csctl create --publish` share: read and hash every release
//! directory, then reach the target and push the releases one after the other (`push` publishes one), and
//! report each as a text line and a JSON object.
use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::artifact::Artifact;
use super::client::default_state_dir;
use super::digest_cache::DigestCache;
use super::push::{PublishOutcome, publish};
use super::{Location, Store};
use crate::output::Ctx;

/// One release sent to (or found at) the target.
#[derive(Debug)]
pub struct Published {
    pub tag: String,
    /// The target repository with the release's tag.
    pub reference: Location,
    pub outcome: PublishOutcome,
    /// Bytes hashed to read the releases of this run (files the digest cache did not know).
    pub hashed_bytes: u64,
}

/// Publishes release directories to `target`. Every release is read and hashed before `open` is called to
/// reach the target (its argument: whether to draw progress bars), so a bad directory fails before any
/// upload. `force` moves a tag that points to another manifest.
pub async fn publish_release_dirs<F>(
    ctx: &Ctx,
    dirs: &[PathBuf],
    target: &Location,
    force: bool,
    open: impl FnOnce(bool) -> F,
) -> anyhow::Result<Vec<Published>>
where
    F: Future<Output = anyhow::Result<Store>>,
{
    let mut cache = DigestCache::open(default_state_dir().as_deref());
    let mut artifacts = Vec::new();
    for dir in dirs {
        artifacts.push(read_release(ctx, dir, &mut cache)?);
    }
    cache.save();
    let hashed_bytes = cache.hashed_bytes;
    let progress = !ctx.quiet && std::io::stderr().is_terminal();
    let store = open(progress)
        .await
        .with_context(|| format!("cannot publish to {target}"))?;
    let mut results = Vec::new();
    for artifact in artifacts {
        let location = target.with_tag(&artifact.tag);
        ctx.progress(format!(
            "publishing {} ({} files, {} bytes) to {location}",
            artifact.tag,
            artifact.files.len(),
            artifact.total_size()
        ));
        let outcome = publish(&store, &artifact, force)
            .await
            .with_context(|| format!("cannot publish {} to {location}", artifact.tag))?;
        results.push(Published {
            tag: artifact.tag,
            reference: location,
            outcome,
            hashed_bytes,
        });
    }
    Ok(results)
}

impl Published {
    /// One line of the text report.
    pub fn text(&self) -> String {
        let location = &self.reference;
        match &self.outcome {
            PublishOutcome::Unchanged { digest } => {
                format!("{location} is already published with digest {digest}; nothing to do\n")
            }
            PublishOutcome::Published {
                digest,
                replaced,
                report,
            } => format!(
                "published {location}@{digest}: {} blob(s) uploaded ({} bytes{}), {} already present, {} mounted{}\n",
                report.uploaded,
                report.uploaded_bytes,
                if report.resumed > 0 {
                    format!(", {} resumed", report.resumed)
                } else {
                    String::new()
                },
                report.existed,
                report.mounted,
                replaced
                    .as_ref()
                    .map(|r| format!("; replaced {r}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// The release's entry in the JSON report.
    pub fn json(&self) -> serde_json::Value {
        let (tag, hashed_bytes) = (&self.tag, self.hashed_bytes);
        let reference = self.reference.to_string();
        match &self.outcome {
            PublishOutcome::Unchanged { digest } => {
                serde_json::json!({"tag": tag, "reference": reference, "digest": digest, "status": "unchanged", "hashedBytes": hashed_bytes})
            }
            PublishOutcome::Published {
                digest,
                replaced,
                report,
            } => serde_json::json!({
                "tag": tag, "reference": reference, "digest": digest,
                "status": if replaced.is_some() { "replaced" } else { "published" },
                "uploadedBlobs": report.uploaded, "uploadedBytes": report.uploaded_bytes, "hashedBytes": hashed_bytes,
                "existingBlobs": report.existed, "mountedBlobs": report.mounted, "resumedBlobs": report.resumed,
            }),
        }
    }
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
