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
//! therefore takes the host's note *before* it is sent ([`HostCache::reserve`]), so the others pass on to the
//! next host instead of all trying the first and losing; a claim that fails for another reason than a
//! conflict gives the note back ([`HostCache::unreserve`]).
//!
//! Correctness does not depend on the cache: every claim is still the resourceVersion-guarded patch, so a
//! stale store can only cost a 409, never give one host to two machines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::api::BeowulfHost;

/// How long a claim waits for the store's first list before falling back to an API list.
const READY_WAIT: Duration = Duration::from_secs(30);

pub struct HostCache {
    store: Store<BeowulfHost>,
    /// `<namespace>/<host>` → the resourceVersion a claim was attempted against.
    attempted: Mutex<HashMap<String, String>>,
}

fn key(h: &BeowulfHost) -> String {
    format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any())
}

impl HostCache {
    pub fn new(store: Store<BeowulfHost>) -> Self {
        HostCache {
            store,
            attempted: Mutex::new(HashMap::new()),
        }
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
        let mut attempted = self.attempted.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for h in self.store.state() {
            if h.namespace().as_deref() != Some(namespace) {
                continue;
            }
            let k = key(&h);
            match attempted.get(&k) {
                Some(rv) if h.resource_version().as_deref() == Some(rv.as_str()) => continue,
                Some(_) => {
                    attempted.remove(&k);
                }
                None => {}
            }
            out.push(h);
        }
        Some(out)
    }

    /// Takes the note for a claim of `host` as read: `false` when another claim holds it for that version
    /// (try the next host). Won or lost with a conflict, the note stays until the store shows a newer version.
    pub fn reserve(&self, host: &BeowulfHost) -> bool {
        let Some(rv) = host.resource_version() else {
            return true;
        };
        let mut attempted = self.attempted.lock().unwrap_or_else(|e| e.into_inner());
        match attempted.get(&key(host)) {
            Some(noted) if *noted == rv => false,
            _ => {
                attempted.insert(key(host), rv);
                true
            }
        }
    }

    /// Gives back the note [`HostCache::reserve`] took, for a claim that never reached the API server's
    /// decision (a transport error): the host may still be free.
    pub fn unreserve(&self, host: &BeowulfHost) {
        let mut attempted = self.attempted.lock().unwrap_or_else(|e| e.into_inner());
        if attempted.get(&key(host)) == host.resource_version().as_ref() {
            attempted.remove(&key(host));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn host(name: &str, rv: &str) -> BeowulfHost {
        let mut h: BeowulfHost = serde_json::from_value(serde_json::json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {"bootMACAddress": "52:54:00:00:00:01",
                     "bmc": {"address": "ipmi://192.0.2.1", "credentialsSecretRef": {"name": "c"}}}}))
        .unwrap();
        h.metadata.resource_version = Some(rv.into());
        h
    }

    /// Two concurrent claims of the same host as read: the second passes on; a claim that failed before the
    /// server decided gives the host back; a newer version of the host is fair game again.
    #[test]
    fn a_host_being_claimed_is_passed_over_by_concurrent_claims() {
        let (store, _writer) = reflector::store::<BeowulfHost>();
        let cache = HostCache::new(store);
        let h = host("h0", "5");
        assert!(cache.reserve(&h));
        assert!(!cache.reserve(&h), "a second claim of the same version");
        cache.unreserve(&h);
        assert!(cache.reserve(&h), "given back after a failed request");
        assert!(cache.reserve(&host("h0", "6")), "a newer version");
        assert!(cache.reserve(&host("h1", "5")), "another host");
    }
}
