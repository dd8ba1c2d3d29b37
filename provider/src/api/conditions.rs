//! `metav1.Condition` helpers that keep status writes deterministic.
//!
//! A condition's `lastTransitionTime` only moves when its status flips, so re-setting the same condition is a
//! no-op and a reconcile that changes nothing writes nothing (no resourceVersion churn).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type mirrored by CAPI into the owner's `InfrastructureReady`.
pub const READY: &str = "Ready";
/// Condition type reporting `Cluster.spec.paused` / the `cluster.x-k8s.io/paused` annotation.
pub const PAUSED: &str = "Paused";
/// Condition type on hosts: the BMC answers with the configured credentials.
pub const BMC_REACHABLE: &str = "BMCReachable";
/// Condition type on hosts and machines: the host is (being) provisioned.
pub const PROVISIONED: &str = "Provisioned";
/// Condition type on a BeowulfHost: its hardware was inspected (message: the summary), or why not.
pub const INSPECTED: &str = "Inspected";
/// Condition type on a BeowulfHost with local disks: the current boot's node mounted every one (message: what
/// it did with each), or which one it left alone and why.
pub const LOCAL_DISKS: &str = "LocalDisks";

/// Sets condition `type_` and returns whether anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> bool {
    let status_s = if status { "True" } else { "False" };
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let changed = c.status != status_s
            || c.reason != reason
            || c.message != message
            || c.observed_generation != generation;
        if c.status != status_s {
            c.last_transition_time = Time(now);
        }
        c.status = status_s.to_string();
        c.reason = reason.to_string();
        c.message = message.to_string();
        c.observed_generation = generation;
        return changed;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status_s.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: Time(now),
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    true
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let mut c = Vec::new();
        assert!(set(&mut c, READY, false, "Waiting", "m", Some(1), t0));
        assert!(!set(&mut c, READY, false, "Waiting", "m", Some(1), t1));
        assert_eq!(c[0].last_transition_time.0, t0);
        assert!(set(&mut c, READY, false, "Other", "m", Some(1), t1));
        assert_eq!(
            c[0].last_transition_time.0, t0,
            "reason change is not a transition"
        );
        assert!(set(&mut c, READY, true, "Done", "", Some(1), t1));
        assert_eq!(c[0].last_transition_time.0, t1);
        assert!(is_true(&c, READY));
    }
}
