//! What `create` and `publish` resolve their flags into, once, before any work (as ripgrep turns its
//! low-level flags into `HiArgs`). `publish STACK_DIR…` resolves to the same [`Plan::Build`] as
//! `create --mode stable --remote <target> --publish`, so neither command calls the other; [`super::run`]
//! carries a plan out.
use std::path::PathBuf;

use super::remote::RegistryArgs;
use crate::oci::Location;
use crate::substitute::ReleaseVersions;

#[derive(Debug)]
pub enum Plan {
    /// Build releases from stack directories, then publish them if asked (`commands::create`).
    Build(BuildPlan),
    /// Publish existing release directories (`commands::publish`).
    Publish(PublishPlan),
}

#[derive(Debug)]
pub struct BuildPlan {
    /// Stack directories; a parent directory is already replaced by its stack subdirectories.
    pub stacks: Vec<PathBuf>,
    pub versions: Versions,
    /// Output root; each release goes to `<output>/<release-name>/`.
    pub output: PathBuf,
    /// Where to publish the releases after building. A tag pointing elsewhere is never moved here.
    pub publish: Option<Location>,
    pub registry: RegistryArgs,
}

/// How the versions of a release are chosen.
#[derive(Debug)]
pub enum Versions {
    /// `vN`, bumped from the latest stable release of each stack in `previous`.
    Stable { previous: Previous },
    /// `v0-sha.<7 chars of the content hash>`.
    Hash,
    /// Given on the command line.
    Custom(ReleaseVersions),
}

impl Versions {
    /// The name of the mode (`--mode`).
    pub fn mode(&self) -> &'static str {
        match self {
            Versions::Stable { .. } => "stable",
            Versions::Hash => "hash",
            Versions::Custom(_) => "custom",
        }
    }
}

/// Where stable mode finds the previous releases.
#[derive(Debug)]
pub enum Previous {
    /// An OCI repository or local layout (`--remote oci:…`, or the target of `publish`).
    Oci(Location),
    /// A directory of release directories (`--remote DIR`); it must exist.
    Dir(PathBuf),
    /// The output directory (no `--remote`); if it does not exist there is no previous release.
    Output,
}

#[derive(Debug)]
pub struct PublishPlan {
    pub releases: Vec<PathBuf>,
    /// A repository (no tag): each release is tagged with its name.
    pub target: Location,
    /// Move a tag that points to a different manifest.
    pub force: bool,
    pub registry: RegistryArgs,
}
