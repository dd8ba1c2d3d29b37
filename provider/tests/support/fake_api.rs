//! The fake Kubernetes API (kube-fake-client) of the fast controller tests: every kind the Beowulf controllers
//! read or write, with the status subresources they patch. One home for the provider's reconcile tests, the e2e
//! CAPI tests and the reconcile benchmark, each including it with `#[path]` (integration tests are separate
//! crates, and the provider's tests cannot depend on the e2e crate, which depends on the provider). The real
//! API server is `e2e::kube`.

use base64::Engine as _;
use beowulf::api::{BeowulfCluster, BeowulfHost, BeowulfImage, BeowulfMachine, BeowulfRemediation};
use beowulf::controllers::capi::{Cluster, Machine};
use kube::Client;
use serde_json::Value;

/// A client over an in-memory API server holding `objects`.
pub async fn fake_api(objects: Vec<Value>) -> Client {
    kube_fake_client::ClientBuilder::new()
        .with_resource::<BeowulfHost>()
        .with_resource::<BeowulfImage>()
        .with_resource::<BeowulfMachine>()
        .with_resource::<BeowulfCluster>()
        .with_resource::<BeowulfRemediation>()
        .with_resource::<Cluster>()
        .with_resource::<Machine>()
        .with_status_subresource::<BeowulfHost>()
        .with_status_subresource::<BeowulfMachine>()
        .with_status_subresource::<BeowulfCluster>()
        .with_status_subresource::<BeowulfRemediation>()
        .with_status_subresource::<Cluster>()
        .with_runtime_objects(objects)
        .build()
        .await
        .expect("the fake API accepts the test objects")
}

/// A Secret's `data` value.
#[allow(dead_code)] // not every includer builds Secrets
pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}
