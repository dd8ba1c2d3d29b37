//! `beowulf standalone`: the boot plane driven by an inventory file instead of the Kubernetes API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;

use super::boot_services::{Services, ServicesConfig, terminated};
use crate::boot::directory::DirectoryHandle;
use crate::boot::inspection::InspectionStore;
use crate::boot::metrics::BootMetrics;
use crate::boot::plane::BootPlane;
use crate::inventory::Inventory;
use crate::inventory::watch::watch;

/// Network-boot the hosts of an inventory file: DHCP, TFTP and HTTP (iPXE scripts, boot files, cloud-init
/// NoCloud data, callbacks), with a status page at http://<address>:<http-port>/.
///
/// The inventory is re-read when it (or a file it names) changes; a broken edit is reported with its line and
/// column and the last good inventory stays in service. See README.md, "Standalone inventory", for the format.
#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    /// The inventory file (YAML): networks, images and hosts.
    #[arg(long, value_name = "FILE", env = "BEOWULF_INVENTORY")]
    pub inventory: PathBuf,

    /// The network interface the boot network is on (DHCP and TFTP bind to it).
    #[arg(long, value_name = "IF")]
    pub interface: String,

    /// TCP port of the HTTP server (iPXE scripts, boot files, NoCloud, callbacks, status page).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub http_port: u16,

    /// Address the HTTP server listens on. Hosts reach it at their network's `bootServer` address.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED), value_name = "ADDR")]
    pub http_listen: IpAddr,

    /// The boot plane's address on the boot network (DHCP server identifier, TFTP next-server). Default: the
    /// first network's `bootServer`.
    #[arg(long, value_name = "ADDR")]
    pub server_ip: Option<Ipv4Addr>,

    /// Directory the TFTP server serves: the iPXE binaries (`undionly.kpxe`, `snponly.efi`, `ipxe.efi`).
    #[arg(long, default_value = "/usr/lib/ipxe", value_name = "DIR")]
    pub tftp_root: PathBuf,

    /// proxyDHCP: the network already has a DHCP server; send boot options only (ports 67 and 4011).
    #[arg(long)]
    pub proxy_dhcp: bool,

    /// How long a per-boot token stays valid (from the iPXE script to the callback), in seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    pub token_ttl: u64,

    /// How often to check the inventory for changes, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub poll_interval: u64,

    /// Where the server keeps what must survive a restart: hosts' inspection reports (`hardware/`),
    /// requests to inspect again (`inspect/`, written by `beowulf inspect`), and the boots in progress
    /// (`boots.journal`: token digests, phases, callbacks), so a restart does not break them.
    #[arg(long, value_name = "DIR", env = "BEOWULF_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Check the inventory, print a summary and exit (no servers).
    #[arg(long)]
    pub check: bool,
}

/// The state directory when `--state-dir` is not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/beowulf/standalone";

pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let path = args.inventory.clone();
    let inventory = tokio::task::spawn_blocking(move || Inventory::load(&path))
        .await
        .context("loading the inventory")??;
    let dir = &inventory.directory;
    tracing::info!(
        path = %args.inventory.display(),
        namespace = %dir.namespace,
        hosts = dir.hosts.len(),
        images = dir.images.len(),
        networks = dir.networks.len(),
        "inventory loaded"
    );
    if args.check {
        println!(
            "{}: ok ({} hosts, {} images, {} networks)",
            args.inventory.display(),
            dir.hosts.len(),
            dir.images.len(),
            dir.networks.len()
        );
        return Ok(());
    }

    let mut registry = Registry::default();
    let metrics = BootMetrics::register(&mut registry);
    let referenced = inventory.referenced_files().to_vec();
    let handle = Arc::new(DirectoryHandle::new(inventory.directory));
    let state_dir = args.state_dir.clone();
    let inspections = tokio::task::spawn_blocking(move || InspectionStore::open(&state_dir))
        .await
        .context("opening the state directory")?
        .with_context(|| {
            format!(
                "cannot use the state directory {} (pass --state-dir DIR)",
                args.state_dir.display()
            )
        })?;
    // Boots in progress when the last run stopped: their tokens, phases and callbacks.
    let state_dir = args.state_dir.clone();
    let (journal, restored) = tokio::task::spawn_blocking(move || {
        crate::boot::journal::Journal::open(&state_dir, jiff::Timestamp::now().as_second())
    })
    .await
    .context("opening the boot journal")?
    .with_context(|| {
        format!(
            "cannot use the boot journal in {} (pass another --state-dir, or move {} away to start afresh)",
            args.state_dir.display(),
            crate::boot::journal::FILE
        )
    })?;
    tracing::info!(
        journal = %journal.path().display(),
        live_tokens = restored.tokens.len(),
        boots = restored.boots.len(),
        skipped_lines = restored.skipped,
        "boot state restored"
    );
    let plane = Arc::new(
        BootPlane::new(
            handle.clone(),
            Duration::from_secs(args.token_ttl),
            args.http_port,
            metrics,
        )
        .with_inspections(inspections)
        .with_journal(Arc::new(journal), restored),
    );
    plane.write_discovered(&plane.directory.get());

    let server_ip = match args.server_ip {
        Some(ip) => ip,
        None => {
            let dir = plane.directory.get();
            dir.networks.first().map(|n| n.boot_server).context(
                "the inventory has no network: add one under `networks` (or pass --server-ip)",
            )?
        }
    };
    let config = ServicesConfig {
        interface: Some(args.interface.clone()),
        server_ip,
        http_listen: SocketAddr::new(args.http_listen, args.http_port),
        tftp_root: args.tftp_root.clone(),
        proxy_dhcp: args.proxy_dhcp,
    };
    let services = Services::bind(plane.clone(), &config, &mut registry).await?;
    let registry = Arc::new(registry);

    let p2 = plane.clone();
    let watcher = tokio::spawn(watch(
        handle,
        args.inventory.clone(),
        referenced,
        Duration::from_millis(args.poll_interval.max(50)),
        move |dir| p2.directory_changed(dir),
    ));
    let served = services.run(registry, terminated()).await;
    watcher.abort();
    served
}
