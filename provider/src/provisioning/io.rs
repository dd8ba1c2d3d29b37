//! The I/O the engine's [`Action`](super::Action)s need, as two small traits.
//!
//! The controllers and standalone mode run actions through these; the real implementations are the `bmc`
//! drivers and the boot plane, and tests plug in recording fakes. Both traits are object safe (boxed
//! futures) so one process can hold `Arc<dyn …>`.

use std::fmt;
use std::net::Ipv4Addr;

use futures::future::BoxFuture;

use crate::boot::{MacAddr, Phase};

/// Where and how to reach one BMC. `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BmcTarget {
    /// `ipmi://HOST[:PORT]` or `redfish://HOST[/SYSTEM]`.
    pub address: String,
    pub username: String,
    pub password: String,
    pub cipher_suite: Option<u8>,
    /// The IPMI BMC key (Kg), when the BMC has one; ignored by Redfish.
    pub bmc_key: Option<Vec<u8>>,
    pub insecure_tls: bool,
    pub uefi: bool,
}

impl fmt::Debug for BmcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcTarget")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("cipher_suite", &self.cipher_suite)
            .field("bmc_key", &self.bmc_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A boot-plane operation failed. The message says what, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IoError(pub String);

/// What kind of BMC failure: the engine reports each kind under its own reason, because each asks for a
/// different fix (an outage passes; a wrong password or a missing Secret does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcFailure {
    /// Nothing answered, or not in time.
    Unreachable,
    /// The BMC refused the credentials (user, password, IPMI BMC key).
    Auth,
    /// The credentials could not be read (their Secret is missing or malformed): the BMC was not asked.
    Credentials,
    /// The BMC does not offer what was asked for.
    Unsupported,
    /// The BMC answered with something that cannot be accepted.
    Protocol,
}

/// A BMC operation failed. The message names the BMC and says what to check, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PowerError {
    pub kind: BmcFailure,
    pub message: String,
}

impl PowerError {
    pub fn new(kind: BmcFailure, message: impl Into<String>) -> Self {
        PowerError {
            kind,
            message: message.into(),
        }
    }
}

/// Power and boot-device control.
pub trait PowerControl: Send + Sync + 'static {
    /// `true` when powered on.
    fn power_state<'a>(&'a self, bmc: &'a BmcTarget) -> BoxFuture<'a, Result<bool, PowerError>>;
    fn power_on<'a>(&'a self, bmc: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>>;
    /// Hard power off (the host is being released; nothing on it must survive).
    fn power_off<'a>(&'a self, bmc: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>>;
    /// Next boot from the network, once.
    fn set_next_boot_pxe<'a>(&'a self, bmc: &'a BmcTarget)
    -> BoxFuture<'a, Result<(), PowerError>>;
    /// What the BMC says about the hardware (Redfish inventory, IPMI FRU). Implementations that cannot ask
    /// (test doubles) say so.
    fn inventory<'a>(
        &'a self,
        bmc: &'a BmcTarget,
    ) -> BoxFuture<'a, Result<crate::hardware::out_of_band::OutOfBand, PowerError>> {
        Box::pin(async move {
            Err(PowerError::new(
                BmcFailure::Unsupported,
                format!("{}: no inventory from this BMC control", bmc.address),
            ))
        })
    }
}

/// Format of the user-data a host receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDataFormat {
    CloudConfig,
    Ignition,
}

/// Everything the boot plane needs to boot one host once. `Debug` never prints the user-data.
#[derive(Clone, PartialEq, Eq)]
pub struct BootProfile {
    /// `<namespace>/<host>`: the key the boot plane files phases under.
    pub host: String,
    pub hostname: String,
    pub mac: MacAddr,
    /// Static address with prefix length, gateway.
    pub ip: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub provider_id: String,
    pub kernel: String,
    pub initrds: Vec<String>,
    pub rootfs: Option<String>,
    pub cmdline: String,
    pub user_data: Vec<u8>,
    pub format: UserDataFormat,
    /// The local disks the node keeps, identified (`crate::storage::resolve`).
    pub local_disks: Vec<crate::storage::DiskPlan>,
    /// A cleaning boot: the node cleans the local disks of the plan (`beowulf.clean=`).
    pub cleaning: Option<crate::storage::Cleaning>,
}

impl fmt::Debug for BootProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootProfile")
            .field("host", &self.host)
            .field("mac", &self.mac)
            .field("ip", &self.ip)
            .field("provider_id", &self.provider_id)
            .field("kernel", &self.kernel)
            .field(
                "user_data",
                &format_args!("<{} bytes redacted>", self.user_data.len()),
            )
            .field("format", &self.format)
            .finish()
    }
}

/// A boot in progress, as a restarted manager rebuilds it from the host's status: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBoot {
    pub token_sha256: [u8; 32],
    /// Unix seconds.
    pub token_expires: i64,
    /// The furthest phase reached, with its Unix time.
    pub last_phase: Option<(Phase, i64)>,
    /// The boot plane the node talks to (`ADDRESS:PORT`): only a boot plane at the same address can serve the
    /// boot on (a new leader on another machine cannot: the node would never reach it).
    pub server: String,
}

/// The boot plane as the engine sees it: where boot profiles are published (the manager's implementation is
/// `runtime::profiles::ProfileRegistry`, which serves them through [`crate::boot::plane::BootPlane`]).
pub trait BootProfiles: Send + Sync + 'static {
    /// Publishes (or replaces) the host's profile and issues a fresh per-boot token; earlier tokens of the
    /// host stop working and earlier phases are forgotten.
    fn publish(&self, profile: BootProfile) -> Result<(), IoError>;
    /// Removes the host's profile; its token stops working.
    fn withdraw(&self, host: &str);
    /// The furthest phase of the host's current boot, with its Unix time.
    fn last_phase(&self, host: &str) -> Option<(Phase, i64)>;
    /// Whether the host's profile is published here (and not withdrawn since).
    fn serves(&self, host: &str) -> bool;
    /// The host's latest inspection report received here, with its Unix time.
    fn inspection(&self, host: &str) -> Option<(crate::hardware::Hardware, i64)>;
    /// The host's boot in progress as another process would need it to serve the boot on: its token's
    /// digest and expiry and its last phase. `None` when no token is live.
    fn live_boot(&self, _host: &str) -> Option<LiveBoot> {
        None
    }
    /// Publishes the host's profile for a boot already in progress (`boot`, from a process that stopped):
    /// the node's token stays valid and its phases are kept. A boot plane that cannot resume publishes anew.
    fn resume(&self, profile: BootProfile, _boot: &LiveBoot) -> Result<(), IoError> {
        self.publish(profile)
    }
    /// The published profile's local-disk plan and, once the node sent it, its report for the current boot.
    fn local_disks(
        &self,
        _host: &str,
    ) -> Option<(
        Vec<crate::storage::DiskPlan>,
        Option<crate::storage::DiskReport>,
    )> {
        None
    }
}
