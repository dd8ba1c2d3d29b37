//! The remediation policy: which step comes next for an unhealthy Machine's host, and when.
//!
//! Pure, like [`decide`](super::decide): the remediation controller persists a [`Record`] in the
//! `BeowulfRemediation`'s status and asks [`next`] what to do. Whether a step helped is not ours to judge:
//! MachineHealthCheck deletes the remediation as soon as the Machine is healthy, so a step that is still
//! being asked about after its wait did not help.
//!
//! ```text
//! power cycle 1 ─wait T─▶ power cycle 2 ─wait 2T─▶ … ─▶ re-provision ─wait R (or host error)─▶ give up
//! ```

use std::time::Duration;

/// The strategy (from `BeowulfRemediation.spec.strategy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    pub power_cycles: u32,
    /// The wait after the first power cycle; power cycle n waits `timeout · 2^(n-1)`, at most 4 × `timeout`.
    pub timeout: Duration,
    pub reprovision: bool,
    pub reprovision_timeout: Duration,
}

/// A step the host's driver carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Power cycle number n (1-based).
    PowerCycle(u32),
    Reprovision,
}

impl Step {
    /// The step's part of a request id, unique within one remediation.
    pub fn id(self) -> String {
        match self {
            Step::PowerCycle(n) => format!("power-cycle-{n}"),
            Step::Reprovision => "reprovision".to_string(),
        }
    }
}

/// What was done so far (persisted by the caller). Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Power cycles asked for.
    pub power_cycles: u32,
    pub reprovisioned: bool,
    /// The last step was asked for and not carried out yet.
    pub pending: bool,
    /// When the last step was asked for: its wait counts from here (the host's driver carries a step out
    /// within seconds; one it has not carried out when the wait ends counts as tried).
    pub last: Option<i64>,
}

/// What the host looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostView {
    /// The Machine holds no host (it never got one, or lost it): nothing to power-cycle or provision.
    None,
    /// The host's provisioning failed (state `error`): power cycles cannot help, and after a
    /// re-provisioning there is nothing left to wait for.
    Failed,
    Ok,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask the host's driver for this step.
    Request(Step),
    /// A step is asked for and not carried out yet: look again soon.
    AwaitRequest,
    /// The last step's wait runs for this much longer.
    Wait(Duration),
    /// Nothing is left to try; why.
    GiveUp(String),
}

/// How long to wait after `step`.
pub fn wait_after(strategy: &Strategy, step: Step) -> Duration {
    match step {
        Step::PowerCycle(n) => {
            let factor = 1u32 << n.clamp(1, 3).saturating_sub(1);
            strategy.timeout.saturating_mul(factor)
        }
        Step::Reprovision => strategy.reprovision_timeout,
    }
}

/// The last step asked for, if any.
fn last_step(record: &Record) -> Option<Step> {
    if record.reprovisioned {
        Some(Step::Reprovision)
    } else if record.power_cycles > 0 {
        Some(Step::PowerCycle(record.power_cycles))
    } else {
        None
    }
}

/// Decides the next step of a remediation at `now`.
pub fn next(strategy: &Strategy, record: &Record, host: HostView, now: i64) -> Next {
    if host == HostView::None {
        return Next::GiveUp("the Machine holds no BeowulfHost to remediate".to_string());
    }
    let failed = host == HostView::Failed;
    if let (Some(step), Some(at)) = (last_step(record), record.last) {
        let deadline = at.saturating_add(secs(wait_after(strategy, step)));
        if now < deadline {
            if record.pending {
                return Next::AwaitRequest;
            }
            // A failed host ends the wait: its provisioning gave up, nothing will change by itself.
            if !failed {
                return Next::Wait(Duration::from_secs(
                    u64::try_from(deadline - now).unwrap_or(0),
                ));
            }
        }
    }
    // Power cycles restart an image that is running; a host whose provisioning failed needs a fresh attempt.
    if record.power_cycles < strategy.power_cycles && !record.reprovisioned && !failed {
        return Next::Request(Step::PowerCycle(record.power_cycles + 1));
    }
    if strategy.reprovision && !record.reprovisioned {
        return Next::Request(Step::Reprovision);
    }
    let mut tried = Vec::new();
    if record.power_cycles > 0 {
        tried.push(format!("{} power cycle(s)", record.power_cycles));
    }
    if record.reprovisioned {
        tried.push("a re-provisioning".to_string());
    }
    let what = if tried.is_empty() {
        "no step of the strategy".to_string()
    } else {
        tried.join(" and ")
    };
    let how = if failed {
        "; the host's provisioning failed"
    } else {
        ""
    };
    Next::GiveUp(format!(
        "{what} did not make the Machine healthy{how}: the host is marked unhealthy and the Machine is deleted for Cluster API to replace"
    ))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy() -> Strategy {
        Strategy {
            power_cycles: 2,
            timeout: Duration::from_secs(100),
            reprovision: true,
            reprovision_timeout: Duration::from_secs(1000),
        }
    }

    /// Plays the strategy through, carrying out each step at once and letting each wait expire.
    #[test]
    fn power_cycles_with_back_off_then_reprovision_then_give_up() {
        let s = strategy();
        let mut r = Record::default();
        let mut now = 0;
        let mut seen = Vec::new();
        loop {
            match next(&s, &r, HostView::Ok, now) {
                Next::Request(step) => {
                    seen.push(format!("{step:?}@{now}"));
                    match step {
                        Step::PowerCycle(n) => r.power_cycles = n,
                        Step::Reprovision => r.reprovisioned = true,
                    }
                    r.pending = true;
                    r.last = Some(now);
                    assert_eq!(next(&s, &r, HostView::Ok, now), Next::AwaitRequest);
                    // Carried out 5 s later; the wait counts from the request.
                    now += 5;
                    r.pending = false;
                    assert_eq!(
                        next(&s, &r, HostView::Ok, now),
                        Next::Wait(wait_after(&s, step) - Duration::from_secs(5))
                    );
                }
                Next::Wait(d) => now += i64::try_from(d.as_secs()).unwrap(),
                Next::GiveUp(why) => {
                    seen.push(format!("give up@{now}"));
                    assert!(
                        why.starts_with("2 power cycle(s) and a re-provisioning did not"),
                        "{why}"
                    );
                    break;
                }
                Next::AwaitRequest => unreachable!(),
            }
        }
        // The second power cycle waits twice as long as the first.
        assert_eq!(
            seen,
            [
                "PowerCycle(1)@0",
                "PowerCycle(2)@100",
                "Reprovision@300",
                "give up@1300"
            ]
        );
    }

    #[test]
    fn a_step_never_carried_out_counts_as_tried_when_its_wait_ends() {
        let s = strategy();
        let r = Record {
            power_cycles: 1,
            pending: true,
            last: Some(0),
            ..Record::default()
        };
        assert_eq!(next(&s, &r, HostView::Ok, 99), Next::AwaitRequest);
        // Pending on a failed host: the request (a re-provisioning can apply to it) is awaited too.
        assert_eq!(next(&s, &r, HostView::Failed, 99), Next::AwaitRequest);
        assert_eq!(
            next(&s, &r, HostView::Ok, 100),
            Next::Request(Step::PowerCycle(2))
        );
    }

    #[test]
    fn back_off_is_capped_at_four_times() {
        let s = strategy();
        let w: Vec<u64> = (1..=5)
            .map(|n| wait_after(&s, Step::PowerCycle(n)).as_secs())
            .collect();
        assert_eq!(w, [100, 200, 400, 400, 400]);
    }

    #[test]
    fn a_failed_host_skips_power_cycles_and_ends_the_reprovision_wait() {
        let s = strategy();
        let r = Record::default();
        assert_eq!(
            next(&s, &r, HostView::Failed, 0),
            Next::Request(Step::Reprovision)
        );
        let r = Record {
            reprovisioned: true,
            last: Some(0),
            ..Record::default()
        };
        assert!(matches!(next(&s, &r, HostView::Ok, 10), Next::Wait(_)));
        // Still failed while the re-provisioning was only asked for: wait for it.
        let asked = Record {
            pending: true,
            ..r.clone()
        };
        assert_eq!(next(&s, &asked, HostView::Failed, 10), Next::AwaitRequest);
        let Next::GiveUp(why) = next(&s, &r, HostView::Failed, 10) else {
            panic!("a failed re-provisioning gives up at once")
        };
        assert!(why.contains("the host's provisioning failed"), "{why}");
    }

    #[test]
    fn no_host_or_no_steps_gives_up_at_once() {
        let s = strategy();
        assert!(matches!(
            next(&s, &Record::default(), HostView::None, 0),
            Next::GiveUp(_)
        ));
        let none = Strategy {
            power_cycles: 0,
            reprovision: false,
            ..strategy()
        };
        let Next::GiveUp(why) = next(&none, &Record::default(), HostView::Ok, 0) else {
            panic!()
        };
        assert!(why.starts_with("no step of the strategy"), "{why}");
    }

    #[test]
    fn reprovision_only_when_power_cycles_are_off() {
        let s = Strategy {
            power_cycles: 0,
            ..strategy()
        };
        assert_eq!(
            next(&s, &Record::default(), HostView::Ok, 0),
            Next::Request(Step::Reprovision)
        );
    }
}
