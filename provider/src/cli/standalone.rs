//! `beowulf standalone`: the boot plane driven by an inventory file instead of the Kubernetes API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;

use crate::boot::BootDirectory;
use crate::boot::dhcp::{DhcpConfig, DhcpMode, DhcpServer};
use crate::boot::metrics::{BootMetrics, SampleCollector};
use crate::boot::plane::BootPlane;
use crate::boot::tftp::{TftpConfig, TftpServer};
use crate::inventory::Inventory;
use crate::inventory::watch::{InventoryHandle, watch};

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

    /// Check the inventory, print a summary and exit (no servers).
    #[arg(long)]
    pub check: bool,
}

pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let path = args.inventory.clone();
    let inventory = tokio::task::spawn_blocking(move || Inventory::load(&path))
        .await
        .context("loading the inventory")??;
    tracing::info!(
        path = %args.inventory.display(),
        namespace = %inventory.namespace,
        hosts = inventory.hosts.len(),
        images = inventory.images.len(),
        networks = inventory.networks.len(),
        "inventory loaded"
    );
    if args.check {
        println!(
            "{}: ok ({} hosts, {} images, {} networks)",
            args.inventory.display(),
            inventory.hosts.len(),
            inventory.images.len(),
            inventory.networks.len()
        );
        return Ok(());
    }

    let mut registry = Registry::default();
    let metrics = BootMetrics::register(&mut registry);
    let handle = Arc::new(InventoryHandle::new(args.inventory.clone(), inventory));
    let plane = Arc::new(BootPlane::new(
        handle.clone(),
        Duration::from_secs(args.token_ttl),
        args.http_port,
        metrics,
    ));

    let server_ip = match args.server_ip {
        Some(ip) => ip,
        None => {
            let inv = plane.inventory.get();
            inv.networks.first().map(|n| n.boot_server).context(
                "the inventory has no network: add one under `networks` (or pass --server-ip)",
            )?
        }
    };
    let directory: Arc<dyn BootDirectory> = plane.clone();
    let mut dhcp_config = DhcpConfig::new(server_ip);
    dhcp_config.interface = Some(args.interface.clone());
    if args.proxy_dhcp {
        dhcp_config.mode = DhcpMode::Proxy;
    }
    let dhcp =
        DhcpServer::bind(dhcp_config, directory.clone()).context("starting the DHCP server")?;
    let mut tftp_config = TftpConfig::new(&args.tftp_root);
    tftp_config.interface = Some(args.interface.clone());
    let tftp = TftpServer::bind(tftp_config, directory).context("starting the TFTP server")?;
    let (dhcp_metrics, tftp_metrics) = (dhcp.metrics(), tftp.metrics());
    registry.register_collector(Box::new(SampleCollector(move || {
        let mut s = dhcp_metrics.samples();
        s.extend(tftp_metrics.samples());
        s
    })));
    let registry = Arc::new(registry);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let dhcp_task = tokio::spawn(dhcp.run(stopped(stop_rx.clone())));
    let tftp_task = tokio::spawn(tftp.run(stopped(stop_rx.clone())));
    tracing::info!(%server_ip, interface = %args.interface, tftp_root = %args.tftp_root.display(), proxy = args.proxy_dhcp, "DHCP and TFTP servers running");

    let p2 = plane.clone();
    let watcher = tokio::spawn(watch(
        handle,
        Duration::from_millis(args.poll_interval.max(50)),
        move |inv| p2.inventory_reloaded(inv),
    ));

    let addr = SocketAddr::new(args.http_listen, args.http_port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for HTTP (is the port in use? try --http-port)")
    })?;
    tracing::info!(%addr, interface = %args.interface, "boot plane HTTP server listening");

    let shutdown = async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    let served = crate::boot::http::serve(listener, plane, registry, shutdown).await;
    watcher.abort();
    let _ = tokio::join!(dhcp_task, tftp_task);
    served.context("HTTP server failed")
}
