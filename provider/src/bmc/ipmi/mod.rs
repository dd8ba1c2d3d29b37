//! Native, async IPMI v2.0 lanplus (RMCP+) driver.
//!
//! Cipher suites: 17 (RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128) and 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96,
//! AES-CBC-128). By default ([`CipherChoice::Auto`]) a session asks the BMC which suites it has and proposes
//! 17, then 3, of those; a refusal or a counter-offer of the other suite falls back, and the suite that
//! worked is remembered per BMC ([`negotiate`]). A host can pin either suite. Suites without integrity or
//! confidentiality are never offered nor accepted.
//!
//! One session per BMC is kept and reused; a session idle for longer than [`IDLE_REOPEN`] is replaced
//! before use (BMCs drop idle sessions after about a minute), and one that stops answering is reopened once.

pub mod commands;
pub mod crypto;
mod fru;
pub mod negotiate;
pub mod packet;
pub mod ping;
pub mod session;
pub mod sol;

use std::time::Duration;

use tokio::sync::Mutex;

use super::{
    BmcDriver, BmcError, BootOverride, BootOverrideStatus, Credentials, Endpoint, Limits, Options,
    PowerAction, PowerState, Result,
};
use crate::hardware::out_of_band::OutOfBand;
use commands::NETFN_CHASSIS;
use crypto::Suite;
use session::{Session, SessionParams};

/// Sessions idle longer than this are replaced before use.
pub const IDLE_REOPEN: Duration = Duration::from_secs(40);

/// Which cipher suite(s) to propose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherChoice {
    /// 17, then 3, of the suites the BMC has; remembered per BMC once one works.
    #[default]
    Auto,
    Suite3,
    Suite17,
}

impl CipherChoice {
    fn suites(self) -> Vec<Suite> {
        match self {
            CipherChoice::Auto => vec![Suite::S17, Suite::S3],
            CipherChoice::Suite3 => vec![Suite::S3],
            CipherChoice::Suite17 => vec![Suite::S17],
        }
    }
}

impl std::str::FromStr for CipherChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(CipherChoice::Auto),
            "3" => Ok(CipherChoice::Suite3),
            "17" => Ok(CipherChoice::Suite17),
            _ => Err(format!("unsupported cipher suite {s:?}: use auto, 3 or 17")),
        }
    }
}

/// An IPMI BMC. Calls are serialized per BMC (one request in flight) and limited globally by [`Limits`].
pub struct IpmiClient {
    endpoint: Endpoint,
    name: String,
    credentials: Credentials,
    options: Options,
    limits: Limits,
    session: Mutex<Option<Session>>,
}

impl IpmiClient {
    pub fn new(
        endpoint: Endpoint,
        credentials: Credentials,
        options: Options,
        limits: Limits,
    ) -> Self {
        IpmiClient {
            name: endpoint.to_string(),
            endpoint,
            credentials,
            options,
            limits,
            session: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// RMCP presence ping: does something answer as a management controller at this address (no session,
    /// no credentials; does not count against the BMC's sessions)?
    pub async fn ping(&self) -> Result<ping::Pong> {
        let _permit = self.limits.acquire().await;
        let p = self.params().await?;
        ping::ping(&self.name, p.addr, p.timeout, p.retries).await
    }

    /// The cipher suite of the open session, if one is open.
    pub async fn session_suite(&self) -> Option<u8> {
        self.session.lock().await.as_ref().map(|s| s.suite().id())
    }

    /// Opens the host's serial console (SOL) on a session of its own; see [`sol::Console`]. `takeover`:
    /// deactivate SOL on another session first instead of failing with [`BmcError::Busy`].
    pub async fn console(&self, takeover: bool, keepalive: Duration) -> Result<sol::Console> {
        sol::Console::open(
            self.params().await?,
            &self.credentials.username,
            self.credentials.password(),
            self.credentials.bmc_key(),
            takeover,
            keepalive,
        )
        .await
    }

    async fn params(&self) -> Result<SessionParams> {
        let addr = tokio::net::lookup_host(self.endpoint.authority())
            .await
            .map_err(|e| BmcError::Unreachable {
                bmc: self.name.clone(),
                detail: format!("cannot resolve {}: {e}", self.endpoint.host),
            })?
            .next()
            .ok_or_else(|| BmcError::Unreachable {
                bmc: self.name.clone(),
                detail: format!("{} has no address", self.endpoint.host),
            })?;
        Ok(SessionParams {
            bmc: self.name.clone(),
            addr,
            timeout: self.options.request_timeout,
            retries: self.options.retries,
            suites: self.options.cipher_suite.suites(),
            negotiate: self.options.cipher_suite == CipherChoice::Auto,
        })
    }

    /// Runs one request on the BMC's session, opening (or reopening) the session as needed; a completion
    /// code other than 0 is an error.
    async fn call(&self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>> {
        match self.call_raw(netfn, cmd, data).await? {
            (0, d) => Ok(d),
            (cc, _) => Err(commands::completion_error(&self.name, netfn, cmd, cc)),
        }
    }

    /// [`IpmiClient::call`] that returns the completion code with the data instead of failing on it.
    async fn call_raw(&self, netfn: u8, cmd: u8, data: &[u8]) -> Result<(u8, Vec<u8>)> {
        let _permit = self.limits.acquire().await;
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.take_if(|s| s.last_used.elapsed() > IDLE_REOPEN) {
            s.close().await;
        }
        for attempt in 0..2 {
            let fresh = slot.is_none();
            let session = match slot.as_mut() {
                Some(s) => s,
                None => slot.insert(
                    Session::open(
                        self.params().await?,
                        &self.credentials.username,
                        self.credentials.password(),
                        self.credentials.bmc_key(),
                    )
                    .await?,
                ),
            };
            match session.request_raw(netfn, cmd, data).await {
                Ok(d) => return Ok(d),
                // A reused session may have been dropped by the BMC (it then ignores us): reopen once.
                Err(e @ BmcError::Timeout { .. }) if !fresh && attempt == 0 => {
                    tracing::debug!(bmc = %self.name, error = %e, "session stopped answering, reopening");
                    *slot = None;
                }
                Err(e) => {
                    if e.is_transient() && !matches!(e, BmcError::Protocol { .. }) {
                        *slot = None;
                    }
                    return Err(e);
                }
            }
        }
        Err(BmcError::Timeout {
            bmc: self.name.clone(),
            what: "reopening the session".into(),
            after: self.options.request_timeout,
        })
    }
}

impl BmcDriver for IpmiClient {
    async fn power_state(&self) -> Result<PowerState> {
        let d = self
            .call(NETFN_CHASSIS, commands::CMD_GET_CHASSIS_STATUS, &[])
            .await?;
        commands::power_state(&d).ok_or_else(|| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: "empty Get Chassis Status response".into(),
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        self.call(
            NETFN_CHASSIS,
            commands::CMD_CHASSIS_CONTROL,
            &[commands::chassis_control(action)],
        )
        .await?;
        Ok(())
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<()> {
        let data = commands::set_boot_flags(boot).ok_or_else(|| BmcError::Unsupported {
            bmc: self.name.clone(),
            what: format!(
                "boot device {} over IPMI (use a Redfish address for UEFI HTTP boot)",
                boot.device
            ),
        })?;
        self.call(NETFN_CHASSIS, commands::CMD_SET_BOOT_OPTIONS, &data)
            .await?;
        Ok(())
    }

    async fn boot(&self) -> Result<BootOverrideStatus> {
        let d = self
            .call(
                NETFN_CHASSIS,
                commands::CMD_GET_BOOT_OPTIONS,
                &commands::get_boot_flags_request(),
            )
            .await?;
        commands::parse_boot_flags(&d).ok_or_else(|| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: "malformed Get System Boot Options (parameter 5) response".into(),
        })
    }

    async fn inventory(&self) -> Result<OutOfBand> {
        self.fru_inventory().await
    }

    async fn close(&self) {
        if let Some(s) = self.session.lock().await.take() {
            s.close().await;
        }
    }

    async fn wait_power(&self, want: PowerState, timeout: Duration) -> Result<()> {
        super::poll_power(self, want, timeout)
            .await
            .map_err(|e| e.with_bmc(&self.name))
    }
}
