//! `beowulf bmc`: talk to BMCs directly (power, next boot device, hardware inventory), with the same drivers
//! the provider uses: one BMC by `--address`, or the BMCs of a standalone inventory's hosts (`--inventory`
//! with `--host` or `--all-hosts`), all at once. The password comes from a file (`--password-file`, or the
//! inventory's `passwordFile`/`passwordEnv`) or the `BEOWULF_BMC_PASSWORD` environment variable, never from a
//! flag value, so it does not show up in process lists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::bmc::ipmi::CipherChoice;
use crate::bmc::{
    Bmc, BmcDriver, BmcError, BootDevice, BootMode, BootOverride, Credentials, Endpoint, Limits,
    Options, PowerAction, parse_bmc_key,
};
use crate::inventory::Inventory;

/// Environment variable holding the BMC password when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "BEOWULF_BMC_PASSWORD";

#[derive(Debug, Args)]
#[command(
    after_help = "Addresses:\n  ipmi://HOST[:PORT]                     IPMI v2.0 lanplus (UDP, port 623)\n  \
redfish://HOST[:PORT][/SYSTEM-ID]      Redfish over HTTPS (without SYSTEM-ID the BMC must have exactly one system)\n  \
redfish+http://HOST[:PORT][/SYSTEM-ID] Redfish over plain HTTP (emulators only)\n\n\
The password is read from --password-file or from $BEOWULF_BMC_PASSWORD; there is no flag that takes it\n\
(nor the IPMI BMC key: --bmc-key-file).\n\n\
With --inventory, each host's `bmc` entry gives the address, and its username, passwordFile/passwordEnv and\n\
bmcKeyFile when set (the flags above are the fallback). Every selected BMC is asked at once (--parallel);\n\
one line per host is printed, `NAME: RESULT`, in inventory order; the exit status is non-zero if any failed.\n\n\
Examples:\n  beowulf bmc --address ipmi://10.0.0.21 --username admin --password-file pw power status\n  \
beowulf bmc --address redfish://bmc21/System.Embedded.1 --username root --password-file pw bootdev pxe --once --uefi\n  \
beowulf bmc --address redfish://bmc21 --username root --password-file pw inventory\n  \
beowulf bmc --inventory hosts.yaml --all-hosts power status\n  \
beowulf bmc --inventory hosts.yaml --host node-0,node-1 bootdev pxe --once"
)]
pub struct BmcArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// With --inventory: a host to act on; repeat it or separate names with commas.
    #[arg(
        long,
        value_name = "NAME",
        value_delimiter = ',',
        requires = "inventory"
    )]
    pub host: Vec<String>,
    /// With --inventory: every host that has a `bmc` entry.
    #[arg(long, requires = "inventory", conflicts_with = "host")]
    pub all_hosts: bool,
    /// With --inventory: how many BMCs to talk to at once.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    #[command(subcommand)]
    pub action: BmcAction,
}

/// How to reach BMCs: one by `--address`, or those of a standalone inventory; shared by `beowulf bmc` and
/// `beowulf console`.
#[derive(Debug, Args)]
pub struct Connection {
    /// BMC address: ipmi://HOST[:PORT], redfish://HOST[:PORT][/SYSTEM-ID] or redfish+http://…
    #[arg(long, value_name = "URL", conflicts_with = "inventory")]
    pub address: Option<String>,
    /// BMC user name (with --inventory: for hosts whose entry has none).
    #[arg(long, short = 'u', env = "BEOWULF_BMC_USERNAME")]
    pub username: Option<String>,
    /// A standalone inventory file: act on the BMCs of its hosts.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// File whose first line is the password (otherwise $BEOWULF_BMC_PASSWORD is used).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// IPMI: file holding the BMC key (Kg) in hex, as `ipmitool -y` takes it (only for BMCs that have one set).
    #[arg(long, value_name = "FILE")]
    pub bmc_key_file: Option<PathBuf>,
    /// IPMI cipher suite: auto (asks the BMC which it has; 17 preferred, then 3; remembered per BMC), 3 or 17.
    #[arg(long, default_value = "auto", value_parser = ["auto", "3", "17"])]
    pub cipher_suite: String,
    /// Redfish over HTTPS: trust only the CAs in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Redfish over HTTPS: accept any certificate (lab BMCs with self-signed certificates).
    #[arg(long)]
    pub insecure_tls: bool,
    /// IPMI: seconds to wait for an answer before retransmitting; Redfish: ten times this per request.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum BmcAction {
    /// Read or change the chassis power.
    Power {
        #[arg(value_enum)]
        op: PowerOp,
        /// `off`: ask the OS to shut down (ACPI soft-off / GracefulShutdown) instead of cutting power.
        #[arg(long)]
        soft: bool,
        /// After a change, wait up to this many seconds until the BMC reports the new state.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<f64>,
    },
    /// Set (or show) the next boot device. Persistent unless --once.
    Bootdev {
        #[arg(value_enum)]
        device: BootArg,
        /// Only for the next boot (otherwise every boot until changed).
        #[arg(long)]
        once: bool,
        /// Boot in UEFI mode (otherwise legacy BIOS).
        #[arg(long)]
        uefi: bool,
    },
    /// Print what the BMC knows about the hardware, as JSON: over Redfish the system's manufacturer, model,
    /// serial, BIOS, processors, memory, NICs and drives; over IPMI the FRU (manufacturer, product, serials,
    /// part numbers). Absent facts are left out. With --inventory: one line of JSON per host.
    Inventory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PowerOp {
    Status,
    On,
    Off,
    Cycle,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootArg {
    Pxe,
    Disk,
    Cdrom,
    Bios,
    /// UEFI HTTP boot (Redfish only).
    Http,
    /// Print the current boot override instead of changing it.
    Show,
}

fn read_password(file: Option<&PathBuf>) -> anyhow::Result<String> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the password file {}", f.display()))?;
        #[cfg(unix)]
        if let Ok(m) = std::fs::metadata(f) {
            use std::os::unix::fs::PermissionsExt;
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %f.display(), "the password file is readable by other users; chmod 600 it");
            }
        }
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(p) => Ok(p),
        Err(_) => bail!("no BMC password: give --password-file FILE or set {PASSWORD_ENV}"),
    }
}

pub async fn run(args: BmcArgs) -> anyhow::Result<()> {
    let options = args.conn.options()?;
    let Some(path) = args.conn.inventory.clone() else {
        let address = args
            .conn
            .address
            .clone()
            .context("give --address URL or --inventory FILE")?;
        let (username, password, key) = args.conn.login()?;
        let out = one(
            &address,
            username,
            password,
            key,
            options,
            &args.action,
            true,
        )
        .await?;
        println!("{out}");
        return Ok(());
    };
    let inventory = tokio::task::spawn_blocking(move || Inventory::load(&path))
        .await
        .context("loading the inventory")??;
    let targets = select(&inventory, &args)?;
    let total = targets.len();
    // Results come back in any order; print them in inventory order.
    let mut results: Vec<(usize, String, anyhow::Result<String>)> =
        futures::stream::iter(targets.into_iter().enumerate().map(|(i, t)| {
            let options = options.clone();
            let action = &args.action;
            async move {
                let out = match t.credentials {
                    Ok((username, password, key)) => {
                        one(&t.address, username, password, key, options, action, false).await
                    }
                    Err(e) => Err(e),
                };
                (i, t.name, out)
            }
        }))
        .buffer_unordered(usize::from(args.parallel))
        .collect()
        .await;
    results.sort_by_key(|(i, ..)| *i);
    let mut failed = 0;
    for (_, name, out) in results {
        match out {
            Ok(text) => println!("{name}: {text}"),
            Err(e) => {
                failed += 1;
                eprintln!("{name}: error: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} BMCs failed (each is named above)");
    }
    Ok(())
}

impl Connection {
    /// The driver options the flags ask for (shared by every BMC of a run).
    pub fn options(&self) -> anyhow::Result<Options> {
        options(self)
    }

    /// User name, password and BMC key from the flags (for --address).
    pub fn login(&self) -> anyhow::Result<Login> {
        let Some(username) = self.username.clone() else {
            bail!("no BMC user name: give --username NAME or set BEOWULF_BMC_USERNAME");
        };
        let password = read_password(self.password_file.as_ref())?;
        let key = self.bmc_key_file.as_deref().map(read_bmc_key).transpose()?;
        Ok((username, password, key))
    }

    /// User name, password and BMC key of an inventory host's `bmc` entry, the flags filling what it lacks.
    pub fn login_for(&self, b: &crate::inventory::Bmc) -> anyhow::Result<Login> {
        let username = b
            .username
            .clone()
            .or_else(|| self.username.clone())
            .context("no BMC user name: set `username` in its bmc entry or give --username")?;
        let password = match &b.password {
            Some(p) => p
                .resolve()
                .context("reading its BMC password (passwordFile/passwordEnv)")?
                .expose()
                .to_string(),
            None => read_password(self.password_file.as_ref())?,
        };
        let key = match (&b.bmc_key_file, &self.bmc_key_file) {
            (Some(p), _) | (None, Some(p)) => Some(read_bmc_key(p)?),
            (None, None) => None,
        };
        Ok((username, password, key))
    }
}

/// A driver for the BMC at `address`.
pub fn connect(address: &str, login: Login, options: Options) -> anyhow::Result<Bmc> {
    let endpoint = Endpoint::parse(address)?;
    let (username, password, key) = login;
    let mut credentials = Credentials::new(username, password);
    if let Some(key) = key {
        credentials = credentials.with_bmc_key(key);
    }
    Ok(Bmc::new(endpoint, credentials, options, Limits::new(1))?)
}

fn options(args: &Connection) -> anyhow::Result<Options> {
    let ca_pem = match &args.ca_cert {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading the CA file {}", p.display()))?)
        }
        None => None,
    };
    if !(args.timeout > 0.0 && args.timeout < 3600.0) {
        bail!("--timeout must be between 0 and 3600 seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    Ok(Options {
        cipher_suite: args
            .cipher_suite
            .parse::<CipherChoice>()
            .map_err(anyhow::Error::msg)?,
        ca_pem,
        insecure_tls: args.insecure_tls,
        request_timeout: timeout,
        http_timeout: timeout * 10,
        ..Options::default()
    })
}

fn read_bmc_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the BMC key file {}", path.display()))?;
    parse_bmc_key(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("BMC key file {}", path.display()))
}

/// User name, password and BMC key of one BMC.
pub type Login = (String, String, Option<Vec<u8>>);

/// One inventory host's BMC, its credentials resolved (or why they could not be).
struct Target {
    name: String,
    address: String,
    credentials: anyhow::Result<Login>,
}

/// The hosts `--host`/`--all-hosts` pick, with credentials from their `bmc` entry, else from the flags. An
/// unknown host or one without a `bmc` entry is an error before any BMC is contacted.
fn select(inventory: &Inventory, args: &BmcArgs) -> anyhow::Result<Vec<Target>> {
    if !args.all_hosts && args.host.is_empty() {
        bail!("with --inventory, choose the hosts: --host NAME[,NAME…] or --all-hosts");
    }
    // Inventory order: the directory keeps the file's order of hosts.
    let names: Vec<&str> = inventory
        .directory
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    let hosts: Vec<&str> = if args.all_hosts {
        names
            .into_iter()
            .filter(|n| inventory.bmc(n).is_some())
            .collect()
    } else {
        for name in &args.host {
            if inventory.directory.host(name).is_none() {
                bail!("the inventory has no host {name:?}");
            }
            if inventory.bmc(name).is_none() {
                bail!("host {name:?} has no `bmc` entry in the inventory");
            }
        }
        names
            .into_iter()
            .filter(|n| args.host.iter().any(|h| h == n))
            .collect()
    };
    if hosts.is_empty() {
        bail!("no host in the inventory has a `bmc` entry");
    }
    Ok(hosts
        .into_iter()
        .filter_map(|name| {
            let b = inventory.bmc(name)?;
            let credentials = args.conn.login_for(b);
            Some(Target {
                name: name.to_string(),
                address: b.address.clone(),
                credentials,
            })
        })
        .collect())
}

/// Runs `action` on one BMC and returns what to print (`pretty`: JSON over several lines, for one BMC; one
/// line per host otherwise).
async fn one(
    address: &str,
    username: String,
    password: String,
    key: Option<Vec<u8>>,
    options: Options,
    action: &BmcAction,
    pretty: bool,
) -> anyhow::Result<String> {
    let endpoint = Endpoint::parse(address)?;
    let bmc = connect(address, (username, password, key), options)?;
    let result = act(&bmc, action, pretty).await;
    bmc.close().await;
    // The driver's errors name the BMC already; only the others (a flag that does not apply) need it.
    result.map_err(|e| {
        if e.is::<BmcError>() {
            e
        } else {
            e.context(format!("BMC {endpoint}"))
        }
    })
}

async fn act(bmc: &Bmc, action: &BmcAction, pretty: bool) -> anyhow::Result<String> {
    Ok(match *action {
        BmcAction::Inventory => {
            let inv = bmc.inventory().await?;
            if pretty {
                serde_json::to_string_pretty(&inv)?
            } else {
                serde_json::to_string(&inv)?
            }
        }
        BmcAction::Power { op, soft, wait } => {
            if soft && op != PowerOp::Off {
                bail!("--soft only applies to `power off`");
            }
            let action = match op {
                PowerOp::Status => return Ok(bmc.power_state().await?.to_string()),
                PowerOp::On => PowerAction::On,
                PowerOp::Off if soft => PowerAction::SoftOff,
                PowerOp::Off => PowerAction::ForceOff,
                PowerOp::Cycle => PowerAction::Cycle,
                PowerOp::Reset => PowerAction::Reset,
            };
            bmc.power(action).await?;
            match wait {
                Some(secs) if secs > 0.0 => {
                    let want = action.target_state();
                    bmc.wait_power(want, Duration::from_secs_f64(secs.min(3600.0)))
                        .await?;
                    format!("power {want}")
                }
                _ => format!("power {}: requested", format!("{op:?}").to_lowercase()),
            }
        }
        BmcAction::Bootdev { device, once, uefi } => {
            let device = match device {
                BootArg::Show => return describe_boot(bmc).await,
                BootArg::Pxe => BootDevice::Pxe,
                BootArg::Disk => BootDevice::Disk,
                BootArg::Cdrom => BootDevice::Cdrom,
                BootArg::Bios => BootDevice::BiosSetup,
                BootArg::Http => BootDevice::UefiHttp,
            };
            let mode = if uefi {
                BootMode::Uefi
            } else {
                BootMode::Legacy
            };
            bmc.set_boot(BootOverride {
                device,
                persistent: !once,
                mode,
            })
            .await?;
            format!(
                "next boot: {device} ({}, {})",
                if once { "once" } else { "persistent" },
                if uefi { "uefi" } else { "legacy" }
            )
        }
    })
}

/// The boot override as "DEVICE[, once|persistent][, uefi|legacy]"; fields the BMC does not report are left
/// out.
async fn describe_boot(bmc: &Bmc) -> anyhow::Result<String> {
    let s = bmc.boot().await?;
    let dev = s
        .device
        .map(|d| d.to_string())
        .unwrap_or_else(|| "none".into());
    let when = match s.persistent {
        Some(true) => ", persistent",
        Some(false) => ", once",
        None => "",
    };
    let mode = match s.mode {
        Some(BootMode::Uefi) => ", uefi",
        Some(BootMode::Legacy) => ", legacy",
        None => "",
    };
    Ok(format!("{dev}{when}{mode}"))
}
