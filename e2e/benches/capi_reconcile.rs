//! Benchmark (not a timed test): N BeowulfHosts and N Machines/BeowulfMachines (default 1000, env
//! `BEOWULF_BENCH_HOSTS`) reconciled against the fake API (kube-fake-client) from registration to
//! provisioned. The BMC and the node callbacks are in-memory stand-ins, so this measures the controllers, the
//! engine and the API round trips. Prints reconciles per second per phase and the process's peak RSS.
//!
//! Claims read free hosts from a host cache (`controllers::hostcache`, what `beowulf manager` uses), filled
//! from one list after registration and never refreshed — the worst case of a lagging reflector. With
//! `BEOWULF_BENCH_CLAIM=list` they list all hosts through the API per claim instead (the earlier behaviour),
//! for a before/after comparison. The boot profiles go to the real `ProfileRegistry` (its served inventory is
//! rebuilt on every publish).
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
use beowulf::controllers::bootplane::ProfileRegistry;
use beowulf::controllers::hostcache::HostCache;
use beowulf::controllers::{Context, host, machine};
use beowulf::provisioning::io::{BmcTarget, IoError, PowerControl};
use futures::future::BoxFuture;
use kube::api::Api;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

#[path = "../tests/support/fake_api.rs"]
mod fake_api;
use fake_api::fake_api;

const NS: &str = "bench";

/// In-memory BMC (a stand-in: 1000 real BMCs cannot run here; the IPMI driver has its own benchmark).
#[derive(Default)]
struct MemBmc(Mutex<HashSet<String>>);

impl PowerControl for MemBmc {
    fn power_state<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<bool, IoError>> {
        Box::pin(async move { Ok(self.0.lock().unwrap().contains(&t.address)) })
    }
    fn power_on<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), IoError>> {
        Box::pin(async move {
            self.0.lock().unwrap().insert(t.address.clone());
            Ok(())
        })
    }
    fn power_off<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), IoError>> {
        Box::pin(async move {
            self.0.lock().unwrap().remove(&t.address);
            Ok(())
        })
    }
    fn set_next_boot_pxe<'a>(&'a self, _t: &'a BmcTarget) -> BoxFuture<'a, Result<(), IoError>> {
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
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "c1", "namespace": NS}, "spec": {},
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
            "spec": {"clusterName": "c1", "bootstrap": {"dataSecretName": "boot-data"}}}));
        v.push(json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfMachine",
            "metadata": {"name": m, "namespace": NS,
                "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": m, "uid": "u"}]},
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
        let client = fake_api(objects(n)).await;
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

        println!(
            "capi_reconcile: {n} hosts, {n} machines, fake API, in-memory BMC, claims from {}",
            if use_cache {
                "the host cache"
            } else {
                "an API list per claim"
            }
        );
        let total = Instant::now();
        let mut count = 0usize;

        let t = Instant::now();
        for h in hosts.list(&Default::default()).await.unwrap() {
            host::reconcile(Arc::new(h), ctx.clone()).await.unwrap();
        }
        report("register hosts", n, t);
        count += n;

        if use_cache {
            // The reflector's first list, after registration; never refreshed (the worst case).
            let (store, mut writer) = reflector::store::<BeowulfHost>();
            writer.apply_watcher_event(&watcher::Event::Init);
            for h in hosts.list(&Default::default()).await.unwrap() {
                writer.apply_watcher_event(&watcher::Event::InitApply(h));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
            ctx = make_ctx(Some(Arc::new(HostCache::new(store))));
        }

        let t = Instant::now();
        for m in machines.list(&Default::default()).await.unwrap() {
            machine::reconcile(Arc::new(m), ctx.clone()).await.unwrap();
        }
        report("claim + power on", n, t);
        count += n;

        clock.fetch_add(120, Ordering::SeqCst);
        for i in 0..n {
            boot.record(
                &format!("{NS}/node-{i:04}"),
                Phase::Callback,
                clock.load(Ordering::SeqCst),
            );
        }
        let t = Instant::now();
        for m in machines.list(&Default::default()).await.unwrap() {
            machine::reconcile(Arc::new(m), ctx.clone()).await.unwrap();
        }
        report("callback → provisioned", n, t);
        count += n;

        let t = Instant::now();
        for m in machines.list(&Default::default()).await.unwrap() {
            machine::reconcile(Arc::new(m), ctx.clone()).await.unwrap();
        }
        report("steady state (no-op)", n, t);
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
    });
}

fn report(phase: &str, n: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!(
        "  {phase:<24} {n:>6} reconciles {s:>8.2} s {:>9.0} /s",
        n as f64 / s
    );
}
