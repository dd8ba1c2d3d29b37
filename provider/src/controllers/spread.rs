//! Spreading the machines of one group (a MachineDeployment, a KubeadmControlPlane, a MachineSet) across
//! failure domains when their Machine names none.
//!
//! A claim records the machine's group on the host, in the same resourceVersion-guarded patch that sets
//! `spec.consumerRef` (label [`GROUP_LABEL`]; the release clears both in one patch), so the hosts themselves
//! say how many machines of a group each failure domain holds. A free host is preferred in the domain that
//! holds the fewest, then by name. Claims this process made but the host store does not show yet are counted
//! by [`super::hostcache::HostCache`], which also makes "count, choose, reserve" one step, so concurrent
//! claims of one group see each other instead of all counting zero and piling into the first domain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::{BeowulfHost, BeowulfMachine};

/// Label on a claimed host: the group of the machine that holds it (absent on free hosts).
pub const GROUP_LABEL: &str = "beowulf.infrastructure.cluster.x-k8s.io/group";

/// Labels CAPI puts on the infrastructure machines of a group, in the order they name the group: the
/// MachineDeployment, the KubeadmControlPlane (or any control plane), the MachineSet.
pub const GROUP_SOURCE_LABELS: [&str; 3] = [
    "cluster.x-k8s.io/deployment-name",
    "cluster.x-k8s.io/control-plane-name",
    "cluster.x-k8s.io/set-name",
];

/// The group of `bm` as recorded on its host: the value of the first of [`GROUP_SOURCE_LABELS`] it carries
/// (non-empty), made a valid label value ([`label_value`]). `None`: no group, no spreading.
pub fn group_of(bm: &BeowulfMachine) -> Option<String> {
    group_source(bm).map(|(_, v)| label_value(&v))
}

/// Which of [`GROUP_SOURCE_LABELS`] names `bm`'s group, and its value: CAPI puts the same label on the
/// group's Machines, so it selects them.
pub fn group_source(bm: &BeowulfMachine) -> Option<(&'static str, String)> {
    let labels = bm.labels();
    GROUP_SOURCE_LABELS.iter().find_map(|l| {
        labels
            .get(*l)
            .filter(|v| !v.is_empty())
            .map(|v| (*l, v.clone()))
    })
}

/// `value` itself when it is a valid label value (what the API server lets onto the machine), else a
/// deterministic stand-in that is: `hash-` and 16 hex digits of its SHA-256.
pub fn label_value(value: &str) -> String {
    if valid_label_value(value) {
        value.to_string()
    } else {
        let digest = hex::encode(Sha256::digest(value.as_bytes()));
        format!("hash-{}", &digest[..16])
    }
}

/// A non-empty Kubernetes label value: at most 63 characters, alphanumerics, `-`, `_`, `.`, starting and
/// ending with an alphanumeric.
fn valid_label_value(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !v.is_empty()
        && v.len() <= 63
        && alnum(v.chars().next())
        && alnum(v.chars().last())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The failure domain a host counts in: `spec.failureDomain`; hosts without one form the domain `""`.
pub fn domain_of(host: &BeowulfHost) -> &str {
    host.spec.failure_domain.as_deref().unwrap_or("")
}

/// Whether `host` is held by a machine of `group`, as the host shows it.
pub fn held_by_group(host: &BeowulfHost, group: &str) -> bool {
    host.spec.consumer_ref.is_some()
        && host.labels().get(GROUP_LABEL).map(String::as_str) == Some(group)
}

/// Hosts held by machines of `group`, per failure domain, as `hosts` show them.
pub fn counts<'a>(
    hosts: impl IntoIterator<Item = &'a Arc<BeowulfHost>>,
    group: &str,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for h in hosts {
        if held_by_group(h, group) {
            *out.entry(domain_of(h).to_string()).or_default() += 1;
        }
    }
    out
}

/// Orders claim candidates for a machine of `group`: the hosts its group released first ([`reused_by`]: a
/// rollout's replacement gets its predecessor's host back), then fewest hosts of the group in their failure
/// domain, then by name. With no group, plain name order.
pub fn order(
    candidates: &mut [Arc<BeowulfHost>],
    counts: &HashMap<String, usize>,
    group: Option<&str>,
) {
    candidates.sort_by_cached_key(|h| {
        (
            !reused_by(h, group),
            counts.get(domain_of(h)).copied().unwrap_or(0),
            h.name_any(),
        )
    });
}

/// Label on a released host: the group of the machine that held it last. On fixed hardware a rollout without
/// surge deletes a machine and creates its replacement; the replacement gets the freed host back (and with
/// it the host's local data) instead of a spare, and no other group takes it for [`REUSE_HOLD`]. Removed
/// by the next claim.
pub const PREVIOUS_GROUP_LABEL: &str = "beowulf.infrastructure.cluster.x-k8s.io/previous-group";
/// Beside it: when the host was released (Unix seconds).
pub const RELEASED_AT_ANNOTATION: &str = "beowulf.infrastructure.cluster.x-k8s.io/released-at";
/// How long a released host is kept for the next machine of its group.
pub const REUSE_HOLD: Duration = Duration::from_secs(600);

/// Whether `host` was released by a machine of `group` (so a machine of `group` takes it first).
pub fn reused_by(host: &BeowulfHost, group: Option<&str>) -> bool {
    group.is_some_and(|g| host.labels().get(PREVIOUS_GROUP_LABEL).map(String::as_str) == Some(g))
}

/// Whether `host` is still kept for the next machine of another group than `group` at `now` (Unix seconds).
/// A release time that cannot be read keeps nothing.
pub fn kept_for_another_group(host: &BeowulfHost, group: Option<&str>, now: i64) -> bool {
    if host.labels().get(PREVIOUS_GROUP_LABEL).is_none() || reused_by(host, group) {
        return false;
    }
    let hold = i64::try_from(REUSE_HOLD.as_secs()).unwrap_or(i64::MAX);
    host.annotations()
        .get(RELEASED_AT_ANNOTATION)
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|at| now < at.saturating_add(hold))
}

/// The metadata a release writes (merge-patch values): the group label goes, the previous group and the
/// release time are recorded (or cleared, for a machine without a group).
pub fn release_metadata(group: Option<&str>, now: i64) -> serde_json::Value {
    serde_json::json!({
        "labels": {GROUP_LABEL: null, PREVIOUS_GROUP_LABEL: group},
        "annotations": {RELEASED_AT_ANNOTATION: group.map(|_| now.to_string())},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(labels: &[(&str, &str)]) -> BeowulfMachine {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfMachine",
            "metadata": {"name": "m", "namespace": "ns", "labels": labels},
            "spec": {"imageRef": {"name": "live"}}}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn host(name: &str, domain: Option<&str>, group: Option<&str>, held: bool) -> Arc<BeowulfHost> {
        let mut v = serde_json::json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
            "metadata": {"name": name, "namespace": "ns", "labels": {}},
            "spec": {"bootMACAddress": "52:54:00:00:00:01",
                     "bmc": {"address": "ipmi://192.0.2.1", "credentialsSecretRef": {"name": "c"}}}});
        if let Some(d) = domain {
            v["spec"]["failureDomain"] = d.into();
        }
        if let Some(g) = group {
            v["metadata"]["labels"][GROUP_LABEL] = g.into();
        }
        if held {
            v["spec"]["consumerRef"] =
                serde_json::json!({"apiVersion": "x", "kind": "BeowulfMachine", "name": "o"});
        }
        Arc::new(serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn the_group_is_the_deployment_then_the_control_plane_then_the_set() {
        let md = ("cluster.x-k8s.io/deployment-name", "md-0");
        let kcp = ("cluster.x-k8s.io/control-plane-name", "cp");
        let ms = ("cluster.x-k8s.io/set-name", "md-0-abcde");
        assert_eq!(group_of(&machine(&[ms, kcp, md])).as_deref(), Some("md-0"));
        assert_eq!(group_of(&machine(&[ms, kcp])).as_deref(), Some("cp"));
        assert_eq!(group_of(&machine(&[ms])).as_deref(), Some("md-0-abcde"));
        assert_eq!(
            group_of(&machine(&[("cluster.x-k8s.io/deployment-name", ""), ms])).as_deref(),
            Some("md-0-abcde"),
            "an empty value names no group"
        );
        assert_eq!(
            group_of(&machine(&[("cluster.x-k8s.io/cluster-name", "c1")])),
            None
        );
    }

    #[test]
    fn group_values_are_valid_label_values() {
        assert_eq!(label_value("md-0"), "md-0");
        let max = "a".repeat(63);
        assert_eq!(label_value(&max), max);
        for bad in ["a".repeat(64), "-md".into(), "md_".into(), "m/d".into()] {
            let v = label_value(&bad);
            assert!(valid_label_value(&v), "{bad:?} → {v:?}");
            assert_eq!(v, label_value(&bad), "deterministic");
            assert!(v.starts_with("hash-") && v.len() == 21, "{v}");
        }
        assert_ne!(label_value(&"a".repeat(64)), label_value(&"a".repeat(65)));
    }

    #[test]
    fn candidates_in_the_least_used_domain_come_first_then_by_name() {
        let held = [
            host("x0", Some("rack-1"), Some("md"), true),
            host("x1", Some("rack-1"), Some("md"), true),
            host("x2", Some("rack-2"), Some("md"), true),
            // Another group's, a released host's stale label (no consumer), a host without a domain.
            host("x3", Some("rack-2"), Some("other"), true),
            host("x4", Some("rack-3"), Some("md"), false),
            host("x5", None, Some("md"), true),
        ];
        let c = counts(&held, "md");
        assert_eq!(
            c,
            HashMap::from([("rack-1".into(), 2), ("rack-2".into(), 1), ("".into(), 1)])
        );
        let mut free = vec![
            host("a", Some("rack-1"), None, false),
            host("b", Some("rack-2"), None, false),
            host("c", Some("rack-3"), None, false),
            host("d", None, None, false),
            host("e", Some("rack-3"), None, false),
        ];
        order(&mut free, &c, Some("md"));
        let names: Vec<String> = free.iter().map(|h| h.name_any()).collect();
        assert_eq!(names, ["c", "e", "b", "d", "a"]);
        order(&mut free, &HashMap::new(), None);
        let names: Vec<String> = free.iter().map(|h| h.name_any()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"], "no group: name order");
    }

    fn released(name: &str, domain: &str, group: &str, at: Option<&str>) -> Arc<BeowulfHost> {
        let mut h = (*host(name, Some(domain), None, false)).clone();
        h.labels_mut()
            .insert(PREVIOUS_GROUP_LABEL.into(), group.into());
        if let Some(at) = at {
            h.annotations_mut()
                .insert(RELEASED_AT_ANNOTATION.into(), at.into());
        }
        Arc::new(h)
    }

    #[test]
    fn a_host_its_group_released_comes_first_and_is_kept_from_other_groups_for_a_while() {
        // md holds two hosts in rack-1: spreading alone would pick rack-2's host first.
        let c = HashMap::from([("rack-1".to_string(), 2)]);
        let mut free = vec![
            host("a", Some("rack-2"), None, false),
            released("b", "rack-1", "md", Some("1000")),
        ];
        order(&mut free, &c, Some("md"));
        let names: Vec<String> = free.iter().map(|h| h.name_any()).collect();
        assert_eq!(names, ["b", "a"], "the group's own host back first");
        let b = &free[0];
        assert!(reused_by(b, Some("md")) && !reused_by(b, Some("other")) && !reused_by(b, None));
        let hold = i64::try_from(REUSE_HOLD.as_secs()).unwrap_or(i64::MAX);
        assert!(!kept_for_another_group(b, Some("md"), 1001));
        assert!(kept_for_another_group(b, Some("other"), 1001));
        assert!(kept_for_another_group(b, None, 1000 + hold - 1));
        assert!(
            !kept_for_another_group(b, None, 1000 + hold),
            "the hold ends"
        );
        for at in [None, Some("yesterday")] {
            let h = released("x", "rack-1", "md", at);
            assert!(!kept_for_another_group(&h, Some("other"), 1001), "{at:?}");
        }
        assert!(!kept_for_another_group(&free[1], Some("other"), 1001));
        // A release records the group and the time, or clears both for a machine without a group.
        assert_eq!(
            release_metadata(Some("md"), 1000),
            serde_json::json!({"labels": {GROUP_LABEL: null, PREVIOUS_GROUP_LABEL: "md"},
                               "annotations": {RELEASED_AT_ANNOTATION: "1000"}})
        );
        assert_eq!(
            release_metadata(None, 1000),
            serde_json::json!({"labels": {GROUP_LABEL: null, PREVIOUS_GROUP_LABEL: null},
                               "annotations": {RELEASED_AT_ANNOTATION: null}})
        );
    }
}
