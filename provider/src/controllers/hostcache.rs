//! Where claims look for free hosts: the BeowulfHost controller's reflector store, not an API list.
//!
//! Listing every host through the API for every claim made claiming N machines O(N²) in API traffic and
//! deserialisation. The store is already in memory. It can lag behind our own writes, though: right after a
//! claim the store may still show the host free, and every following machine would try it first and get a
//! 409. So the cache remembers, per host, the resourceVersion a claim (ours, or one that lost with 409) was
//! made against; while the store still shows exactly that version, the host is skipped. Once the store moves
//! on, it shows the truth (consumerRef set, or the host free again) and the note is dropped.
//!
//! Machines are reconciled concurrently, and concurrent claims all read the same free hosts: a claim
//! therefore takes the host's note *before* it is sent ([`HostCache::reserve_next`]), so the others pass on to the
//! next host instead of all trying the first and losing; a claim that fails for another reason than a
//! conflict gives the note back ([`HostCache::unreserve`]).
//!
//! Correctness does not depend on the cache: every claim is still the resourceVersion-guarded patch, so a
//! stale store can only cost a 409, never give one host to two machines.
//!
//! Spreading ([`super::spread`]) counts, per failure domain, the hosts held by machines of one group. The
//! store shows a claim only once it catches up, so each note also remembers the claiming machine's group and
//! the host's failure domain, and counts (while the claim is in flight or won, not once it lost) until the
//! store shows a newer version of the host, which carries the claim itself. [`HostCache::reserve_next`]
//! counts, orders and reserves under one lock: a concurrent claim of the same group sees the reservation
//! just taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::spread;
use crate::api::BeowulfHost;

/// How long a claim waits for the store's first list before falling back to an API list.
const READY_WAIT: Duration = Duration::from_secs(30);

pub struct HostCache {
    store: Store<BeowulfHost>,
    /// `<namespace>/<host>` → the claim attempted against one resourceVersion of that host.
    attempted: Mutex<Notes>,
}

/// A claim attempted against one version of a host.
struct Note {
    /// The resourceVersion the claim was made against.
    rv: String,
    /// The claiming machine's group (see [`spread::group_of`]).
    group: Option<String>,
    /// The host's failure domain at that version ([`spread::domain_of`]).
    domain: String,
    /// In flight or won (counts for spreading); `false` once it lost with 409.
    counts: bool,
}

fn key(h: &BeowulfHost) -> String {
    format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any())
}

type Notes = HashMap<String, Note>;

impl HostCache {
    pub fn new(store: Store<BeowulfHost>) -> Self {
        HostCache {
            store,
            attempted: Mutex::new(HashMap::new()),
        }
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.attempted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A host (any namespace) that boots from `mac` (`spec.bootMACAddress`), as the store knows it now.
    pub fn with_boot_mac(&self, mac: &crate::boot::MacAddr) -> Option<Arc<BeowulfHost>> {
        self.store.find(|h| {
            h.spec
                .boot_mac_address
                .parse::<crate::boot::MacAddr>()
                .is_ok_and(|m| m == *mac)
        })
    }

    /// Host `namespace/name` as the store knows it now (no claim bookkeeping).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<BeowulfHost>> {
        self.store
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }

    /// The hosts of `namespace` as the store knows them, minus those a claim was attempted on at the version
    /// the store still shows. `None`: the store has not completed its first list (use the API).
    pub async fn hosts(&self, namespace: &str) -> Option<Vec<Arc<BeowulfHost>>> {
        match tokio::time::timeout(READY_WAIT, self.store.wait_until_ready()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
        let mut attempted = self.notes();
        let mut out = Vec::new();
        for h in self.store.state() {
            if h.namespace().as_deref() != Some(namespace) {
                continue;
            }
            let k = key(&h);
            match attempted.get(&k) {
                Some(n) if h.resource_version().as_deref() == Some(n.rv.as_str()) => continue,
                Some(_) => {
                    attempted.remove(&k);
                }
                None => {}
            }
            out.push(h);
        }
        Some(out)
    }

    /// Takes the note for a claim of `host` as read, by a machine of `group`: `false` when another claim
    /// holds it for that version (try the next host). Won or lost with a conflict, the note stays until the
    /// store shows a newer version.
    pub fn reserve(&self, host: &BeowulfHost, group: Option<&str>) -> bool {
        reserve_in(&mut self.notes(), host, group)
    }

    /// Takes the note for the first of `candidates` (hosts of `namespace`) no other claim holds, in spreading
    /// order ([`spread::order`]: for a machine of `group`, the hosts its group released first, then fewest
    /// hosts of the group in the failure domain, counted by [`HostCache::group_counts`]; then by name), and
    /// returns it. Counting, ordering and
    /// reserving happen under one lock, so a concurrent claim counts this one. `listed`: the API list the
    /// candidates came from, when the store was not ready; `None`: they came from the store. `None` returned:
    /// every candidate is being claimed by someone else.
    pub fn reserve_next(
        &self,
        namespace: &str,
        candidates: &[Arc<BeowulfHost>],
        group: Option<&str>,
        listed: Option<&[Arc<BeowulfHost>]>,
    ) -> Option<Arc<BeowulfHost>> {
        let mut notes = self.notes();
        let counts = match group {
            Some(g) => match listed {
                Some(hosts) => counts_in(&notes, hosts.iter().cloned(), namespace, g),
                None => counts_in(&notes, self.store.state(), namespace, g),
            },
            None => HashMap::new(),
        };
        let mut ordered = candidates.to_vec();
        spread::order(&mut ordered, &counts, group);
        ordered
            .into_iter()
            .find(|h| reserve_in(&mut notes, h, group))
    }

    /// Hosts of `namespace` held by machines of `group`, per failure domain: those the store shows held with
    /// the group's label, plus the claims of this process (in flight or won) the store does not show yet.
    pub fn group_counts(&self, namespace: &str, group: &str) -> HashMap<String, usize> {
        counts_in(&self.notes(), self.store.state(), namespace, group)
    }

    /// The claim of `host` as read lost with 409: its note keeps the host skipped at that version but no
    /// longer counts for spreading (someone else holds the host, or it changed).
    pub fn lost(&self, host: &BeowulfHost) {
        let mut attempted = self.notes();
        if let Some(n) = attempted.get_mut(&key(host))
            && host.resource_version().as_ref() == Some(&n.rv)
        {
            n.counts = false;
        }
    }

    /// Gives back the note [`HostCache::reserve`] took, for a claim that never reached the API server's
    /// decision (a transport error): the host may still be free.
    pub fn unreserve(&self, host: &BeowulfHost) {
        let mut attempted = self.notes();
        if attempted.get(&key(host)).map(|n| &n.rv) == host.resource_version().as_ref() {
            attempted.remove(&key(host));
        }
    }
}

fn reserve_in(notes: &mut Notes, host: &BeowulfHost, group: Option<&str>) -> bool {
    let Some(rv) = host.resource_version() else {
        return true;
    };
    match notes.get(&key(host)) {
        Some(noted) if noted.rv == rv => false,
        _ => {
            notes.insert(
                key(host),
                Note {
                    rv,
                    group: group.map(str::to_string),
                    domain: spread::domain_of(host).to_string(),
                    counts: true,
                },
            );
            true
        }
    }
}

/// [`HostCache::group_counts`] over one snapshot of the hosts: a host counts from its label when the snapshot
/// shows it held, else from its note while the snapshot still shows the version the claim was made against
/// (a note is only taken on a free host, so the two never count the same claim).
fn counts_in(
    notes: &Notes,
    hosts: impl IntoIterator<Item = Arc<BeowulfHost>>,
    namespace: &str,
    group: &str,
) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = HashMap::new();
    for h in hosts {
        if h.namespace().as_deref() != Some(namespace) {
            continue;
        }
        let domain = if spread::held_by_group(&h, group) {
            Some(spread::domain_of(&h).to_string())
        } else {
            notes
                .get(&key(&h))
                .filter(|n| {
                    n.counts
                        && n.group.as_deref() == Some(group)
                        && h.resource_version().as_deref() == Some(n.rv.as_str())
                })
                .map(|n| n.domain.clone())
        };
        if let Some(d) = domain {
            *out.entry(d).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};

    fn host(name: &str, rv: &str) -> BeowulfHost {
        in_domain(name, rv, "rack-1")
    }

    fn in_domain(name: &str, rv: &str, domain: &str) -> BeowulfHost {
        let mut h: BeowulfHost = serde_json::from_value(serde_json::json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {"bootMACAddress": "52:54:00:00:00:01", "failureDomain": domain,
                     "bmc": {"address": "ipmi://192.0.2.1", "credentialsSecretRef": {"name": "c"}}}}))
        .unwrap();
        h.metadata.resource_version = Some(rv.into());
        h
    }

    /// `h` as the store shows it after a claim by a machine of `group` (a newer version).
    fn claimed(h: &BeowulfHost, rv: &str, group: &str) -> BeowulfHost {
        let mut c = h.clone();
        c.metadata.resource_version = Some(rv.into());
        c.metadata
            .labels
            .get_or_insert_default()
            .insert(spread::GROUP_LABEL.into(), group.into());
        c.spec.consumer_ref = Some(crate::api::ConsumerRef {
            api_version: crate::api::API_VERSION.into(),
            kind: "BeowulfMachine".into(),
            name: "m".into(),
            uid: None,
        });
        c
    }

    /// Two concurrent claims of the same host as read: the second passes on; a claim that failed before the
    /// server decided gives the host back; a newer version of the host is fair game again.
    #[test]
    fn a_host_being_claimed_is_passed_over_by_concurrent_claims() {
        let (store, _writer) = reflector::store::<BeowulfHost>();
        let cache = HostCache::new(store);
        let h = host("h0", "5");
        assert!(cache.reserve(&h, None));
        assert!(
            !cache.reserve(&h, None),
            "a second claim of the same version"
        );
        cache.unreserve(&h);
        assert!(cache.reserve(&h, None), "given back after a failed request");
        assert!(cache.reserve(&host("h0", "6"), None), "a newer version");
        assert!(cache.reserve(&host("h1", "5"), None), "another host");
    }

    /// Claims the store does not show yet count in their failure domain for their group: while in flight or
    /// won, not once lost or given back; once the store shows the claim, the host's label counts instead.
    #[test]
    fn claims_the_store_does_not_show_yet_count_for_their_group() {
        let (store, mut writer) = reflector::store::<BeowulfHost>();
        let hosts = [
            in_domain("a0", "5", "rack-1"),
            in_domain("a1", "5", "rack-1"),
            in_domain("b0", "5", "rack-2"),
            in_domain("b1", "5", "rack-2"),
        ];
        writer.apply_watcher_event(&watcher::Event::Init);
        for h in &hosts {
            writer.apply_watcher_event(&watcher::Event::InitApply(h.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let cache = HostCache::new(store);
        let free: Vec<Arc<BeowulfHost>> = hosts.iter().cloned().map(Arc::new).collect();
        let counts = |g: &str| {
            let mut v: Vec<(String, usize)> = cache.group_counts("ns", g).into_iter().collect();
            v.sort();
            v
        };
        let pick = |g: Option<&str>| {
            cache
                .reserve_next("ns", &free, g, None)
                .map(|h| h.name_any())
        };
        assert_eq!(pick(Some("md")).as_deref(), Some("a0"));
        assert_eq!(counts("md"), [("rack-1".to_string(), 1)]);
        assert!(
            counts("other").is_empty(),
            "another group's claims do not count"
        );
        assert_eq!(pick(Some("md")).as_deref(), Some("b0"), "the emptier rack");
        assert_eq!(pick(None).as_deref(), Some("a1"), "no group: name order");
        assert_eq!(
            counts("md"),
            [("rack-1".to_string(), 1), ("rack-2".to_string(), 1)]
        );
        // b0's claim lost (409), a0's request failed before the server decided: neither counts.
        cache.lost(&hosts[2]);
        cache.unreserve(&hosts[0]);
        assert!(counts("md").is_empty());
        assert_eq!(pick(Some("md")).as_deref(), Some("a0"), "given back");
        // The store catches up: a0 held by md (label), b1 claimed by another group.
        writer.apply_watcher_event(&watcher::Event::Apply(claimed(&hosts[0], "6", "md")));
        writer.apply_watcher_event(&watcher::Event::Apply(claimed(&hosts[3], "6", "other")));
        assert_eq!(counts("md"), [("rack-1".to_string(), 1)]);
        assert_eq!(counts("other"), [("rack-2".to_string(), 1)]);
    }
}
