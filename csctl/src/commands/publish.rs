//! `csctl publish`: push release directories to a registry or to the local OCI layout with the shared step
//! in `oci::publish`. Stack directories resolve to a build plan, which `commands::create` runs.
use std::path::PathBuf;

use clap::Args;

use super::plan::{BuildPlan, Plan, Previous, PublishPlan, Versions};
use super::remote::{RegistryArgs, default_location, parse_location, runtime};
use crate::oci::publish::{Published, publish_release_dirs};
use crate::output::Ctx;
use crate::stack::expand_stack_dirs;

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

impl PublishArgs {
    /// Release directories resolve to a [`Plan::Publish`]; stack directories to the [`Plan::Build`] of
    /// `csctl create --mode stable --remote <target> --publish` (which does not use `--force`).
    pub fn resolve(&self) -> anyhow::Result<Plan> {
        let target = match &self.to {
            Some(t) => parse_location(t)?,
            None => default_location()?,
        };
        if target.tag().is_some() {
            anyhow::bail!(
                "--to names a repository; the tag is always the release name, so drop `:{}`",
                target.tag().unwrap_or_default()
            );
        }
        let is_stack =
            |d: &PathBuf| d.join("csctl.yaml").is_file() || d.join("csmctl.yaml").is_file();
        if self.releases.iter().all(is_stack) {
            // Build the next stable release against what the target already holds, then publish it there.
            return Ok(Plan::Build(BuildPlan {
                stacks: expand_stack_dirs(&self.releases),
                versions: Versions::Stable {
                    previous: Previous::Oci(target.clone()),
                },
                output: PathBuf::from("./.release"),
                publish: Some(target),
                registry: self.registry.clone(),
            }));
        }
        Ok(Plan::Publish(PublishPlan {
            releases: self.releases.clone(),
            target,
            force: self.force,
            registry: self.registry.clone(),
        }))
    }
}

pub fn run(ctx: &Ctx, plan: &PublishPlan) -> anyhow::Result<()> {
    let published = runtime()?.block_on(publish_release_dirs(
        ctx,
        &plan.releases,
        &plan.target,
        plan.force,
        |progress| plan.registry.open(&plan.target, true, progress),
    ))?;
    let text: String = published.iter().map(Published::text).collect();
    let json: Vec<serde_json::Value> = published.iter().map(Published::json).collect();
    ctx.emit(text, &serde_json::json!({ "published": json }));
    Ok(())
}
