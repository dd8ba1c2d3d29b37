//! The engine's vocabulary: states, goals, observations and actions.

use std::time::Duration;

use crate::boot::Phase;

/// Where a host is in its lifecycle.
///
/// ```text
/// registering ──BMC answers──▶ available ──goal Provision──▶ provisioning ──callback──▶ provisioned
///      ▲                          ▲                          │  timeout: power off, back off, retry │
///      │                          │                          ▼  (max attempts) ▶ error             │
///      │                          └──── powered off ◀── deprovisioning ◀──── goal Release ────────┘
///      │                          │                          ▲
///      │           available ──goal Inspect──▶ inspecting ──report (phase inspection)──┘
/// ```
/// `inspecting` boots the inspection image with the same timeouts and retries as `provisioning`; its end is
/// the inspector's report instead of a callback, after which the host is powered off and available again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostState {
    #[default]
    Registering,
    Available,
    Provisioning,
    Provisioned,
    Deprovisioning,
    Error,
    Inspecting,
    /// Released with a cleaning policy: booting its image with `beowulf.clean=` until the node's callback, then
    /// powered off (deprovisioning) and available.
    Cleaning,
}

/// What the owner of the host wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Nobody wants the host: keep it registered and available (powered off).
    Idle,
    /// Boot it into its image with its user-data and wait for the node's callback.
    Provision,
    /// Power it off and make it available again.
    Release,
    /// Boot it into the inspection image until its hardware report arrives, then power it off.
    Inspect,
}

/// The engine's memory about one host, persisted by the caller (in `BeowulfHost.status`). Times are Unix
/// seconds, so the engine stays free of clocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    pub state: HostState,
    /// Boot attempt number while provisioning (1 = first boot).
    pub attempt: u32,
    /// When the current state or boot attempt began.
    pub since: Option<i64>,
    /// During a retry back-off: when to power on again.
    pub retry_at: Option<i64>,
    /// Consecutive BMC failures; drives the BMC back-off.
    pub bmc_failures: u32,
    /// Why the host is in `Error` (a condition reason) and a message for humans.
    pub failure: Option<(String, String)>,
}

/// The power state as the BMC reported it just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerObservation {
    On,
    Off,
    /// The BMC could not be asked, did not answer, refused the credentials or failed: what kind and why (no
    /// secrets).
    Failed(crate::provisioning::io::PowerError),
}

/// What the boot plane recorded for the host's current boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootObservation {
    /// The furthest phase reached and when (Unix seconds).
    pub last_phase: Option<(Phase, i64)>,
    /// This process's boot plane holds the host's profile (published here and not withdrawn). False for a
    /// boot another process started: a manager that restarted or took over the leadership has neither the
    /// profile nor its per-boot token, so that boot cannot finish.
    pub served: bool,
}

impl BootObservation {
    pub fn called_back(&self) -> bool {
        matches!(self.last_phase, Some((Phase::Callback, _)))
    }

    pub fn inspected(&self) -> bool {
        matches!(self.last_phase, Some((Phase::Inspection, _)))
    }
}

/// Everything the engine looks at besides its own [`Progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Unix seconds.
    pub now: i64,
    pub power: PowerObservation,
    pub boot: BootObservation,
    /// The host is online (`spec.online`); an offline host is never powered on.
    pub online: bool,
    /// State rebuilt from spec after the status was lost (`clusterctl move`): the consumer already records
    /// the host as provisioned (it has a providerID).
    pub consumer_says_provisioned: bool,
    /// A one-off request from remediation, carried out at most once (the caller keeps the receipt).
    pub request: Option<Request>,
    /// On release, the host's local disks are to be cleaned first by a cleaning boot (the caller has its
    /// profile).
    pub cleaning: bool,
}

/// A one-off request to a host being provisioned or provisioned (remediation's steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Boot the host's image again: the profile is published afresh (a new boot; the old token dies), next
    /// boot PXE, power off, power on. A provisioned host stays provisioned; a provisioning one restarts its
    /// current attempt.
    PowerCycle,
    /// Provision the host again: boot attempt 1 with the same image and user-data, then the usual phases,
    /// timeouts, retries and callback. Also from `error`.
    Reprovision,
}

/// One I/O step for the caller, run in order; stop at the first failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Give the boot plane the host's boot profile (image, user-data) with a fresh per-boot token.
    PublishProfile,
    /// Remove the host's boot profile from the boot plane (its token stops working).
    WithdrawProfile,
    /// BMC: next boot from the network (once).
    SetBootPxe,
    PowerOn,
    PowerOff,
}

impl Action {
    /// Whether the action talks to the BMC.
    pub fn needs_bmc(&self) -> bool {
        matches!(
            self,
            Action::SetBootPxe | Action::PowerOn | Action::PowerOff
        )
    }
}

/// The next check the caller should schedule.
pub type Requeue = Option<Duration>;
