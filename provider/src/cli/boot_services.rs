//! Starting the boot plane's network services (DHCP, TFTP, HTTP) on a [`BootPlane`]: shared by
//! `beowulf standalone` (inventory file) and `beowulf manager` (the controllers' boot profiles).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use prometheus_client::registry::Registry;

use super::activation::Inherited;
use crate::boot::BootDirectory;
use crate::boot::dhcp::{DhcpConfig, DhcpMode, DhcpServer};
use crate::boot::http::accept::ConnLimits;
use crate::boot::metrics::SampleCollector;
use crate::boot::plane::BootPlane;
use crate::boot::tftp::{TftpConfig, TftpServer};

/// Where and how the services listen.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// DHCP and TFTP bind to this interface (SO_BINDTODEVICE); `None`: all interfaces.
    pub interface: Option<String>,
    /// The boot plane's address on the boot network (DHCP server identifier, TFTP next-server).
    pub server_ip: Ipv4Addr,
    pub http_listen: SocketAddr,
    pub tftp_root: PathBuf,
    pub proxy_dhcp: bool,
    pub http_limits: ConnLimits,
}

/// The HTTP server's connection limits, as flags (`beowulf standalone` and `beowulf manager`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimitArgs {
    /// Most HTTP connections open at once; more are closed as they arrive.
    #[arg(long, default_value_t = ConnLimits::default().total as u32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// Most HTTP connections open at once from one address (a booting host needs one to a few), so one
    /// misbehaving client cannot take the connections other hosts need.
    #[arg(long, default_value_t = ConnLimits::default().per_client as u32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections_per_client: u32,
    /// Seconds a client has to send a request's head; an idle kept-alive connection is closed after as long.
    #[arg(long, default_value_t = ConnLimits::default().header_timeout.as_secs(), value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout: u64,
}

impl HttpLimitArgs {
    pub fn limits(&self) -> ConnLimits {
        ConnLimits {
            total: self.http_max_connections as usize,
            per_client: self.http_max_connections_per_client as usize,
            header_timeout: std::time::Duration::from_secs(self.http_header_timeout),
        }
    }
}

/// The bound services, not yet running.
pub struct Services {
    dhcp: DhcpServer,
    tftp: TftpServer,
    http: tokio::net::TcpListener,
    http_limits: ConnLimits,
    plane: Arc<BootPlane>,
}

impl Services {
    /// Binds DHCP, TFTP and HTTP and registers the DHCP/TFTP counters in `registry`.
    pub async fn bind(
        plane: Arc<BootPlane>,
        config: &ServicesConfig,
        registry: &mut Registry,
    ) -> anyhow::Result<Services> {
        let directory: Arc<dyn BootDirectory> = plane.clone();
        let mut dhcp_config = DhcpConfig::new(config.server_ip);
        dhcp_config.interface = config.interface.clone();
        if config.proxy_dhcp {
            dhcp_config.mode = DhcpMode::Proxy;
        }
        let dhcp =
            DhcpServer::bind(dhcp_config, directory.clone()).context("starting the DHCP server")?;
        let mut tftp_config = TftpConfig::new(&config.tftp_root);
        tftp_config.interface = config.interface.clone();
        let tftp = TftpServer::bind(tftp_config, directory).context("starting the TFTP server")?;
        let (dhcp_metrics, tftp_metrics) = (dhcp.metrics(), tftp.metrics());
        registry.register_collector(Box::new(SampleCollector(move || {
            let mut s = dhcp_metrics.samples();
            s.extend(tftp_metrics.samples());
            s
        })));
        let mut inherited = Inherited::from_env()?;
        let http = match inherited.take_http(config.http_listen)? {
            Some(held) => {
                tracing::info!(
                    listen = ?held.local_addr().ok(),
                    "HTTP: serving the socket passed by the service manager"
                );
                held.set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(held))
                    .context("cannot use the HTTP socket the service manager passed")?
            }
            None => tokio::net::TcpListener::bind(config.http_listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for HTTP (is the port in use? try another HTTP port)",
                        config.http_listen
                    )
                })?,
        };
        tracing::info!(
            server_ip = %config.server_ip,
            interface = config.interface.as_deref().unwrap_or("(all)"),
            tftp_root = %config.tftp_root.display(),
            proxy = config.proxy_dhcp,
            http = %config.http_listen,
            "boot plane listening (DHCP, TFTP, HTTP)"
        );
        Ok(Services {
            dhcp,
            tftp,
            http,
            http_limits: config.http_limits,
            plane,
        })
    }

    /// Serves until `shutdown` resolves, then stops DHCP and TFTP too.
    pub async fn run(
        self,
        registry: Arc<Registry>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let dhcp_task = tokio::spawn(self.dhcp.run(stopped(stop_rx.clone())));
        let tftp_task = tokio::spawn(self.tftp.run(stopped(stop_rx)));
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let served =
            crate::boot::http::serve(self.http, self.plane, registry, self.http_limits, shutdown)
                .await;
        let _ = tokio::join!(dhcp_task, tftp_task);
        served.context("boot plane HTTP server failed")
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}

/// The first IPv4 address of `interface`.
pub fn interface_ipv4(interface: &str) -> anyhow::Result<Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing network interfaces")?;
    for a in addrs {
        if a.interface_name == interface
            && let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in())
        {
            return Ok(sin.ip());
        }
    }
    anyhow::bail!(
        "interface {interface:?} has no IPv4 address (or does not exist): pass --boot-server-ip"
    )
}
