//! [`PowerControl`] over the real BMC drivers (`crate::bmc`): one driver (and so one session) per BMC and
//! user, reused across reconciles, under the drivers' global concurrency limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::bmc::{
    Bmc, BmcDriver, BootDevice, BootMode, BootOverride, Credentials, Endpoint, Limits, Options,
    PowerAction, PowerState,
};
use crate::provisioning::io::{BmcFailure, BmcTarget, PowerControl, PowerError};

/// Address, username, password and BMC key: a driver (and its session) per credential.
type DriverKey = (String, String, String, Option<Vec<u8>>);

/// The production [`PowerControl`].
#[derive(Default)]
pub struct BmcPower {
    limits: Limits,
    drivers: Mutex<HashMap<DriverKey, Arc<Bmc>>>,
}

impl BmcPower {
    fn driver(&self, t: &BmcTarget) -> Result<Arc<Bmc>, PowerError> {
        // Keyed by password and Kg too, so a rotated credential opens a new session instead of failing forever.
        let key = (
            t.address.clone(),
            t.username.clone(),
            t.password.clone(),
            t.bmc_key.clone(),
        );
        let mut drivers = self
            .drivers
            .lock()
            .map_err(|_| PowerError::new(BmcFailure::Protocol, "BMC driver cache poisoned"))?;
        if let Some(d) = drivers.get(&key) {
            return Ok(d.clone());
        }
        let bmc = connect(t, self.limits.clone()).map_err(io)?;
        let bmc = Arc::new(bmc);
        drivers.retain(|(addr, ..), _| addr != &t.address);
        drivers.insert(key, bmc.clone());
        Ok(bmc)
    }
}

/// A driver for `t`'s BMC (no traffic until it is used).
pub fn connect(t: &BmcTarget, limits: Limits) -> Result<Bmc, crate::bmc::BmcError> {
    let endpoint = Endpoint::parse(&t.address)?;
    let mut options = Options {
        insecure_tls: t.insecure_tls,
        ..Options::default()
    };
    options.cipher_suite = match t.cipher_suite {
        Some(3) => crate::bmc::ipmi::CipherChoice::Suite3,
        Some(17) => crate::bmc::ipmi::CipherChoice::Suite17,
        _ => crate::bmc::ipmi::CipherChoice::Auto,
    };
    let mut credentials = Credentials::new(t.username.clone(), t.password.clone());
    if let Some(k) = &t.bmc_key {
        credentials = credentials.with_bmc_key(k.clone());
    }
    Bmc::new(endpoint, credentials, options, limits)
}

/// The driver's error with its kind kept (timeouts count as unreachable: both pass by themselves).
fn io(e: crate::bmc::BmcError) -> PowerError {
    use crate::bmc::BmcError as E;
    let kind = match &e {
        E::Auth { .. } => BmcFailure::Auth,
        E::Unreachable { .. } | E::Timeout { .. } => BmcFailure::Unreachable,
        E::Unsupported { .. } => BmcFailure::Unsupported,
        // Power and boot commands never hold a payload; a busy BMC is a protocol answer to them.
        E::Protocol { .. } | E::Busy { .. } => BmcFailure::Protocol,
    };
    PowerError::new(kind, e.to_string())
}

impl PowerControl for BmcPower {
    fn power_state<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<bool, PowerError>> {
        Box::pin(
            async move { Ok(self.driver(t)?.power_state().await.map_err(io)? == PowerState::On) },
        )
    }
    fn power_on<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move { self.driver(t)?.power(PowerAction::On).await.map_err(io) })
    }
    fn power_off<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move {
            self.driver(t)?
                .power(PowerAction::ForceOff)
                .await
                .map_err(io)
        })
    }
    fn set_next_boot_pxe<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move {
            let mode = if t.uefi {
                BootMode::Uefi
            } else {
                BootMode::Legacy
            };
            let boot = BootOverride {
                device: BootDevice::Pxe,
                persistent: false,
                mode,
            };
            self.driver(t)?.set_boot(boot).await.map_err(io)
        })
    }
    fn inventory<'a>(
        &'a self,
        t: &'a BmcTarget,
    ) -> BoxFuture<'a, Result<crate::hardware::out_of_band::OutOfBand, PowerError>> {
        Box::pin(async move { self.driver(t)?.inventory().await.map_err(io) })
    }
}
