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
use crate::console::{Capture, ConsoleLogs, Policy};
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

    /// TCP port of the HTTP server (iPXE scripts, boot files, NoCloud, callbacks, status page). A socket
    /// listening on this port passed by systemd (socket activation) is served instead of binding one, so
    /// requests made during a restart wait for the next process.
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

    /// Capture hosts' serial consoles over IPMI Serial-over-LAN (hosts with an `ipmi://` BMC in the
    /// inventory) into `<state-dir>/consoles/<host>.log`, shown at /api/hosts/<name>/console and by
    /// `beowulf console NAME --log`: `boot` from a boot's first DHCP request until two minutes after its
    /// callback, `always` all the time, `off` never.
    #[arg(long, value_enum, default_value_t = Policy::Boot, value_name = "WHEN")]
    pub consoles: Policy,

    /// Most consoles captured at once (a BMC allows one console session; this bounds the server's).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_consoles: usize,

    #[command(flatten)]
    pub http_limits: super::boot_services::HttpLimitArgs,

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
    let mut plane = BootPlane::new(
        handle.clone(),
        Duration::from_secs(args.token_ttl),
        args.http_port,
        metrics,
    )
    .with_inspections(inspections)
    .with_journal(Arc::new(journal), restored);
    let bmcs = Arc::new(std::sync::RwLock::new(inventory.bmcs.clone()));
    let capture = match args.consoles {
        Policy::Off => None,
        policy => {
            let dir = args.state_dir.join("consoles");
            let logs = ConsoleLogs::open(&dir, crate::console::log::DEFAULT_MAX_BYTES)
                .with_context(|| format!("cannot keep console logs in {}", dir.display()))?;
            let logs = Arc::new(logs);
            plane = plane.with_consoles(logs.clone());
            let capture = Arc::new(Capture::new(
                logs,
                bmc_entries::opener(bmcs.clone()),
                args.max_consoles,
                Duration::from_secs(args.token_ttl),
            ));
            Some((policy, capture))
        }
    };
    let power = Arc::new(crate::bmc::power_cache::PowerCache::new(
        bmc_entries::power(bmcs.clone()),
    ));
    let plane = Arc::new(plane.with_power(power.clone()));
    plane.write_discovered(&plane.directory.get());
    if let Some((policy, capture)) = &capture {
        bmc_entries::start(*policy, capture.clone(), &plane, &bmcs);
    }

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
        http_limits: args.http_limits.limits(),
    };
    let services = Services::bind(plane.clone(), &config, &mut registry).await?;
    let registry = Arc::new(registry);

    let p2 = plane.clone();
    let watcher = tokio::spawn(watch(
        handle,
        args.inventory.clone(),
        referenced,
        Duration::from_millis(args.poll_interval.max(50)),
        move |inv| {
            p2.directory_changed(&inv.directory);
            *bmcs.write().unwrap_or_else(|e| e.into_inner()) = inv.bmcs.clone();
            power.retain(|h| inv.bmcs.contains_key(h));
            if let Some((Policy::Always, capture)) = &capture {
                capture.always(&bmc_entries::ipmi_hosts(&inv.bmcs));
            }
        },
    ));
    let served = services.run(registry, terminated()).await;
    watcher.abort();
    served
}

/// What standalone mode does with the inventory's BMC entries: console capture, started by the boot plane's
/// phases (`boot`) or for every IPMI host (`always`), and power states for the host pages.
mod bmc_entries {
    use std::collections::BTreeMap;
    use std::sync::{Arc, RwLock};

    use crate::bmc::{Bmc, BmcDriver, BmcError, Credentials, Endpoint, Limits, Options};
    use crate::boot::Phase;
    use crate::boot::plane::BootPlane;
    use crate::console::capture::{KEEPALIVE, Open, Opener, bmc_identity};
    use crate::console::{Capture, Policy};
    use crate::inventory;

    type Bmcs = Arc<RwLock<BTreeMap<String, inventory::Bmc>>>;

    /// Hosts whose BMC speaks IPMI (the only protocol with a standard serial console).
    pub fn ipmi_hosts(bmcs: &BTreeMap<String, inventory::Bmc>) -> Vec<String> {
        bmcs.iter()
            .filter(|(_, b)| b.address.starts_with("ipmi://"))
            .map(|(h, _)| h.clone())
            .collect()
    }

    pub fn start(policy: Policy, capture: Arc<Capture>, plane: &BootPlane, bmcs: &Bmcs) {
        match policy {
            Policy::Off => {}
            Policy::Always => {
                let hosts = ipmi_hosts(&bmcs.read().unwrap_or_else(|e| e.into_inner()));
                capture.always(&hosts);
            }
            Policy::Boot => {
                let directory = plane.directory.clone();
                plane.observe_phases(Box::new(move |mac, phase| {
                    let dir = directory.get();
                    let Some(host) = dir.host_by_mac(mac) else {
                        return;
                    };
                    match phase {
                        Phase::DhcpOffer | Phase::DhcpAck | Phase::Tftp | Phase::IpxeScript => {
                            capture.boot_started(&host.name)
                        }
                        Phase::Callback | Phase::Inspection => capture.boot_ended(&host.name),
                        _ => {}
                    }
                }));
            }
        }
    }

    /// `host`'s `bmc` entry as the inventory has it now.
    fn entry_of(bmcs: &Bmcs, host: &str) -> Option<inventory::Bmc> {
        bmcs.read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }

    /// Opens a host's console with its inventory `bmc` entry (credentials read when it is opened).
    pub fn opener(bmcs: Bmcs) -> Opener {
        Arc::new(move |host: String| {
            let entry = entry_of(&bmcs, &host)?;
            Some(Open {
                bmc: bmc_identity(&entry.address),
                console: Box::pin(async move {
                    let bmc = connect(&entry)?;
                    bmc.console(false, KEEPALIVE).await
                }),
            })
        })
    }

    /// Asks a host's power state with its inventory `bmc` entry, for the host pages.
    pub fn power(bmcs: Bmcs) -> crate::bmc::power_cache::Ask {
        Arc::new(move |host: String| {
            let entry = entry_of(&bmcs, &host)?;
            Some(Box::pin(async move {
                let bmc = connect(&entry)?;
                let state = bmc.power_state().await;
                bmc.close().await;
                state
            }))
        })
    }

    fn connect(entry: &inventory::Bmc) -> Result<Bmc, BmcError> {
        // Credentials that cannot be read are an authentication failure: capture does not retry those.
        let bad = |detail: String| BmcError::Auth {
            bmc: entry.address.clone(),
            detail,
        };
        let endpoint = Endpoint::parse(&entry.address)?;
        let username = entry
            .username
            .clone()
            .ok_or_else(|| bad("no user name: set `username` in the host's bmc entry".into()))?;
        let password = match &entry.password {
            Some(p) => p
                .resolve()
                .map_err(|e| bad(format!("cannot read its password ({e})")))?
                .expose()
                .to_string(),
            None => {
                return Err(bad(
                    "no password: set passwordFile or passwordEnv in the host's bmc entry".into(),
                ));
            }
        };
        let mut credentials = Credentials::new(username, password);
        if let Some(p) = &entry.bmc_key_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| bad(format!("cannot read its BMC key file ({e})")))?;
            credentials = credentials.with_bmc_key(
                crate::bmc::parse_bmc_key(&text)
                    .map_err(|e| bad(format!("its BMC key file: {e}")))?,
            );
        }
        Bmc::new(endpoint, credentials, Options::default(), Limits::new(1))
    }
}
