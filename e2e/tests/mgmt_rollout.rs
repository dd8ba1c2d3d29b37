//! A rollout without surge on fixed hardware, on a real management cluster: a MachineDeployment of two runs on
//! exactly two QEMU hosts; a spare host is added; the template changes and Cluster API's own controllers roll
//! the machines out with `maxSurge: 0`. The replacements take back the hosts their predecessors released —
//! not the spare, although it is free and comes first by name — and no host is ever held by two machines.
//!
//! `maxUnavailable: 2` (all of them): a Machine is Available only once its Node is ready, and no node joins
//! here (the test node image runs no kubelet), so with fewer the MachineDeployment would never delete an old
//! Machine. It is still a rollout without a single extra host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use beowulf::api::BeowulfHost;
use beowulf::api::host::HostStateName;
use e2e::kube::fixtures::{self, QemuHost};
use e2e::kube::holds::HoldWatch;
use e2e::kube::mgmt::MANAGER_USER;
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::tail;
use e2e::{require_root_and_peers, run};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const NS: &str = "rollout";

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
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
    let mut objects = fixtures::workers(NS, "c1", &endpoint, "workers", 2, "rack-v1", "rollout");
    if let Some(md) = objects.last_mut() {
        md["spec"]["rollout"] = json!({"strategy": {"type": "RollingUpdate",
                                                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 2}}});
    }
    fixtures::create_all(&client, &objects).await.unwrap();
    let provisioned = |old: Vec<String>| {
        let mc = &mc;
        async move {
            let ms = mc.machines(NS);
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

    // The invariant, watched through the rollout (no host held by two machines), and the spare never claimed.
    let holds = HoldWatch::start(client.clone(), NS, |h| {
        let consumer = h.spec.consumer_ref.as_ref()?;
        (h.name_any() == "a-spare").then(|| format!("the spare was claimed by {}", consumer.name))
    });

    // The rollout: a new template.
    fixtures::create_all(&client, &[fixtures::machine_template(NS, "rack-v2")])
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
    let v = holds.stop().await;
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
