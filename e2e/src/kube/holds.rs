//! The invariant of every test that moves hosts between machines, watched while it runs: no two
//! BeowulfMachines name the same host, and a host's `consumerRef` names the machine that names it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beowulf::api::{BeowulfHost, BeowulfMachine};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

/// Lists the hosts and machines of a namespace every 200 ms and records each violation.
pub struct HoldWatch {
    violations: Arc<Mutex<Vec<String>>>,
    watching: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl HoldWatch {
    /// Starts watching `ns`; `extra` is asked about every host at every look (a test's own rule, such as
    /// "the spare is never claimed") and returns a violation or `None`.
    pub fn start(
        client: kube::Client,
        ns: &str,
        mut extra: impl FnMut(&BeowulfHost) -> Option<String> + Send + 'static,
    ) -> HoldWatch {
        let violations = Arc::new(Mutex::new(Vec::new()));
        let watching = Arc::new(AtomicBool::new(true));
        let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), ns);
        let machines: Api<BeowulfMachine> = Api::namespaced(client, ns);
        let (seen, on) = (violations.clone(), watching.clone());
        let task = tokio::spawn(async move {
            while on.load(Ordering::Relaxed) {
                if let (Ok(hs), Ok(ms)) = (
                    hosts.list(&ListParams::default()).await,
                    machines.list(&ListParams::default()).await,
                ) {
                    let mut found = Vec::new();
                    let mut named: BTreeMap<String, String> = BTreeMap::new();
                    for m in &ms {
                        if let Some(r) = &m.spec.host_ref
                            && let Some(other) = named.insert(r.name.clone(), m.name_any())
                        {
                            found.push(format!(
                                "{} and {other} both name host {}",
                                m.name_any(),
                                r.name
                            ));
                        }
                    }
                    for h in &hs {
                        let consumer = h.spec.consumer_ref.as_ref().map(|c| &c.name);
                        if let (Some(c), Some(by)) = (consumer, named.get(&h.name_any()))
                            && c != by
                        {
                            found.push(format!(
                                "host {} is held by {c} but machine {by} names it",
                                h.name_any()
                            ));
                        }
                        found.extend(extra(h));
                    }
                    if let Ok(mut v) = seen.lock() {
                        v.extend(found);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        HoldWatch {
            violations,
            watching,
            task,
        }
    }

    /// Stops watching; every violation seen.
    pub async fn stop(self) -> Vec<String> {
        self.watching.store(false, Ordering::Relaxed);
        let _ = self.task.await;
        self.violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}
