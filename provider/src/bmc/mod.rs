//! BMC drivers: power and next-boot-device control, and the out-of-band hardware inventory, over IPMI v2.0
//! lanplus (native, async) and Redfish.
//!
//! The engine talks to one trait, [`BmcDriver`]; [`Bmc`] picks the implementation from the endpoint URL
//! ([`Endpoint`]). Every driver is a good citizen towards its BMC: one session per BMC, reused; at most one
//! request in flight per BMC (a per-BMC lock); a process-wide limit on concurrent BMC operations
//! ([`Limits`]); bounded timeouts with retries; and errors of five kinds ([`BmcError`]) whose messages say what
//! to do.

pub mod endpoint;
pub mod error;
pub mod ipmi;
pub mod power_cache;
pub mod redfish;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

pub use crate::hardware::out_of_band::OutOfBand;
pub use endpoint::{Credentials, Endpoint, Protocol, parse_bmc_key};
pub use error::{BmcError, Result};

/// Chassis power as the BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    On,
    Off,
}

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        })
    }
}

/// A power change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerAction {
    On,
    /// Cut power now.
    ForceOff,
    /// Ask the OS to shut down (ACPI soft-off / Redfish `GracefulShutdown`).
    SoftOff,
    /// Off, then on again.
    Cycle,
    /// Hard reset without a power-off phase.
    Reset,
}

impl PowerAction {
    /// The state the machine should end in, when the action has a definite one.
    pub fn target_state(self) -> PowerState {
        match self {
            PowerAction::ForceOff | PowerAction::SoftOff => PowerState::Off,
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => PowerState::On,
        }
    }
}

/// Where the machine boots next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    BiosSetup,
    /// UEFI HTTP boot (Redfish `UefiHttp`; IPMI has no selector for it).
    UefiHttp,
}

impl std::fmt::Display for BootDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::BiosSetup => "bios",
            BootDevice::UefiHttp => "http",
        })
    }
}

/// Firmware mode for the boot override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    Uefi,
    Legacy,
}

/// A next-boot-device request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootOverride {
    pub device: BootDevice,
    /// `true`: every boot until changed; `false`: the next boot only.
    pub persistent: bool,
    pub mode: BootMode,
}

/// The boot override as read back from the BMC. Fields the BMC does not report are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootOverrideStatus {
    /// `None`: no override (boot from the normal boot order).
    pub device: Option<BootDevice>,
    pub persistent: Option<bool>,
    pub mode: Option<BootMode>,
}

/// The engine's view of a BMC. Implementations serialize their own requests (one in flight per BMC) and
/// honour the global [`Limits`]; callers may share one driver between tasks.
pub trait BmcDriver: Send + Sync {
    /// Reads the chassis power state.
    fn power_state(&self) -> impl Future<Output = Result<PowerState>> + Send;
    /// Requests a power change; returns when the BMC accepted it (not when the state changed: see
    /// [`BmcDriver::wait_power`]).
    fn power(&self, action: PowerAction) -> impl Future<Output = Result<()>> + Send;
    /// Sets the next boot device.
    fn set_boot(&self, boot: BootOverride) -> impl Future<Output = Result<()>> + Send;
    /// Reads the boot override back.
    fn boot(&self) -> impl Future<Output = Result<BootOverrideStatus>> + Send;
    /// Reads what the BMC knows about the hardware: over Redfish the ComputerSystem with its NICs and drives,
    /// over IPMI the FRU inventory of device 0. Facts the BMC does not offer are absent (a BMC without FRU
    /// data gives an inventory with nothing but its `source`); a sub-resource that fails is skipped. An
    /// unreachable BMC, refused credentials or a corrupt FRU are errors as usual.
    fn inventory(&self) -> impl Future<Output = Result<OutOfBand>> + Send;
    /// Ends the session with the BMC, if any (drivers reopen one on the next call).
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Polls the power state until it equals `want` or `timeout` passes. Redfish BMCs (and slow IPMI ones)
    /// apply power changes seconds after accepting them.
    fn wait_power(
        &self,
        want: PowerState,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        poll_power(self, want, timeout)
    }
}

/// Polls `power_state` with backoff (200 ms doubling to 2 s) until it reads `want` or `timeout` passes.
pub async fn poll_power<D: BmcDriver + ?Sized>(
    bmc: &D,
    want: PowerState,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(200);
    loop {
        let now = bmc.power_state().await?;
        if now == want {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(BmcError::Timeout {
                bmc: String::new(),
                what: format!("waiting for power {want} (still {now})"),
                after: timeout,
            });
        }
        tokio::time::sleep(interval.min(left)).await;
        interval = (interval * 2).min(Duration::from_secs(2));
    }
}

/// Process-wide limits shared by every driver: at most `max_concurrent` BMC operations run at once, so a
/// thousand watched BMCs do not become a thousand simultaneous sessions.
#[derive(Debug, Clone)]
pub struct Limits {
    global: Arc<Semaphore>,
}

impl Limits {
    /// Default global limit on concurrent BMC operations.
    pub const DEFAULT_MAX_CONCURRENT: usize = 64;

    pub fn new(max_concurrent: usize) -> Self {
        Limits {
            global: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// Waits for a slot. The semaphore is never closed, so `None` cannot happen in practice; it would mean
    /// "no limit" rather than a failure.
    pub(crate) async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.global.acquire().await.ok()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(Self::DEFAULT_MAX_CONCURRENT)
    }
}

/// Per-BMC settings beyond the address and credentials.
#[derive(Debug, Clone)]
pub struct Options {
    /// IPMI cipher suite choice.
    pub cipher_suite: ipmi::CipherChoice,
    /// Redfish TLS: PEM bundle of CAs to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Redfish TLS: accept any certificate (explicit opt-in, for lab BMCs with self-signed certificates).
    pub insecure_tls: bool,
    /// IPMI: how long to wait for one answer before retransmitting (later attempts wait longer).
    pub request_timeout: Duration,
    /// Redfish: how long one HTTP request may take.
    pub http_timeout: Duration,
    /// How many times a request is retried after a timeout or a transport error.
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cipher_suite: ipmi::CipherChoice::Auto,
            ca_pem: None,
            insecure_tls: false,
            request_timeout: Duration::from_secs(1),
            http_timeout: Duration::from_secs(10),
            retries: 3,
        }
    }
}

/// A BMC of either protocol, chosen from its [`Endpoint`].
pub enum Bmc {
    Ipmi(ipmi::IpmiClient),
    Redfish(redfish::RedfishClient),
}

impl std::fmt::Debug for Bmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bmc::Ipmi(c) => f
                .debug_tuple("Bmc::Ipmi")
                .field(&c.endpoint().to_string())
                .finish(),
            Bmc::Redfish(c) => f
                .debug_tuple("Bmc::Redfish")
                .field(&c.endpoint().to_string())
                .finish(),
        }
    }
}

impl Bmc {
    /// Builds a driver; no traffic is sent until the first call.
    pub fn new(
        endpoint: Endpoint,
        credentials: Credentials,
        options: Options,
        limits: Limits,
    ) -> Result<Bmc> {
        Ok(match endpoint.protocol {
            Protocol::Ipmi => Bmc::Ipmi(ipmi::IpmiClient::new(
                endpoint,
                credentials,
                options,
                limits,
            )),
            Protocol::Redfish { .. } => Bmc::Redfish(redfish::RedfishClient::new(
                endpoint,
                credentials,
                options,
                limits,
            )?),
        })
    }
}

impl Bmc {
    /// The host's serial console. IPMI: Serial over LAN ([`ipmi::sol`]). Redfish has no standard serial
    /// console transport (vendors offer SSH to the BMC instead), so a Redfish BMC says so.
    pub async fn console(&self, takeover: bool, keepalive: Duration) -> Result<ipmi::sol::Console> {
        match self {
            Bmc::Ipmi(c) => c.console(takeover, keepalive).await,
            Bmc::Redfish(c) => Err(BmcError::Unsupported {
                bmc: c.endpoint().to_string(),
                what: "a serial console over Redfish: Redfish has no standard serial console transport; use \
                       the BMC's SSH console (vendor-specific), or give the host an ipmi:// address if its BMC \
                       also speaks IPMI"
                    .into(),
            }),
        }
    }
}

impl BmcDriver for Bmc {
    async fn power_state(&self) -> Result<PowerState> {
        match self {
            Bmc::Ipmi(c) => c.power_state().await,
            Bmc::Redfish(c) => c.power_state().await,
        }
    }
    async fn power(&self, action: PowerAction) -> Result<()> {
        match self {
            Bmc::Ipmi(c) => c.power(action).await,
            Bmc::Redfish(c) => c.power(action).await,
        }
    }
    async fn set_boot(&self, boot: BootOverride) -> Result<()> {
        match self {
            Bmc::Ipmi(c) => c.set_boot(boot).await,
            Bmc::Redfish(c) => c.set_boot(boot).await,
        }
    }
    async fn boot(&self) -> Result<BootOverrideStatus> {
        match self {
            Bmc::Ipmi(c) => c.boot().await,
            Bmc::Redfish(c) => c.boot().await,
        }
    }
    async fn inventory(&self) -> Result<OutOfBand> {
        match self {
            Bmc::Ipmi(c) => c.inventory().await,
            Bmc::Redfish(c) => c.inventory().await,
        }
    }
    async fn close(&self) {
        match self {
            Bmc::Ipmi(c) => c.close().await,
            Bmc::Redfish(c) => c.close().await,
        }
    }
}
