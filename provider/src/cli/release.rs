//! `beowulf release`: write the clusterctl provider repository for one version, and (with `--binaries`) the
//! manager's multi-platform image beside it, which the components file then names by digest.

use std::path::PathBuf;

use anyhow::Context;
use csctl::commands::remote::RegistryArgs;
use csctl::oci::layout::Layout;
use csctl::oci::{Location, Reference, Store};

use crate::release::image::{self, ImageInputs};

/// Write `<OUT>/infrastructure-beowulf/<VERSION>/` (metadata.yaml, infrastructure-components.yaml,
/// cluster-template.yaml, cluster-template-topology.yaml, clusterclass-beowulf-default.yaml): a local
/// clusterctl repository, or the assets of a GitHub release.
///
/// With `--binaries`, also the manager image for linux/amd64 and linux/arm64 (no container engine needed):
/// an OCI image layout at `<OUT>/image` tagged `<VERSION>`, pushed to `--image-repository` with `--push`;
/// the components file then runs `<REPOSITORY>:<VERSION>@sha256:…`. Without it, the components file names
/// the image by tag. Either way `BEOWULF_IMAGE` overrides it at `clusterctl init`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// Release version, `vMAJOR.MINOR.PATCH` (also the image tag).
    #[arg(long)]
    pub version: String,
    /// Repository root to write into.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Where the manager image is published: `HOST[:PORT]/PATH`.
    #[arg(long, value_name = "REPO", default_value = crate::release::IMAGE_REPOSITORY, help_heading = "Image")]
    pub image_repository: String,
    /// Build the image from `DIR/linux-amd64/{beowulf,csctl}` and `DIR/linux-arm64/{beowulf,csctl}` (static
    /// builds; `images/build-binaries.sh DIR` makes them).
    #[arg(long, value_name = "DIR", help_heading = "Image")]
    pub binaries: Option<PathBuf>,
    /// The iPXE binaries the image carries at /usr/lib/ipxe (Debian's `ipxe` package).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/usr/lib/ipxe",
        help_heading = "Image"
    )]
    pub ipxe_dir: PathBuf,
    /// The source commit, for the `org.opencontainers.image.revision` label.
    #[arg(long, value_name = "COMMIT", help_heading = "Image")]
    pub revision: Option<String>,
    /// Push the image to `--image-repository` (after writing the layout).
    #[arg(long, requires = "binaries", help_heading = "Image")]
    pub push: bool,
    #[command(flatten, next_help_heading = "Registry (with --push)")]
    pub registry: RegistryArgs,
}

pub async fn run(args: ReleaseArgs) -> anyhow::Result<()> {
    let version = crate::release::Version::parse(&args.version)?;
    let image_ref = match &args.binaries {
        None => crate::release::default_image(&version),
        Some(binaries) => {
            let inputs = ImageInputs {
                binaries: binaries.clone(),
                ipxe_dir: args.ipxe_dir.clone(),
                revision: args.revision.clone(),
            };
            eprintln!("building the image for linux/amd64 and linux/arm64 …");
            let built = image::build(&version, &inputs)?;
            let layout_dir = args.out.join("image");
            let layout = Store::Layout(Layout::create(&layout_dir)?);
            image::publish(&built, &layout, &version.tag)
                .await
                .with_context(|| format!("writing the image into {}", layout_dir.display()))?;
            if args.push {
                let reference = Reference::parse(&args.image_repository).with_context(|| {
                    format!(
                        "--image-repository {:?} is not HOST[:PORT]/PATH",
                        args.image_repository
                    )
                })?;
                let store = args
                    .registry
                    .open(&Location::Registry(reference), true, true)
                    .await?;
                eprintln!("pushing to {} …", store.describe());
                image::publish(&built, &store, &version.tag)
                    .await
                    .with_context(|| format!("pushing the image to {}", store.describe()))?;
            }
            let reference = image::reference(&args.image_repository, &version, &built);
            for (arch, size) in &built.layer_sizes {
                eprintln!("image linux/{arch}: {size} bytes compressed");
            }
            eprintln!(
                "image {reference}{}",
                if args.push {
                    " (pushed)"
                } else {
                    " (in the layout only; --push publishes it)"
                }
            );
            reference
        }
    };
    let dir = crate::release::write(&args.out, &version, &image_ref)
        .with_context(|| format!("writing the release into {}", args.out.display()))?;
    println!("{}", dir.display());
    Ok(())
}
