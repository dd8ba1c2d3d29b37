//! Benchmark (not a timed test): N BeowulfHosts and N Machines/BeowulfMachines (default 1000, env
//! `BEOWULF_BENCH_HOSTS`) reconciled from registration to provisioned against a real kube-apiserver + etcd
//! (`e2e::kube`, the Go-built peers of `.ci/install`), or with `BEOWULF_BENCH_API=fake` against the fake API
//! (kube-fake-client) for comparison. The BMC and the node callbacks are in-memory stand-ins (1000 BMCs and
//! nodes cannot run here), so this measures the controllers, the engine and the API round trips. Prints
//! reconciles per second per phase (`BEOWULF_BENCH_CONCURRENCY`, default 16, at once, as kube-runtime's
//! controller runs them), requests to the API server per reconcile (from its audit log; real API only) and
//! the peak RSS of the process that runs the controllers.
//!
//! With the real API server the set-up (control plane, CRDs, 3000 objects) is this process and the
//! controllers run in a child process of the same binary (`BEOWULF_BENCH_ROLE=controllers`), so its peak RSS
//! is what `beowulf manager` holds at that scale (client, host cache, boot-profile registry) plus the
//! in-memory stand-ins — not the set-up's garbage. With the fake API everything is one process, every object
//! in it.
//!
//! Claims read free hosts from a host cache (`controllers::hostcache`, what `beowulf manager` uses): with the
//! real API a reflector kept current by a watch, as in the manager; with the fake API one list after
//! registration, never refreshed (the worst case of a lagging reflector). With `BEOWULF_BENCH_CLAIM=list`
//! they list all hosts through the API per claim instead, for comparison. The boot profiles go to the real
//! `ProfileRegistry`.
//!
//! Run: `cargo bench -p e2e --bench capi_reconcile` (release) or `cargo test -p e2e --bench capi_reconcile`
//! (debug).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use beowulf::api::{BeowulfHost, BeowulfMachine};
use beowulf::boot::Phase;
use beowulf::controllers::hostcache::HostCache;
use beowulf::controllers::{Context, host, machine};
use beowulf::provisioning::io::{BmcTarget, PowerControl, PowerError};
use beowulf::runtime::profiles::ProfileRegistry;
use e2e::kube::ControlPlane;
use futures::future::BoxFuture;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::{Value, json};

#[path = "../../provider/tests/support/fake_api.rs"]
mod fake_api;
use fake_api::fake_api;

const NS: &str = "bench";

/// In-memory BMC (a stand-in: 1000 real BMCs cannot run here; the IPMI driver has its own benchmark).
#[derive(Default)]
struct MemBmc(Mutex<HashSet<String>>);

impl PowerControl for MemBmc {
    fn power_state<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<bool, PowerError>> {
        Box::pin(async move { Ok(self.0.lock().unwrap().contains(&t.address)) })
    }
    fn power_on<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move {
            self.0.lock().unwrap().insert(t.address.clone());
            Ok(())
        })
    }
    fn power_off<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move {
            self.0.lock().unwrap().remove(&t.address);
            Ok(())
        })
    }
    fn set_next_boot_pxe<'a>(&'a self, _t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move { Ok(()) })
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn objects(n: usize) -> Vec<Value> {
    let mut v = vec![
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "c1", "namespace": NS},
               "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "BeowulfCluster", "name": "c1"}},
               "status": {"initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "boot-data", "namespace": NS},
               "data": {"value": "I2Nsb3VkLWNvbmZpZwo="}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bmc-creds", "namespace": NS},
               "data": {"username": "YWRtaW4=", "password": "cGFzc3dvcmQ="}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfImage",
               "metadata": {"name": "live", "namespace": NS}, "spec": {"kernel": {"url": "http://boot/vmlinuz"}}}),
    ];
    for i in 0..n {
        let m = format!("m{i:04}");
        v.push(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": m, "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "spec": {"clusterName": "c1", "bootstrap": {"dataSecretName": "boot-data"},
                     "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "BeowulfMachine", "name": m}}}));
        v.push(json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfMachine",
            "metadata": {"name": m, "namespace": NS,
                "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": m,
                                     "uid": "00000000-0000-0000-0000-000000000001"}]},
            "spec": {"imageRef": {"name": "live"}}}));
        v.push(json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
            "metadata": {"name": format!("node-{i:04}"), "namespace": NS},
            "spec": {"bootMACAddress": format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256),
                     "interfaces": [{"macAddress": format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256),
                                     "address": format!("10.{}.{}.{}/8", i / 65536, (i / 256) % 256, i % 256)}],
                     "bmc": {"address": format!("ipmi://10.1.{}.{}", i / 256, i % 256), "credentialsSecretRef": {"name": "bmc-creds"}}}}));
    }
    v
}

fn main() {
    // As `beowulf` does at start (the controllers' child process measures what the manager holds).
    beowulf::memory::limit_malloc_arenas();
    let n: usize = std::env::var("BEOWULF_BENCH_HOSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let real = std::env::var("BEOWULF_BENCH_API").as_deref() != Ok("fake");
        if std::env::var("BEOWULF_BENCH_ROLE").as_deref() == Ok("controllers") {
            let kubeconfig = std::env::var_os("KUBECONFIG").expect("KUBECONFIG");
            let client = e2e::kube::control_plane::client_from(kubeconfig.as_ref())
                .await
                .unwrap();
            let audit = std::env::var_os("BEOWULF_BENCH_AUDIT").map(std::path::PathBuf::from);
            let version = client.apiserver_version().await.unwrap().git_version;
            phases(client, n, &format!("kube-apiserver {version}"), audit, true).await;
        } else if real {
            let scratch = e2e::Scratch::new("bench-reconcile");
            let (kubeconfig, cp) = real_api(n, scratch.path()).await;
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .env("BEOWULF_BENCH_ROLE", "controllers")
                .env("BEOWULF_BENCH_HOSTS", n.to_string())
                .env("KUBECONFIG", &kubeconfig)
                .env("BEOWULF_BENCH_AUDIT", &cp.audit_log)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "the controllers' process failed: {status}"
            );
        } else {
            phases(fake_api(objects(n)).await, n, "fake API", None, false).await;
        }
    });
}

/// The four phases, from registration to the steady state, against `client`; prints the results.
async fn phases(
    client: kube::Client,
    n: usize,
    api_name: &str,
    audit: Option<std::path::PathBuf>,
    live_cache: bool,
) {
    let requests = || {
        audit
            .as_deref()
            .map(|a| e2e::kube::control_plane::count_requests(a, BENCH_USER))
    };
    let boot = Arc::new(ProfileRegistry::default());
    let clock = Arc::new(AtomicI64::new(5_000_000));
    let bmc = Arc::new(MemBmc::default());
    let make_ctx = |cache: Option<Arc<HostCache>>| {
        let mut ctx = Context::new(client.clone(), bmc.clone(), boot.clone());
        let c = clock.clone();
        ctx.clock = Arc::new(move || c.load(Ordering::SeqCst));
        ctx.hosts = cache;
        Arc::new(ctx)
    };
    let mut ctx = make_ctx(None);
    let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    let machines: Api<BeowulfMachine> = Api::namespaced(client.clone(), NS);
    let use_cache = std::env::var("BEOWULF_BENCH_CLAIM").as_deref() != Ok("list");
    // Reconciles in flight at once (kube-runtime's controller runs them concurrently too).
    let concurrency: usize = std::env::var("BEOWULF_BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);

    println!(
        "capi_reconcile: {n} hosts, {n} machines, {api_name}, in-memory BMC, {concurrency} reconciles at once, claims from {}",
        if use_cache {
            "the host cache"
        } else {
            "an API list per claim"
        }
    );
    let total = Instant::now();
    let mut count = 0usize;

    let (t, r) = (Instant::now(), requests());
    let items = listed(&hosts).await;
    run_all(items, concurrency, &hosts, |h| {
        host::reconcile(Arc::new(h), ctx.clone())
    })
    .await;
    report("register hosts", n, t, r, requests());
    count += n;

    if use_cache && live_cache {
        // The manager's reflector: a list, then a watch that keeps the store current.
        let (store, writer) = reflector::store::<BeowulfHost>();
        let stream = reflector::reflector(
            writer,
            watcher::watcher(hosts.clone(), watcher::Config::default())
                .modify(|h| h.managed_fields_mut().clear()),
        );
        tokio::spawn(futures::StreamExt::for_each(stream, |_| async {}));
        ctx = make_ctx(Some(Arc::new(HostCache::new(store))));
    } else if use_cache {
        // The store of the first list after registration, never refreshed (the worst case of a lagging
        // reflector; the fake API's watch is not what this measures).
        let (store, mut writer) = reflector::store::<BeowulfHost>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for h in hosts.list(&Default::default()).await.unwrap() {
            writer.apply_watcher_event(&watcher::Event::InitApply(h));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        ctx = make_ctx(Some(Arc::new(HostCache::new(store))));
    }

    let (t, r) = (Instant::now(), requests());
    let items = listed(&machines).await;
    run_all(items, concurrency, &machines, |m| {
        machine::reconcile(Arc::new(m), ctx.clone())
    })
    .await;
    report("claim + power on", n, t, r, requests());
    count += n;

    clock.fetch_add(120, Ordering::SeqCst);
    for i in 0..n {
        boot.record(
            &format!("{NS}/node-{i:04}"),
            Phase::Callback,
            clock.load(Ordering::SeqCst),
        );
    }
    let (t, r) = (Instant::now(), requests());
    let items = listed(&machines).await;
    run_all(items, concurrency, &machines, |m| {
        machine::reconcile(Arc::new(m), ctx.clone())
    })
    .await;
    report("callback → provisioned", n, t, r, requests());
    count += n;

    let (t, r) = (Instant::now(), requests());
    let items = listed(&machines).await;
    run_all(items, concurrency, &machines, |m| {
        machine::reconcile(Arc::new(m), ctx.clone())
    })
    .await;
    report("steady state (no-op)", n, t, r, requests());
    count += n;

    let provisioned = machines
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|m| m.spec.provider_id.is_some())
        .count();
    assert_eq!(provisioned, n, "every machine provisioned");
    let secs = total.elapsed().as_secs_f64();
    println!(
        "total: {count} reconciles in {secs:.2} s = {:.0} reconciles/s; peak RSS {} MiB",
        count as f64 / secs,
        peak_rss_kib() / 1024
    );
}

/// Every object of `api`, as the manager's reflector stores them: without managedFields.
async fn listed<K>(api: &Api<K>) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = api.list(&Default::default()).await.unwrap().items;
    for i in &mut items {
        i.managed_fields_mut().clear();
    }
    items
}

/// Runs `reconcile` on every object, `concurrency` at a time; a reconcile that fails (a write conflict with
/// a concurrent one) runs again on a fresh read, as the controller's retry would, up to 20 times.
async fn run_all<K, F, Fut, E>(items: Vec<K>, concurrency: usize, api: &Api<K>, reconcile: F)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(K) -> Fut,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action, E>>,
    E: std::fmt::Display,
{
    use futures::StreamExt as _;
    futures::stream::iter(items.into_iter().map(|item| {
        let reconcile = &reconcile;
        async move {
            let mut obj = item;
            for attempt in 1.. {
                match reconcile(obj.clone()).await {
                    Ok(_) => return,
                    Err(e) if attempt < 20 => {
                        let _ = e; // the next attempt reads the object again
                        obj = api.get(&obj.name_any()).await.unwrap();
                    }
                    Err(e) => panic!("reconcile failed 20 times: {e}"),
                }
            }
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
}

fn report(phase: &str, n: usize, t: Instant, before: Option<usize>, after: Option<usize>) {
    let s = t.elapsed().as_secs_f64();
    let per = match (before, after) {
        (Some(b), Some(a)) => format!("{:>6.1} API requests/reconcile", (a - b) as f64 / n as f64),
        _ => String::new(),
    };
    println!(
        "  {phase:<24} {n:>6} reconciles {s:>8.2} s {:>9.0} /s {per}",
        n as f64 / s,
    );
}

/// The user the controllers' client is (a certificate of its own), so the audit log tells their requests
/// from the set-up's.
const BENCH_USER: &str = "beowulf-bench";

/// etcd + kube-apiserver on loopback with our CRDs and Cluster API's Cluster and Machine CRDs (from the
/// components file rendered from Cluster API's module; conversion left out: only v1beta2 is used), the
/// objects created, the Cluster's status set. Returns the controllers' kubeconfig.
async fn real_api(n: usize, dir: &std::path::Path) -> (std::path::PathBuf, ControlPlane) {
    use futures::StreamExt as _;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let peers = e2e::kube::GoPeers::find().unwrap();
    let cp = ControlPlane::start(&peers, dir, std::net::Ipv4Addr::LOCALHOST)
        .await
        .unwrap();
    let admin = cp.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let core =
        std::fs::read_to_string(peers.capi_components("cluster-api", "core-components.yaml"))
            .unwrap();
    let mut wanted: Vec<CustomResourceDefinition> = beowulf::api::crds::all();
    for doc in serde_saphyr::from_multiple::<Value>(&core).unwrap() {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        if doc["kind"] == "CustomResourceDefinition"
            && matches!(
                name,
                "clusters.cluster.x-k8s.io" | "machines.cluster.x-k8s.io"
            )
        {
            let mut crd: CustomResourceDefinition = serde_json::from_value(doc.clone()).unwrap();
            crd.spec.conversion = None;
            wanted.push(crd);
        }
    }
    for crd in &wanted {
        crds.create(&Default::default(), crd).await.unwrap();
    }
    for crd in &wanted {
        let name = crd.metadata.name.clone().unwrap();
        e2e::kube::eventually(
            &format!("{name} established"),
            std::time::Duration::from_secs(30),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let c = crds.get(&name).await.map_err(|e| e.to_string())?;
                    let ok = c
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    if ok {
                        Ok(())
                    } else {
                        Err("not yet".to_string())
                    }
                }
            },
        )
        .await
        .unwrap();
    }
    // Machines before BeowulfMachines: the owner references carry the Machines' real uids (the garbage
    // collector deletes objects whose owner does not exist).
    let all = objects(n);
    let (infra_machines, rest): (Vec<Value>, Vec<Value>) =
        all.into_iter().partition(|o| o["kind"] == "BeowulfMachine");
    let ns_obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    e2e::kube::fixtures::create_all(&admin, &[ns_obj])
        .await
        .unwrap();
    let create = |objs: Vec<Value>| {
        let admin = admin.clone();
        async move {
            futures::stream::iter(objs.into_iter().map(|o| {
                let admin = admin.clone();
                async move { e2e::kube::fixtures::create_all(&admin, &[o]).await.unwrap() }
            }))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
        }
    };
    let t = Instant::now();
    let count = rest.len() + infra_machines.len() + 1;
    create(rest).await;
    let uids: std::collections::HashMap<String, String> =
        Api::<beowulf::controllers::capi::Machine>::namespaced(admin.clone(), NS)
            .list(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.name_any(), m.uid().unwrap_or_default()))
            .collect();
    let infra_machines = infra_machines
        .into_iter()
        .map(|mut o| {
            let owner = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            o["metadata"]["ownerReferences"][0]["uid"] = json!(uids[&owner]);
            o
        })
        .collect();
    create(infra_machines).await;
    println!(
        "set-up: {count} objects created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let clusters: Api<beowulf::controllers::capi::Cluster> = Api::namespaced(admin.clone(), NS);
    clusters
        .patch_status(
            "c1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true}}})),
        )
        .await
        .unwrap();
    let kubeconfig = cp
        .user_kubeconfig(BENCH_USER, "system:masters", &dir.join("bench.kubeconfig"))
        .unwrap();
    (kubeconfig, cp)
}
