//! Reconcile tests against kube-fake-client (no API server can run here), with the CAPI objects validated
//! against the real CAPI v1.14.0 CRD schemas from `$CAPI_CRDS_DIR`.
//!
//! The boot plane is the real one: the controllers' `ProfileRegistry` served by the boot plane's HTTP server
//! on loopback; the test acts as the node (from the host's reserved address, 127.0.0.x: all of 127/8 is
//! local) and fetches its iPXE script, NoCloud data and calls back with the real per-boot token. The BMC is an
//! in-process fake implementing the engine's [`PowerControl`] trait — a MOCK (the real drivers against a real
//! ipmi_sim are in `e2e/tests/capi_ipmi.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use beowulf::api::remediation::RemediationPhase;
use beowulf::api::{BeowulfCluster, BeowulfHost, BeowulfMachine, BeowulfRemediation};
use beowulf::boot::Phase;
use beowulf::controllers::capi::Machine;
use beowulf::controllers::hostcache::HostCache;
use beowulf::controllers::{
    self, Context, HOST_FINALIZER, MACHINE_FINALIZER, cluster, host, machine, remediation, spread,
};
use beowulf::hardware::Hardware;
use beowulf::provisioning::io::BootProfiles as _;
use beowulf::provisioning::io::{BmcFailure, BmcTarget, PowerControl, PowerError};
use beowulf::runtime::profiles::{ProfileRegistry, ServedConfig};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

#[path = "support/fake_api.rs"]
mod fake_api;

const NS: &str = "hpc";
const BMC_PASSWORD: &str = "s3cret-bmc-pw";
const USER_DATA: &str = "#cloud-config\nruncmd: [echo joined-with-token-xyz]\n";

// ---------------------------------------------------------------- fakes (mocks, see the file comment)

#[derive(Default)]
struct FakeBmc {
    power: Mutex<HashMap<String, bool>>,
    ops: Mutex<Vec<String>>,
    unreachable: AtomicBool,
}

impl FakeBmc {
    fn check(&self, t: &BmcTarget) -> Result<(), PowerError> {
        assert_eq!(t.password, BMC_PASSWORD, "credentials come from the Secret");
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(PowerError::new(
                BmcFailure::Unreachable,
                format!("{}: no answer within 3 s", t.address),
            ));
        }
        Ok(())
    }
    fn op(&self, t: &BmcTarget, op: &str) {
        self.ops.lock().unwrap().push(format!("{} {op}", t.address));
    }
    fn ops(&self) -> Vec<String> {
        self.ops.lock().unwrap().clone()
    }
    fn is_on(&self, addr: &str) -> bool {
        *self.power.lock().unwrap().get(addr).unwrap_or(&false)
    }
}

impl PowerControl for FakeBmc {
    fn power_state<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<bool, PowerError>> {
        Box::pin(async move {
            self.check(t)?;
            Ok(self.is_on(&t.address))
        })
    }
    fn power_on<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move {
            self.check(t)?;
            self.op(t, "on");
            self.power.lock().unwrap().insert(t.address.clone(), true);
            Ok(())
        })
    }
    fn power_off<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move {
            self.check(t)?;
            self.op(t, "off");
            self.power.lock().unwrap().insert(t.address.clone(), false);
            Ok(())
        })
    }
    fn set_next_boot_pxe<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        Box::pin(async move {
            self.check(t)?;
            self.op(t, "bootdev-pxe");
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- fixtures

fn capi_crds_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CAPI_CRDS_DIR").expect(
        "CAPI_CRDS_DIR is not set: export CAPI_CRDS_DIR=<dir with the CAPI v1.14.0 CRD YAMLs> (README, \"Test data\")",
    ))
}

/// The served `v1beta2` openAPIV3Schema of an upstream CAPI CRD.
fn capi_schema(file: &str) -> Value {
    let path = capi_crds_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1beta2" && v["served"] == true)
        .expect("v1beta2 served")["schema"]["openAPIV3Schema"]
        .clone()
}

fn assert_valid(file: &str, obj: &Value) {
    let schema = capi_schema(file);
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(obj)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{} invalid against {file}: {errors:?}",
        obj["kind"]
    );
}

fn cluster_obj(paused: bool, infra_ready: bool) -> Value {
    let v = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": NS, "uid": "uid-c1"},
        "spec": {
            "paused": paused,
            "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}},
            "controlPlaneEndpoint": {"host": "10.0.0.100", "port": 6443},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "BeowulfCluster", "name": "c1"},
        },
        "status": {"initialization": {"infrastructureProvisioned": infra_ready, "controlPlaneInitialized": true}},
    });
    assert_valid("cluster.x-k8s.io_clusters.yaml", &v);
    v
}

fn machine_obj(name: &str, secret: Option<&str>) -> Value {
    let mut bootstrap = json!({"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": name}});
    if let Some(s) = secret {
        bootstrap["dataSecretName"] = json!(s);
    }
    let v = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-m-{name}"),
                     "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
        "spec": {
            "clusterName": "c1",
            "bootstrap": bootstrap,
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "BeowulfMachine", "name": name},
            "version": "v1.33.1",
        },
    });
    assert_valid("cluster.x-k8s.io_machines.yaml", &v);
    v
}

fn beowulf_machine(name: &str) -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "BeowulfMachine",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-bm-{name}"),
            "labels": {"cluster.x-k8s.io/cluster-name": "c1"},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": name,
                                 "uid": format!("uid-m-{name}"), "controller": true}]},
        "spec": {"imageRef": {"name": "live"}, "hostSelector": {"matchLabels": {"role": "worker"}}},
    })
}

fn host_obj(name: &str, idx: u8) -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "BeowulfHost",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-h-{name}"), "labels": {"role": "worker"}},
        "spec": {
            "bootMACAddress": format!("52:54:00:00:00:{idx:02x}"),
            "interfaces": [{"macAddress": format!("52:54:00:00:00:{idx:02x}"), "address": format!("127.0.0.{}/8", 10 + idx), "gateway": "127.0.0.1"}],
            "bmc": {"address": format!("ipmi://127.0.0.1:{}", 6230 + u16::from(idx)), "credentialsSecretRef": {"name": "bmc-creds"}},
            "failureDomain": "rack-1",
        },
    })
}

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.to_string(), base64_encode(v.as_bytes())))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": data})
}

fn base64_encode(b: &[u8]) -> String {
    // Tiny encoder so the test does not need another dependency.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn image_obj() -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "BeowulfImage",
        "metadata": {"name": "live", "namespace": NS},
        "spec": {"kernel": {"url": "http://boot/vmlinuz"}, "initrds": [{"url": "http://boot/initrd.img"}],
                 "rootfs": {"url": "http://boot/root.squashfs"},
                 "cmdline": "console=ttyS0 ds=nocloud;s={{ nocloud_url }} cb={{ callback_url }}", "format": "live"},
    })
}

struct Env {
    client: Client,
    ctx: Arc<Context>,
    bmc: Arc<FakeBmc>,
    boot: Arc<ProfileRegistry>,
    clock: Arc<AtomicI64>,
    /// The boot plane's HTTP server on loopback.
    http: SocketAddr,
    stop: Stop,
}

/// What the node got from the boot plane in one boot.
struct NodeBoot {
    script: String,
    token: String,
    meta_data: String,
    user_data: String,
}

async fn env(objects: Vec<Value>) -> Env {
    let client = fake_api::fake_api(objects).await;
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let bmc = Arc::new(FakeBmc::default());
    let (boot, http, stop) = boot_plane(&clock, 0).await;
    let mut ctx = Context::new(client.clone(), bmc.clone(), boot.clone());
    let c = clock.clone();
    ctx.clock = Arc::new(move || c.load(Ordering::SeqCst));
    Env {
        client,
        ctx: Arc::new(ctx),
        bmc,
        boot,
        clock,
        http,
        stop,
    }
}

/// The real boot plane on a controllers' registry, its HTTP server on loopback at `port` (0: any).
async fn boot_plane(
    clock: &Arc<AtomicI64>,
    port: u16,
) -> (Arc<ProfileRegistry>, std::net::SocketAddr, Stop) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let http = listener.local_addr().unwrap();
    let c = clock.clone();
    let boot = Arc::new(ProfileRegistry::new(
        ServedConfig {
            boot_server: Ipv4Addr::LOCALHOST,
            http_port: http.port(),
            ..Default::default()
        },
        Default::default(),
        Arc::new(move || c.load(Ordering::SeqCst)),
    ));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(beowulf::boot::http::serve(
        listener,
        boot.plane(),
        Arc::new(Default::default()),
        Default::default(),
        async {
            let _ = rx.await;
        },
    ));
    (boot, http, std::sync::Mutex::new(Some((tx, served))))
}

/// Stops a boot plane's HTTP server (and frees its port).
type Stop = std::sync::Mutex<
    Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
>;

fn standard(with_secret: bool, hosts: u8, machines: &[&str]) -> Vec<Value> {
    let mut v = vec![
        cluster_obj(false, true),
        image_obj(),
        secret(
            "bmc-creds",
            &[("username", "admin"), ("password", BMC_PASSWORD)],
        ),
    ];
    if with_secret {
        v.push(secret(
            "boot-data",
            &[("value", USER_DATA), ("format", "cloud-config")],
        ));
    }
    for m in machines {
        v.push(machine_obj(m, with_secret.then_some("boot-data")));
        v.push(beowulf_machine(m));
    }
    for i in 0..hosts {
        v.push(host_obj(&format!("node-{i}"), i));
    }
    v
}

impl Env {
    /// The same cluster and BMCs with a new manager process: this one's HTTP server stops, and a boot plane
    /// that has served nothing yet starts at the same address.
    async fn restarted(&self) -> Env {
        let stop = self.stop.lock().unwrap().take();
        if let Some((tx, served)) = stop {
            let _ = tx.send(());
            served.await.unwrap().unwrap();
        }
        self.another_manager(self.http.port()).await
    }
    /// Another replica taking over: a boot plane of its own at another address (another machine).
    async fn other_replica(&self) -> Env {
        self.another_manager(0).await
    }
    /// The same cluster, BMCs and clock with another manager whose boot plane listens on `port` (0: any).
    async fn another_manager(&self, port: u16) -> Env {
        let (boot, http, stop) = boot_plane(&self.clock, port).await;
        let mut ctx = Context::new(self.client.clone(), self.bmc.clone(), boot.clone());
        let c = self.clock.clone();
        ctx.clock = Arc::new(move || c.load(Ordering::SeqCst));
        Env {
            client: self.client.clone(),
            ctx: Arc::new(ctx),
            bmc: self.bmc.clone(),
            boot,
            clock: self.clock.clone(),
            http,
            stop,
        }
    }
    fn hosts(&self) -> Api<BeowulfHost> {
        Api::namespaced(self.client.clone(), NS)
    }
    fn machines(&self) -> Api<BeowulfMachine> {
        Api::namespaced(self.client.clone(), NS)
    }
    async fn reconcile_host(&self, name: &str) -> Action {
        let h = self.hosts().get(name).await.unwrap();
        host::reconcile(Arc::new(h), self.ctx.clone())
            .await
            .unwrap()
    }
    async fn reconcile_machine(&self, name: &str) -> Action {
        let m = self.machines().get(name).await.unwrap();
        machine::reconcile(Arc::new(m), self.ctx.clone())
            .await
            .unwrap()
    }
    /// A context like `ctx` that also publishes Events (to the fake API), as `beowulf manager` does.
    fn context_with_events(&self) -> Arc<Context> {
        let mut ctx = Context::new(self.client.clone(), self.bmc.clone(), self.boot.clone());
        let c = self.clock.clone();
        ctx.clock = Arc::new(move || c.load(Ordering::SeqCst));
        ctx.recorder = Some(kube::runtime::events::Recorder::new(
            self.client.clone(),
            kube::runtime::events::Reporter {
                controller: "beowulf-manager".into(),
                instance: Some("test".into()),
            },
        ));
        Arc::new(ctx)
    }
    /// A context like `ctx` whose manager was given `--inspection-image` (or not).
    fn context_inspecting(&self, image: Option<&str>) -> Arc<Context> {
        let mut ctx = Context::new(self.client.clone(), self.bmc.clone(), self.boot.clone());
        let c = self.clock.clone();
        ctx.clock = Arc::new(move || c.load(Ordering::SeqCst));
        ctx.inspection_image = image.map(str::to_string);
        Arc::new(ctx)
    }
    async fn register_hosts(&self, n: u8) {
        for i in 0..n {
            self.reconcile_host(&format!("node-{i}")).await;
        }
    }
    /// An HTTP client that talks from node `idx`'s reserved address.
    fn node(&self, idx: u8) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + idx)))
            .no_proxy()
            .build()
            .unwrap()
    }
    async fn get(&self, idx: u8, path: &str) -> (u16, String) {
        let r = self
            .node(idx)
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
    /// Node `idx` network-boots as far as the boot plane sees it: its iPXE script (which mints the per-boot
    /// token), then the NoCloud meta-data and user-data with that token.
    async fn node_boots(&self, idx: u8) -> NodeBoot {
        let (status, script) = self
            .get(idx, &format!("/boot/52-54-00-00-00-{idx:02x}.ipxe"))
            .await;
        assert_eq!(status, 200, "iPXE script: {script}");
        let token = script
            .split("/nocloud/")
            .nth(1)
            .and_then(|t| t.split('/').next())
            .expect("the script's command line carries the NoCloud seed URL")
            .to_string();
        let (status, meta_data) = self.get(idx, &format!("/nocloud/{token}/meta-data")).await;
        assert_eq!(status, 200);
        let (status, user_data) = self.get(idx, &format!("/nocloud/{token}/user-data")).await;
        assert_eq!(status, 200);
        NodeBoot {
            script,
            token,
            meta_data,
            user_data,
        }
    }
    /// The node's phone-home (cloud-init `phone_home` posts a form); returns the HTTP status.
    async fn node_calls_back(&self, idx: u8, token: &str) -> u16 {
        self.node(idx)
            .post(format!("http://{}/callback/{token}", self.http))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("instance_id=iid&hostname=node-{idx}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    async fn node_boots_and_calls_back(&self, idx: u8) {
        let b = self.node_boots(idx).await;
        assert_eq!(self.node_calls_back(idx, &b.token).await, 200);
    }
    fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }
}

fn ready(bm: &BeowulfMachine) -> (String, String) {
    let c = bm
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    (c.status.clone(), c.reason.clone())
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn happy_path_claims_boots_and_provisions_on_callback() {
    let e = env(standard(true, 1, &["m0"])).await;
    e.register_hosts(1).await;
    let h = e.hosts().get("node-0").await.unwrap();
    assert_eq!(
        h.status.as_ref().unwrap().state,
        beowulf::api::host::HostStateName::Available
    );

    let action = e.reconcile_machine("m0").await;
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(15)));
    let h = e.hosts().get("node-0").await.unwrap();
    assert_eq!(
        h.spec.consumer_ref.as_ref().unwrap().name,
        "m0",
        "host claimed"
    );
    let bm = e.machines().get("m0").await.unwrap();
    assert!(bm.finalizers().contains(&MACHINE_FINALIZER.to_string()));
    assert_eq!(bm.spec.host_ref.as_ref().unwrap().name, "node-0");
    assert_eq!(
        bm.spec.provider_id, None,
        "no providerID before the callback"
    );
    assert_eq!(ready(&bm), ("False".into(), "Provisioning".into()));
    assert_eq!(
        e.bmc.ops(),
        [
            "ipmi://127.0.0.1:6230 bootdev-pxe",
            "ipmi://127.0.0.1:6230 on"
        ]
    );

    // The boot profile carries the bootstrap secret as user-data, for this host.
    let profile = e.boot.profile("hpc/node-0").expect("profile published");
    assert_eq!(profile.user_data, USER_DATA.as_bytes());
    assert_eq!(profile.provider_id, "beowulf://hpc/node-0");
    assert_eq!(profile.mac.to_string(), "52:54:00:00:00:00");
    assert_eq!(profile.ip, Some(("127.0.0.10".parse().unwrap(), 8)));
    assert_eq!(profile.kernel, "http://boot/vmlinuz");

    // The node boots through the boot plane's HTTP API: the script (from the host's address only), then
    // NoCloud data with the per-boot token the script carries.
    e.advance(60);
    let (status, _) = e.get(1, "/boot/52-54-00-00-00-00.ipxe").await;
    assert_eq!(status, 403, "another address does not get node-0's script");
    let boot = e.node_boots(0).await;
    assert!(
        boot.script.starts_with("#!ipxe\n") && boot.script.contains("kernel http://boot/vmlinuz"),
        "{}",
        boot.script
    );
    assert_eq!(boot.token.len(), 64, "a 256-bit token");
    assert_eq!(
        boot.user_data, USER_DATA,
        "the bootstrap secret is the user-data"
    );
    let meta: BTreeMap<String, String> = serde_saphyr::from_str(&boot.meta_data).unwrap();
    assert_eq!(meta["provider_id"], "beowulf://hpc/node-0");
    assert_eq!(meta["local-hostname"], "node-0");
    assert!(meta["instance-id"].starts_with("hpc-node-0-"), "{meta:?}");
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(ready(&bm).1, "Provisioning");

    // A wrong token, or the right one from another address, is refused and changes nothing.
    let wrong = "0".repeat(64);
    assert_eq!(e.node_calls_back(0, &wrong).await, 403);
    assert_eq!(e.node_calls_back(1, &boot.token).await, 403);
    let (status, body) = e.get(0, &format!("/nocloud/{wrong}/user-data")).await;
    assert_eq!((status, body.contains("joined")), (403, false));
    e.reconcile_machine("m0").await;
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(
        bm.spec.provider_id, None,
        "no callback yet: not provisioned"
    );
    // The real token from the node's address is accepted once.
    assert_eq!(e.node_calls_back(0, &boot.token).await, 200);
    assert_eq!(
        e.node_calls_back(0, &boot.token).await,
        403,
        "a token is single-use"
    );

    let action = e.reconcile_machine("m0").await;
    assert_eq!(action, Action::await_change());
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(bm.spec.provider_id.as_deref(), Some("beowulf://hpc/node-0"));
    let st = bm.status.clone().unwrap();
    assert_eq!(st.initialization.unwrap().provisioned, Some(true));
    assert_eq!(st.ready, Some(true));
    let addrs: Vec<(String, String)> = st
        .addresses
        .iter()
        .map(|a| (a.type_.clone(), a.address.clone()))
        .collect();
    assert_eq!(
        addrs,
        [
            ("Hostname".into(), "node-0".into()),
            ("InternalIP".into(), "127.0.0.10".into())
        ]
    );
    assert_eq!(st.failure_domain.as_deref(), Some("rack-1"));
    assert_eq!(ready(&bm), ("True".into(), "Provisioned".into()));
    let h = e.hosts().get("node-0").await.unwrap();
    let hs = h.status.unwrap();
    assert_eq!(hs.state, beowulf::api::host::HostStateName::Provisioned);
    assert_eq!(hs.last_boot_phase.as_deref(), Some("callback"));
    assert_eq!(hs.power_state.as_deref(), Some("on"));

    // Secrets never reach status.
    for text in [
        serde_json::to_string(&bm).unwrap(),
        serde_json::to_string(&e.hosts().get("node-0").await.unwrap()).unwrap(),
    ] {
        assert!(!text.contains(BMC_PASSWORD));
        assert!(!text.contains("joined-with-token"));
    }
    assert!(
        !format!("{profile:?}").contains("joined-with-token"),
        "BootProfile Debug redacts user-data"
    );
}

/// One host claimed by `m0` and booting: the node has fetched its script and NoCloud data, and the manager
/// has reconciled since (the boot is in the host's status). Returns the environment and that boot.
async fn booting_env() -> (Env, NodeBoot) {
    let e = env(standard(true, 1, &["m0"])).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    e.advance(30);
    let boot = e.node_boots(0).await;
    e.reconcile_machine("m0").await;
    (e, boot)
}

/// A manager restart in the middle of a boot: the new process rebuilds the boot from the host's status (the
/// token's digest and the last phase), so the node finishes it with the token it already has; nothing is
/// power-cycled and no second token is issued. The status never holds the token itself.
#[tokio::test]
async fn a_restarted_manager_serves_the_boot_in_progress_on() {
    let (e, boot) = booting_env().await;
    let status = e.hosts().get("node-0").await.unwrap().status.unwrap();
    let live = status
        .live_boot
        .clone()
        .expect("the boot in progress is in the status");
    assert_eq!(live.phase.as_deref(), Some("metadata"));
    assert_eq!(
        live.token_sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            boot.token.as_bytes()
        ))
    );
    let text = serde_json::to_string(&e.hosts().get("node-0").await.unwrap()).unwrap();
    assert!(
        !text.contains(&boot.token),
        "the token itself in the status"
    );
    let ops = e.bmc.ops();

    // A new process: its boot plane has served nothing, the status has it all.
    let r = e.restarted().await;
    e.advance(10);
    r.reconcile_machine("m0").await;
    assert_eq!(r.bmc.ops(), ops, "no power cycle, no new boot");
    assert!(
        r.boot.profile("hpc/node-0").is_some(),
        "the profile is served again"
    );
    // The node, still holding its token, fetches its data and calls back to the new process.
    let (code, user_data) = r
        .get(0, &format!("/nocloud/{}/user-data", boot.token))
        .await;
    assert_eq!((code, user_data.as_str()), (200, USER_DATA));
    assert_eq!(r.node_calls_back(0, &boot.token).await, 200);
    r.reconcile_machine("m0").await;
    let bm = r.machines().get("m0").await.unwrap();
    assert_eq!(bm.spec.provider_id.as_deref(), Some("beowulf://hpc/node-0"));
    let hs = r.hosts().get("node-0").await.unwrap().status.unwrap();
    assert_eq!(hs.boot_attempt, 1, "the same boot");
    assert_eq!(hs.live_boot, None, "a finished boot keeps nothing");
    assert_eq!(r.bmc.ops(), ops);
}

/// The controls: a boot whose token expired, or a new leader whose boot plane is elsewhere (the node would
/// never reach it), boot the host again, as before.
#[tokio::test]
async fn a_new_leader_elsewhere_boots_again() {
    let (e, _) = booting_env().await;
    let ops = e.bmc.ops();
    let r = e.other_replica().await;
    r.reconcile_machine("m0").await;
    assert_ne!(r.bmc.ops(), ops, "booted again");
}

#[tokio::test]
async fn a_restarted_manager_without_the_boot_in_the_status_boots_again() {
    let (e, boot) = booting_env().await;
    let ops = e.bmc.ops();
    // Past the token's lifetime: what the status kept is of no use.
    e.advance(3600);
    let r = e.restarted().await;
    r.reconcile_machine("m0").await;
    assert_ne!(r.bmc.ops(), ops, "booted again");
    assert_eq!(r.node_calls_back(0, &boot.token).await, 403);
}

#[tokio::test]
async fn noop_reconcile_leaves_resource_versions_unchanged() {
    let e = env(standard(true, 1, &["m0"])).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    e.advance(30);
    e.node_boots_and_calls_back(0).await;
    e.reconcile_machine("m0").await;
    e.reconcile_machine("m0").await; // settle the providerID write
    let before = (
        e.machines().get("m0").await.unwrap().resource_version(),
        e.hosts().get("node-0").await.unwrap().resource_version(),
    );
    e.advance(3600);
    for _ in 0..3 {
        e.reconcile_machine("m0").await;
    }
    let after = (
        e.machines().get("m0").await.unwrap().resource_version(),
        e.hosts().get("node-0").await.unwrap().resource_version(),
    );
    assert_eq!(before, after);
    // And a host reconcile of an idle, available host writes nothing either.
    let e = env(standard(true, 1, &[])).await;
    e.register_hosts(1).await;
    let rv = e.hosts().get("node-0").await.unwrap().resource_version();
    e.advance(600);
    e.reconcile_host("node-0").await;
    assert_eq!(
        e.hosts().get("node-0").await.unwrap().resource_version(),
        rv
    );
}

#[tokio::test]
async fn paused_cluster_stops_everything() {
    let mut objs = standard(true, 1, &["m0"]);
    objs[0] = cluster_obj(true, true);
    let e = env(objs).await;
    e.register_hosts(1).await;
    assert_eq!(e.reconcile_machine("m0").await, Action::await_change());
    let bm = e.machines().get("m0").await.unwrap();
    let paused = bm
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Paused")
        .unwrap();
    assert_eq!(
        (paused.status.as_str(), paused.reason.as_str()),
        ("True", "Paused")
    );
    assert!(bm.finalizers().is_empty());
    assert!(
        e.hosts()
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .is_none()
    );
    assert!(e.bmc.ops().is_empty());
}

#[tokio::test]
async fn paused_annotation_on_the_machine_also_pauses() {
    let mut objs = standard(true, 1, &["m0"]);
    for o in &mut objs {
        if o["kind"] == "BeowulfMachine" {
            o["metadata"]["annotations"] = json!({"cluster.x-k8s.io/paused": ""});
        }
    }
    let e = env(objs).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    assert!(
        e.hosts()
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .is_none()
    );
    assert!(e.bmc.ops().is_empty());
}

#[tokio::test]
async fn no_bootstrap_secret_yet_waits_without_claiming() {
    let e = env(standard(false, 1, &["m0"])).await;
    e.register_hosts(1).await;
    assert_eq!(e.reconcile_machine("m0").await, Action::await_change());
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(
        ready(&bm),
        ("False".into(), "WaitingForBootstrapData".into())
    );
    assert!(
        e.hosts()
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .is_none()
    );
    assert!(e.bmc.ops().is_empty());
}

#[tokio::test]
async fn cluster_infrastructure_not_ready_waits() {
    let mut objs = standard(true, 1, &["m0"]);
    objs[0] = cluster_obj(false, false);
    let e = env(objs).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(
        ready(&bm),
        ("False".into(), "WaitingForClusterInfrastructure".into())
    );
    assert!(e.bmc.ops().is_empty());
}

#[tokio::test]
async fn no_owner_machine_does_nothing() {
    let mut objs = standard(true, 1, &["m0"]);
    for o in &mut objs {
        if o["kind"] == "BeowulfMachine" {
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("ownerReferences");
        }
    }
    let e = env(objs).await;
    let rv = e.machines().get("m0").await.unwrap().resource_version();
    assert_eq!(e.reconcile_machine("m0").await, Action::await_change());
    assert_eq!(
        e.machines().get("m0").await.unwrap().resource_version(),
        rv,
        "no finalizer before the owner exists"
    );
}

#[tokio::test]
async fn no_host_available_sets_condition_and_requeues() {
    let e = env(standard(true, 0, &["m0"])).await;
    let action = e.reconcile_machine("m0").await;
    assert_eq!(action, Action::requeue(machine::NO_HOST_REQUEUE));
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(ready(&bm), ("False".into(), "NoHostAvailable".into()));
}

#[tokio::test]
async fn host_selector_and_registration_gate_the_claim() {
    let mut objs = standard(true, 2, &["m0"]);
    for o in &mut objs {
        if o["metadata"]["name"] == "node-0" && o["kind"] == "BeowulfHost" {
            o["metadata"]["labels"] = json!({"role": "storage"});
        }
    }
    let e = env(objs).await;
    // node-1 not registered yet (state registering): not claimable.
    e.reconcile_host("node-0").await;
    e.reconcile_machine("m0").await;
    assert_eq!(
        ready(&e.machines().get("m0").await.unwrap()).1,
        "NoHostAvailable"
    );
    e.reconcile_host("node-1").await;
    e.reconcile_machine("m0").await;
    assert_eq!(
        e.machines()
            .get("m0")
            .await
            .unwrap()
            .spec
            .host_ref
            .unwrap()
            .name,
        "node-1"
    );
    assert!(
        e.hosts()
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .is_none()
    );
}

/// `status.hardware` as the host controller stores it: an x86_64 inspection report through the real parser.
/// `disks`: (kernel name, bytes, rotational).
fn hardware(threads: u32, memory_gib: u64, disks: &[(&str, u64, bool)], gpus: u8) -> Value {
    let disks: Vec<Value> = disks
        .iter()
        .map(|(name, size, rot)| json!({"name": name, "sizeBytes": size, "rotational": rot}))
        .collect();
    let pci: Vec<Value> = (0..gpus)
        .map(|i| json!({"address": format!("0000:0{i}:00.0"), "class": "0x030200", "vendor": "0x10de", "device": "0x2330"}))
        .collect();
    let report = json!({
        "version": 1,
        "cpu": {"architecture": "x86_64", "sockets": 1, "cores": threads / 2, "threads": threads},
        "memory": {"bytes": memory_gib << 30},
        "disks": disks,
        "nics": [{"name": "eth0", "mac": "52:54:00:aa:00:01", "speedMbps": 25000, "carrier": true}],
        "pci": pci,
    });
    let hw = Hardware::from_report(&serde_json::to_vec(&report).unwrap()).unwrap();
    serde_json::to_value(hw).unwrap()
}

const TB: u64 = 1_000_000_000_000;

/// `standard(true, 3, machines)` with the three hosts available and inspected as they would be after
/// registration: node-0 small (8 threads, 16 GiB, an HDD), node-1 medium (32 threads, 128 GiB, an SSD),
/// node-2 big (64 threads, 512 GiB, an NVMe and an HDD).
fn inspected(machines: &[&str], requirements: &[(&str, Value)]) -> Vec<Value> {
    let mut objs = standard(true, 3, machines);
    let hw = [
        hardware(8, 16, &[("sda", TB / 2, true)], 0),
        hardware(32, 128, &[("sda", TB, false)], 0),
        hardware(
            64,
            512,
            &[("nvme0n1", 2 * TB, false), ("sda", 4 * TB, true)],
            0,
        ),
    ];
    for o in &mut objs {
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        if o["kind"] == "BeowulfHost" {
            let i: usize = name.trim_start_matches("node-").parse().unwrap();
            o["status"] = json!({"state": "available", "powerState": "off", "hardware": hw[i]});
        }
        if o["kind"] == "BeowulfMachine"
            && let Some((_, r)) = requirements.iter().find(|(m, _)| *m == name)
        {
            o["spec"]["hardwareRequirements"] = r.clone();
        }
    }
    objs
}

fn ready_message(bm: &BeowulfMachine) -> String {
    let c = bm
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready");
    c.expect("Ready condition").message.clone()
}

async fn consumers(e: &Env) -> Vec<(String, Option<String>)> {
    let mut out: Vec<_> = e
        .hosts()
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.name_any(), h.spec.consumer_ref.map(|c| c.name)))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn hardware_requirements_claim_the_host_that_meets_them() {
    let e = env(inspected(
        &["m0", "m1", "m2"],
        &[
            // The big host's memory and an NVMe disk.
            (
                "m0",
                json!({"memory": "512Gi", "disks": [{"type": "nvme", "minSize": "1T"}]}),
            ),
            // A quantity may be a plain integer (YAML's `memory: 107374182400`): 100 GiB.
            (
                "m1",
                json!({"cpuThreads": 16, "memory": 107_374_182_400u64, "disks": [{"type": "ssd"}]}),
            ),
            // An empty object requires nothing.
            ("m2", json!({})),
        ],
    ))
    .await;
    for m in ["m0", "m1", "m2"] {
        e.reconcile_machine(m).await;
    }
    let host_of = |bm: BeowulfMachine| bm.spec.host_ref.map(|r| r.name);
    for (m, host) in [("m0", "node-2"), ("m1", "node-1"), ("m2", "node-0")] {
        let bm = e.machines().get(m).await.unwrap();
        assert_eq!(host_of(bm), Some(host.to_string()), "{m}");
    }
    assert_eq!(
        consumers(&e).await,
        [("node-0", "m2"), ("node-1", "m1"), ("node-2", "m0")]
            .map(|(h, m)| (h.to_string(), Some(m.to_string())))
    );
}

#[tokio::test]
async fn impossible_hardware_requirements_say_which_excluded_how_many() {
    let mut objs = inspected(
        &["m0"],
        &[(
            "m0",
            json!({"memory": "256Gi", "gpus": {"vendor": "nvidia"}}),
        )],
    );
    // node-3: available but never inspected; node-4: big with a GPU, but not selected by the machine's
    // hostSelector, so it is not counted at all.
    let mut fresh = host_obj("node-3", 3);
    fresh["status"] = json!({"state": "available", "powerState": "off"});
    objs.push(fresh);
    let mut storage = host_obj("node-4", 4);
    storage["metadata"]["labels"] = json!({"role": "storage"});
    storage["status"] = json!({"state": "available", "powerState": "off",
                               "hardware": hardware(64, 512, &[], 1)});
    objs.push(storage);
    let e = env(objs).await;
    let action = e.reconcile_machine("m0").await;
    assert_eq!(action, Action::requeue(machine::NO_HOST_REQUEUE));
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(ready(&bm), ("False".into(), "NoHostAvailable".into()));
    assert_eq!(
        ready_message(&bm),
        "no host meets the hardware requirements: 2 hosts have less than 256Gi of memory, \
         1 host has no nvidia GPU, 1 host has not been inspected"
    );
    assert_eq!(bm.spec.host_ref, None);
    assert!(consumers(&e).await.iter().all(|(_, c)| c.is_none()));
}

#[tokio::test]
async fn invalid_hardware_requirements_claim_nothing() {
    let e = env(inspected(&["m0"], &[("m0", json!({"memory": "256GB"}))])).await;
    assert_eq!(e.reconcile_machine("m0").await, Action::await_change());
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(
        ready(&bm),
        ("False".into(), "InvalidHardwareRequirements".into())
    );
    assert_eq!(
        ready_message(&bm),
        "hardwareRequirements.memory: \"256GB\" is not a quantity: unknown suffix \"GB\" (use Ki, Mi, Gi, \
         Ti, Pi, Ei, k, M, G, T, P, E, an exponent (e12) or none)"
    );
    assert_eq!(bm.spec.host_ref, None);
    assert!(consumers(&e).await.iter().all(|(_, c)| c.is_none()));
}

#[tokio::test]
async fn two_machines_racing_for_one_host_only_one_wins() {
    let e = env(standard(true, 1, &["m0", "m1"])).await;
    e.register_hosts(1).await;
    // Both read the same free host, then both try to claim it with that resourceVersion.
    let snapshot = e.hosts().get("node-0").await.unwrap();
    let m0 = e.machines().get("m0").await.unwrap();
    let m1 = e.machines().get("m1").await.unwrap();
    let hosts = e.hosts();
    let (a, b) = tokio::join!(
        machine::claim(&hosts, &snapshot, &m0),
        machine::claim(&hosts, &snapshot, &m1)
    );
    let wins = [a.unwrap().is_some(), b.unwrap().is_some()];
    assert_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "exactly one claim succeeds: {wins:?}"
    );
    let holder = e
        .hosts()
        .get("node-0")
        .await
        .unwrap()
        .spec
        .consumer_ref
        .unwrap()
        .name;
    assert_eq!(holder, if wins[0] { "m0" } else { "m1" });

    // Whole reconciles, concurrently, on a fresh environment.
    let e = env(standard(true, 1, &["m0", "m1"])).await;
    e.register_hosts(1).await;
    let (r0, r1) = tokio::join!(e.reconcile_machine("m0"), e.reconcile_machine("m1"));
    let _ = (r0, r1);
    let bm0 = e.machines().get("m0").await.unwrap();
    let bm1 = e.machines().get("m1").await.unwrap();
    let holders: Vec<&str> = [&bm0, &bm1]
        .iter()
        .filter_map(|m| m.spec.host_ref.as_ref().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(holders, ["node-0"], "one machine holds the host");
    let holder = e
        .hosts()
        .get("node-0")
        .await
        .unwrap()
        .spec
        .consumer_ref
        .unwrap()
        .name;
    let loser = if holder == "m0" { &bm1 } else { &bm0 };
    assert_eq!(ready(loser).1, "NoHostAvailable");
}

/// A host store filled from one API list: what the host controller's reflector holds after its first list
/// (it is not updated afterwards, so it lags behind every later write, the worst case for claims).
async fn host_cache(e: &Env) -> Arc<HostCache> {
    let (store, mut writer) = reflector::store::<BeowulfHost>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for h in e.hosts().list(&Default::default()).await.unwrap() {
        writer.apply_watcher_event(&watcher::Event::InitApply(h));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    Arc::new(HostCache::new(store))
}

impl Env {
    /// This environment's context, claiming from `cache` (as `beowulf manager` does).
    fn ctx_with(&self, cache: Arc<HostCache>) -> Arc<Context> {
        let mut ctx = Context::new(self.client.clone(), self.bmc.clone(), self.boot.clone());
        let c = self.clock.clone();
        ctx.clock = Arc::new(move || c.load(Ordering::SeqCst));
        ctx.hosts = Some(cache);
        Arc::new(ctx)
    }
    async fn reconcile_machine_with(&self, name: &str, ctx: Arc<Context>) {
        let m = self.machines().get(name).await.unwrap();
        machine::reconcile(Arc::new(m), ctx).await.unwrap();
    }
}

#[tokio::test]
async fn claims_from_a_lagging_host_cache_never_share_a_host() {
    let e = env(standard(true, 3, &["m0", "m1", "m2", "m3"])).await;
    e.register_hosts(3).await;
    let cache = host_cache(&e).await;
    assert_eq!(cache.hosts(NS).await.unwrap().len(), 3);
    let ctx = e.ctx_with(cache.clone());
    for m in ["m0", "m1", "m2", "m3"] {
        e.reconcile_machine_with(m, ctx.clone()).await;
    }
    let mut held: Vec<(String, String)> = Vec::new();
    for m in ["m0", "m1", "m2"] {
        let bm = e.machines().get(m).await.unwrap();
        let host = bm.spec.host_ref.expect("claimed").name;
        let h = e.hosts().get(&host).await.unwrap();
        assert_eq!(h.spec.consumer_ref.unwrap().name, m);
        held.push((m.to_string(), host));
    }
    assert_eq!(
        held,
        [("m0", "node-0"), ("m1", "node-1"), ("m2", "node-2")]
            .map(|(a, b)| (a.to_string(), b.to_string())),
        "in name order, one host each"
    );
    let bm3 = e.machines().get("m3").await.unwrap();
    assert_eq!(bm3.spec.host_ref, None);
    assert_eq!(ready(&bm3).1, "NoHostAvailable");
    // The store still shows all three free; the cache knows they were claimed at those versions.
    assert!(cache.hosts(NS).await.unwrap().is_empty());
    // Once the store catches up (newer resourceVersions), it is the store that is believed again.
    let fresh = host_cache(&e).await;
    let seen = fresh.hosts(NS).await.unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|h| h.spec.consumer_ref.is_some()));
}

#[tokio::test]
async fn two_managers_with_stale_caches_racing_for_one_host_only_one_wins() {
    let e = env(standard(true, 1, &["m0", "m1"])).await;
    e.register_hosts(1).await;
    // Two processes (two caches), both sure node-0 is free: the guarded patch decides.
    let (c0, c1) = (
        e.ctx_with(host_cache(&e).await),
        e.ctx_with(host_cache(&e).await),
    );
    tokio::join!(
        e.reconcile_machine_with("m0", c0),
        e.reconcile_machine_with("m1", c1)
    );
    let bm0 = e.machines().get("m0").await.unwrap();
    let bm1 = e.machines().get("m1").await.unwrap();
    let holders: Vec<&str> = [&bm0, &bm1]
        .iter()
        .filter_map(|m| m.spec.host_ref.as_ref().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(holders, ["node-0"], "one machine holds the host");
    let holder = e
        .hosts()
        .get("node-0")
        .await
        .unwrap()
        .spec
        .consumer_ref
        .unwrap()
        .name;
    let loser = if holder == "m0" { &bm1 } else { &bm0 };
    assert_eq!(ready(loser).1, "NoHostAvailable");
}

// ---------------------------------------------------------------- spreading across failure domains

const MD: &str = "cluster.x-k8s.io/deployment-name";

/// Four available hosts in two racks, node-0 and node-1 in rack-1, node-2 and node-3 in rack-2 (so name order
/// alone puts the first two claims in rack-1), and `machines`: (name, MachineDeployment, Machine failure
/// domain). CAPI labels both the Machine and the BeowulfMachine of a MachineDeployment with its name.
fn racks(machines: &[(&str, Option<&str>, Option<&str>)]) -> Vec<Value> {
    let names: Vec<&str> = machines.iter().map(|m| m.0).collect();
    let mut objs = standard(true, 4, &names);
    for o in &mut objs {
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        let (group, fd) = machines
            .iter()
            .find(|m| m.0 == name)
            .map_or((None, None), |m| (m.1, m.2));
        match o["kind"].as_str().unwrap() {
            "BeowulfHost" if name == "node-2" || name == "node-3" => {
                o["spec"]["failureDomain"] = json!("rack-2");
            }
            "BeowulfMachine" => {
                if let Some(g) = group {
                    o["metadata"]["labels"][MD] = json!(g);
                }
            }
            "Machine" => {
                if let Some(g) = group {
                    o["metadata"]["labels"][MD] = json!(g);
                }
                if let Some(fd) = fd {
                    o["spec"]["failureDomain"] = json!(fd);
                }
                assert_valid("cluster.x-k8s.io_machines.yaml", o);
            }
            _ => {}
        }
    }
    objs
}

impl Env {
    /// The host `machine` holds (`spec.hostRef`), checked against the host's consumerRef.
    async fn host_of(&self, machine: &str) -> Option<String> {
        let bm = self.machines().get(machine).await.unwrap();
        let host = bm.spec.host_ref?.name;
        let h = self.hosts().get(&host).await.unwrap();
        assert_eq!(h.spec.consumer_ref.unwrap().name, machine);
        Some(host)
    }
    /// The failure domain of the host `machine` holds.
    async fn rack_of(&self, machine: &str) -> String {
        let host = self.host_of(machine).await.expect("claimed");
        let h = self.hosts().get(&host).await.unwrap();
        h.spec.failure_domain.unwrap()
    }
    /// The group label on `host`.
    async fn group_on(&self, host: &str) -> Option<String> {
        let h = self.hosts().get(host).await.unwrap();
        h.labels().get(spread::GROUP_LABEL).cloned()
    }
}

#[tokio::test]
async fn machines_of_one_deployment_spread_across_failure_domains() {
    let md = Some("md-0");
    let e = env(racks(&[
        ("m0", md, None),
        ("m1", md, None),
        ("m2", md, None),
        ("m3", md, None),
    ]))
    .await;
    e.register_hosts(4).await;
    // One after the other: the second goes to the rack that holds none of the deployment yet; then ties are
    // broken by name.
    let mut held = Vec::new();
    for m in ["m0", "m1", "m2", "m3"] {
        e.reconcile_machine(m).await;
        held.push(e.host_of(m).await.expect("claimed"));
    }
    assert_eq!(held, ["node-0", "node-2", "node-1", "node-3"]);
    assert_eq!(e.rack_of("m0").await, "rack-1");
    assert_eq!(e.rack_of("m1").await, "rack-2");
    // The claim recorded the group on each host, next to the consumerRef.
    for h in &held {
        assert_eq!(e.group_on(h).await.as_deref(), Some("md-0"), "{h}");
        let labels = e.hosts().get(h).await.unwrap().labels().clone();
        assert_eq!(labels.get("role").map(String::as_str), Some("worker"));
    }
}

#[tokio::test]
async fn concurrent_claims_from_a_lagging_host_cache_spread_across_failure_domains() {
    let md = Some("md-0");
    let e = env(racks(&[
        ("m0", md, None),
        ("m1", md, None),
        ("m2", md, None),
        ("m3", md, None),
    ]))
    .await;
    e.register_hosts(4).await;
    // The store never shows the claims: every count of the deployment comes from the cache's reservations.
    let cache = host_cache(&e).await;
    let ctx = e.ctx_with(cache.clone());
    tokio::join!(
        e.reconcile_machine_with("m0", ctx.clone()),
        e.reconcile_machine_with("m1", ctx.clone())
    );
    let mut racks = vec![e.rack_of("m0").await, e.rack_of("m1").await];
    racks.sort();
    assert_eq!(racks, ["rack-1", "rack-2"], "one in each rack");
    assert_eq!(
        cache.group_counts(NS, "md-0"),
        HashMap::from([("rack-1".into(), 1), ("rack-2".into(), 1)])
    );
    assert!(cache.group_counts(NS, "md-1").is_empty());
    // Two more, still from the stale store: one more in each rack.
    tokio::join!(
        e.reconcile_machine_with("m2", ctx.clone()),
        e.reconcile_machine_with("m3", ctx.clone())
    );
    let mut racks = vec![e.rack_of("m2").await, e.rack_of("m3").await];
    racks.sort();
    assert_eq!(racks, ["rack-1", "rack-2"]);
    assert_eq!(
        cache.group_counts(NS, "md-0"),
        HashMap::from([("rack-1".into(), 2), ("rack-2".into(), 2)])
    );
    // Once the store shows the claims, the hosts' labels count instead of the reservations.
    let fresh = host_cache(&e).await;
    assert_eq!(
        fresh.group_counts(NS, "md-0"),
        HashMap::from([("rack-1".into(), 2), ("rack-2".into(), 2)])
    );
}

#[tokio::test]
async fn a_machine_with_a_failure_domain_takes_only_its_own() {
    let md = Some("md-0");
    let rack1 = Some("rack-1");
    let e = env(racks(&[
        ("m0", md, rack1),
        ("m1", md, rack1),
        ("m2", md, rack1),
        ("m3", md, None),
    ]))
    .await;
    e.register_hosts(4).await;
    // Both in rack-1, though rack-2 holds none of the deployment.
    e.reconcile_machine("m0").await;
    e.reconcile_machine("m1").await;
    assert_eq!(e.host_of("m0").await.as_deref(), Some("node-0"));
    assert_eq!(e.host_of("m1").await.as_deref(), Some("node-1"));
    assert_eq!(e.group_on("node-0").await.as_deref(), Some("md-0"));
    assert_eq!(e.group_on("node-1").await.as_deref(), Some("md-0"));
    // rack-1 is full: m2 waits although rack-2 has free hosts.
    assert_eq!(
        e.reconcile_machine("m2").await,
        Action::requeue(machine::NO_HOST_REQUEUE)
    );
    let bm2 = e.machines().get("m2").await.unwrap();
    assert_eq!(ready(&bm2).1, "NoHostAvailable");
    assert_eq!(e.host_of("m2").await, None);
    // A machine of the deployment without a failure domain goes to rack-2.
    e.reconcile_machine("m3").await;
    assert_eq!(e.rack_of("m3").await, "rack-2");
}

#[tokio::test]
async fn machines_without_a_group_keep_name_order() {
    let e = env(racks(&[("m0", None, None), ("m1", None, None)])).await;
    e.register_hosts(4).await;
    e.reconcile_machine("m0").await;
    e.reconcile_machine("m1").await;
    assert_eq!(e.host_of("m0").await.as_deref(), Some("node-0"));
    assert_eq!(e.host_of("m1").await.as_deref(), Some("node-1"));
    assert_eq!(e.group_on("node-0").await, None);
    assert_eq!(e.group_on("node-1").await, None);
    // The same through a lagging host cache.
    let e = env(racks(&[("m0", None, None), ("m1", None, None)])).await;
    e.register_hosts(4).await;
    let ctx = e.ctx_with(host_cache(&e).await);
    e.reconcile_machine_with("m0", ctx.clone()).await;
    e.reconcile_machine_with("m1", ctx).await;
    assert_eq!(e.host_of("m0").await.as_deref(), Some("node-0"));
    assert_eq!(e.host_of("m1").await.as_deref(), Some("node-1"));
}

#[tokio::test]
async fn releasing_a_host_clears_its_group_label() {
    // Claimed and provisioned by a machine of md-0, then deleted (re-seeded as in
    // deletion_powers_off_releases_then_drops_finalizer).
    let e = env(racks(&[("m0", Some("md-0"), None)])).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    e.node_boots_and_calls_back(0).await;
    e.reconcile_machine("m0").await;
    assert_eq!(e.group_on("node-0").await.as_deref(), Some("md-0"));
    let bm = e.machines().get("m0").await.unwrap();
    let host = e.hosts().get("node-0").await.unwrap();

    let mut objs = standard(true, 0, &[]);
    objs.push(machine_obj("m0", Some("boot-data")));
    objs.push(deleting(without_rv(&bm)));
    objs.push(without_rv(&host));
    let d = env(objs).await;
    d.bmc
        .power
        .lock()
        .unwrap()
        .insert("ipmi://127.0.0.1:6230".into(), true);
    d.reconcile_machine("m0").await; // power off
    assert_eq!(d.group_on("node-0").await.as_deref(), Some("md-0"));
    d.reconcile_machine("m0").await; // off: released
    let h = d.hosts().get("node-0").await.unwrap();
    assert!(h.spec.consumer_ref.is_none());
    assert_eq!(
        h.labels(),
        &BTreeMap::from([
            ("role".to_string(), "worker".to_string()),
            (spread::PREVIOUS_GROUP_LABEL.to_string(), "md-0".to_string())
        ]),
        "the group label went with the consumerRef, recorded as the previous group; other labels stay"
    );
    assert_eq!(
        h.annotations()[spread::RELEASED_AT_ANNOTATION],
        d.clock.load(Ordering::SeqCst).to_string()
    );
}

#[tokio::test]
async fn a_replacement_waits_for_the_host_its_deleted_predecessor_releases_instead_of_taking_a_spare()
 {
    // `old` (md-0) holds node-1 and its Machine is being deleted; `new` (md-0) is its replacement; node-0 is
    // a free spare that comes first by name.
    let mut objs = with_released_host("none", 0, &[("old", "md-0"), ("new", "md-0")]);
    for o in &mut objs {
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        match (o["kind"].as_str().unwrap(), name.as_str()) {
            ("Machine", "old") => {
                o["metadata"]["deletionTimestamp"] = json!("1970-01-12T13:41:40Z"); // the clock, minus 5 min
                o["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
            }
            ("BeowulfMachine", "old") => o["spec"]["hostRef"] = json!({"name": "node-1"}),
            ("BeowulfHost", "node-1") => {
                o["spec"]["consumerRef"] = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
                                                  "kind": "BeowulfMachine", "name": "old", "uid": "uid-bm-old"});
                o["metadata"]["labels"][spread::GROUP_LABEL] = json!("md-0");
            }
            _ => {}
        }
    }
    let e = env(objs).await;
    e.register_hosts(2).await;
    let a = e.reconcile_machine("new").await;
    assert_eq!(a, Action::requeue(std::time::Duration::from_secs(5)));
    assert_eq!(e.host_of("new").await, None, "the spare is not taken");
    let bm = e.machines().get("new").await.unwrap();
    assert_eq!(ready(&bm).1, "WaitingForHostRelease");
    assert!(ready_message(&bm).contains("Machine old of the same group is being deleted"));

    // Released (what the old BeowulfMachine's deletion does): the replacement takes exactly that host.
    let mut metadata = spread::release_metadata(Some("md-0"), e.clock.load(Ordering::SeqCst));
    metadata["labels"]["role"] = json!("worker");
    e.hosts()
        .patch(
            "node-1",
            &Default::default(),
            &kube::api::Patch::Merge(&json!({"metadata": metadata, "spec": {"consumerRef": null}})),
        )
        .await
        .unwrap();
    e.reconcile_host("node-1").await; // registered: it was claimed (so left alone) until now
    e.reconcile_machine("new").await;
    assert_eq!(e.host_of("new").await.as_deref(), Some("node-1"));

    // A deletion stuck for longer than the hold (a BMC that never answers) no longer holds a replacement back.
    let mut objs = with_released_host("none", 0, &[("old", "md-0"), ("new", "md-0")]);
    for o in &mut objs {
        if o["kind"] == "Machine" && o["metadata"]["name"] == "old" {
            o["metadata"]["deletionTimestamp"] = json!("1970-01-12T12:56:40Z"); // 50 min ago
            o["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
        }
    }
    let e = env(objs).await;
    e.register_hosts(2).await;
    e.reconcile_machine("new").await;
    assert_eq!(e.host_of("new").await.as_deref(), Some("node-0"));
}

/// Two free hosts, one of them (`released`) freed by a machine of md-0 `ago` seconds before the clock.
fn with_released_host(released: &str, ago: i64, machines: &[(&str, &str)]) -> Vec<Value> {
    let names: Vec<&str> = machines.iter().map(|m| m.0).collect();
    let mut objs = standard(true, 2, &names);
    for o in &mut objs {
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        match o["kind"].as_str().unwrap() {
            "BeowulfHost" if name == released => {
                o["metadata"]["labels"][spread::PREVIOUS_GROUP_LABEL] = json!("md-0");
                o["metadata"]["annotations"] =
                    json!({spread::RELEASED_AT_ANNOTATION: (1_000_000 - ago).to_string()});
            }
            "BeowulfMachine" | "Machine" => {
                let group = machines.iter().find(|m| m.0 == name).unwrap().1;
                o["metadata"]["labels"][MD] = json!(group);
            }
            _ => {}
        }
    }
    objs
}

#[tokio::test]
async fn a_rollouts_replacement_gets_the_host_its_group_released_and_others_wait() {
    // node-1 was released by md-0 a minute ago; node-0 is free and comes first by name.
    let e = env(with_released_host("node-1", 60, &[("new", "md-0")])).await;
    e.register_hosts(2).await;
    e.reconcile_machine("new").await;
    assert_eq!(e.host_of("new").await.as_deref(), Some("node-1"));
    let h = e.hosts().get("node-1").await.unwrap();
    assert_eq!(
        h.labels().get(spread::GROUP_LABEL).map(String::as_str),
        Some("md-0")
    );
    assert!(!h.labels().contains_key(spread::PREVIOUS_GROUP_LABEL));
    assert!(!h.annotations().contains_key(spread::RELEASED_AT_ANNOTATION));

    // Another group's machines take the other host, and not the kept one while the hold lasts.
    let e = env(with_released_host(
        "node-0",
        60,
        &[("a", "md-1"), ("b", "md-1")],
    ))
    .await;
    e.register_hosts(2).await;
    e.reconcile_machine("a").await;
    assert_eq!(e.host_of("a").await.as_deref(), Some("node-1"));
    e.reconcile_machine("b").await;
    assert_eq!(e.host_of("b").await, None);
    let msg = ready_message(&e.machines().get("b").await.unwrap());
    assert!(
        msg.contains(
            "1 released host(s) are kept for the next machine of the group that released them"
        ),
        "{msg}"
    );
    // Once the hold is over, the host is free for anyone.
    e.advance(i64::try_from(spread::REUSE_HOLD.as_secs()).unwrap());
    e.reconcile_machine("b").await;
    assert_eq!(e.host_of("b").await.as_deref(), Some("node-0"));
}

fn deleting(mut v: Value) -> Value {
    v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    v["metadata"]["finalizers"] = json!([MACHINE_FINALIZER]);
    v
}

#[tokio::test]
async fn deletion_powers_off_releases_then_drops_finalizer() {
    // Provision first, then delete: the fake client deletes immediately on DELETE, so the deleting machine is
    // re-seeded with a deletionTimestamp and our finalizer, as the API server would hold it.
    let e = env(standard(true, 1, &["m0"])).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    e.node_boots_and_calls_back(0).await;
    e.reconcile_machine("m0").await;
    let bm = e.machines().get("m0").await.unwrap();
    let host = e.hosts().get("node-0").await.unwrap();
    assert!(e.bmc.is_on("ipmi://127.0.0.1:6230"));

    let mut objs = standard(true, 0, &[]);
    objs.push(machine_obj("m0", Some("boot-data")));
    let mut bmv = serde_json::to_value(&bm).unwrap();
    bmv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    objs.push(deleting(bmv));
    let mut hv = serde_json::to_value(&host).unwrap();
    hv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    objs.push(hv);
    let d = env(objs).await;
    d.bmc
        .power
        .lock()
        .unwrap()
        .insert("ipmi://127.0.0.1:6230".into(), true);

    // Step 1: power off requested; the finalizer stays.
    let a = d.reconcile_machine("m0").await;
    assert!(matches!(a, x if x != Action::await_change()));
    assert_eq!(d.bmc.ops(), ["ipmi://127.0.0.1:6230 off"]);
    let bm = d.machines().get("m0").await.unwrap();
    assert!(
        bm.finalizers().contains(&MACHINE_FINALIZER.to_string()),
        "finalizer kept until released"
    );
    assert_eq!(ready(&bm), ("False".into(), "Deleting".into()));
    assert!(
        d.hosts()
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .is_some()
    );
    assert!(
        d.boot.profile("hpc/node-0").is_none(),
        "boot profile withdrawn"
    );

    // Step 2: the BMC reports off → host available, claim released, finalizer gone (object deleted).
    d.reconcile_machine("m0").await;
    let h = d.hosts().get("node-0").await.unwrap();
    assert!(h.spec.consumer_ref.is_none());
    assert_eq!(
        h.status.unwrap().state,
        beowulf::api::host::HostStateName::Available
    );
    assert!(
        d.machines().get_opt("m0").await.unwrap().is_none(),
        "finalizer removed, object gone"
    );
}

/// `obj` after a DELETE, to seed a fresh environment with (the fake client deletes at once; the API server
/// would keep it with a deletionTimestamp until its finalizers are gone).
fn without_rv<T: serde::Serialize>(obj: &T) -> Value {
    let mut v = serde_json::to_value(obj).unwrap();
    v["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    v
}

fn deleted<T: serde::Serialize>(obj: &T) -> Value {
    let mut v = serde_json::to_value(obj).unwrap();
    v["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    // Deleted: the API server keeps the object while it has finalizers (ours among them).
    v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    v
}

#[tokio::test]
async fn deleting_a_provisioned_host_deprovisions_it_before_the_finalizer_goes() {
    let e = env(standard(true, 1, &["m0"])).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    e.node_boots_and_calls_back(0).await;
    e.reconcile_machine("m0").await;
    let host = e.hosts().get("node-0").await.unwrap();
    assert!(host.finalizers().contains(&HOST_FINALIZER.to_string()));
    assert_eq!(
        host.status.as_ref().unwrap().state,
        beowulf::api::host::HostStateName::Provisioned
    );
    let bm = e.machines().get("m0").await.unwrap();
    let profile = e.boot.profile("hpc/node-0").unwrap();

    // The host is deleted while its machine holds it (the API server keeps it: finalizer).
    let mut objs = standard(true, 0, &[]);
    objs.push(machine_obj("m0", Some("boot-data")));
    objs.push(without_rv(&bm));
    objs.push(deleted(&host));
    let d = env(objs).await;
    d.boot.publish(profile).unwrap();
    d.bmc
        .power
        .lock()
        .unwrap()
        .insert("ipmi://127.0.0.1:6230".into(), true);

    // The machine reports it and leaves the host to the host controller (one writer).
    d.reconcile_machine("m0").await;
    let bm = d.machines().get("m0").await.unwrap();
    assert_eq!(ready(&bm), ("False".into(), "HostDeleted".into()));
    assert!(d.bmc.ops().is_empty(), "{:?}", d.bmc.ops());

    // An unreachable BMC keeps the host: nothing is released blind.
    d.bmc.unreachable.store(true, Ordering::SeqCst);
    d.reconcile_host("node-0").await;
    let h = d.hosts().get("node-0").await.unwrap();
    assert!(h.finalizers().contains(&HOST_FINALIZER.to_string()));
    d.bmc.unreachable.store(false, Ordering::SeqCst);

    // Step 1: boot profile withdrawn, power off requested; the finalizer stays until the BMC says off.
    d.reconcile_host("node-0").await;
    assert_eq!(d.bmc.ops(), ["ipmi://127.0.0.1:6230 off"]);
    assert!(d.boot.profile("hpc/node-0").is_none(), "profile withdrawn");
    assert!(
        d.boot.plane().directory.get().host("node-0").is_none(),
        "the boot plane no longer serves it"
    );
    let h = d.hosts().get("node-0").await.unwrap();
    assert!(h.finalizers().contains(&HOST_FINALIZER.to_string()));
    assert_eq!(
        h.status.unwrap().state,
        beowulf::api::host::HostStateName::Deprovisioning
    );
    // Step 2: off → the finalizer goes (and with it the object).
    d.reconcile_host("node-0").await;
    assert!(d.hosts().get_opt("node-0").await.unwrap().is_none());
    assert!(!d.bmc.is_on("ipmi://127.0.0.1:6230"));
}

#[tokio::test]
async fn deleting_an_idle_host_needs_no_bmc() {
    let e = env(standard(true, 1, &[])).await;
    e.register_hosts(1).await;
    let host = e.hosts().get("node-0").await.unwrap();
    assert!(host.finalizers().contains(&HOST_FINALIZER.to_string()));
    let mut objs = standard(true, 0, &[]);
    objs.push(deleted(&host));
    let d = env(objs).await;
    d.bmc.unreachable.store(true, Ordering::SeqCst);
    d.reconcile_host("node-0").await;
    assert!(d.hosts().get_opt("node-0").await.unwrap().is_none());
    assert!(d.bmc.ops().is_empty());
}

#[tokio::test]
async fn bmc_failure_sets_condition_and_retries() {
    let e = env(standard(true, 1, &["m0"])).await;
    e.register_hosts(1).await;
    e.bmc.unreachable.store(true, Ordering::SeqCst);
    let a1 = e.reconcile_machine("m0").await;
    let a2 = e.reconcile_machine("m0").await;
    assert_eq!(a1, Action::requeue(std::time::Duration::from_secs(30)));
    assert_eq!(
        a2,
        Action::requeue(std::time::Duration::from_secs(60)),
        "back-off grows"
    );
    let bm = e.machines().get("m0").await.unwrap();
    let (_, reason) = ready(&bm);
    assert_eq!(reason, "BMCUnreachable");
    let msg = &bm
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        msg.contains("ipmi://127.0.0.1:6230") && !msg.contains(BMC_PASSWORD),
        "{msg}"
    );
    let h = e.hosts().get("node-0").await.unwrap();
    let bmc_cond = h
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "BMCReachable")
        .unwrap();
    assert_eq!(bmc_cond.status, "False");
    assert!(e.bmc.ops().is_empty());

    // The BMC comes back: provisioning proceeds.
    e.bmc.unreachable.store(false, Ordering::SeqCst);
    e.reconcile_machine("m0").await;
    assert_eq!(
        ready(&e.machines().get("m0").await.unwrap()).1,
        "Provisioning"
    );
    assert!(
        e.bmc
            .ops()
            .contains(&"ipmi://127.0.0.1:6230 on".to_string())
    );
}

#[tokio::test]
async fn boot_timeout_power_cycles_and_reports_the_phase() {
    let e = env(standard(true, 1, &["m0"])).await;
    e.register_hosts(1).await;
    e.reconcile_machine("m0").await;
    // The node got as far as its kernel (recorded as the boot plane's HTTP server does for a boot file).
    e.boot.record(
        "hpc/node-0",
        Phase::Kernel,
        e.clock.load(Ordering::SeqCst) + 5,
    );
    e.advance(5 + 301);
    e.reconcile_machine("m0").await;
    let bm = e.machines().get("m0").await.unwrap();
    assert_eq!(
        ready(&bm),
        ("False".into(), "BootStalledAfterKernel".into())
    );
    assert_eq!(
        bm.status.as_ref().unwrap().last_boot_phase.as_deref(),
        Some("kernel")
    );
    let h = e.hosts().get("node-0").await.unwrap().status.unwrap();
    assert_eq!(h.boot_attempt, 2);
    assert!(h.retry_at.is_some());
    assert_eq!(e.bmc.ops().last().unwrap(), "ipmi://127.0.0.1:6230 off");
    e.advance(31);
    e.reconcile_machine("m0").await;
    assert_eq!(
        e.bmc.ops().last().unwrap(),
        "ipmi://127.0.0.1:6230 on",
        "retried after the back-off"
    );
}

#[tokio::test]
async fn cluster_reconcile_sets_provisioned_and_failure_domains() {
    let bc = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "BeowulfCluster",
        "metadata": {"name": "c1", "namespace": NS,
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}]},
        "spec": {"controlPlaneEndpoint": {"host": "10.0.0.100", "port": 6443},
                 "failureDomains": [{"name": "rack-1", "controlPlane": true}, {"name": "rack-2"}]},
    });
    let mut managed = bc.clone();
    managed["metadata"]["name"] = json!("c2");
    managed["metadata"]["annotations"] = json!({"cluster.x-k8s.io/managed-by": "someone"});
    let e = env(vec![cluster_obj(false, false), bc, managed]).await;
    let api: Api<BeowulfCluster> = Api::namespaced(e.client.clone(), NS);
    cluster::reconcile(Arc::new(api.get("c1").await.unwrap()), e.ctx.clone())
        .await
        .unwrap();
    let c = api.get("c1").await.unwrap();
    let st = c.status.clone().unwrap();
    assert_eq!(st.initialization.unwrap().provisioned, Some(true));
    let fds: Vec<&str> = st.failure_domains.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fds, ["rack-1", "rack-2"]);
    assert!(
        c.finalizers()
            .contains(&controllers::CLUSTER_FINALIZER.to_string())
    );
    // The status validates against the shape CAPI reads (v1beta2 failureDomains list).
    let rv = c.resource_version();
    let before = serde_json::to_string_pretty(&c).unwrap();
    cluster::reconcile(Arc::new(c), e.ctx.clone())
        .await
        .unwrap();
    let after = serde_json::to_string_pretty(&api.get("c1").await.unwrap()).unwrap();
    assert_eq!(
        api.get("c1").await.unwrap().resource_version(),
        rv,
        "no-op:\n{before}\n{after}"
    );

    let rv2 = api.get("c2").await.unwrap().resource_version();
    cluster::reconcile(Arc::new(api.get("c2").await.unwrap()), e.ctx.clone())
        .await
        .unwrap();
    let c2 = api.get("c2").await.unwrap();
    assert_eq!(c2.resource_version(), rv2, "externally managed: untouched");
    assert!(c2.status.is_none());
}

#[tokio::test]
async fn secrets_never_reach_logs_or_debug() {
    let t = BmcTarget {
        address: "ipmi://h".into(),
        username: "u".into(),
        password: BMC_PASSWORD.into(),
        cipher_suite: None,
        bmc_key: Some(b"kg-secret".to_vec()),
        insecure_tls: false,
        uefi: true,
    };
    assert!(!format!("{t:?}").contains(BMC_PASSWORD));
    assert!(format!("{t:?}").contains("bmc_key: Some(\"<redacted>\")"));
    assert!(
        !format!("{t:?}").contains("107, 103"),
        "Kg bytes are not printed"
    );
    let _ = Secret::default();
}

#[tokio::test]
async fn ready_transitions_publish_events_without_secrets() {
    let e = env(standard(true, 1, &["m0"])).await;
    let ctx = e.context_with_events();
    e.register_hosts(1).await;
    let run = |ctx: Arc<Context>| async {
        let m = e.machines().get("m0").await.unwrap();
        machine::reconcile(Arc::new(m), ctx).await.unwrap();
    };
    run(ctx.clone()).await;
    run(ctx.clone()).await; // no transition: no new event
    e.node_boots_and_calls_back(0).await;
    run(ctx.clone()).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(e.client.clone(), NS);
    // The host's own events are checked in host_lifecycle_and_bmc_reachability_publish_events_on_the_host.
    let list: Vec<_> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ev| {
            ev.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("BeowulfMachine")
        })
        .collect();
    let mut reasons: Vec<String> = list.iter().filter_map(|ev| ev.reason.clone()).collect();
    reasons.sort();
    assert_eq!(reasons, ["Provisioned", "Provisioning"], "{list:?}");
    let text = serde_json::to_string(&list).unwrap();
    assert!(!text.contains(BMC_PASSWORD) && !text.contains("joined-with-token"));
    assert!(
        list.iter()
            .all(|ev| ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("m0"))
    );
}

#[tokio::test]
async fn leader_election_has_one_winner_and_takes_over_expired_leases() {
    use beowulf::controllers::leader::Elector;
    use k8s_openapi::api::coordination::v1::Lease;
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let api: Api<Lease> = Api::namespaced(client, "beowulf-system");
    let elector = |id: &str| Elector {
        api: api.clone(),
        name: "beowulf-manager".into(),
        identity: id.into(),
        duration: std::time::Duration::from_secs(15),
    };
    let (a, b) = (elector("a"), elector("b"));
    let t0 = jiff::Timestamp::from_second(1_000_000).unwrap();
    let (ra, rb) = tokio::join!(a.try_acquire(t0), b.try_acquire(t0));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra ^ rb, "exactly one leader: a={ra} b={rb}");
    let (leader, follower) = if ra { (&a, &b) } else { (&b, &a) };
    // The leader renews; the follower cannot take a fresh lease.
    let t1 = t0 + jiff::SignedDuration::from_secs(5);
    assert!(leader.try_acquire(t1).await.unwrap());
    assert!(!follower.try_acquire(t1).await.unwrap());
    // Once the leader stops renewing and the lease expires, the follower takes over.
    let t2 = t1 + jiff::SignedDuration::from_secs(16);
    assert!(follower.try_acquire(t2).await.unwrap());
    let lease = api.get("beowulf-manager").await.unwrap().spec.unwrap();
    assert_eq!(
        lease.holder_identity.as_deref(),
        Some(follower.identity.as_str())
    );
    assert_eq!(lease.lease_transitions, Some(1));
    assert!(
        !leader.try_acquire(t2).await.unwrap(),
        "the old leader is now a follower"
    );
}

#[tokio::test]
async fn host_lifecycle_and_bmc_reachability_publish_events_on_the_host() {
    let e = env(standard(true, 1, &["m0"])).await;
    let ctx = e.context_with_events();
    let host = |ctx: Arc<Context>| async {
        let h = e.hosts().get("node-0").await.unwrap();
        host::reconcile(Arc::new(h), ctx).await.unwrap();
    };
    let machine = |ctx: Arc<Context>| async {
        let m = e.machines().get("m0").await.unwrap();
        machine::reconcile(Arc::new(m), ctx).await.unwrap();
    };
    let host_events = || async {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(e.client.clone(), NS);
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|ev| {
                ev.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("BeowulfHost")
            })
            .collect::<Vec<_>>()
    };
    let reasons = |evs: &[k8s_openapi::api::events::v1::Event]| {
        let mut r: Vec<String> = evs.iter().filter_map(|ev| ev.reason.clone()).collect();
        r.sort();
        r
    };

    host(ctx.clone()).await;
    assert_eq!(reasons(&host_events().await), ["Available"]);

    // The BMC stops answering: one warning naming it (not repeated while it stays down), then it recovers.
    e.bmc.unreachable.store(true, Ordering::SeqCst);
    host(ctx.clone()).await;
    host(ctx.clone()).await;
    let evs = host_events().await;
    let down: Vec<_> = evs
        .iter()
        .filter(|ev| ev.reason.as_deref() == Some("BMCUnreachable"))
        .collect();
    assert_eq!(down.len(), 1, "{evs:?}");
    assert_eq!(down[0].type_.as_deref(), Some("Warning"));
    assert!(down[0].series.is_none(), "published once, not as a series");
    let note = down[0].note.clone().unwrap_or_default();
    assert!(note.contains("ipmi://127.0.0.1:6230"), "{note}");
    e.bmc.unreachable.store(false, Ordering::SeqCst);
    host(ctx.clone()).await;
    assert!(reasons(&host_events().await).contains(&"BMCReachable".to_string()));

    // Claimed and booted by a machine: the host's own Provisioning and Provisioned events.
    machine(ctx.clone()).await;
    e.node_boots_and_calls_back(0).await;
    machine(ctx.clone()).await;
    let evs = host_events().await;
    let r = reasons(&evs);
    for want in ["Provisioning", "Provisioned"] {
        assert!(r.contains(&want.to_string()), "{want} missing from {r:?}");
    }
    let text = serde_json::to_string(&evs).unwrap();
    assert!(!text.contains(BMC_PASSWORD) && !text.contains("joined-with-token"));
    assert!(
        evs.iter()
            .all(|ev| ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("node-0"))
    );
}

// ---------------------------------------------------------------- inspection

fn inspector_image_obj() -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "BeowulfImage",
        "metadata": {"name": "inspector", "namespace": NS},
        "spec": {"kernel": {"url": "http://boot/inspector/vmlinuz"}, "initrds": [{"url": "http://boot/inspector/initrd.gz"}],
                 "cmdline": "console=ttyS0 beowulf.inspect={{ inspection_url }}", "format": "live"},
    })
}

/// What `images/inspector` posts (a small machine with one NVMe disk).
const REPORT: &str = r#"{"version": 1,
  "cpu": {"architecture": "x86_64", "model": "QEMU", "sockets": 1, "cores": 2, "threads": 4, "flags": []},
  "memory": {"bytes": 2147483648, "usableBytes": 2000000000},
  "disks": [{"name": "nvme0n1", "sizeBytes": 1000204886016, "rotational": false, "model": null, "serial": "S1",
             "wwn": null, "byPath": null}],
  "nics": [{"name": "eth0", "mac": "52:54:00:00:00:00", "speedMbps": 1000, "carrier": true, "driver": "e1000"}],
  "pci": [], "system": null, "lldp": []}"#;

#[tokio::test]
async fn unclaimed_hosts_are_inspected_when_they_register_and_never_claimed_meanwhile() {
    let mut objects = standard(true, 1, &["m0"]);
    objects.push(inspector_image_obj());
    let e = env(objects).await;
    let ctx = e.context_inspecting(Some("inspector"));
    let reconcile = |ctx: Arc<Context>| {
        let hosts = e.hosts();
        async move {
            let h = hosts.get("node-0").await.unwrap();
            host::reconcile(Arc::new(h), ctx).await.unwrap()
        }
    };
    let state = |h: &BeowulfHost| h.status.as_ref().unwrap().state;
    use beowulf::api::host::HostStateName;

    // Registering → inspecting in one step: powered on into the inspection image.
    reconcile(ctx.clone()).await;
    let h = e.hosts().get("node-0").await.unwrap();
    assert_eq!(state(&h), HostStateName::Inspecting);
    assert_eq!(
        e.bmc.ops(),
        [
            "ipmi://127.0.0.1:6230 bootdev-pxe",
            "ipmi://127.0.0.1:6230 on"
        ]
    );
    // A machine looking for a host finds none: an inspecting host is not available.
    e.reconcile_machine("m0").await;
    assert_eq!(
        ready(&e.machines().get("m0").await.unwrap()).1,
        "NoHostAvailable"
    );
    assert!(
        e.hosts()
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .is_none()
    );

    // The node boots the inspector (no NoCloud seed: it gets no user-data) and posts its report.
    let (status, script) = e.get(0, "/boot/52-54-00-00-00-00.ipxe").await;
    assert_eq!(status, 200);
    assert!(script.contains("http://boot/inspector/vmlinuz"), "{script}");
    let token = script
        .split("/inspection/")
        .nth(1)
        .map(|t| &t[..64])
        .expect("the inspection URL on the command line");
    let post = |body: &'static str| {
        e.node(0)
            .post(format!("http://{}/inspection/{token}", e.http))
            .body(body)
            .send()
    };
    assert_eq!(
        post("{\"version\": 1}").await.unwrap().status().as_u16(),
        400
    );
    assert_eq!(post(REPORT).await.unwrap().status().as_u16(), 200);

    // The report reaches the status; the host is powered off and free again.
    reconcile(ctx.clone()).await;
    let h = e.hosts().get("node-0").await.unwrap();
    let st = h.status.as_ref().unwrap();
    assert_eq!(st.state, HostStateName::Deprovisioning);
    let hw = st.hardware.as_ref().expect("status.hardware");
    assert_eq!((hw.cpu.threads, hw.memory.bytes), (4, 2 << 30));
    assert!(st.inspected_at.is_some());
    let inspected = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Inspected")
        .unwrap();
    assert_eq!(
        (inspected.status.as_str(), inspected.message.as_str()),
        (
            "True",
            "x86_64, 1 socket/2 cores/4 threads, 2 GiB, 1 disk (1 nvme), 1 NIC"
        )
    );
    assert_eq!(e.bmc.ops().last().unwrap(), "ipmi://127.0.0.1:6230 off");
    reconcile(ctx.clone()).await;
    assert_eq!(
        state(&e.hosts().get("node-0").await.unwrap()),
        HostStateName::Available
    );
    let ops = e.bmc.ops().len();
    reconcile(ctx.clone()).await;
    assert_eq!(
        e.bmc.ops().len(),
        ops,
        "inspected once: no second inspection"
    );

    // Now the machine claims it.
    e.reconcile_machine("m0").await;
    assert_eq!(
        e.hosts()
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .unwrap()
            .name,
        "m0"
    );
}

#[tokio::test]
async fn the_inspect_annotation_inspects_a_host_again_once() {
    let mut objects = standard(true, 1, &[]);
    objects.push(inspector_image_obj());
    let e = env(objects).await;
    let plain = e.context_inspecting(None);
    let ctx = e.context_inspecting(Some("inspector"));
    use beowulf::api::host::HostStateName;
    let get = || async { e.hosts().get("node-0").await.unwrap() };

    // Without --inspection-image nothing is inspected.
    host::reconcile(Arc::new(get().await), plain).await.unwrap();
    assert_eq!(get().await.status.unwrap().state, HostStateName::Available);
    assert!(e.bmc.ops().is_empty());

    let patch = json!({"metadata": {"annotations": {host::INSPECT_ANNOTATION: "please"}}});
    e.hosts()
        .patch(
            "node-0",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    host::reconcile(Arc::new(get().await), ctx.clone())
        .await
        .unwrap();
    assert_eq!(get().await.status.unwrap().state, HostStateName::Inspecting);
    host::reconcile(Arc::new(get().await), ctx.clone())
        .await
        .unwrap();
    assert!(
        !get()
            .await
            .annotations()
            .contains_key(host::INSPECT_ANNOTATION),
        "the request is answered once the inspection is under way"
    );
    assert_eq!(
        e.bmc.ops().iter().filter(|o| o.ends_with(" on")).count(),
        1,
        "one inspection boot"
    );
}

// ---------------------------------------------------------------- remediation

fn remediation_obj(machine: &str, power_cycles: u32) -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "BeowulfRemediation",
        "metadata": {"name": machine, "namespace": NS, "uid": format!("uid-r-{machine}"),
            "labels": {"cluster.x-k8s.io/cluster-name": "c1"},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": machine,
                                 "uid": format!("uid-m-{machine}")}]},
        "spec": {"strategy": {"powerCycles": power_cycles, "timeoutSeconds": 100, "reprovision": true,
                              "reprovisionTimeoutSeconds": 500}},
    })
}

impl Env {
    fn remediations(&self) -> Api<BeowulfRemediation> {
        Api::namespaced(self.client.clone(), NS)
    }
    async fn reconcile_remediation(&self, name: &str) -> Action {
        let r = self.remediations().get(name).await.unwrap();
        remediation::reconcile(Arc::new(r), self.ctx.clone())
            .await
            .unwrap()
    }
    async fn remediate_annotation(&self, machine: &str) -> Option<String> {
        let bm = self.machines().get(machine).await.unwrap();
        bm.annotations()
            .get(remediation::REMEDIATE_ANNOTATION)
            .cloned()
    }
    async fn provision(&self, machine: &str, idx: u8) {
        self.reconcile_machine(machine).await;
        self.node_boots_and_calls_back(idx).await;
        self.reconcile_machine(machine).await;
        let bm = self.machines().get(machine).await.unwrap();
        assert_eq!(ready(&bm), ("True".into(), "Provisioned".into()));
    }
}

fn remediation_status(r: &BeowulfRemediation) -> (Option<RemediationPhase>, u32, bool, bool) {
    let s = r.status.clone().unwrap_or_default();
    (
        s.phase,
        s.power_cycles,
        s.reprovisioned,
        s.pending.is_some(),
    )
}

#[tokio::test]
async fn remediation_power_cycles_then_reprovisions_then_gives_up_and_the_host_is_not_claimed_again()
 {
    let mut objs = standard(true, 2, &["m0", "m1"]);
    objs.push(remediation_obj("m0", 1));
    let e = env(objs).await;
    e.register_hosts(2).await;
    e.provision("m0", 0).await;
    e.bmc.ops.lock().unwrap().clear();

    // Step 1: a power cycle, handed to the machine's controller on the BeowulfMachine.
    let a = e.reconcile_remediation("m0").await;
    assert_eq!(a, Action::requeue(std::time::Duration::from_secs(5)));
    let r = e.remediations().get("m0").await.unwrap();
    assert_eq!(
        remediation_status(&r),
        (Some(RemediationPhase::PowerCycling), 1, false, true)
    );
    assert_eq!(r.status.as_ref().unwrap().host.as_deref(), Some("node-0"));
    let id = e.remediate_annotation("m0").await.expect("step requested");
    assert_eq!(id, "uid-r-m0/power-cycle-1");
    assert!(
        e.bmc.ops().is_empty(),
        "the remediation controller itself never touches the BMC"
    );
    // Asked again before the answer: no second request, no BMC operation.
    e.reconcile_remediation("m0").await;
    assert!(e.bmc.ops().is_empty());

    e.reconcile_machine("m0").await;
    assert_eq!(
        e.bmc.ops(),
        [
            "ipmi://127.0.0.1:6230 bootdev-pxe",
            "ipmi://127.0.0.1:6230 off",
            "ipmi://127.0.0.1:6230 on"
        ]
    );
    assert_eq!(
        e.remediate_annotation("m0").await,
        None,
        "answered: removed"
    );
    let h = e.hosts().get("node-0").await.unwrap();
    let hs = h.status.clone().unwrap();
    assert_eq!(hs.state, beowulf::api::host::HostStateName::Provisioned);
    assert_eq!(hs.remediations.len(), 1);
    assert_eq!(hs.remediations[0].id, id);
    assert_eq!(hs.remediations[0].action, "PowerCycle");
    assert_eq!(hs.remediations[0].machine.as_deref(), Some("m0"));
    // The node boots its image again with a fresh token and calls back; a repeated reconcile (or a stale
    // annotation put back) does not power-cycle it twice.
    e.node_boots_and_calls_back(0).await;
    e.bmc.ops.lock().unwrap().clear();
    let patch = json!({"metadata": {"annotations": {remediation::REMEDIATE_ANNOTATION: id}}});
    e.machines()
        .patch("m0", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    e.reconcile_machine("m0").await;
    assert!(e.bmc.ops().is_empty(), "{:?}", e.bmc.ops());
    assert_eq!(e.remediate_annotation("m0").await, None);

    // The receipt: waiting for MachineHealthCheck's verdict for the step's timeout.
    e.advance(10);
    let a = e.reconcile_remediation("m0").await;
    assert_eq!(a, Action::requeue(std::time::Duration::from_secs(90)));
    let r = e.remediations().get("m0").await.unwrap();
    assert_eq!(
        remediation_status(&r),
        (Some(RemediationPhase::PowerCycling), 1, false, false)
    );
    // Waiting writes nothing more (its own watch would wake it again otherwise).
    e.advance(10);
    e.reconcile_remediation("m0").await;
    let again = e.remediations().get("m0").await.unwrap();
    assert_eq!(again.resource_version(), r.resource_version());

    // Still there after the timeout (the Machine is not healthy): re-provision the same host.
    e.advance(80);
    e.reconcile_remediation("m0").await;
    assert_eq!(
        e.remediate_annotation("m0").await.as_deref(),
        Some("uid-r-m0/reprovision")
    );
    e.reconcile_machine("m0").await;
    let hs = e.hosts().get("node-0").await.unwrap().status.unwrap();
    assert_eq!(hs.state, beowulf::api::host::HostStateName::Provisioning);
    assert_eq!(hs.boot_attempt, 1);
    assert_eq!(hs.remediations.len(), 2);
    assert_eq!(hs.remediations[1].action, "Reprovision");
    e.reconcile_remediation("m0").await;
    let r = e.remediations().get("m0").await.unwrap();
    assert_eq!(
        remediation_status(&r),
        (Some(RemediationPhase::Reprovisioning), 1, true, false)
    );

    // The re-provisioning's wait ends (the boot never calls back): give up.
    e.advance(500);
    let a = e.reconcile_remediation("m0").await;
    assert_eq!(a, Action::await_change());
    let machines: Api<Machine> = Api::namespaced(e.client.clone(), NS);
    assert!(
        machines.get_opt("m0").await.unwrap().is_none(),
        "the Machine is deleted for its owner to replace"
    );
    assert!(
        e.remediations().get_opt("m0").await.unwrap().is_none(),
        "the remediation goes with its Machine (garbage collection)"
    );
    let h = e.hosts().get("node-0").await.unwrap();
    let why = &h.annotations()[remediation::UNHEALTHY_ANNOTATION];
    assert!(
        why.starts_with("1 power cycle(s) and a re-provisioning did not make the Machine healthy"),
        "{why}"
    );

    // Released (what the BeowulfMachine's deletion does; tested above), the unhealthy host is not claimed
    // again: the next machine takes node-1 although node-0 comes first.
    let patch = json!({"spec": {"consumerRef": null}});
    e.hosts()
        .patch(
            "node-0",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    e.reconcile_machine("m1").await;
    let bm = e.machines().get("m1").await.unwrap();
    assert_eq!(bm.spec.host_ref.unwrap().name, "node-1");
}

#[tokio::test]
async fn remediation_does_nothing_on_a_paused_cluster_and_gives_up_at_once_without_a_host() {
    let mut objs = standard(true, 1, &["m0"]);
    objs[0] = cluster_obj(true, true);
    objs.push(remediation_obj("m0", 2));
    let e = env(objs).await;
    e.register_hosts(1).await;
    let a = e.reconcile_remediation("m0").await;
    assert_eq!(a, Action::await_change());
    assert_eq!(e.remediate_annotation("m0").await, None);
    let r = e.remediations().get("m0").await.unwrap();
    let st = r.status.unwrap();
    assert_eq!(st.phase, None);
    let paused = st.conditions.iter().find(|c| c.type_ == "Paused").unwrap();
    assert_eq!(paused.status, "True");
    let machines: Api<Machine> = Api::namespaced(e.client.clone(), NS);
    assert!(machines.get_opt("m0").await.unwrap().is_some());

    // Resumed: the machine never got a host (it was paused too), so there is nothing to remediate.
    let patch = json!({"spec": {"paused": false}});
    Api::<beowulf::controllers::capi::Cluster>::namespaced(e.client.clone(), NS)
        .patch("c1", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(e.reconcile_remediation("m0").await, Action::await_change());
    assert!(machines.get_opt("m0").await.unwrap().is_none());
    assert!(!remediation::is_unhealthy(
        &e.hosts().get("node-0").await.unwrap()
    ));
}

#[tokio::test]
async fn a_step_whose_remediation_ended_is_dropped_not_carried_out() {
    let mut objs = standard(true, 1, &["m0"]);
    objs.push(remediation_obj("m0", 1));
    let e = env(objs).await;
    e.register_hosts(1).await;
    e.provision("m0", 0).await;
    e.reconcile_remediation("m0").await;
    assert!(e.remediate_annotation("m0").await.is_some());
    // The Machine became healthy before the step ran (say, its BMC did not answer): MachineHealthCheck
    // deleted the remediation.
    e.remediations()
        .delete("m0", &Default::default())
        .await
        .unwrap();
    e.bmc.ops.lock().unwrap().clear();
    e.reconcile_machine("m0").await;
    assert!(e.bmc.ops().is_empty(), "{:?}", e.bmc.ops());
    assert_eq!(e.remediate_annotation("m0").await, None);
    let hs = e.hosts().get("node-0").await.unwrap().status.unwrap();
    assert!(hs.remediations.is_empty());
    assert_eq!(hs.state, beowulf::api::host::HostStateName::Provisioned);
}
