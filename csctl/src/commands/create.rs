//! `csctl create`: stack directories → release directories.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::output::Ctx;

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
    /// `providers/beowulf/hpc/*`.
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

    /// Stable mode: where the previous releases are. A directory of release directories (default: the
    /// output directory).
    #[arg(long, value_name = "DIR")]
    pub remote: Option<String>,

    /// Push the release to an OCI registry after building.
    #[arg(long)]
    pub publish: bool,
}

pub fn run(ctx: &Ctx, args: &CreateArgs) -> anyhow::Result<()> {
    if args.publish {
        anyhow::bail!(
            "--publish is not yet available in this build of csctl; build the release without it"
        );
    }
    let _ = (ctx, args);
    anyhow::bail!("csctl create is not implemented yet")
}
