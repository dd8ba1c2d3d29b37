//! The BeowulfMachine controller against the fake Kubernetes API (kube-fake-client) with a REAL BMC:
//! OpenIPMI's ipmi_sim driven through the production `BmcPower` (the native IPMI driver), checked with
//! ipmitool. Provisioning powers the host on with next boot PXE; deletion powers it off, releases the
//! host and only then removes the finalizer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use beowulf::api::host::HostStateName;
use beowulf::api::{BeowulfHost, BeowulfMachine};
use beowulf::boot::Phase;
use beowulf::controllers::{Context, MACHINE_FINALIZER, host, machine};
use beowulf::runtime::power::BmcPower;
use beowulf::runtime::profiles::ProfileRegistry;
use e2e::ipmi_sim::{self, IpmiSim};
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

#[path = "../../provider/tests/support/fake_api.rs"]
mod fake_api;
use fake_api::{b64, fake_api};

const NS: &str = "hpc";

fn objects(bmc: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
               "metadata": {"name": "c1", "namespace": NS},
               "spec": {"controlPlaneEndpoint": {"host": "10.0.0.100", "port": 6443}},
               "status": {"initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true}}}),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
               "metadata": {"name": "m0", "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
               "spec": {"clusterName": "c1", "bootstrap": {"dataSecretName": "boot-data"}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "boot-data", "namespace": NS},
               "data": {"value": b64("#cloud-config\n"), "format": b64("cloud-config")}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bmc-creds", "namespace": NS},
               "data": {"username": b64(ipmi_sim::USER), "password": b64(ipmi_sim::PASSWORD)}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfImage",
               "metadata": {"name": "live", "namespace": NS},
               "spec": {"kernel": {"url": "http://boot/vmlinuz"}}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfMachine",
               "metadata": {"name": "m0", "namespace": NS, "uid": "uid-bm-m0",
                   "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "m0", "uid": "u"}]},
               "spec": {"imageRef": {"name": "live"}}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
               "metadata": {"name": "node-0", "namespace": NS},
               "spec": {"bootMACAddress": "52:54:00:00:00:01", "bootMode": "legacy",
                        "interfaces": [{"macAddress": "52:54:00:00:00:01", "address": "10.0.0.11/24"}],
                        "bmc": {"address": bmc, "cipherSuite": 3, "credentialsSecretRef": {"name": "bmc-creds"}}}}),
    ]
}

fn context(client: &Client, boot: Arc<ProfileRegistry>, clock: Arc<AtomicI64>) -> Arc<Context> {
    let mut ctx = Context::new(client.clone(), Arc::new(BmcPower::default()), boot);
    ctx.clock = Arc::new(move || clock.load(Ordering::SeqCst));
    Arc::new(ctx)
}

fn power(sim: &IpmiSim) -> String {
    sim.ipmitool(&["chassis", "power", "status"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_provisions_and_deprovisions_through_ipmi_sim() {
    let sim = IpmiSim::start();
    let clock = Arc::new(AtomicI64::new(2_000_000));
    let boot = Arc::new(ProfileRegistry::default());
    let c = fake_api(objects(&sim.endpoint())).await;
    let ctx = context(&c, boot.clone(), clock.clone());
    let hosts: Api<BeowulfHost> = Api::namespaced(c.clone(), NS);
    let machines: Api<BeowulfMachine> = Api::namespaced(c.clone(), NS);

    // Registration reads the real power state.
    host::reconcile(Arc::new(hosts.get("node-0").await.unwrap()), ctx.clone())
        .await
        .unwrap();
    let h = hosts.get("node-0").await.unwrap().status.unwrap();
    assert_eq!(h.state, HostStateName::Available);
    assert_eq!(h.power_state.as_deref(), Some("off"));
    assert!(power(&sim).contains("Chassis Power is off"));

    // Provisioning: next boot PXE and power on, as ipmitool sees them.
    machine::reconcile(Arc::new(machines.get("m0").await.unwrap()), ctx.clone())
        .await
        .unwrap();
    assert!(
        power(&sim).contains("Chassis Power is on"),
        "{}",
        power(&sim)
    );
    let bootparam = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
    assert!(bootparam.contains("PXE"), "{bootparam}");
    assert!(boot.profile("hpc/node-0").is_some());

    // The node calls back (recorded by the boot plane) → provisioned.
    clock.fetch_add(90, Ordering::SeqCst);
    boot.record("hpc/node-0", Phase::Callback, clock.load(Ordering::SeqCst));
    machine::reconcile(Arc::new(machines.get("m0").await.unwrap()), ctx.clone())
        .await
        .unwrap();
    let bm = machines.get("m0").await.unwrap();
    assert_eq!(bm.spec.provider_id.as_deref(), Some("beowulf://hpc/node-0"));
    assert_eq!(
        bm.status
            .as_ref()
            .unwrap()
            .initialization
            .as_ref()
            .unwrap()
            .provisioned,
        Some(true)
    );

    // Deletion: the fake API removes objects at once on DELETE, so re-seed the machine as the API server
    // holds it while our finalizer is on: with a deletionTimestamp.
    let host_now = hosts.get("node-0").await.unwrap();
    let mut objs: Vec<Value> = objects(&sim.endpoint())
        .into_iter()
        .filter(|o| o["kind"] != "BeowulfMachine" && o["kind"] != "BeowulfHost")
        .collect();
    let mut bmv = serde_json::to_value(&bm).unwrap();
    bmv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    bmv["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    objs.push(bmv);
    let mut hv = serde_json::to_value(&host_now).unwrap();
    hv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    objs.push(hv);
    let c = fake_api(objs).await;
    let ctx = context(&c, boot.clone(), clock.clone());
    let hosts: Api<BeowulfHost> = Api::namespaced(c.clone(), NS);
    let machines: Api<BeowulfMachine> = Api::namespaced(c.clone(), NS);

    machine::reconcile(Arc::new(machines.get("m0").await.unwrap()), ctx.clone())
        .await
        .unwrap();
    assert!(
        power(&sim).contains("Chassis Power is off"),
        "{}",
        power(&sim)
    );
    let bm = machines.get("m0").await.unwrap();
    assert!(
        bm.finalizers().contains(&MACHINE_FINALIZER.to_string()),
        "finalizer kept until the host is released"
    );
    assert!(
        hosts
            .get("node-0")
            .await
            .unwrap()
            .spec
            .consumer_ref
            .is_some()
    );

    machine::reconcile(Arc::new(machines.get("m0").await.unwrap()), ctx.clone())
        .await
        .unwrap();
    let h = hosts.get("node-0").await.unwrap();
    assert!(h.spec.consumer_ref.is_none(), "host released");
    assert_eq!(h.status.unwrap().state, HostStateName::Available);
    assert!(
        machines.get_opt("m0").await.unwrap().is_none(),
        "finalizer removed after the release"
    );
    assert!(sim.calls().contains("set power 0"), "{}", sim.calls());
}

/// The host's BMC condition (status, message, power, reason) after one registration reconcile against `sim`
/// with `bmc_key` in the Secret.
async fn register_with_bmc_key(
    sim: &IpmiSim,
    bmc_key: Option<&str>,
) -> (String, String, String, String) {
    let mut objs = objects(&sim.endpoint());
    if let Some(k) = bmc_key {
        let creds = objs
            .iter_mut()
            .find(|o| o["metadata"]["name"] == "bmc-creds")
            .unwrap();
        creds["data"]["bmcKey"] = json!(b64(k));
    }
    let c = fake_api(objs).await;
    let ctx = context(
        &c,
        Arc::new(ProfileRegistry::default()),
        Arc::new(AtomicI64::new(2_000_000)),
    );
    let hosts: Api<BeowulfHost> = Api::namespaced(c.clone(), NS);
    let _ = host::reconcile(Arc::new(hosts.get("node-0").await.unwrap()), ctx).await;
    let status = hosts.get("node-0").await.unwrap().status.unwrap();
    let bmc = status
        .conditions
        .iter()
        .find(|c| c.type_ == "BMCReachable")
        .unwrap();
    (
        bmc.status.clone(),
        bmc.message.clone(),
        status.power_state.clone().unwrap_or_default(),
        bmc.reason.clone(),
    )
}

/// A BMC with an IPMI key (Kg): the key comes from the credentials Secret's `bmcKey` (hex, as `ipmitool -y`
/// takes it). With it the host registers and reads the power state; without it or with a wrong one the BMC
/// refuses the session and the condition says so; a malformed key is named, its value never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_registers_through_a_bmc_that_needs_the_kg_from_its_secret() {
    const KG: &str = "capi-kg-0123456789";
    let sim = IpmiSim::start_with_bmc_key(KG);
    let kg_hex: String = KG.bytes().map(|b| format!("{b:02x}")).collect();

    let (status, message, power, _) = register_with_bmc_key(&sim, Some(&kg_hex)).await;
    assert_eq!(
        (status.as_str(), power.as_str()),
        ("True", "off"),
        "{message}"
    );

    let (status, message, _, reason) = register_with_bmc_key(&sim, None).await;
    assert_eq!(status, "False", "no Kg: the BMC refuses the session");
    assert_eq!(
        reason, "BMCAuthenticationFailed",
        "refused, not unreachable"
    );
    assert!(message.contains("Kg) and none was given"), "{message}");

    let wrong: String = "ab".repeat(20);
    let (status, message, _, reason) = register_with_bmc_key(&sim, Some(&wrong)).await;
    assert_eq!(status, "False");
    assert_eq!(reason, "BMCAuthenticationFailed");
    assert!(
        message.contains("Kg"),
        "the message names the BMC key: {message}"
    );
    assert!(
        !message.contains(&wrong) && !message.contains(&kg_hex),
        "{message}"
    );

    let (status, message, _, reason) = register_with_bmc_key(&sim, Some("not-hex-secret")).await;
    assert_eq!(status, "False");
    assert_eq!(
        reason, "BMCCredentialsInvalid",
        "the Secret, not the BMC, is wrong"
    );
    assert!(
        message.contains("bmcKey") && !message.contains("not-hex-secret"),
        "{message}"
    );
}
