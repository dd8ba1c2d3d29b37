//! `beowulf release`: write the clusterctl provider repository for one version.

use std::path::PathBuf;

use anyhow::Context;

/// Write `<OUT>/infrastructure-beowulf/<VERSION>/` (metadata.yaml, infrastructure-components.yaml,
/// cluster-template.yaml, cluster-template-topology.yaml, clusterclass-beowulf-default.yaml): a local
/// clusterctl repository, or the assets of a GitHub release.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// Release version, `vMAJOR.MINOR.PATCH` (also the default manager image tag).
    #[arg(long)]
    pub version: String,
    /// Repository root to write into.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

pub fn run(args: ReleaseArgs) -> anyhow::Result<()> {
    let version = crate::release::Version::parse(&args.version)?;
    let dir = crate::release::write(&args.out, &version)
        .with_context(|| format!("writing the release into {}", args.out.display()))?;
    println!("{}", dir.display());
    Ok(())
}
