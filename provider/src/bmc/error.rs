//! The six kinds of BMC failure. Each message names the BMC and says what to check.

use std::time::Duration;

pub type Result<T, E = BmcError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    /// The BMC refused the credentials.
    #[error(
        "BMC {bmc}: authentication failed: {detail}; check the username and password (and that the user may log in over this protocol)"
    )]
    Auth { bmc: String, detail: String },
    /// Nothing answered at the address at all.
    #[error(
        "BMC {bmc} is unreachable: {detail}; check the address and port, and that the BMC is powered and on this network"
    )]
    Unreachable { bmc: String, detail: String },
    /// Something answered, but not in time.
    #[error(
        "BMC {bmc}: timed out after {after:?} {what}; the BMC may be overloaded or the network lossy, retry later"
    )]
    Timeout {
        bmc: String,
        what: String,
        after: Duration,
    },
    /// The BMC does not offer what was asked for.
    #[error("BMC {bmc} does not support {what}")]
    Unsupported { bmc: String, what: String },
    /// What was asked for is held by another session (a serial console already active elsewhere).
    #[error("BMC {bmc}: {what}")]
    Busy { bmc: String, what: String },
    /// The BMC answered with something we cannot accept (malformed packet, failed integrity check, error code).
    #[error("BMC {bmc}: protocol error: {detail}")]
    Protocol { bmc: String, detail: String },
}

impl BmcError {
    /// Fills in the BMC name on errors raised before it was known (e.g. by the default `wait_power`).
    pub fn with_bmc(mut self, name: &str) -> Self {
        match &mut self {
            BmcError::Auth { bmc, .. }
            | BmcError::Unreachable { bmc, .. }
            | BmcError::Timeout { bmc, .. }
            | BmcError::Unsupported { bmc, .. }
            | BmcError::Busy { bmc, .. }
            | BmcError::Protocol { bmc, .. } => {
                if bmc.is_empty() {
                    *bmc = name.to_string();
                }
            }
        }
        self
    }

    /// A short machine-readable kind: `auth`, `unreachable`, `timeout`, `unsupported`, `busy`, `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            BmcError::Auth { .. } => "auth",
            BmcError::Unreachable { .. } => "unreachable",
            BmcError::Timeout { .. } => "timeout",
            BmcError::Unsupported { .. } => "unsupported",
            BmcError::Busy { .. } => "busy",
            BmcError::Protocol { .. } => "protocol",
        }
    }

    /// Whether retrying with a fresh session could help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BmcError::Timeout { .. } | BmcError::Unreachable { .. } | BmcError::Protocol { .. }
        )
    }
}
