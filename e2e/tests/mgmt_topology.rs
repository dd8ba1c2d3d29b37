//! A ClusterClass topology to booted machines, on a real management cluster, step by step as README's
//! Cluster API section tells a user: `clusterctl init`, `clusterctl generate cluster --flavor topology |
//! kubectl apply`, then deleting the Cluster.
//!
//! Cluster API's own controllers create the KubeadmControlPlane, MachineDeployment, Machines, KubeadmConfigs
//! and our BeowulfMachines from our templates; `beowulf manager` (its own ServiceAccount, on a node namespace)
//! claims BeowulfHosts that are QEMU machines behind ipmi_sim BMCs and PXE-boots them through its boot plane.
//!
//! kubeadm does not run on the test node image (it only fetches its data, hashes it and calls back), so the
//! control plane never initializes and the kubeadm bootstrap controller rightly withholds the topology
//! workers' join data: those BeowulfMachines exist, claim nothing and say why. The worker path is proven by
//! a second MachineDeployment whose machines carry a fixed `bootstrap.dataSecretName`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use beowulf::api::BeowulfHost;
use beowulf::api::BeowulfMachine;
use beowulf::api::host::HostStateName;
use e2e::kube::fixtures::{self, INFRA, QemuHost};
use e2e::kube::mgmt::MANAGER_USER;
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::tail;
use e2e::{require_root_and_peers, run};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NS: &str = "hpc";

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

/// `kubectl get <what> -n hpc -o json`'s items.
fn items(mc: &MgmtCluster, what: &str, selector: &str) -> Vec<Value> {
    let mut cmd = mc.kubectl();
    cmd.args(["get", what, "-n", NS, "-o", "json"]);
    if !selector.is_empty() {
        cmd.args(["-l", selector]);
    }
    let v: Value = serde_json::from_str(&run(&mut cmd)).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(obj: &'a Value, cond: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == cond)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_cluster_boots_its_machines_and_deleting_it_releases_every_host() {
    require_root_and_peers();
    let dir = e2e::Scratch::new("topology");
    let mc = MgmtCluster::start("topology", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();
    let image = LabImage::testnode(&dir.path().join("img"));

    // The rack: one server for the control plane, two for workers, each behind its BMC.
    let cp = QemuHost::start(
        &mc,
        "cp-0",
        0x40,
        json!({"beowulf.io/role": "control-plane"}),
    );
    let workers = [
        QemuHost::start(&mc, "w-0", 0x41, json!({"beowulf.io/role": "worker"})),
        QemuHost::start(&mc, "w-1", 0x42, json!({"beowulf.io/role": "worker"})),
    ];
    let mut objects = fixtures::namespace_with_bmc_secret(NS);
    // The image the ClusterClass's `imageName` variable defaults to.
    objects.push(fixtures::testnode_image(NS, "beowulf-node", &image));
    for h in std::iter::once(&cp).chain(&workers) {
        objects.push(h.object(NS));
    }
    fixtures::create_all(&client, &objects).await.unwrap();

    let manager = ManagerNode::start(
        &mc,
        &beowulf(),
        "mgr-0",
        &dir.path().join("img"),
        &["--leader-elect"],
    )
    .await
    .unwrap();

    // README: clusterctl generate cluster … --flavor topology | kubectl apply -f -
    let manifest = run(mc
        .clusterctl()
        .args([
            "generate",
            "cluster",
            "c1",
            "--flavor",
            "topology",
            "--target-namespace",
            NS,
        ])
        .args(["--kubernetes-version", "v1.33.1"])
        .args([
            "--control-plane-machine-count",
            "1",
            "--worker-machine-count",
            "2",
        ])
        .env("CONTROL_PLANE_ENDPOINT_IP", mc.unanswered_ip().to_string()));
    let manifest_file = dir.path().join("c1.yaml");
    std::fs::write(&manifest_file, &manifest).unwrap();
    run(mc.kubectl().arg("apply").arg("-f").arg(&manifest_file));

    // The worker path: machines of a MachineDeployment with fixed bootstrap data, made by CAPI's MachineSet
    // controller from our own BeowulfMachineTemplate.
    let worker_data = "#cloud-config\n# fixed worker data\nruncmd: [\"echo worker\"]\n";
    fixtures::create_all(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "worker-data", "namespace": NS},
                   "type": "cluster.x-k8s.io/secret", "stringData": {"value": worker_data, "format": "cloud-config"}}),
            json!({"apiVersion": INFRA, "kind": "BeowulfMachineTemplate",
                   "metadata": {"name": "fixed-worker", "namespace": NS},
                   "spec": {"template": {"spec": {"imageRef": {"name": "beowulf-node"},
                            "hostSelector": {"matchLabels": {"beowulf.io/role": "worker"}}}}}}),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                   "metadata": {"name": "c1-fixed", "namespace": NS},
                   "spec": {"clusterName": "c1", "replicas": 2,
                            "selector": {"matchLabels": {"pool": "fixed"}},
                            "template": {"metadata": {"labels": {"pool": "fixed"}},
                                         "spec": {"clusterName": "c1", "version": "v1.33.1",
                                                  "bootstrap": {"dataSecretName": "worker-data"},
                                                  "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                                        "kind": "BeowulfMachineTemplate", "name": "fixed-worker"}}}}}),
        ],
    )
    .await
    .unwrap();

    // Every machine with bootstrap data is booted and provisioned: 1 control plane, 2 fixed workers.
    let t0 = Instant::now();
    let provisioned = eventually(
        "three Machines Provisioned",
        Duration::from_secs(420),
        || {
            let machines = items(&mc, "machines.cluster.x-k8s.io", "");
            let hosts: Vec<String> = std::iter::once(&cp)
                .chain(&workers)
                .map(|h| format!("{}: {:?}", h.node.name, h.user_data_line()))
                .collect();
            async move {
                let done: Vec<&Value> = machines
                    .iter()
                    .filter(|m| m["status"]["phase"] == "Provisioned")
                    .collect();
                if done.len() == 3 {
                    Ok(machines.clone())
                } else {
                    Err(format!(
                        "{}\nconsoles: {hosts:?}",
                        machines
                            .iter()
                            .map(|m| format!(
                                "{} {} {}",
                                m["metadata"]["name"],
                                m["status"]["phase"],
                                m["spec"]["providerID"]
                            ))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nmanager log:\n{}", tail(&manager.log(), 60)));
    eprintln!(
        "topology + fixed workers: 3 machines claimed, PXE-booted and provisioned in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // The control-plane Machine: its providerID names cp-0, and the node got exactly the bootstrap data the
    // real kubeadm bootstrap controller wrote.
    let cp_machine = provisioned
        .iter()
        .find(|m| m["metadata"]["labels"]["cluster.x-k8s.io/control-plane"].is_string())
        .expect("a control-plane Machine");
    assert_eq!(cp_machine["spec"]["providerID"], "beowulf://hpc/cp-0");
    let secret_name = cp_machine["spec"]["bootstrap"]["dataSecretName"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get(&secret_name)
        .await
        .unwrap();
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|o| o.kind == "KubeadmConfig"),
        "the bootstrap Secret is the kubeadm bootstrap controller's: {:?}",
        secret.owner_references()
    );
    let value = &secret.data.as_ref().unwrap()["value"].0;
    let text = String::from_utf8_lossy(value);
    assert!(text.contains("kubeadm init"), "kubeadm's init data: {text}");
    assert_eq!(
        cp.user_data_line().unwrap(),
        format!(
            "TESTNODE: got user-data bytes={} sha256={}",
            value.len(),
            hex::encode(Sha256::digest(value))
        )
    );
    assert!(cp.bmc.serial().contains("TESTNODE: callback ok"));

    // The fixed workers: two distinct hosts, each with the fixed data.
    let mut worker_ids: Vec<String> = provisioned
        .iter()
        .filter(|m| m["metadata"]["labels"]["pool"] == "fixed")
        .map(|m| m["spec"]["providerID"].as_str().unwrap().to_string())
        .collect();
    worker_ids.sort();
    assert_eq!(worker_ids, ["beowulf://hpc/w-0", "beowulf://hpc/w-1"]);
    let fixed = format!(
        "TESTNODE: got user-data bytes={} sha256={}",
        worker_data.len(),
        hex::encode(Sha256::digest(worker_data))
    );
    for w in &workers {
        assert_eq!(w.user_data_line().as_deref(), Some(fixed.as_str()));
    }

    // The topology's workers: BeowulfMachines exist, claim nothing, and say they wait for bootstrap data.
    let topology_workers = items(
        &mc,
        "beowulfmachines",
        "cluster.x-k8s.io/cluster-name=c1,topology.cluster.x-k8s.io/deployment-name=md-0",
    );
    assert_eq!(topology_workers.len(), 2, "{topology_workers:?}");
    for bm in &topology_workers {
        assert!(bm["spec"]["hostRef"].is_null(), "{bm}");
        let ready = condition(bm, "Ready").expect("a Ready condition");
        assert_eq!(ready["reason"], "WaitingForControlPlaneInitialized", "{bm}");
    }
    let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    for h in hosts.list(&ListParams::default()).await.unwrap() {
        let st = h.status.clone().unwrap();
        assert_eq!(st.state, HostStateName::Provisioned, "{}", h.name_any());
    }
    for h in std::iter::once(&cp).chain(&workers) {
        assert_eq!(h.power(), "on", "{}", h.node.name);
    }

    // Deleting the Cluster: every Machine and BeowulfMachine goes, every host is powered off (read back
    // through its BMC by ipmitool) and released, and nothing of the cluster is left.
    run(mc
        .kubectl()
        .args(["delete", "cluster", "c1", "-n", NS, "--wait=false"]));
    eventually(
        "the cluster's objects to be gone",
        Duration::from_secs(300),
        || {
            let left: Vec<String> = [
                "clusters.cluster.x-k8s.io",
                "machines.cluster.x-k8s.io",
                "machinesets.cluster.x-k8s.io",
                "machinedeployments.cluster.x-k8s.io",
                "kubeadmcontrolplanes",
                "kubeadmconfigs",
                "beowulfmachines",
                "beowulfclusters",
            ]
            .iter()
            .flat_map(|kind| {
                items(&mc, kind, "").into_iter().map(move |o| {
                    format!("{kind}/{}", o["metadata"]["name"].as_str().unwrap_or(""))
                })
            })
            .chain(
                items(&mc, "secrets", "cluster.x-k8s.io/cluster-name=c1")
                    .into_iter()
                    .map(|o| format!("secret/{}", o["metadata"]["name"].as_str().unwrap_or(""))),
            )
            .collect();
            async move {
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(left.join(", "))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nmanager log:\n{}", tail(&manager.log(), 60)));
    // Templates the topology cloned for c1 go with it; the ClusterClass's own stay.
    assert!(
        items(
            &mc,
            "beowulfmachinetemplates",
            "cluster.x-k8s.io/cluster-name=c1"
        )
        .is_empty()
    );
    for h in hosts.list(&ListParams::default()).await.unwrap() {
        let name = h.name_any();
        assert!(h.spec.consumer_ref.is_none(), "{name} still claimed");
        let st = h.status.unwrap();
        assert_eq!(st.state, HostStateName::Available, "{name}");
        assert_eq!(st.power_state.as_deref(), Some("off"), "{name}");
    }
    for h in std::iter::once(&cp).chain(&workers) {
        assert_eq!(h.power(), "off", "{}", h.node.name);
        assert_eq!(
            h.bmc.qemu_pid(),
            None,
            "{}'s machine still runs",
            h.node.name
        );
    }
    let machines: Api<BeowulfMachine> = Api::namespaced(client.clone(), NS);
    assert!(
        machines
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The manager did all of it with the RBAC we ship.
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(forbidden.is_empty(), "forbidden:\n{}", forbidden.join("\n"));
    let log = manager.log();
    assert!(!log.contains(e2e::ipmi_sim::PASSWORD));
    assert!(
        !log.contains("kubeadm init"),
        "bootstrap data in the manager's log"
    );
}
