//! `beowulf inspect`: asks a running `beowulf standalone` to inspect hosts again on their next network boot.
//! The request is a file in the server's state directory (the server may run as another process, or be
//! restarted in between: the request waits on disk until the host's report arrives).

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::boot::inspection::InspectionStore;
use crate::inventory::Inventory;

/// Have hosts of a standalone inventory boot the inspection image (inventory key `inspection.image`) the next
/// time they network-boot; their report replaces the one shown at /api/hosts and on the status page.
///
/// Hosts without any report are inspected on their first boot anyway; this is for inspecting again (after a
/// hardware change). It does not power anything: start the boot with `beowulf bmc --inventory FILE --host
/// NAME bootdev pxe --once` and `… power cycle` (or `power on`).
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The inventory file the server serves.
    #[arg(long, value_name = "FILE", env = "BEOWULF_INVENTORY")]
    pub inventory: PathBuf,
    /// The server's state directory (`beowulf standalone --state-dir`).
    #[arg(long, value_name = "DIR", env = "BEOWULF_STATE_DIR", default_value = super::standalone::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Hosts to inspect; repeat or separate with commas.
    #[arg(
        value_name = "HOST",
        value_delimiter = ',',
        required_unless_present = "all_hosts"
    )]
    pub hosts: Vec<String>,
    /// Every host of the inventory.
    #[arg(long, conflicts_with = "hosts")]
    pub all_hosts: bool,
}

pub async fn run(args: InspectArgs) -> anyhow::Result<()> {
    let path = args.inventory.clone();
    let inventory = tokio::task::spawn_blocking(move || Inventory::load(&path))
        .await
        .context("loading the inventory")??;
    let dir = &inventory.directory;
    if dir.inspection_image.is_none() {
        bail!(
            "{} has no inspection image: add `inspection: {{image: NAME}}` naming one of its images \
             (images/inspector/build.sh builds one)",
            args.inventory.display()
        );
    }
    let names: Vec<String> = if args.all_hosts {
        dir.hosts.iter().map(|h| h.name.clone()).collect()
    } else {
        args.hosts.clone()
    };
    // Every name is checked before anything is written.
    let mut keys = Vec::new();
    for name in &names {
        let host = dir
            .host(name)
            .with_context(|| format!("the inventory has no host {name:?}"))?;
        keys.push((name, crate::boot::plane::host_key(host)));
    }
    for (name, key) in keys {
        InspectionStore::request(&args.state_dir, &key).with_context(|| {
            format!(
                "writing the inspection request for {name} (is {} the server's --state-dir?)",
                args.state_dir.display()
            )
        })?;
        println!("{name}: inspection requested; its next network boot runs the inspection image");
    }
    Ok(())
}
