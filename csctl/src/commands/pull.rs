//! `csctl pull`: materialise a published release as a directory, every digest verified, atomically.
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::remote::{RegistryArgs, parse_location, runtime};
use crate::oci::Location;
use crate::oci::pull::pull;
use crate::output::Ctx;

#[derive(Debug, Args)]
#[command(after_long_help = "\
Files are written under their org.opencontainers.image.title into a temporary directory beside the
destination and renamed into place only when every digest checked out: a failure leaves nothing behind.
Titles that are absolute or contain '/', '\\' or '..' are refused.")]
pub struct PullArgs {
    /// What to pull: oci://HOST[:PORT]/REPOSITORY:TAG (or @sha256:…), or oci:DIR:TAG (a local layout).
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Destination directory (default: ./<tag>). Must not exist or be empty, unless --force.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Replace a non-empty destination directory.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(ctx: &Ctx, args: &PullArgs) -> anyhow::Result<()> {
    let location = parse_location(&args.reference)?;
    let reference = match &location {
        Location::Registry(r) => r.reference(),
        Location::Layout { tag, .. } => tag.clone(),
    }
    .with_context(|| {
        format!(
            "{} has no tag: say which release to pull, e.g. …:beowulf-hpc-1-33-v1",
            args.reference
        )
    })?;
    let out = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(match &location {
            Location::Registry(r) => r.tag.clone().unwrap_or_else(|| reference.replace(':', "-")),
            Location::Layout { .. } => reference.clone(),
        })
    });
    let progress = !ctx.quiet && std::io::stderr().is_terminal();
    runtime()?.block_on(async {
        let store = args.registry.open(&location, false, progress).await.with_context(|| format!("cannot pull {}", args.reference))?;
        ctx.progress(format!("pulling {} into {}", args.reference, out.display()));
        let pulled = pull(&store, &reference, &out, args.force).await.with_context(|| format!("cannot pull {}", args.reference))?;
        let mut text = format!("pulled {}@{} into {}\n", args.reference, pulled.digest, out.display());
        for (name, size) in &pulled.files {
            text.push_str(&format!("  {name} ({size} bytes)\n"));
        }
        if pulled.skipped_untitled > 0 {
            text.push_str(&format!("  ({} layer(s) without a title were skipped)\n", pulled.skipped_untitled));
        }
        ctx.emit(
            text,
            &serde_json::json!({
                "reference": args.reference, "digest": pulled.digest, "directory": out,
                "files": pulled.files.iter().map(|(n, s)| serde_json::json!({"name": n, "size": s})).collect::<Vec<_>>(),
            }),
        );
        Ok(())
    })
}
