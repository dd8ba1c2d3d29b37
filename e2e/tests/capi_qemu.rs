//! A CAPI Machine goes to provisioned on real peers: the API is the fake client (kube-fake-client; no API
//! server can run here), the BMC is OpenIPMI's ipmi_sim and the node a QEMU machine (`e2e::qemu_bmc::QemuBmc`:
//! ipmi_sim's chassis program starts QEMU on power-on).
//!
//! The controllers run in this process as `beowulf manager` runs them: the production `BmcPower` (native IPMI
//! driver) and the controllers' `ProfileRegistry` served by the real boot plane (`cli::boot_services`: DHCP,
//! TFTP, HTTP), its sockets bound inside the test's namespace on the bridge QEMU is attached to. The reconcile
//! loop claims the host, publishes its boot profile, sets next boot PXE and powers it on over IPMI; QEMU PXE
//! boots the test node image from the boot plane, fetches NoCloud data with the per-boot token and calls back;
//! the next reconciles mark the BeowulfMachine provisioned with its providerID. One QEMU boot (~20-60 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beowulf::api::host::HostStateName;
use beowulf::api::{BeowulfHost, BeowulfMachine};
use beowulf::boot::metrics::BootMetrics;
use beowulf::cli::boot_services::{Services, ServicesConfig};
use beowulf::controllers::{Context, host, machine};
use beowulf::runtime::power::BmcPower;
use beowulf::runtime::profiles::{ProfileRegistry, ServedConfig};
use e2e::pxe::{BOOT_SERVER, HTTP_PORT, LabImage, Node};
use e2e::qemu_bmc::{QemuBmc, alive};
use e2e::{Netns, ipmi_sim, require_root_and_peers};
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

#[path = "../../provider/tests/support/fake_api.rs"]
mod fake_api;
use fake_api::{b64, fake_api};

const NS: &str = "hpc";

fn objects(bmc: &str, node: &Node, image: &LabImage) -> Vec<Value> {
    let file = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy().into_owned();
    vec![
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
               "metadata": {"name": "c1", "namespace": NS},
               "spec": {"controlPlaneEndpoint": {"host": "10.99.0.50", "port": 6443}},
               "status": {"initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true}}}),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
               "metadata": {"name": "m0", "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
               "spec": {"clusterName": "c1", "bootstrap": {"dataSecretName": "boot-data"}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "boot-data", "namespace": NS},
               "type": "cluster.x-k8s.io/secret",
               "data": {"value": b64(&node.user_data), "format": b64("cloud-config")}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bmc-creds", "namespace": NS},
               "data": {"username": b64(ipmi_sim::USER), "password": b64(ipmi_sim::PASSWORD)}}),
        // Artifacts as paths under the manager's --artifact-root (served at /images/...).
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfImage",
               "metadata": {"name": "testnode", "namespace": NS},
               "spec": {"kernel": {"url": file(&image.kernel)}, "initrds": [{"url": file(&image.initrd)}],
                        "rootfs": {"url": file(&image.rootfs)}, "cmdline": image.cmdline, "format": "live"}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfMachine",
               "metadata": {"name": "m0", "namespace": NS, "uid": "uid-bm-m0",
                   "labels": {"cluster.x-k8s.io/cluster-name": "c1"},
                   "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "m0", "uid": "u"}]},
               "spec": {"imageRef": {"name": "testnode"}}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
               "metadata": {"name": node.name, "namespace": NS},
               "spec": {"bootMACAddress": node.mac, "bootMode": "legacy",
                        "interfaces": [{"macAddress": node.mac, "address": format!("{}/24", node.ip)}],
                        "bmc": {"address": bmc, "cipherSuite": 3, "credentialsSecretRef": {"name": "bmc-creds"}}}}),
    ]
}

/// Binds the boot plane's sockets from a thread inside `ns` (sockets keep their namespace), registered with
/// this runtime's reactor, so the services run here like every other task.
fn bind_in_netns(
    ns: &Netns,
    plane: Arc<beowulf::boot::plane::BootPlane>,
    config: ServicesConfig,
) -> (Services, Arc<prometheus_client::registry::Registry>) {
    let path = ns.path();
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let services = handle
            .block_on(Services::bind(plane, &config, &mut registry))
            .unwrap();
        (services, Arc::new(registry))
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_goes_to_provisioned_with_ipmi_sim_and_a_qemu_pxe_boot() {
    require_root_and_peers();
    let dir = tempfile::tempdir().unwrap();
    let image = LabImage::testnode(&dir.path().join("img"));
    let mut node = Node::new("node-0", 0x40, e2e::pxe::Firmware::Bios);
    // Stay up after the callback: the host is provisioned, it is not supposed to switch itself off.
    node.user_data.push_str("# testnode: stay on\n");

    // The boot network: a bridge in our namespace, IPv6 RAs only (iPXE otherwise waits for them).
    let (ns, _ra) = e2e::pxe::boot_network("capiqemu", dir.path());
    let bmc = QemuBmc::start(&ns.name, "br0", &node.mac);

    // The manager's boot plane: the controllers' registry, served on br0.
    let profiles = Arc::new(ProfileRegistry::new(
        ServedConfig {
            boot_server: BOOT_SERVER.parse().unwrap(),
            http_port: HTTP_PORT,
            artifact_root: Some(dir.path().join("img")),
            ..Default::default()
        },
        BootMetrics::default(),
        Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
    ));
    let (services, registry) = bind_in_netns(
        &ns,
        profiles.plane(),
        ServicesConfig {
            interface: Some("br0".into()),
            server_ip: BOOT_SERVER.parse().unwrap(),
            http_listen: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), HTTP_PORT),
            tftp_root: "/usr/lib/ipxe".into(),
            proxy_dhcp: false,
            http_limits: Default::default(),
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(services.run(registry, async move {
        let _ = stop_rx.await;
    }));

    let c = fake_api(objects(&bmc.endpoint(), &node, &image)).await;
    let ctx = Arc::new(Context::new(
        c.clone(),
        Arc::new(BmcPower::default()),
        profiles.clone(),
    ));
    let hosts: Api<BeowulfHost> = Api::namespaced(c.clone(), NS);
    let machines: Api<BeowulfMachine> = Api::namespaced(c.clone(), NS);

    // Registration reads the real (off) power state; then the machine claims the host and boots it.
    host::reconcile(Arc::new(hosts.get(&node.name).await.unwrap()), ctx.clone())
        .await
        .unwrap();
    let registered = hosts.get(&node.name).await.unwrap().status.unwrap();
    assert_eq!(registered.state, HostStateName::Available);
    // The BMC's inventory is read once the host is available: ipmi_sim has no FRU device here (it answers
    // completion code CCh), which is an empty IPMI inventory, not an error.
    assert_eq!(
        serde_json::to_value(registered.bmc_inventory.as_ref().unwrap()).unwrap(),
        json!({"source": "ipmi-fru"})
    );
    let t0 = Instant::now();
    machine::reconcile(Arc::new(machines.get("m0").await.unwrap()), ctx.clone())
        .await
        .unwrap();
    let calls = bmc.calls();
    assert!(
        calls.contains("set boot pxe") && calls.contains("set power 1"),
        "the controllers did not ask the BMC for PXE and power on: {calls}"
    );
    let served_host = profiles.plane().directory.get();
    assert!(
        served_host.host(&node.name).is_some(),
        "the boot plane serves the claimed host"
    );

    // The reconcile loop, as the controller runs it: until provisioned or the deadline.
    let deadline = t0 + Duration::from_secs(180);
    let bm = loop {
        let bm = machines.get("m0").await.unwrap();
        if bm.spec.provider_id.is_some() && bm.status.as_ref().and_then(|s| s.ready) == Some(true) {
            break bm;
        }
        assert!(
            Instant::now() < deadline,
            "not provisioned within 180 s; machine status {:?}\nhost status {:?}\nIPMI calls: {}\nserial:\n{}",
            bm.status,
            hosts.get(&node.name).await.unwrap().status,
            bmc.calls(),
            bmc.serial()
        );
        if let Some(pid) = bmc.qemu_pid() {
            assert!(alive(pid, "qemu"), "QEMU died:\n{}", bmc.serial());
        }
        machine::reconcile(Arc::new(bm), ctx.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "Machine claimed → provisioned through IPMI power-on, PXE boot and callback: {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    assert_eq!(
        bm.spec.provider_id.as_deref(),
        Some(format!("beowulf://{NS}/{}", node.name).as_str())
    );
    let st = bm.status.clone().unwrap();
    assert_eq!(st.initialization.unwrap().provisioned, Some(true));
    let addrs: Vec<(String, String)> = st
        .addresses
        .iter()
        .map(|a| (a.type_.clone(), a.address.clone()))
        .collect();
    assert_eq!(
        addrs,
        [
            ("Hostname".to_string(), node.name.clone()),
            ("InternalIP".to_string(), node.ip.clone())
        ]
    );
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Provisioned")
    );
    let h = hosts.get(&node.name).await.unwrap();
    assert_eq!(h.spec.consumer_ref.unwrap().name, "m0");
    let hs = h.status.unwrap();
    assert_eq!(hs.state, HostStateName::Provisioned);
    assert_eq!(hs.last_boot_phase.as_deref(), Some("callback"));
    assert_eq!(hs.power_state.as_deref(), Some("on"));

    // What the node got came from the boot plane with the token: the bootstrap secret, byte for byte.
    let serial = bmc.serial();
    assert!(serial.contains("TESTNODE: callback ok"), "{serial}");
    assert!(
        serial.contains(&format!(
            "TESTNODE: got user-data bytes={} sha256={}",
            node.user_data.len(),
            node.user_data_sha256()
        )),
        "{serial}"
    );
    let name = bm.name_any();
    assert_eq!(name, "m0");

    let _ = stop_tx.send(());
    served.await.unwrap().unwrap();
}
