//! [`decide`]: the transition function.

use std::time::Duration;

use super::io::BmcFailure;
use super::state::{Action, Goal, HostState, Observation, PowerObservation, Progress, Request};
use crate::boot::Phase;

/// Timeouts and retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Power-on → the first DHCP request of the boot.
    pub dhcp_timeout: Duration,
    /// Between two loader phases (DHCP, TFTP, iPXE script, kernel, initrd, rootfs download).
    pub load_timeout: Duration,
    /// Rootfs/metadata → the node's callback (the OS boots and runs cloud-init).
    pub os_timeout: Duration,
    /// Power-off request → the BMC reports off; then the power-off is sent again.
    pub power_off_timeout: Duration,
    /// Boot attempts before the host goes to `Error`.
    pub max_attempts: u32,
    /// Back-off before retry n is `backoff_base * 2^(n-1)`, capped at `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often to look while waiting for something the boot plane does not push.
    pub poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dhcp_timeout: Duration::from_secs(300),
            load_timeout: Duration::from_secs(300),
            os_timeout: Duration::from_secs(900),
            power_off_timeout: Duration::from_secs(60),
            max_attempts: 3,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
            poll: Duration::from_secs(15),
        }
    }
}

impl EngineConfig {
    /// The back-off after failure number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// How long the boot may stay at `last` (None: nothing seen since power-on) before it counts as stuck.
    fn phase_timeout(&self, last: Option<Phase>) -> Duration {
        match last {
            None => self.dhcp_timeout,
            Some(Phase::Rootfs | Phase::Metadata) => self.os_timeout,
            Some(_) => self.load_timeout,
        }
    }
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to persist (after the actions succeeded; see [`action_failed`]).
    pub progress: Progress,
    /// I/O to run, in order.
    pub actions: Vec<Action>,
    /// When to look again; `None`: only on a change (watch event, boot-plane callback).
    pub requeue: Option<Duration>,
    /// Condition reason (CamelCase) describing where the host is.
    pub reason: String,
    /// Condition message.
    pub message: String,
    /// The observation's [`Request`] was answered (carried out by the actions, or not applicable): what
    /// to record once the actions ran. `None`: not answered yet (the BMC failed, or nothing asked).
    pub request_note: Option<String>,
}

impl Decision {
    fn new(progress: Progress, reason: &str, message: impl Into<String>) -> Self {
        Decision {
            progress,
            actions: Vec::new(),
            requeue: None,
            reason: reason.to_string(),
            message: message.into(),
            request_note: None,
        }
    }
    fn with(mut self, actions: Vec<Action>) -> Self {
        self.actions = actions;
        self
    }
    fn requeue(mut self, d: Duration) -> Self {
        self.requeue = Some(d);
        self
    }
}

/// Condition reasons the engine produces (besides the `BootStalledAfter<Phase>` family).
pub mod reason {
    pub const AVAILABLE: &str = "Available";
    pub const PROVISIONING: &str = "Provisioning";
    pub const PROVISIONED: &str = "Provisioned";
    pub const DEPROVISIONING: &str = "Deprovisioning";
    pub const RETRY_BACKOFF: &str = "RetryBackoff";
    pub const BMC_UNREACHABLE: &str = "BMCUnreachable";
    pub const BMC_AUTHENTICATION_FAILED: &str = "BMCAuthenticationFailed";
    pub const BMC_CREDENTIALS_INVALID: &str = "BMCCredentialsInvalid";
    pub const BMC_UNSUPPORTED: &str = "BMCUnsupported";
    pub const BMC_PROTOCOL_ERROR: &str = "BMCProtocolError";
    pub const BMC_ERROR: &str = "BMCError";
    pub const HOST_OFFLINE: &str = "HostOffline";
    pub const NO_DHCP: &str = "NoDHCPRequest";
    pub const POWER_OFF_PENDING: &str = "PowerOffPending";
    pub const INSPECTING: &str = "Inspecting";
    pub const INSPECTED: &str = "Inspected";
    pub const POWER_CYCLED: &str = "PowerCycled";
    pub const CLEANING: &str = "Cleaning";
    pub const CLEANED: &str = "Cleaned";
    /// A cleaning boot failed after every attempt: the host stays in `error`, unreleased, until its cleaning
    /// policy is set to `none`.
    pub const CLEANING_FAILED: &str = "CleaningFailed";
}

/// The reason while a boot is under way: provisioning, or inspecting.
fn booting(p: &Progress) -> &'static str {
    match p.state {
        HostState::Inspecting => reason::INSPECTING,
        HostState::Cleaning => reason::CLEANING,
        _ => reason::PROVISIONING,
    }
}

fn camel(phase: Phase) -> String {
    phase
        .as_str()
        .split('-')
        .map(|w| match w {
            "dhcp" => "DHCP".to_string(),
            "tftp" => "TFTP".to_string(),
            "ipxe" => "IPXE".to_string(),
            w => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// Whether `reason` says a boot got stuck (timed out at some phase, or a cleaning boot gave up).
pub fn is_stall(reason: &str) -> bool {
    reason == reason::NO_DHCP
        || reason == reason::CLEANING_FAILED
        || reason.starts_with("BootStalledAfter")
}

/// The reason for a boot that got stuck after `last`.
pub fn stall_reason(last: Option<Phase>) -> String {
    match last {
        None => reason::NO_DHCP.to_string(),
        Some(p) => format!("BootStalledAfter{}", camel(p)),
    }
}

/// Decides the next step for one host.
pub fn decide(cfg: &EngineConfig, progress: &Progress, goal: Goal, obs: &Observation) -> Decision {
    // A request waits while the BMC cannot be used (it is answered once the BMC is back), and applies only
    // to a host its consumer wants provisioned.
    let bmc_failed = matches!(obs.power, PowerObservation::Failed(_));
    if let (Some(request), false, Goal::Provision) = (obs.request, bmc_failed, goal) {
        if let Some(d) = carry_out(cfg, progress, request, obs) {
            return d;
        }
        let mut d = decide_goal(cfg, progress, goal, obs);
        d.request_note = Some(format!(
            "{request:?} not carried out: the host is {:?}",
            progress.state
        ));
        return d;
    }
    decide_goal(cfg, progress, goal, obs)
}

/// A [`Request`] on a host where it applies: power cycle (provisioned or provisioning) or re-provision
/// (provisioned, provisioning or error). Both are a fresh boot of the same profile.
fn carry_out(
    cfg: &EngineConfig,
    progress: &Progress,
    request: Request,
    obs: &Observation,
) -> Option<Decision> {
    use HostState::{Error, Provisioned, Provisioning};
    let applies = match request {
        Request::PowerCycle => matches!(progress.state, Provisioned | Provisioning),
        Request::Reprovision => matches!(progress.state, Provisioned | Provisioning | Error),
    };
    if !applies || !obs.online {
        return None;
    }
    let mut p = progress.clone();
    p.bmc_failures = 0;
    p.retry_at = None;
    let (why, message) = match request {
        Request::PowerCycle => {
            if p.state == Provisioning {
                p.since = Some(obs.now);
            }
            let m = "power-cycled on request: the host boots its image again".to_string();
            (reason::POWER_CYCLED, m)
        }
        Request::Reprovision => {
            p.state = Provisioning;
            p.attempt = 1;
            p.since = Some(obs.now);
            p.failure = None;
            let m = "re-provisioning on request: boot attempt 1: powering on".to_string();
            (reason::PROVISIONING, m)
        }
    };
    let mut actions = vec![Action::PublishProfile, Action::SetBootPxe];
    if obs.power == PowerObservation::On {
        actions.push(Action::PowerOff);
    }
    actions.push(Action::PowerOn);
    let mut d = Decision::new(p, why, message.clone())
        .with(actions)
        .requeue(cfg.dhcp_timeout.min(cfg.poll));
    d.request_note = Some(message);
    Some(d)
}

fn decide_goal(cfg: &EngineConfig, progress: &Progress, goal: Goal, obs: &Observation) -> Decision {
    let mut p = progress.clone();
    // A host the consumer still considers provisioned needs no BMC, whatever the BMC is doing.
    if p.state == HostState::Provisioned && goal == Goal::Provision {
        return Decision::new(p, reason::PROVISIONED, "the node called back");
    }
    if let PowerObservation::Failed(e) = &obs.power {
        p.bmc_failures = p.bmc_failures.saturating_add(1);
        let wait = cfg.backoff(p.bmc_failures);
        let (reason, what) = bmc_failure(e.kind);
        return Decision::new(
            p,
            reason,
            format!("{what} ({}); retrying in {}s", e.message, wait.as_secs()),
        )
        .requeue(wait);
    }
    p.bmc_failures = 0;
    let powered_on = obs.power == PowerObservation::On;
    let now = obs.now;

    // At most a few transitions per call (registering → available → provisioning); each arm either
    // returns or moves to a different state.
    for _ in 0..4 {
        match (p.state, goal) {
            (HostState::Registering, _) => {
                if obs.consumer_says_provisioned && goal == Goal::Provision {
                    p.state = HostState::Provisioned;
                    p.attempt = p.attempt.max(1);
                } else {
                    p.state = HostState::Available;
                    p.attempt = 0;
                }
                p.since = Some(now);
            }
            (HostState::Available, Goal::Provision | Goal::Inspect) => {
                if !obs.online {
                    return Decision::new(p, reason::HOST_OFFLINE, "spec.online is false");
                }
                let (state, why) = if goal == Goal::Inspect {
                    (HostState::Inspecting, reason::INSPECTING)
                } else {
                    (HostState::Provisioning, reason::PROVISIONING)
                };
                p.state = state;
                p.attempt = 1;
                p.since = Some(now);
                p.retry_at = None;
                p.failure = None;
                let mut actions = vec![Action::PublishProfile, Action::SetBootPxe];
                if powered_on {
                    actions.push(Action::PowerOff);
                }
                actions.push(Action::PowerOn);
                let wait = cfg.dhcp_timeout.min(cfg.poll);
                return Decision::new(p, why, "boot attempt 1: powering on")
                    .with(actions)
                    .requeue(wait);
            }
            (HostState::Available, _) => {
                return Decision::new(p, reason::AVAILABLE, "powered off and free");
            }
            (HostState::Provisioning, Goal::Provision) | (HostState::Inspecting, Goal::Inspect) => {
                return provisioning(cfg, p, obs);
            }
            (HostState::Provisioned, Goal::Provision) => {
                return Decision::new(p, reason::PROVISIONED, "the node called back");
            }
            // A host whose cleaning failed is not released uncleaned: it waits in `error` for a human.
            (HostState::Error, Goal::Release)
                if obs.cleaning
                    && p.failure
                        .as_ref()
                        .is_some_and(|f| f.0 == reason::CLEANING_FAILED) =>
            {
                let (r, m) = p.failure.clone().unwrap_or_default();
                return Decision::new(
                    p,
                    &r,
                    format!(
                        "{m}; the host is not released until its disks are cleaned (or spec.cleaning is none)"
                    ),
                );
            }
            // Released with disks to clean: boot the cleaning image first (powering off whatever runs).
            (
                HostState::Provisioning | HostState::Provisioned | HostState::Error,
                Goal::Release,
            ) if obs.cleaning => {
                if !obs.online {
                    let actions = if powered_on {
                        vec![Action::WithdrawProfile, Action::PowerOff]
                    } else {
                        Vec::new()
                    };
                    return Decision::new(
                        p,
                        reason::HOST_OFFLINE,
                        "its local disks are to be cleaned before it is released, and spec.online is false",
                    )
                    .with(actions)
                    .requeue(cfg.poll);
                }
                p.state = HostState::Cleaning;
                p.attempt = 1;
                p.failure = None;
                return boot(
                    cfg,
                    p,
                    obs,
                    "cleaning boot attempt 1: powering on".to_string(),
                );
            }
            (HostState::Cleaning, Goal::Release) if obs.cleaning => {
                if !obs.online {
                    // Taken offline mid-way: stop, and clean once it is back online.
                    p.state = HostState::Error;
                    p.failure = Some((
                        reason::HOST_OFFLINE.to_string(),
                        "spec.online was set to false during its cleaning boot".to_string(),
                    ));
                    return Decision::new(
                        p,
                        reason::HOST_OFFLINE,
                        "spec.online is false; cleaning stopped",
                    )
                    .with(vec![Action::WithdrawProfile, Action::PowerOff]);
                }
                return provisioning(cfg, p, obs);
            }
            (HostState::Error, Goal::Provision | Goal::Inspect) => {
                let (r, m) = p.failure.clone().unwrap_or_else(|| {
                    (
                        "ProvisioningFailed".to_string(),
                        "provisioning failed".to_string(),
                    )
                });
                return Decision::new(p, &r, m);
            }
            // Inspection is never interrupted by a claim (claims take available hosts only), but a host asked
            // to inspect while it runs an image, or to provision while it inspects, is powered off first.
            (
                HostState::Provisioning | HostState::Provisioned | HostState::Error,
                Goal::Release | Goal::Idle | Goal::Inspect,
            )
            | (HostState::Inspecting, Goal::Release | Goal::Idle | Goal::Provision)
            | (HostState::Cleaning, _) => {
                p.state = HostState::Deprovisioning;
                p.since = Some(now);
                p.retry_at = None;
                let mut actions = vec![Action::WithdrawProfile];
                if powered_on {
                    actions.push(Action::PowerOff);
                }
                if !powered_on {
                    // Already off: nothing to wait for.
                    continue;
                }
                return Decision::new(p, reason::DEPROVISIONING, "powering off")
                    .with(actions)
                    .requeue(cfg.poll);
            }
            (HostState::Deprovisioning, _) => {
                if !powered_on {
                    p.state = HostState::Available;
                    p.attempt = 0;
                    p.since = Some(now);
                    p.failure = None;
                    p.retry_at = None;
                    if goal == Goal::Provision {
                        continue;
                    }
                    return Decision::new(p, reason::AVAILABLE, "powered off and free")
                        .with(vec![Action::WithdrawProfile]);
                }
                let since = p.since.unwrap_or(now);
                if now - since >= secs(cfg.power_off_timeout) {
                    p.since = Some(now);
                    return Decision::new(
                        p,
                        reason::POWER_OFF_PENDING,
                        "the BMC still reports power on; power-off sent again",
                    )
                    .with(vec![Action::PowerOff])
                    .requeue(cfg.poll);
                }
                return Decision::new(p, reason::DEPROVISIONING, "waiting for power off")
                    .requeue(cfg.poll);
            }
        }
    }
    Decision::new(p, reason::PROVISIONING, "").requeue(cfg.poll)
}

/// The condition reason and the start of the message for a kind of BMC failure.
pub fn bmc_failure(kind: BmcFailure) -> (&'static str, &'static str) {
    match kind {
        BmcFailure::Unreachable => (reason::BMC_UNREACHABLE, "BMC unreachable"),
        BmcFailure::Auth => (
            reason::BMC_AUTHENTICATION_FAILED,
            "the BMC refused the credentials",
        ),
        BmcFailure::Credentials => (
            reason::BMC_CREDENTIALS_INVALID,
            "the BMC credentials cannot be used",
        ),
        BmcFailure::Unsupported => (reason::BMC_UNSUPPORTED, "the BMC does not support it"),
        BmcFailure::Protocol => (reason::BMC_PROTOCOL_ERROR, "BMC protocol error"),
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn provisioning(cfg: &EngineConfig, mut p: Progress, obs: &Observation) -> Decision {
    let now = obs.now;
    let since = p.since.unwrap_or(now);
    if let Some(at) = p.retry_at {
        if now < at {
            let wait = Duration::from_secs(u64::try_from(at - now).unwrap_or(0));
            let msg = format!("boot attempt {} starts in {}s", p.attempt, wait.as_secs());
            return Decision::new(p, reason::RETRY_BACKOFF, msg).requeue(wait);
        }
        p.retry_at = None;
        let msg = format!("boot attempt {}: powering on", p.attempt);
        return boot(cfg, p, obs, msg);
    }
    // The boot was started by another process (this manager restarted, or took over the leadership): its
    // profile and per-boot token died with that process, so the node cannot finish it. Start it again at
    // once, as the same attempt (nothing failed on the host's side).
    if !obs.boot.served {
        let msg = format!(
            "boot attempt {} started again: this manager's boot plane did not serve it (restart or leader change)",
            p.attempt
        );
        return boot(cfg, p, obs, msg);
    }
    // Phases recorded before this attempt began belong to an earlier boot.
    let current = obs.boot.last_phase.filter(|(_, t)| *t >= since);
    // The end of a boot that only does a job (inspect, clean): the BMC powers the host off.
    let job_done = match (p.state, current) {
        (HostState::Inspecting, Some((Phase::Inspection, _))) => {
            Some((reason::INSPECTED, "hardware report received; powering off"))
        }
        (HostState::Cleaning, Some((Phase::Callback, _))) => {
            Some((reason::CLEANED, "local disks cleaned; powering off"))
        }
        _ => None,
    };
    if let Some((why, message)) = job_done {
        p.state = HostState::Deprovisioning;
        p.since = Some(now);
        p.attempt = 0;
        let mut actions = vec![Action::WithdrawProfile];
        if obs.power == PowerObservation::On {
            actions.push(Action::PowerOff);
        }
        return Decision::new(p, why, message)
            .with(actions)
            .requeue(cfg.poll);
    }
    if p.state == HostState::Provisioning && matches!(current, Some((Phase::Callback, _))) {
        p.state = HostState::Provisioned;
        p.since = Some(now);
        return Decision::new(p, reason::PROVISIONED, "the node called back");
    }
    let last = current.map(|(ph, _)| ph);
    let base = current.map(|(_, t)| t).unwrap_or(since);
    let deadline = base.saturating_add(secs(cfg.phase_timeout(last)));
    let at = last.map_or("power-on".to_string(), |ph| ph.to_string());
    if now < deadline {
        let wait = Duration::from_secs(u64::try_from(deadline - now).unwrap_or(0)).min(cfg.poll);
        let msg = format!("boot attempt {}: last phase {at}", p.attempt);
        let why = booting(&p);
        return Decision::new(p, why, msg).requeue(wait);
    }
    let why = stall_reason(last);
    if p.attempt >= cfg.max_attempts {
        let msg = format!(
            "boot attempt {} made no progress after {at} within its timeout; gave up after {} attempts",
            p.attempt, cfg.max_attempts
        );
        let why = if p.state == HostState::Cleaning {
            reason::CLEANING_FAILED.to_string()
        } else {
            why
        };
        p.state = HostState::Error;
        p.since = Some(now);
        p.failure = Some((why.clone(), msg.clone()));
        return Decision::new(p, &why, msg).with(vec![Action::WithdrawProfile, Action::PowerOff]);
    }
    let wait = cfg.backoff(p.attempt);
    let msg = format!(
        "boot attempt {} made no progress after {at} within its timeout; power-cycling in {}s",
        p.attempt,
        wait.as_secs()
    );
    p.attempt += 1;
    p.retry_at = Some(now.saturating_add(secs(wait)));
    Decision::new(p, &why, msg)
        .with(vec![Action::WithdrawProfile, Action::PowerOff])
        .requeue(wait)
}

/// Starts boot attempt `p.attempt` now: publish the profile, next boot PXE, power off if on, power on.
fn boot(cfg: &EngineConfig, mut p: Progress, obs: &Observation, message: String) -> Decision {
    p.since = Some(obs.now);
    let mut actions = vec![Action::PublishProfile, Action::SetBootPxe];
    if obs.power == PowerObservation::On {
        actions.push(Action::PowerOff);
    }
    actions.push(Action::PowerOn);
    let why = booting(&p);
    Decision::new(p, why, message)
        .with(actions)
        .requeue(cfg.dhcp_timeout.min(cfg.poll))
}

/// The decision when running `failed`'s actions hit an error: keep the previous progress (nothing
/// happened), count the failure, and retry after the BMC back-off. `error` must not contain secrets.
pub fn action_failed(
    cfg: &EngineConfig,
    previous: &Progress,
    failed: &Action,
    error: &str,
) -> Decision {
    let mut p = previous.clone();
    let bmc = failed.needs_bmc();
    p.bmc_failures = p.bmc_failures.saturating_add(1);
    let wait = cfg.backoff(p.bmc_failures);
    let (r, what) = if bmc {
        (reason::BMC_ERROR, "BMC")
    } else {
        ("BootPlaneError", "boot plane")
    };
    Decision::new(
        p,
        r,
        format!(
            "{what} operation {failed:?} failed: {error}; retrying in {}s",
            wait.as_secs()
        ),
    )
    .requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provisioning::io::PowerError;
    use crate::provisioning::state::BootObservation;

    fn cfg() -> EngineConfig {
        EngineConfig {
            dhcp_timeout: Duration::from_secs(100),
            load_timeout: Duration::from_secs(50),
            os_timeout: Duration::from_secs(400),
            power_off_timeout: Duration::from_secs(20),
            max_attempts: 3,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(100),
            poll: Duration::from_secs(10),
        }
    }

    fn obs(now: i64, power: PowerObservation, last: Option<(Phase, i64)>) -> Observation {
        Observation {
            now,
            power,
            boot: BootObservation {
                last_phase: last,
                served: true,
            },
            online: true,
            consumer_says_provisioned: false,
            request: None,
            cleaning: false,
        }
    }
    use PowerObservation::{Off, On};

    fn at(state: HostState, attempt: u32, since: i64) -> Progress {
        Progress {
            state,
            attempt,
            since: Some(since),
            ..Progress::default()
        }
    }

    #[test]
    fn inspection_boots_until_the_report_then_powers_off_and_frees_the_host() {
        let c = cfg();
        // A new host goes from registering straight to inspecting: it is never `available` (claimable) first.
        let d = decide(&c, &Progress::default(), Goal::Inspect, &obs(0, Off, None));
        assert_eq!(d.progress.state, HostState::Inspecting);
        assert_eq!(d.reason, reason::INSPECTING);
        assert_eq!(
            d.actions,
            [Action::PublishProfile, Action::SetBootPxe, Action::PowerOn]
        );
        // A callback is not the end of an inspection; the report (phase `inspection`) is.
        let w = decide(
            &c,
            &d.progress,
            Goal::Inspect,
            &obs(20, On, Some((Phase::Callback, 15))),
        );
        assert_eq!(w.progress.state, HostState::Inspecting);
        let d = decide(
            &c,
            &d.progress,
            Goal::Inspect,
            &obs(30, On, Some((Phase::Inspection, 25))),
        );
        assert_eq!(d.progress.state, HostState::Deprovisioning);
        assert_eq!(d.reason, reason::INSPECTED);
        assert_eq!(d.actions, [Action::WithdrawProfile, Action::PowerOff]);
        // The controller's goal is Idle once the report is in the status.
        let d = decide(&c, &d.progress, Goal::Idle, &obs(40, Off, None));
        assert_eq!(d.progress.state, HostState::Available);
    }

    #[test]
    fn a_stalled_inspection_retries_like_a_boot_and_ends_in_error() {
        let c = cfg();
        let p = at(HostState::Inspecting, 3, 0);
        let d = decide(
            &c,
            &p,
            Goal::Inspect,
            &obs(60, On, Some((Phase::Kernel, 5))),
        );
        assert_eq!(d.progress.state, HostState::Error);
        assert_eq!(d.reason, "BootStalledAfterKernel");
        // Asked to provision while inspecting (a host with its own image): powered off first.
        let d = decide(
            &c,
            &at(HostState::Inspecting, 1, 0),
            Goal::Provision,
            &obs(5, On, None),
        );
        assert_eq!(d.progress.state, HostState::Deprovisioning);
        assert_eq!(d.actions, [Action::WithdrawProfile, Action::PowerOff]);
    }

    #[test]
    fn happy_path_register_provision_callback_release() {
        let c = cfg();
        let d = decide(&c, &Progress::default(), Goal::Idle, &obs(0, Off, None));
        assert_eq!(d.progress.state, HostState::Available);
        assert!(d.actions.is_empty());
        assert_eq!(d.reason, "Available");

        let d = decide(&c, &d.progress, Goal::Provision, &obs(10, Off, None));
        assert_eq!(d.progress.state, HostState::Provisioning);
        assert_eq!(d.progress.attempt, 1);
        assert_eq!(d.progress.since, Some(10));
        assert_eq!(
            d.actions,
            [Action::PublishProfile, Action::SetBootPxe, Action::PowerOn]
        );
        assert_eq!(d.requeue, Some(Duration::from_secs(10)));

        // Phases keep arriving within their timeouts: keep waiting, no actions.
        for (ph, t) in [
            (Phase::DhcpOffer, 50),
            (Phase::Kernel, 90),
            (Phase::Rootfs, 130),
        ] {
            let d2 = decide(
                &c,
                &d.progress,
                Goal::Provision,
                &obs(t + 5, On, Some((ph, t))),
            );
            assert_eq!(d2.progress, d.progress, "{ph}");
            assert!(d2.actions.is_empty());
            assert_eq!(d2.reason, "Provisioning");
            assert!(d2.message.contains(ph.as_str()), "{}", d2.message);
        }
        let d = decide(
            &c,
            &d.progress,
            Goal::Provision,
            &obs(500, On, Some((Phase::Callback, 499))),
        );
        assert_eq!(d.progress.state, HostState::Provisioned);
        assert_eq!(d.reason, "Provisioned");
        assert_eq!(d.requeue, None);

        // Steady state: nothing to do, even much later.
        let again = decide(&c, &d.progress, Goal::Provision, &obs(99_999, On, None));
        assert_eq!(again.progress, d.progress);
        assert!(again.actions.is_empty());

        let d = decide(&c, &d.progress, Goal::Release, &obs(600, On, None));
        assert_eq!(d.progress.state, HostState::Deprovisioning);
        assert_eq!(d.actions, [Action::WithdrawProfile, Action::PowerOff]);
        let d = decide(&c, &d.progress, Goal::Release, &obs(605, On, None));
        assert_eq!(d.progress.state, HostState::Deprovisioning);
        assert!(d.actions.is_empty());
        let d = decide(&c, &d.progress, Goal::Release, &obs(610, Off, None));
        assert_eq!(d.progress.state, HostState::Available);
        assert_eq!(d.progress.attempt, 0);
    }

    #[test]
    fn powered_on_host_is_power_cycled_into_pxe() {
        let d = decide(
            &cfg(),
            &at(HostState::Available, 0, 0),
            Goal::Provision,
            &obs(1, On, None),
        );
        assert_eq!(
            d.actions,
            [
                Action::PublishProfile,
                Action::SetBootPxe,
                Action::PowerOff,
                Action::PowerOn
            ]
        );
    }

    #[test]
    fn dhcp_timeout_retries_with_backoff_then_fails_with_reason() {
        let c = cfg();
        let p = at(HostState::Provisioning, 1, 0);
        // Just before the deadline: wait, and never sleep past it.
        let d = decide(&c, &p, Goal::Provision, &obs(95, On, None));
        assert!(d.actions.is_empty());
        assert_eq!(d.requeue, Some(Duration::from_secs(5)));
        // Deadline: power off, back off 30 s.
        let d = decide(&c, &p, Goal::Provision, &obs(100, On, None));
        assert_eq!(d.reason, "NoDHCPRequest");
        assert_eq!(d.actions, [Action::WithdrawProfile, Action::PowerOff]);
        assert_eq!(d.progress.attempt, 2);
        assert_eq!(d.progress.retry_at, Some(130));
        assert_eq!(d.requeue, Some(Duration::from_secs(30)));
        // During the back-off nothing happens.
        let w = decide(&c, &d.progress, Goal::Provision, &obs(120, Off, None));
        assert_eq!(w.reason, "RetryBackoff");
        assert!(w.actions.is_empty());
        assert_eq!(w.requeue, Some(Duration::from_secs(10)));
        // After it: a fresh boot.
        let d = decide(&c, &d.progress, Goal::Provision, &obs(130, Off, None));
        assert_eq!(
            d.actions,
            [Action::PublishProfile, Action::SetBootPxe, Action::PowerOn]
        );
        assert_eq!(d.progress.since, Some(130));
        assert_eq!(d.progress.retry_at, None);
        // Second timeout doubles the back-off.
        let d = decide(&c, &d.progress, Goal::Provision, &obs(230, On, None));
        assert_eq!(d.progress.attempt, 3);
        assert_eq!(d.progress.retry_at, Some(290));
        let d = decide(&c, &d.progress, Goal::Provision, &obs(290, Off, None));
        assert_eq!(d.actions.last(), Some(&Action::PowerOn));
        // Third timeout: give up.
        let d = decide(&c, &d.progress, Goal::Provision, &obs(390, On, None));
        assert_eq!(d.progress.state, HostState::Error);
        assert_eq!(d.reason, "NoDHCPRequest");
        assert!(
            d.message.contains("gave up after 3 attempts"),
            "{}",
            d.message
        );
        assert_eq!(d.actions, [Action::WithdrawProfile, Action::PowerOff]);
        assert_eq!(d.requeue, None);
        // It stays failed (with the same reason) while the consumer still wants it.
        let e = decide(&c, &d.progress, Goal::Provision, &obs(9999, Off, None));
        assert_eq!(e.progress, d.progress);
        assert_eq!(e.reason, "NoDHCPRequest");
        assert!(e.actions.is_empty());
        // Releasing a failed host makes it available again.
        let r = decide(&c, &d.progress, Goal::Release, &obs(10_000, Off, None));
        assert_eq!(r.progress.state, HostState::Available);
        assert_eq!(r.progress.failure, None);
    }

    #[test]
    fn per_phase_timeouts_name_the_stalled_phase() {
        let c = cfg();
        let p = at(HostState::Provisioning, 1, 0);
        // Loader phases use load_timeout (50 s) from the phase's own time.
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &obs(109, On, Some((Phase::Kernel, 60))),
        );
        assert!(d.actions.is_empty());
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &obs(110, On, Some((Phase::Kernel, 60))),
        );
        assert_eq!(d.reason, "BootStalledAfterKernel");
        assert_eq!(d.progress.attempt, 2);
        // After the rootfs the OS gets os_timeout (400 s).
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &obs(400, On, Some((Phase::Rootfs, 60))),
        );
        assert!(d.actions.is_empty(), "{}", d.reason);
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &obs(460, On, Some((Phase::Rootfs, 60))),
        );
        assert_eq!(d.reason, "BootStalledAfterRootfs");
        assert_eq!(
            stall_reason(Some(Phase::DhcpAck)),
            "BootStalledAfterDHCPAck"
        );
        assert_eq!(
            stall_reason(Some(Phase::IpxeScript)),
            "BootStalledAfterIPXEScript"
        );
    }

    #[test]
    fn phases_of_an_earlier_attempt_do_not_count() {
        let c = cfg();
        let p = at(HostState::Provisioning, 2, 200);
        // A callback recorded before this attempt began does not provision the host.
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &obs(210, On, Some((Phase::Callback, 150))),
        );
        assert_eq!(d.progress.state, HostState::Provisioning);
        // And an old phase does not extend the DHCP deadline (200 + 100).
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &obs(300, On, Some((Phase::Kernel, 199))),
        );
        assert_eq!(d.reason, "NoDHCPRequest");
    }

    #[test]
    fn bmc_unreachable_backs_off_and_recovers() {
        let c = cfg();
        let mut p = at(HostState::Available, 0, 0);
        let mut waits = Vec::new();
        for i in 0..4 {
            let d = decide(
                &c,
                &p,
                Goal::Provision,
                &obs(i, failed(BmcFailure::Unreachable, "timeout"), None),
            );
            assert_eq!(d.reason, "BMCUnreachable");
            assert!(d.actions.is_empty(), "no BMC action without a BMC");
            assert_eq!(d.progress.state, HostState::Available);
            waits.push(d.requeue.unwrap().as_secs());
            p = d.progress;
        }
        assert_eq!(waits, [30, 60, 100, 100]);
        assert_eq!(p.bmc_failures, 4);
        let d = decide(&c, &p, Goal::Provision, &obs(10, Off, None));
        assert_eq!(d.progress.bmc_failures, 0);
        assert_eq!(d.progress.state, HostState::Provisioning);
        // A registering host stays registering until its BMC answers.
        let d = decide(
            &c,
            &Progress::default(),
            Goal::Idle,
            &obs(0, failed(BmcFailure::Auth, "wrong password"), None),
        );
        assert_eq!(d.progress.state, HostState::Registering);
        assert!(d.message.contains("wrong password"));
        // A provisioned host does not care.
        let d = decide(
            &c,
            &at(HostState::Provisioned, 1, 0),
            Goal::Provision,
            &obs(0, failed(BmcFailure::Unreachable, "x"), None),
        );
        assert_eq!(d.reason, "Provisioned");
        assert_eq!(d.progress.bmc_failures, 0);
    }

    fn failed(kind: BmcFailure, why: &str) -> PowerObservation {
        PowerObservation::Failed(PowerError::new(kind, why))
    }

    /// Each kind of BMC failure has its own reason: a wrong password is not an outage.
    #[test]
    fn each_kind_of_bmc_failure_is_reported_as_itself() {
        let c = cfg();
        let p = at(HostState::Available, 0, 0);
        for (kind, want) in [
            (BmcFailure::Unreachable, "BMCUnreachable"),
            (BmcFailure::Auth, "BMCAuthenticationFailed"),
            (BmcFailure::Credentials, "BMCCredentialsInvalid"),
            (BmcFailure::Unsupported, "BMCUnsupported"),
            (BmcFailure::Protocol, "BMCProtocolError"),
        ] {
            let d = decide(&c, &p, Goal::Provision, &obs(0, failed(kind, "why"), None));
            assert_eq!(d.reason, want);
            assert!(
                d.message.contains("(why); retrying in 30s"),
                "{}",
                d.message
            );
            assert!(d.actions.is_empty());
        }
    }

    #[test]
    fn failed_action_keeps_previous_progress() {
        let c = cfg();
        let prev = at(HostState::Available, 0, 0);
        let d = action_failed(&c, &prev, &Action::PowerOn, "ipmi://10.0.0.1: timeout");
        assert_eq!(d.progress.state, HostState::Available);
        assert_eq!(d.progress.bmc_failures, 1);
        assert_eq!(d.reason, "BMCError");
        assert_eq!(d.requeue, Some(Duration::from_secs(30)));
        let d = action_failed(&c, &d.progress, &Action::PublishProfile, "full");
        assert_eq!(d.reason, "BootPlaneError");
        assert_eq!(d.requeue, Some(Duration::from_secs(60)));
    }

    #[test]
    fn stuck_power_off_is_resent() {
        let c = cfg();
        let p = at(HostState::Deprovisioning, 1, 100);
        let d = decide(&c, &p, Goal::Release, &obs(119, On, None));
        assert!(d.actions.is_empty());
        let d = decide(&c, &p, Goal::Release, &obs(120, On, None));
        assert_eq!(d.reason, "PowerOffPending");
        assert_eq!(d.actions, [Action::PowerOff]);
        assert_eq!(d.progress.since, Some(120));
    }

    #[test]
    fn offline_host_is_never_powered_on() {
        let mut o = obs(0, Off, None);
        o.online = false;
        let d = decide(&cfg(), &at(HostState::Available, 0, 0), Goal::Provision, &o);
        assert_eq!(d.reason, "HostOffline");
        assert!(d.actions.is_empty());
        assert_eq!(d.progress.state, HostState::Available);
    }

    #[test]
    fn lost_status_is_rebuilt_from_the_consumer() {
        let mut o = obs(5, On, None);
        o.consumer_says_provisioned = true;
        let d = decide(&cfg(), &Progress::default(), Goal::Provision, &o);
        assert_eq!(d.progress.state, HostState::Provisioned);
        assert!(
            d.actions.is_empty(),
            "a provisioned node is not rebooted after a move"
        );
    }

    #[test]
    fn release_of_a_powered_off_provisioning_host_is_immediate() {
        let d = decide(
            &cfg(),
            &at(HostState::Provisioning, 1, 0),
            Goal::Release,
            &obs(5, Off, None),
        );
        assert_eq!(d.progress.state, HostState::Available);
        assert_eq!(d.actions, [Action::WithdrawProfile]);
    }

    /// A manager that restarted (or took over from a leader that died) finds a host mid-boot whose profile
    /// and per-boot token lived in the other process: it boots the host again at once instead of waiting for
    /// the phase timeout, as the same attempt.
    #[test]
    fn a_boot_this_boot_plane_does_not_serve_is_started_again_at_once() {
        let c = cfg();
        let mut o = obs(105, On, None);
        o.boot.served = false;
        let d = decide(
            &c,
            &at(HostState::Provisioning, 2, 100),
            Goal::Provision,
            &o,
        );
        assert_eq!(d.progress.state, HostState::Provisioning);
        assert_eq!(d.progress.attempt, 2);
        assert_eq!(d.progress.since, Some(105));
        assert_eq!(
            d.actions,
            [
                Action::PublishProfile,
                Action::SetBootPxe,
                Action::PowerOff,
                Action::PowerOn
            ]
        );
        assert!(d.message.contains("started again"), "{}", d.message);
        // Served (the next reconcile, after the publish): waiting as usual.
        let d2 = decide(&c, &d.progress, Goal::Provision, &obs(110, On, None));
        assert!(d2.actions.is_empty());
        // A provisioned host needs nothing from the boot plane.
        let mut o = obs(105, On, None);
        o.boot.served = false;
        let d3 = decide(&c, &at(HostState::Provisioned, 1, 50), Goal::Provision, &o);
        assert!(d3.actions.is_empty());
    }

    fn asking(mut o: Observation, r: Request) -> Observation {
        o.request = Some(r);
        o
    }

    #[test]
    fn a_power_cycle_boots_a_provisioned_host_again_and_it_stays_provisioned() {
        let c = cfg();
        let p = at(HostState::Provisioned, 1, 50);
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &asking(obs(500, On, None), Request::PowerCycle),
        );
        assert_eq!(d.progress.state, HostState::Provisioned);
        assert_eq!(d.progress.since, Some(50), "provisioned since the callback");
        assert_eq!(
            d.actions,
            [
                Action::PublishProfile,
                Action::SetBootPxe,
                Action::PowerOff,
                Action::PowerOn
            ]
        );
        assert_eq!(d.reason, reason::POWER_CYCLED);
        assert!(d.request_note.is_some());
        // Without the request (answered): nothing more happens.
        let d = decide(&c, &d.progress, Goal::Provision, &obs(510, On, None));
        assert!(d.actions.is_empty());
        assert!(d.request_note.is_none());
    }

    #[test]
    fn reprovision_starts_attempt_one_even_from_error_and_ends_at_the_callback() {
        let c = cfg();
        let mut failed = at(HostState::Error, 3, 50);
        failed.failure = Some(("NoDHCPRequest".into(), "gave up".into()));
        let d = decide(
            &c,
            &failed,
            Goal::Provision,
            &asking(obs(500, Off, None), Request::Reprovision),
        );
        assert_eq!(d.progress.state, HostState::Provisioning);
        assert_eq!((d.progress.attempt, d.progress.since), (1, Some(500)));
        assert_eq!(d.progress.failure, None);
        assert_eq!(
            d.actions,
            [Action::PublishProfile, Action::SetBootPxe, Action::PowerOn]
        );
        let d = decide(
            &c,
            &d.progress,
            Goal::Provision,
            &obs(560, On, Some((Phase::Callback, 555))),
        );
        assert_eq!(d.progress.state, HostState::Provisioned);
    }

    #[test]
    fn requests_wait_for_the_bmc_and_are_refused_where_they_do_not_apply() {
        let c = cfg();
        let p = at(HostState::Provisioned, 1, 50);
        let failed =
            PowerObservation::Failed(PowerError::new(BmcFailure::Unreachable, "no answer"));
        let d = decide(
            &c,
            &p,
            Goal::Provision,
            &asking(obs(500, failed, None), Request::PowerCycle),
        );
        assert!(d.actions.is_empty());
        assert_eq!(d.request_note, None, "not answered: asked again later");
        // An available host (released meanwhile) is not power-cycled: answered, with why.
        let d = decide(
            &c,
            &at(HostState::Available, 0, 50),
            Goal::Idle,
            &asking(obs(500, Off, None), Request::PowerCycle),
        );
        assert!(d.actions.is_empty());
        assert_eq!(
            d.request_note, None,
            "only a consumer's host takes requests"
        );
        let d = decide(
            &c,
            &at(HostState::Error, 3, 50),
            Goal::Provision,
            &asking(obs(500, Off, None), Request::PowerCycle),
        );
        assert!(d.actions.is_empty());
        let note = d.request_note.unwrap();
        assert!(
            note.contains("not carried out: the host is Error"),
            "{note}"
        );
    }

    #[test]
    fn backoff_is_capped_and_does_not_overflow() {
        let c = cfg();
        assert_eq!(c.backoff(1), Duration::from_secs(30));
        assert_eq!(c.backoff(2), Duration::from_secs(60));
        assert_eq!(c.backoff(3), Duration::from_secs(100));
        assert_eq!(c.backoff(200), Duration::from_secs(100));
    }

    fn cleaning(mut o: Observation) -> Observation {
        o.cleaning = true;
        o
    }

    #[test]
    fn a_release_with_cleaning_boots_the_cleaning_image_until_its_callback_then_frees_the_host() {
        let c = cfg();
        let provisioned = at(HostState::Provisioned, 1, 0);
        let d = decide(
            &c,
            &provisioned,
            Goal::Release,
            &cleaning(obs(100, On, None)),
        );
        assert_eq!(d.progress.state, HostState::Cleaning);
        assert_eq!(d.reason, reason::CLEANING);
        assert_eq!(
            d.actions,
            [
                Action::PublishProfile,
                Action::SetBootPxe,
                Action::PowerOff,
                Action::PowerOn
            ]
        );
        // The provisioning boot's callback (before this boot began) does not end the cleaning.
        let w = decide(
            &c,
            &d.progress,
            Goal::Release,
            &cleaning(obs(110, On, Some((Phase::Callback, 50)))),
        );
        assert_eq!(
            (w.progress.state, w.reason.as_str()),
            (HostState::Cleaning, reason::CLEANING)
        );
        assert!(w.actions.is_empty());
        // The cleaning boot's callback: powered off, then available.
        let done = decide(
            &c,
            &d.progress,
            Goal::Release,
            &cleaning(obs(150, On, Some((Phase::Callback, 140)))),
        );
        assert_eq!(done.progress.state, HostState::Deprovisioning);
        assert_eq!(done.reason, reason::CLEANED);
        assert_eq!(done.actions, [Action::WithdrawProfile, Action::PowerOff]);
        let free = decide(
            &c,
            &done.progress,
            Goal::Release,
            &cleaning(obs(160, Off, None)),
        );
        assert_eq!(free.progress.state, HostState::Available);

        // Without a cleaning policy the release is a plain power-off.
        let plain = decide(&c, &provisioned, Goal::Release, &obs(100, On, None));
        assert_eq!(plain.progress.state, HostState::Deprovisioning);
        assert_eq!(plain.actions, [Action::WithdrawProfile, Action::PowerOff]);
    }

    #[test]
    fn a_host_whose_cleaning_failed_or_that_is_offline_is_not_released_uncleaned() {
        let c = cfg();
        // The last attempt makes no progress: error, CleaningFailed.
        let mut p = at(HostState::Cleaning, 3, 0);
        p.attempt = c.max_attempts;
        let d = decide(&c, &p, Goal::Release, &cleaning(obs(1000, On, None)));
        assert_eq!(d.progress.state, HostState::Error);
        assert_eq!(d.reason, reason::CLEANING_FAILED);
        // Asked again to release: it stays in error, doing nothing, and says how to get out.
        let again = decide(
            &c,
            &d.progress,
            Goal::Release,
            &cleaning(obs(1010, Off, None)),
        );
        assert_eq!(again.progress.state, HostState::Error);
        assert!(again.actions.is_empty());
        assert!(
            again.message.contains("spec.cleaning is none"),
            "{}",
            again.message
        );
        // The policy set to none: released as it is.
        let released = decide(&c, &d.progress, Goal::Release, &obs(1020, Off, None));
        assert_eq!(released.progress.state, HostState::Available);

        // Offline: powered off and held, never powered on, never available.
        let mut off = cleaning(obs(100, On, None));
        off.online = false;
        let held = decide(&c, &at(HostState::Provisioned, 1, 0), Goal::Release, &off);
        assert_eq!(held.reason, reason::HOST_OFFLINE);
        assert_eq!(held.progress.state, HostState::Provisioned);
        assert!(!held.actions.contains(&Action::PowerOn));
        assert!(held.actions.contains(&Action::PowerOff));
    }
}
