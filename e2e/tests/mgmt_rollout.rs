//! A rollout without surge on fixed hardware, on a real management cluster: a MachineDeployment of two runs on
//! exactly two QEMU hosts; a spare host is added; the template changes and Cluster API's own controllers roll
//! the machines out with `maxSurge: 0`. The replacements take back the hosts their predecessors released —
//! not the spare, although it is free and comes first by name — and no host is ever held by two machines.
//!
//! `maxUnavailable: 2` (all of them): a Machine is Available only once its Node is ready, and no node joins
//! here (the test node image runs no kubelet), so with fewer the MachineDeployment would never delete an old
//! Machine. It is still a rollout without a single extra host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beowulf::api::host::HostStateName;
use beowulf::api::{BeowulfHost, BeowulfMachine};
use e2e::kube::fixtures::{self, INFRA, QemuHost};
use e2e::kube::mgmt::MANAGER_USER;
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::{require_root_and_peers, run};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const NS: &str = "rollout";

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

/// The Machines: (name, providerID, phase), sorted by providerID.
fn machines(mc: &MgmtCluster) -> Vec<(String, String, String)> {
    let out = run(mc.kubectl().args([
        "get",
        "machines.cluster.x-k8s.io",
        "-n",
        NS,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name},{.spec.providerID},{.status.phase} {end}",
    ]));
    let mut v: Vec<_> = out
        .split_whitespace()
        .filter_map(|m| {
            let mut f = m.split(',');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_without_surge_puts_the_replacements_on_the_same_hosts_and_never_on_the_spare() {
    require_root_and_peers();
    let start = Instant::now();
    let dir = e2e::Scratch::new("rollout");
    let mc = MgmtCluster::start("rollout", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();
    let artifacts = dir.path().join("img");
    let image = LabImage::testnode(&artifacts);
    let hosts = [
        QemuHost::start(&mc, "node-0", 0x90, json!({"rack": "r1"})),
        QemuHost::start(&mc, "node-1", 0x91, json!({"rack": "r1"})),
        QemuHost::start(&mc, "a-spare", 0x92, json!({"rack": "r1"})),
    ];
    let mut objects = fixtures::namespace_with_bmc_secret(NS);
    objects.push(fixtures::testnode_image(NS, "testnode", &image));
    for h in &hosts {
        let mut o = h.object(NS);
        // The spare joins the rack after the first provisioning.
        o["spec"]["online"] = json!(h.node.name != "a-spare");
        objects.push(o);
    }
    fixtures::create_all(&client, &objects).await.unwrap();
    let manager = ManagerNode::start(&mc, &beowulf(), "mgr", &artifacts, &[])
        .await
        .unwrap();
    let log = || tail(&manager.log(), 80);

    let endpoint = mc.unanswered_ip().to_string();
    let template = |name: &str| {
        json!({"apiVersion": INFRA, "kind": "BeowulfMachineTemplate", "metadata": {"name": name, "namespace": NS},
               "spec": {"template": {"spec": {"imageRef": {"name": "testnode"}}}}})
    };
    fixtures::create_all(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "data", "namespace": NS},
                   "type": "cluster.x-k8s.io/secret",
                   "stringData": {"value": "#cloud-config\n# rollout\n", "format": "cloud-config"}}),
            json!({"apiVersion": INFRA, "kind": "BeowulfCluster", "metadata": {"name": "c1", "namespace": NS},
                   "spec": {"controlPlaneEndpoint": {"host": endpoint, "port": 6443}}}),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": "c1", "namespace": NS},
                   "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                  "kind": "BeowulfCluster", "name": "c1"}}}),
            template("rack-v1"),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                   "metadata": {"name": "workers", "namespace": NS},
                   "spec": {"clusterName": "c1", "replicas": 2,
                            "rollout": {"strategy": {"type": "RollingUpdate",
                                                     "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 2}}},
                            "selector": {"matchLabels": {"pool": "w"}},
                            "template": {"metadata": {"labels": {"pool": "w"}},
                                         "spec": {"clusterName": "c1", "version": "v1.33.1",
                                                  "bootstrap": {"dataSecretName": "data"},
                                                  "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                                        "kind": "BeowulfMachineTemplate",
                                                                        "name": "rack-v1"}}}}}),
        ],
    )
    .await
    .unwrap();
    let provisioned = |old: Vec<String>| {
        let mc = &mc;
        async move {
            let ms = machines(mc);
            let ok = ms.len() == 2
                && ms
                    .iter()
                    .all(|(n, _, phase)| phase == "Provisioned" && !old.contains(n));
            if ok { Ok(ms) } else { Err(format!("{ms:?}")) }
        }
    };
    let before = eventually(
        "both Machines provisioned",
        Duration::from_secs(240),
        || provisioned(Vec::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let ids: Vec<&str> = before.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        ids,
        ["beowulf://rollout/node-0", "beowulf://rollout/node-1"]
    );

    // The spare comes online and becomes available: from now on a claim that ignored reuse would take it.
    let host_api: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    host_api
        .patch(
            "a-spare",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"online": true}})),
        )
        .await
        .unwrap();
    eventually("the spare available", Duration::from_secs(60), || async {
        let h = host_api.get("a-spare").await.map_err(|e| e.to_string())?;
        match h.status.map(|s| s.state) {
            Some(HostStateName::Available) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();

    // The invariant, watched through the rollout: no host held by two machines, no machine naming a host
    // that another machine holds, and the spare never claimed.
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (client, violations, watching) = (client.clone(), violations.clone(), watching.clone());
        tokio::spawn(async move {
            let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
            let bms: Api<BeowulfMachine> = Api::namespaced(client, NS);
            while watching.load(Ordering::Relaxed) {
                if let (Ok(hs), Ok(ms)) = (
                    hosts.list(&ListParams::default()).await,
                    bms.list(&ListParams::default()).await,
                ) {
                    let mut named: BTreeMap<String, String> = BTreeMap::new();
                    for m in &ms {
                        if let Some(r) = &m.spec.host_ref
                            && let Some(other) = named.insert(r.name.clone(), m.name_any())
                        {
                            violations.lock().unwrap().push(format!(
                                "{} and {other} both name host {}",
                                m.name_any(),
                                r.name
                            ));
                        }
                    }
                    for h in &hs {
                        let consumer = h.spec.consumer_ref.as_ref().map(|c| c.name.clone());
                        if let (Some(c), Some(by)) = (&consumer, named.get(&h.name_any()))
                            && c != by
                        {
                            violations.lock().unwrap().push(format!(
                                "host {} is held by {c} but machine {by} names it",
                                h.name_any()
                            ));
                        }
                        if h.name_any() == "a-spare"
                            && let Some(c) = consumer
                        {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("the spare was claimed by {c}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The rollout: a new template.
    fixtures::create_all(&client, &[template("rack-v2")])
        .await
        .unwrap();
    run(mc.kubectl().args([
        "patch",
        "machinedeployment",
        "workers",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"infrastructureRef":{"name":"rack-v2"}}}}}"#,
    ]));
    let old: Vec<String> = before.iter().map(|m| m.0.clone()).collect();
    let after = eventually(
        "both replacements provisioned",
        Duration::from_secs(300),
        || provisioned(old.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let ids: Vec<&str> = after.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        ids,
        ["beowulf://rollout/node-0", "beowulf://rollout/node-1"],
        "the replacements run on the hosts their predecessors released"
    );
    watching.store(false, Ordering::Relaxed);
    watcher.await.unwrap();
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "{}", v.join("\n"));
    assert_eq!(hosts[2].power(), "off");
    assert_eq!(
        hosts[2].bmc.calls().matches("set power").count(),
        0,
        "the spare was never powered on"
    );
    for h in &hosts[..2] {
        let st = host_api.get(&h.node.name).await.unwrap().status.unwrap();
        assert_eq!(st.state, HostStateName::Provisioned, "{}", h.node.name);
        assert!(h.bmc.serial().contains("TESTNODE: callback ok"));
    }
    eprintln!(
        "rollout: two machines replaced on their own hosts after {:.0}s",
        start.elapsed().as_secs_f64()
    );
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(forbidden.is_empty(), "forbidden:\n{}", forbidden.join("\n"));
}
