//! The Kubernetes controllers: one module per kind. Each exposes `reconcile(obj, ctx)` (called by kube's
//! `Controller` in `beowulf manager`, and directly by the tests against kube-fake-client) and
//! `error_policy`.
//!
//! Controllers read Kubernetes, call the [`crate::provisioning`] engine through [`hostops`], and write
//! status only when it changed (no resourceVersion churn).

pub mod capi;
pub mod cluster;
pub mod discovery;
pub mod host;
pub mod hostcache;
pub mod hostops;
pub mod leader;
pub mod machine;
pub mod remediation;
pub mod spread;

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::provisioning::EngineConfig;
use crate::provisioning::io::{BootProfiles, PowerControl};

/// Finalizer on BeowulfMachines (held until the host is powered off and released).
pub const MACHINE_FINALIZER: &str = "beowulfmachine.infrastructure.cluster.x-k8s.io";
/// Finalizer on BeowulfHosts (held until a provisioned host is deprovisioned: profile withdrawn, powered off).
pub const HOST_FINALIZER: &str = "beowulfhost.infrastructure.cluster.x-k8s.io";
/// Finalizer on BeowulfClusters.
pub const CLUSTER_FINALIZER: &str = "beowulfcluster.infrastructure.cluster.x-k8s.io";
/// Field manager of every write.
pub const FIELD_MANAGER: &str = "beowulf-manager";

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub power: Arc<dyn PowerControl>,
    pub boot: Arc<dyn BootProfiles>,
    pub engine: EngineConfig,
    /// Unix seconds now; injectable so tests control time.
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events on condition transitions; `None` in tests that do not look at events.
    pub recorder: Option<kube::runtime::events::Recorder>,
    /// Where claims find free hosts (the host controller's store); `None`: an API list per claim.
    pub hosts: Option<Arc<hostcache::HostCache>>,
    /// The BeowulfImage (looked up in each host's namespace) that unclaimed hosts boot to be inspected;
    /// `None`: no inspection.
    pub inspection_image: Option<String>,
    /// Hosts' serial consoles, captured while they boot; a failed boot's condition quotes the last lines.
    /// `None`: no capture.
    pub consoles: Option<Arc<crate::runtime::consoles::Consoles>>,
}

impl Context {
    pub fn new(client: Client, power: Arc<dyn PowerControl>, boot: Arc<dyn BootProfiles>) -> Self {
        Context {
            client,
            power,
            boot,
            engine: EngineConfig::default(),
            clock: Arc::new(|| jiff::Timestamp::now().as_second()),
            metrics: Arc::new(Metrics::default()),
            recorder: None,
            hosts: None,
            inspection_image: None,
            consoles: None,
        }
    }

    /// Publishes an event about `obj`. Failures are logged, never fatal: events are best effort. Notes must
    /// not contain secrets (they are condition messages, which never do).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: &str,
    ) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        use kube::runtime::events::{Event, EventType};
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: (!note.is_empty()).then(|| note.chars().take(1024).collect()),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "publishing event failed");
        }
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    pub fn now_ts(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// Reconcile counters, exported by `beowulf manager` at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub reconciles: prometheus_client::metrics::family::Family<
        KindLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    pub failures: prometheus_client::metrics::family::Family<
        KindLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

impl Metrics {
    pub fn register(self: &Arc<Self>, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "beowulf_reconciles",
            "Reconciles run, by kind",
            self.reconciles.clone(),
        );
        registry.register(
            "beowulf_reconcile_failures",
            "Reconciles that returned an error, by kind",
            self.failures.clone(),
        );
    }
    pub fn count(&self, kind: &'static str, ok: bool) {
        self.reconciles.get_or_create(&KindLabel { kind }).inc();
        if !ok {
            self.failures.get_or_create(&KindLabel { kind }).inc();
        }
    }
}

/// Reconcile failures; the controller retries with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("serializing: {0}")]
    Json(#[from] serde_json::Error),
}

/// How long to wait before retrying a failed reconcile: 1 s after a write conflict (409: another writer —
/// Cluster API's controllers add labels and owner references to our objects — changed the object since it
/// was read; the retry reads it again), 15 s after anything else.
pub fn error_backoff(error: &Error) -> Duration {
    if error.is_conflict() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(15)
    }
}

/// Logs a failed reconcile (conflicts are routine with more than one writer: debug) and says when to retry.
pub fn retry_after(kind: &'static str, error: &Error) -> kube::runtime::controller::Action {
    if error.is_conflict() {
        tracing::debug!(%error, kind, "write conflict; retrying with a fresh read");
    } else {
        tracing::warn!(%error, kind, "reconcile failed");
    }
    kube::runtime::controller::Action::requeue(error_backoff(error))
}

impl Error {
    /// A 409 Conflict from the API server (a stale resourceVersion).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(e)) if e.code == 409)
    }
}

/// Whether the object carries the `cluster.x-k8s.io/paused` annotation.
pub fn has_paused_annotation<K: Resource>(obj: &K) -> bool {
    obj.annotations().contains_key(capi::PAUSED_ANNOTATION)
}

/// Adds `finalizer`. The merge patch carries the resourceVersion it was computed from, so a concurrent
/// change makes it fail (409, retried) instead of clobbering the list. No-op when present.
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<K, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(obj.clone());
    }
    let mut list = obj.finalizers().to_vec();
    list.push(finalizer.to_string());
    set_finalizers(api, obj, list).await
}

/// Removes `finalizer` (guarded like [`add_finalizer`]). No-op when absent.
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<K, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(obj.clone());
    }
    let list: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    set_finalizers(api, obj, list).await
}

async fn set_finalizers<K>(api: &Api<K>, obj: &K, list: Vec<String>) -> Result<K, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "finalizers": list,
    }});
    Ok(api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// The RFC 7386 merge patch that turns `old` into `new` (`null` removes a field). `None` if equal.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, nv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Some(Value::Object(out))
        }
        _ => Some(new.clone()),
    }
}

/// Writes `new` as the object's status if it differs from `old`; returns whether it wrote.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> Result<bool, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(false);
    }
    let old_v = match old {
        Some(o) => serde_json::to_value(o)?,
        None => Value::Object(Default::default()),
    };
    let Some(diff) = merge_diff(&old_v, &serde_json::to_value(new)?) else {
        return Ok(false);
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": diff })),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_retried_at_once_other_errors_after_a_pause() {
        let api = |code: u16| {
            Error::Kube(kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ))
        };
        assert!(api(409).is_conflict());
        assert_eq!(error_backoff(&api(409)), Duration::from_secs(1));
        assert!(!api(500).is_conflict());
        assert_eq!(error_backoff(&api(500)), Duration::from_secs(15));
        assert_eq!(
            error_backoff(&Error::Invalid("bad".into())),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn merge_diff_removes_and_replaces() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let new = json!({"a": 1, "b": {"c": 5}, "e": [1, 2], "f": true});
        assert_eq!(
            merge_diff(&old, &new),
            Some(json!({"b": {"c": 5, "d": null}, "e": [1, 2], "f": true}))
        );
        assert_eq!(merge_diff(&old, &old), None);
    }
}
