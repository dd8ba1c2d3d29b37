//! Where claims look for free hosts: the BeowulfHost controller's reflector store, not an API list.
//!
//! Listing every host through the API for every claim made claiming N machines O(N²) in API traffic and
//! deserialisation. The store is already in memory. It can lag behind our own writes, though: right after a
//! claim the store may still show the host free, and every following machine would try it first and get a
//! 409. So the cache remembers, per host, the resourceVersion a claim (ours, or one that lost with 409) was
//! made against; while the store still shows exactly that version, the host is skipped. Once the store moves
//! on, it shows the truth (consumerRef set, or the host free again) and the note is dropped.
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

    /// A claim was attempted on `host` as read (won or lost): skip it until the store shows a newer version.
    pub fn attempted(&self, host: &BeowulfHost) {
        if let Some(rv) = host.resource_version() {
            self.attempted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key(host), rv);
        }
    }
}
