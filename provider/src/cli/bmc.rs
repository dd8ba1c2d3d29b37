//! `beowulf bmc`: talk to one BMC directly (power and next boot device), with the same drivers the
//! provider uses. The password comes from a file (`--password-file`) or the `BEOWULF_BMC_PASSWORD`
//! environment variable, never from a flag value, so it does not show up in process lists.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::bmc::ipmi::CipherChoice;
use crate::bmc::{
    Bmc, BmcDriver, BootDevice, BootMode, BootOverride, Credentials, Endpoint, Limits, Options,
    PowerAction, parse_bmc_key,
};

/// Environment variable holding the BMC password when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "BEOWULF_BMC_PASSWORD";

#[derive(Debug, Args)]
#[command(
    after_help = "Addresses:\n  ipmi://HOST[:PORT]                     IPMI v2.0 lanplus (UDP, port 623)\n  \
redfish://HOST[:PORT][/SYSTEM-ID]      Redfish over HTTPS (without SYSTEM-ID the BMC must have exactly one system)\n  \
redfish+http://HOST[:PORT][/SYSTEM-ID] Redfish over plain HTTP (emulators only)\n\n\
The password is read from --password-file or from $BEOWULF_BMC_PASSWORD; there is no flag that takes it\n\
(nor the IPMI BMC key: --bmc-key-file).\n\n\
Examples:\n  beowulf bmc --address ipmi://10.0.0.21 --username admin --password-file pw power status\n  \
beowulf bmc --address redfish://bmc21/System.Embedded.1 --username root --password-file pw bootdev pxe --once --uefi"
)]
pub struct BmcArgs {
    /// BMC address: ipmi://HOST[:PORT], redfish://HOST[:PORT][/SYSTEM-ID] or redfish+http://…
    #[arg(long, value_name = "URL")]
    pub address: String,
    /// BMC user name.
    #[arg(long, short = 'u', env = "BEOWULF_BMC_USERNAME")]
    pub username: String,
    /// File whose first line is the password (otherwise $BEOWULF_BMC_PASSWORD is used).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// IPMI: file holding the BMC key (Kg) in hex, as `ipmitool -y` takes it (only for BMCs that have one set).
    #[arg(long, value_name = "FILE")]
    pub bmc_key_file: Option<PathBuf>,
    /// IPMI cipher suite: auto (17, falling back to 3), 3 or 17.
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
    #[command(subcommand)]
    pub action: BmcAction,
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
    let endpoint = Endpoint::parse(&args.address)?;
    let password = read_password(args.password_file.as_ref())?;
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
    let options = Options {
        cipher_suite: args
            .cipher_suite
            .parse::<CipherChoice>()
            .map_err(anyhow::Error::msg)?,
        ca_pem,
        insecure_tls: args.insecure_tls,
        request_timeout: timeout,
        http_timeout: timeout * 10,
        ..Options::default()
    };
    let mut credentials = Credentials::new(args.username, password);
    if let Some(p) = &args.bmc_key_file {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading the BMC key file {}", p.display()))?;
        let key = parse_bmc_key(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("BMC key file {}", p.display()))?;
        credentials = credentials.with_bmc_key(key);
    }
    let bmc = Bmc::new(endpoint.clone(), credentials, options, Limits::new(1))?;
    let result = act(&bmc, args.action).await;
    bmc.close().await;
    result.with_context(|| format!("BMC {endpoint}"))
}

async fn act(bmc: &Bmc, action: BmcAction) -> anyhow::Result<()> {
    match action {
        BmcAction::Power { op, soft, wait } => {
            if soft && op != PowerOp::Off {
                bail!("--soft only applies to `power off`");
            }
            let action = match op {
                PowerOp::Status => {
                    println!("{}", bmc.power_state().await?);
                    return Ok(());
                }
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
                    println!("power {want}");
                }
                _ => println!("power {}: requested", format!("{op:?}").to_lowercase()),
            }
        }
        BmcAction::Bootdev { device, once, uefi } => {
            let device = match device {
                BootArg::Show => {
                    print_boot(bmc).await?;
                    return Ok(());
                }
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
            println!(
                "next boot: {device} ({}, {})",
                if once { "once" } else { "persistent" },
                if uefi { "uefi" } else { "legacy" }
            );
        }
    }
    Ok(())
}

/// Prints the boot override as "DEVICE[, once|persistent][, uefi|legacy]"; fields the BMC does not report
/// are left out.
async fn print_boot(bmc: &Bmc) -> anyhow::Result<()> {
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
    println!("{dev}{when}{mode}");
    Ok(())
}
