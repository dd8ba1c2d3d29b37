//! `beowulf manager`: the Cluster API controllers and the boot plane (DHCP, TFTP, HTTP) in one process.

use crate::console::Policy;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::boot_services::{Services, ServicesConfig, terminated};
use super::diagnostics::Diagnostics;
use crate::api::{BeowulfCluster, BeowulfHost, BeowulfMachine, BeowulfRemediation};
use crate::boot::metrics::BootMetrics;
use crate::controllers::capi::{CLUSTER_NAME_LABEL, Cluster, Machine, WATCH_FILTER_LABEL};
use crate::controllers::hostcache::HostCache;
use crate::controllers::leader::Elector;
use crate::controllers::{Context, cluster, host, machine, remediation};
use crate::runtime::power::BmcPower;
use crate::runtime::profiles::{ProfileRegistry, ServedConfig};

/// Run the BeowulfCluster, BeowulfMachine and BeowulfHost controllers against the cluster in the current
/// kubeconfig (or the in-cluster service account).
#[derive(Debug, clap::Args)]
pub struct ManagerArgs {
    /// Watch only this namespace; empty or `*` watches all namespaces (what clusterctl installs).
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// Only reconcile objects labelled `cluster.x-k8s.io/watch-filter=<VALUE>`; empty or `*` reconciles all.
    #[arg(long, default_value = "")]
    pub watch_filter: String,
    /// Where to serve Prometheus metrics (`/metrics`): HTTPS, each request's bearer token checked by the API
    /// server (TokenReview, then a SubjectAccessReview for `get` on `/metrics`), as Cluster API's managers do.
    #[arg(long, default_value = ":8443", value_name = "ADDR")]
    pub diagnostics_address: String,
    /// Serve `/metrics` over plain HTTP to anyone who reaches it (no TLS, no token checks).
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub insecure_diagnostics: bool,
    /// `tls.crt` and `tls.key` for the diagnostics endpoint (default: a self-signed certificate made at
    /// start).
    #[arg(long, value_name = "DIR")]
    pub diagnostics_cert_dir: Option<std::path::PathBuf>,
    /// Where to serve `/healthz` and `/readyz`.
    #[arg(long, default_value = ":9440")]
    pub health_bind_address: String,
    /// Reconcile only while holding the Lease `beowulf-manager` (for more than one replica).
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: `$POD_NAMESPACE`, else `beowulf-system`).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,

    /// The boot network's interface: DHCP and TFTP bind to it (SO_BINDTODEVICE, needs CAP_NET_RAW). Empty or
    /// `*`: all interfaces.
    #[arg(
        long,
        default_value = "",
        value_name = "IF",
        help_heading = "Boot plane"
    )]
    pub boot_interface: String,
    /// The manager's address on the boot network (DHCP server identifier, next-server, and the address in the
    /// URLs hosts fetch scripts and data from). Empty or `*`: the first IPv4 address of --boot-interface, else
    /// `$HOST_IP` (the node's address; the Deployment sets it).
    #[arg(
        long,
        default_value = "",
        value_name = "ADDR",
        help_heading = "Boot plane"
    )]
    pub boot_server_ip: String,
    /// TCP port of the boot plane's HTTP server (iPXE scripts, boot files, NoCloud, callbacks, status page).
    #[arg(
        long,
        default_value_t = 8081,
        value_name = "PORT",
        help_heading = "Boot plane"
    )]
    pub boot_http_port: u16,
    /// Directory the TFTP server serves: the iPXE binaries (`undionly.kpxe`, `snponly.efi`, `ipxe.efi`).
    #[arg(
        long,
        default_value = "/usr/lib/ipxe",
        value_name = "DIR",
        help_heading = "Boot plane"
    )]
    pub tftp_root: std::path::PathBuf,
    /// Directory BeowulfImage artifacts given as relative paths are served from (`/images/...`); images with
    /// `http(s)://` artifacts need none.
    #[arg(long, value_name = "DIR", help_heading = "Boot plane")]
    pub artifact_root: Option<std::path::PathBuf>,
    /// proxyDHCP: the boot network already has a DHCP server; send boot options only (ports 67 and 4011).
    #[arg(long, help_heading = "Boot plane")]
    pub proxy_dhcp: bool,
    /// How long a per-boot token stays valid (from the iPXE script to the callback), in seconds.
    #[arg(
        long,
        default_value_t = 1800,
        value_name = "SECONDS",
        help_heading = "Boot plane"
    )]
    pub token_ttl: u64,
    /// The BeowulfImage (in each host's namespace) that hosts boot to be inspected: every unclaimed host without
    /// `status.hardware`, or annotated `beowulf.infrastructure.cluster.x-k8s.io/inspect`, boots it once and
    /// reports its CPU, memory, disks, NICs and PCI devices (`images/inspector`). Empty or `*`: no inspection.
    #[arg(long, default_value = "", value_name = "NAME")]
    pub inspection_image: String,
    /// Discovery: unknown MACs that network-boot on --discovery-network get an address from
    /// --discovery-range, boot the inspection image (--inspection-image, looked up in this namespace) and become
    /// BeowulfHosts `discovered-<mac>` here, in state `discovered`, never claimed until accepted. `*`: off.
    #[arg(
        long,
        default_value = "",
        value_name = "NAMESPACE",
        help_heading = "Discovery"
    )]
    pub discovery_namespace: String,
    /// The boot network discovery answers on (CIDR, e.g. 10.0.0.0/24). `*`: unset.
    #[arg(
        long,
        default_value = "",
        value_name = "CIDR",
        help_heading = "Discovery"
    )]
    pub discovery_network: String,
    /// Addresses for discovered hosts, `FIRST-LAST` inside --discovery-network; never one a BeowulfHost's
    /// interface holds. `*`: unset.
    #[arg(
        long,
        default_value = "",
        value_name = "FIRST-LAST",
        help_heading = "Discovery"
    )]
    pub discovery_range: String,
    /// Run the controllers without the boot plane (another process serves the boot network). Hosts then only
    /// provision if something else reports their boot phases.
    #[arg(long, help_heading = "Boot plane")]
    pub no_boot_plane: bool,
    #[command(flatten, next_help_heading = "Boot plane")]
    pub http_limits: super::boot_services::HttpLimitArgs,
    /// Capture hosts' serial consoles over IPMI Serial-over-LAN: `boot` while they provision, inspect or
    /// clean; `always` all the time, for every host whose BMC is `ipmi://` and whose Secret resolves; `off`
    /// never. A boot that gets stuck quotes the last lines in the host's Provisioned condition and event.
    #[arg(long, value_enum, default_value_t = Policy::Boot, value_name = "WHEN", help_heading = "Provisioning")]
    pub consoles: Policy,
    /// Keep captured consoles in this directory (`<namespace>_<host>.log`, rotated at 4 MiB), so a restart
    /// keeps them; by default they are kept in memory only.
    #[arg(long, value_name = "DIR", help_heading = "Provisioning")]
    pub console_dir: Option<std::path::PathBuf>,
    /// Most consoles captured at once.
    #[arg(
        long,
        default_value_t = 256,
        value_name = "N",
        help_heading = "Provisioning"
    )]
    pub max_consoles: usize,
    /// Seconds from power-on to a boot's first DHCP request before the boot counts as stuck.
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECONDS",
        help_heading = "Provisioning"
    )]
    pub boot_dhcp_timeout: u64,
    /// Seconds a boot may stay between two loader phases (DHCP, TFTP, script, kernel, initrd, rootfs).
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECONDS",
        help_heading = "Provisioning"
    )]
    pub boot_load_timeout: u64,
    /// Seconds from the rootfs/metadata to the node's callback (the OS boots and runs cloud-init).
    #[arg(
        long,
        default_value_t = 900,
        value_name = "SECONDS",
        help_heading = "Provisioning"
    )]
    pub boot_os_timeout: u64,
    /// Boot attempts before a host goes to `error`.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Provisioning")]
    pub boot_attempts: u32,
}

impl ManagerArgs {
    /// `*` stands for "unset" in the flags that default to empty: clusterctl refuses a variable whose
    /// default is empty (`${VAR:=}` counts as required), so the release's Deployment defaults them to `*`.
    fn resolved(mut self) -> Self {
        for value in [
            &mut self.namespace,
            &mut self.watch_filter,
            &mut self.boot_interface,
            &mut self.boot_server_ip,
            &mut self.inspection_image,
            &mut self.discovery_namespace,
            &mut self.discovery_network,
            &mut self.discovery_range,
        ] {
            if value == "*" {
                value.clear();
            }
        }
        self
    }
}

/// The boot plane's address: the flag, else the interface's, else the node's (`$HOST_IP`).
fn boot_server_ip(args: &ManagerArgs) -> anyhow::Result<std::net::Ipv4Addr> {
    if !args.boot_server_ip.is_empty() {
        return args.boot_server_ip.parse().with_context(|| {
            format!(
                "--boot-server-ip {:?} is not an IPv4 address",
                args.boot_server_ip
            )
        });
    }
    if !args.boot_interface.is_empty() {
        return super::boot_services::interface_ipv4(&args.boot_interface);
    }
    match std::env::var("HOST_IP") {
        Ok(ip) => ip.parse().with_context(|| {
            format!("$HOST_IP {ip:?} is not an IPv4 address: pass --boot-server-ip")
        }),
        Err(_) => anyhow::bail!(
            "cannot tell the boot plane's address on the boot network: pass --boot-server-ip or \
             --boot-interface (or --no-boot-plane to run the controllers only)"
        ),
    }
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .with_context(|| format!("invalid bind address {s:?}: expected HOST:PORT or :PORT"))
}

fn api<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    }
}

/// A controller whose reflector stores its objects without `metadata.managedFields`: nothing reads them, and
/// at a thousand objects they are a sixth of the manager's memory (`bench capi_reconcile`).
fn controller<K>(api: Api<K>, cfg: watcher::Config) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync,
    K: 'static,
{
    use kube::runtime::WatchStreamExt as _;
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(
        writer,
        watcher(api, cfg).modify(|o| o.managed_fields_mut().clear()),
    )
    .applied_objects();
    Controller::for_stream(stream, reader)
}

/// Maps a request path to a response body (`None`: 404).
type Handler = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A minimal HTTP/1.1 responder: `path → body` (the manager needs three fixed endpoints, not a framework).
async fn serve(addr: SocketAddr, handler: Handler) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    loop {
        let (mut sock, _) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match handler(path) {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

pub async fn run(args: ManagerArgs) -> anyhow::Result<()> {
    let args = args.resolved();
    let diagnostics_addr = parse_addr(&args.diagnostics_address)?;
    let health_addr = parse_addr(&args.health_bind_address)?;
    // The boot plane's settings are checked before anything connects: a typo fails fast.
    let server_ip = if args.no_boot_plane {
        None
    } else {
        Some(boot_server_ip(&args)?)
    };
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster service account)")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let boot_metrics = BootMetrics::register(&mut registry);
    let profiles = Arc::new(ProfileRegistry::new(
        ServedConfig {
            boot_server: server_ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            http_port: args.boot_http_port,
            artifact_root: args.artifact_root.clone(),
            token_ttl: std::time::Duration::from_secs(args.token_ttl),
            ..Default::default()
        },
        boot_metrics,
        Arc::new(|| jiff::Timestamp::now().as_second()),
    ));
    // The boot plane serves from the start (a follower serves no profiles: its registry stays empty).
    let services = match server_ip {
        Some(server_ip) => Some(
            Services::bind(
                profiles.plane(),
                &ServicesConfig {
                    interface: (!args.boot_interface.is_empty())
                        .then(|| args.boot_interface.clone()),
                    server_ip,
                    http_listen: SocketAddr::new(
                        std::net::Ipv4Addr::UNSPECIFIED.into(),
                        args.boot_http_port,
                    ),
                    tftp_root: args.tftp_root.clone(),
                    proxy_dhcp: args.proxy_dhcp,
                    http_limits: args.http_limits.limits(),
                },
                &mut registry,
            )
            .await?,
        ),
        None => {
            tracing::warn!("--no-boot-plane: DHCP, TFTP and HTTP are not served by this process");
            None
        }
    };
    // A boot that ends (callback, inspection report) wakes its host's controllers at once.
    let (host_ends, machine_ends) = (profiles.boot_ends(), profiles.boot_ends());
    let (profiles_for_discovery, profiles_plane) = (profiles.clone(), profiles.plane());
    let mut ctx = Context::new(client.clone(), Arc::new(BmcPower::default()), profiles);
    ctx.recorder = Some(kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "beowulf-manager".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    ));
    let mut cfg = watcher::Config::default();
    if !args.watch_filter.is_empty() {
        cfg = cfg.labels(&format!("{WATCH_FILTER_LABEL}={}", args.watch_filter));
    }
    // Claims read free hosts from the host controller's store instead of listing them per claim.
    let host_controller = controller(api::<BeowulfHost>(&client, &args.namespace), cfg.clone());
    ctx.hosts = Some(Arc::new(HostCache::new(host_controller.store())));
    ctx.inspection_image = Some(args.inspection_image.clone()).filter(|i| !i.is_empty());
    ctx.engine.dhcp_timeout = std::time::Duration::from_secs(args.boot_dhcp_timeout);
    ctx.engine.load_timeout = std::time::Duration::from_secs(args.boot_load_timeout);
    ctx.engine.os_timeout = std::time::Duration::from_secs(args.boot_os_timeout);
    ctx.engine.max_attempts = args.boot_attempts;
    if args.consoles != Policy::Off {
        // In memory unless --console-dir: a restart then loses the consoles of boots in progress (their
        // conditions keep what they quoted). Served on the diagnostics endpoint to callers Kubernetes authorizes.
        let logs = match &args.console_dir {
            Some(dir) => {
                crate::console::ConsoleLogs::open(dir, crate::console::log::DEFAULT_MAX_BYTES)
                    .with_context(|| {
                        format!(
                            "cannot keep console logs in {} (--console-dir)",
                            dir.display()
                        )
                    })?
            }
            None => crate::console::ConsoleLogs::in_memory(),
        };
        ctx.consoles = Some(Arc::new(crate::runtime::consoles::Consoles::new(
            Arc::new(logs),
            args.max_consoles,
            std::time::Duration::from_secs(args.token_ttl),
            args.consoles == Policy::Always,
        )));
    }
    let ctx = Arc::new(ctx);

    // Health and metrics answer while waiting for leadership (a follower is alive and ready).
    ctx.metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let boot_plane: std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>,
    > = match services {
        Some(s) => Box::pin(s.run(registry.clone(), terminated())),
        None => Box::pin(std::future::pending()),
    };

    let diagnostics = if args.insecure_diagnostics {
        Diagnostics::insecure(diagnostics_addr)
    } else {
        Diagnostics::secure(
            diagnostics_addr,
            args.diagnostics_cert_dir.as_deref(),
            client.clone(),
        )?
    };
    let diagnostics = match &ctx.consoles {
        Some(c) => diagnostics.with_consoles(c.clone()),
        None => diagnostics,
    };
    let metrics = diagnostics.serve(registry);
    let health = serve(
        health_addr,
        Arc::new(|path: &str| matches!(path, "/healthz" | "/readyz").then(|| "ok\n".to_string())),
    );
    let metrics = tokio::spawn(metrics);
    let health = tokio::spawn(health);

    // Controllers start only once this replica leads (health and metrics answer meanwhile).
    let lost: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Error> + Send>> =
        if args.leader_elect {
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("beowulf-{}", std::process::id()));
            let lease_ns = args
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| crate::release::NAMESPACE.to_string());
            let elector = Elector {
                api: Api::namespaced(client.clone(), &lease_ns),
                name: "beowulf-manager".into(),
                identity,
                duration: std::time::Duration::from_secs(15),
            };
            let lost = elector.lead().await.context("leader election")?;
            Box::pin(async move { anyhow::Error::new(lost.await).context("leader election") })
        } else {
            Box::pin(std::future::pending())
        };

    // Discovery answers unknown MACs: only the leader may (two replicas would hand out addresses twice).
    let discovery = match discovery_config(&args)? {
        Some(d) => {
            let known = ctx.hosts.clone();
            profiles_plane.exclude_from_discovery(Box::new(move |mac| {
                known
                    .as_ref()
                    .is_some_and(|h| h.with_boot_mac(mac).is_some())
            }));
            Some(tokio::spawn(run_discovery(
                d,
                profiles_for_discovery,
                ctx.clone(),
            )))
        }
        None => None,
    };

    let ns = args.namespace.as_str();
    tracing::info!(namespace = ns, watch_filter = %args.watch_filter, "starting controllers");

    let machines = controller(api::<BeowulfMachine>(&client, ns), cfg.clone());
    let machine_store = machines.store();
    let machines = machines
        .watches(api::<Machine>(&client, ns), cfg.clone(), |m: Machine| {
            let r = m.spec.infrastructure_ref.as_ref()?;
            (r.kind == "BeowulfMachine")
                .then(|| ObjectRef::new(&r.name).within(&m.namespace().unwrap_or_default()))
        })
        .watches(
            api::<Cluster>(&client, ns),
            cfg.clone(),
            move |c: Cluster| {
                let ns = c.namespace().unwrap_or_default();
                let name = c.name_any();
                machine_store
                    .state()
                    .into_iter()
                    .filter(|bm| {
                        bm.namespace().as_deref() == Some(ns.as_str())
                            && bm.labels().get(CLUSTER_NAME_LABEL) == Some(&name)
                    })
                    .map(|bm| ObjectRef::from_obj(&*bm))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(consumers_of(machine_ends, ctx.hosts.clone()))
        .shutdown_on_signal()
        .run(machine::reconcile, machine::error_policy, ctx.clone())
        .for_each(|_| async {});
    let clusters = controller(api::<BeowulfCluster>(&client, ns), cfg.clone())
        .watches(api::<Cluster>(&client, ns), cfg.clone(), |c: Cluster| {
            let r = c.spec.infrastructure_ref.as_ref()?;
            (r.kind == "BeowulfCluster")
                .then(|| ObjectRef::new(&r.name).within(&c.namespace().unwrap_or_default()))
        })
        .shutdown_on_signal()
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .for_each(|_| async {});
    let hosts = host_controller
        .reconcile_on(keys(host_ends).filter_map(|key| async move {
            let (ns, name) = key.split_once('/')?;
            Some(ObjectRef::<BeowulfHost>::new(name).within(ns))
        }))
        .shutdown_on_signal()
        .run(host::reconcile, host::error_policy, ctx.clone())
        .for_each(|_| async {});

    // A remediation wakes when its Machine's BeowulfMachine changes: the step's request answered (the
    // annotation removed), the Cluster paused or resumed (the machine's Paused condition).
    let remediations = controller(api::<BeowulfRemediation>(&client, ns), cfg.clone())
        .watches(
            api::<BeowulfMachine>(&client, ns),
            cfg.clone(),
            |bm: BeowulfMachine| {
                let owner = machine::owner_machine(&bm)?;
                Some(ObjectRef::new(&owner).within(&bm.namespace().unwrap_or_default()))
            },
        )
        .shutdown_on_signal()
        .run(
            remediation::reconcile,
            remediation::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let result = tokio::select! {
        _ = async { tokio::join!(machines, clusters, hosts, remediations) } => Ok(()),
        e = lost => Err(e),
        r = metrics => r.context("metrics server task")?.context("metrics server"),
        r = health => r.context("health server task")?.context("health server"),
        r = boot_plane => r.context("boot plane"),
    };
    if let Some(d) = discovery {
        d.abort();
    }
    result
}

/// The host keys a [`ProfileRegistry::boot_ends`] receiver yields, as a stream.
fn keys(
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> impl futures::Stream<Item = String> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) })
}

/// The BeowulfMachines holding the hosts whose boot ended (looked up in the host controller's store).
fn consumers_of(
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    hosts: Option<Arc<HostCache>>,
) -> impl futures::Stream<Item = ObjectRef<BeowulfMachine>> + Send + 'static {
    keys(rx).filter_map(move |key| {
        let hosts = hosts.clone();
        async move {
            let (ns, name) = key.split_once('/')?;
            let host = hosts?.get(ns, name)?;
            let consumer = host.spec.consumer_ref.as_ref()?;
            Some(ObjectRef::<BeowulfMachine>::new(&consumer.name).within(ns))
        }
    })
}

/// `--discovery-*`, checked: all three with `--inspection-image`, or none.
struct DiscoveryConfig {
    namespace: String,
    image: String,
    subnet: ipnet::Ipv4Net,
    range: crate::boot::directory::DiscoveryRange,
}

fn discovery_config(args: &ManagerArgs) -> anyhow::Result<Option<DiscoveryConfig>> {
    let (ns, net, range) = (
        &args.discovery_namespace,
        &args.discovery_network,
        &args.discovery_range,
    );
    if ns.is_empty() && net.is_empty() && range.is_empty() {
        return Ok(None);
    }
    if ns.is_empty() || net.is_empty() || range.is_empty() {
        anyhow::bail!(
            "discovery needs --discovery-namespace, --discovery-network and --discovery-range together"
        );
    }
    if args.inspection_image.is_empty() {
        anyhow::bail!("discovery needs --inspection-image: discovered hosts boot it");
    }
    let subnet = net
        .parse::<ipnet::Ipv4Net>()
        .with_context(|| {
            format!("--discovery-network {net:?} is not an IPv4 CIDR like 10.0.0.0/24")
        })?
        .trunc();
    let (first, last) = range
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .with_context(|| format!("--discovery-range {range:?} is not FIRST-LAST"))?;
    if first > last || !subnet.contains(&first) || !subnet.contains(&last) {
        anyhow::bail!(
            "--discovery-range {range} must be ascending and inside --discovery-network {subnet}"
        );
    }
    Ok(Some(DiscoveryConfig {
        namespace: ns.clone(),
        image: args.inspection_image.clone(),
        subnet,
        range: crate::boot::directory::DiscoveryRange {
            first,
            last,
            lease_secs: 300,
        },
    }))
}

/// Keeps the boot plane's discovery image in step with the BeowulfImage (checked every 30 s) and writes every
/// discovered host's report as a BeowulfHost (`controllers::discovery`).
async fn run_discovery(d: DiscoveryConfig, profiles: Arc<ProfileRegistry>, ctx: Arc<Context>) {
    use crate::api::BeowulfImage;
    let mut found = profiles.discoveries();
    let images: Api<BeowulfImage> = Api::namespaced(ctx.client.clone(), &d.namespace);
    let mut served: Option<crate::api::image::BeowulfImageSpec> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match images.get_opt(&d.image).await {
                    Ok(Some(image)) if served.as_ref() != Some(&image.spec) => {
                        let spec = &image.spec;
                        let src = crate::runtime::profiles::ImageSource {
                            kernel: spec.kernel.url.clone(),
                            initrds: spec.initrds.iter().map(|a| a.url.clone()).collect(),
                            rootfs: spec.rootfs.as_ref().map(|a| a.url.clone()),
                            cmdline: spec.cmdline.clone(),
                        };
                        match profiles.enable_discovery(d.subnet, d.range, &src) {
                            Ok(()) => {
                                tracing::info!(network = %d.subnet, image = %d.image, "discovery on");
                                served = Some(image.spec.clone());
                            }
                            Err(e) => tracing::warn!(error = %e, "discovery image not usable"),
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => tracing::warn!(namespace = %d.namespace, image = %d.image,
                        "discovery waits for its inspection BeowulfImage"),
                    Err(e) => tracing::warn!(error = %e, "reading the discovery image"),
                }
            }
            mac = found.recv() => {
                let Some(mac) = mac else { return };
                let Some((hardware, at)) = profiles.discovered_report(&mac) else { continue };
                if let Err(e) = crate::controllers::discovery::record(&ctx, &d.namespace, mac, hardware, at).await {
                    tracing::warn!(%mac, error = %e, "discovered host not recorded");
                }
            }
        }
    }
}
