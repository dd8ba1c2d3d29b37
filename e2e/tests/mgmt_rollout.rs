//! A rollout without surge on fixed hardware, on a real management cluster: a MachineDeployment of two runs on
//! exactly two QEMU hosts; a spare host is added; the template changes and Cluster API's own controllers roll
//! the machines out with `maxSurge: 0`. The replacements take back the hosts their predecessors released —
//! not the spare, although it is free and comes first by name — and no host is ever held by two machines.
//!
//! Both hosts keep a local disk (`BeowulfHost.spec.localDisks`): the first boot formats it, and the file the
//! test node writes there is still there when the replacement boots on the same host (the node counts its
//! boots on the disk; `LocalDisks` condition and `status.localDisks` say `formatted`, then `mounted`). Last,
//! the hosts' cleaning policies are set to `metadata` and `wipe` and the MachineDeployment scaled to zero:
//! each release boots a cleaning boot first, after which `blkid` finds nothing on the disk images.
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
    let disk = |n: usize| dir.path().join(format!("data-{n}.raw"));
    let hosts = [
        QemuHost::start_with_disk(
            &mc,
            "node-0",
            0x90,
            json!({"rack": "r1"}),
            &disk(0),
            32,
            "DATA-0",
        ),
        QemuHost::start_with_disk(
            &mc,
            "node-1",
            0x91,
            json!({"rack": "r1"}),
            &disk(1),
            32,
            "DATA-1",
        ),
        QemuHost::start(&mc, "a-spare", 0x92, json!({"rack": "r1"})),
    ];
    let mut objects = fixtures::namespace_with_bmc_secret(NS);
    objects.push(fixtures::testnode_image(NS, "testnode", &image));
    for (i, h) in hosts.iter().enumerate() {
        let mut o = h.object(NS);
        // The spare joins the rack after the first provisioning.
        o["spec"]["online"] = json!(h.node.name != "a-spare");
        if i < 2 {
            o["spec"]["localDisks"] = json!([{"name": "data", "mountPath": "/data", "disk": {"serial": format!("DATA-{i}")}}]);
        }
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
    let host_api: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    for h in &hosts[..2] {
        local_disk(&host_api, &h.node.name, "formatted").await;
        assert!(
            h.bmc.serial().contains("TESTNODE: disk /data boots=1"),
            "{}",
            h.bmc.serial()
        );
    }

    // The spare comes online and becomes available: from now on a claim that ignored reuse would take it.
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
        // The data came back with the host: the node found its file and counted its second boot there.
        local_disk(&host_api, &h.node.name, "mounted").await;
        assert!(
            h.bmc.serial().contains("TESTNODE: disk /data boots=2"),
            "{}",
            h.bmc.serial()
        );
    }
    eprintln!(
        "rollout: two machines replaced on their own hosts after {:.0}s",
        start.elapsed().as_secs_f64()
    );

    // Cleaning on release: `metadata` on one host, `wipe` on the other, then no machines. Each host boots a
    // cleaning boot before it is free.
    let policies = ["metadata", "wipe"];
    for (h, policy) in hosts[..2].iter().zip(policies) {
        host_api
            .patch(
                &h.node.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"cleaning": policy}})),
            )
            .await
            .unwrap();
    }
    run(mc.kubectl().args([
        "scale",
        "machinedeployment",
        "workers",
        "-n",
        NS,
        "--replicas=0",
    ]));
    eventually(
        "both hosts cleaned and free",
        Duration::from_secs(240),
        || async {
            let mut states = Vec::new();
            for h in &hosts[..2] {
                let host = host_api
                    .get(&h.node.name)
                    .await
                    .map_err(|e| e.to_string())?;
                let st = host.status.map(|s| s.state);
                if st != Some(HostStateName::Available) || host.spec.consumer_ref.is_some() {
                    states.push(format!("{}: {st:?}", h.node.name));
                }
            }
            if states.is_empty() {
                Ok(())
            } else {
                Err(states.join(", "))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    for (i, h) in hosts[..2].iter().enumerate() {
        let serial = h.bmc.serial();
        assert!(
            serial.contains(&format!("BEOWULF-DISKS: data wiped vda {}", policies[i])),
            "{serial}"
        );
        // Independently: no signature left on the disk image.
        let out = std::process::Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(disk(i))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "blkid still finds: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let events = run(mc.kubectl().args([
        "get",
        "events",
        "-n",
        NS,
        "-o",
        "jsonpath={range .items[*]}{.reason} {.involvedObject.name}{'\\n'}{end}",
    ]));
    for h in &hosts[..2] {
        assert!(
            events.contains(&format!("Cleaning {}", h.node.name)),
            "{events}"
        );
    }
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(forbidden.is_empty(), "forbidden:\n{}", forbidden.join("\n"));
}

/// Waits until host `name` reports its local disk `data` with `outcome` and a `LocalDisks` condition to match.
async fn local_disk(api: &Api<BeowulfHost>, name: &str, outcome: &str) {
    eventually(
        &format!("{name}'s disk {outcome}"),
        Duration::from_secs(60),
        || async {
            let h = api.get(name).await.map_err(|e| e.to_string())?;
            let st = h.status.unwrap_or_default();
            let got = st.local_disks.first().map(|d| d.outcome.as_str());
            let cond = st.conditions.iter().find(|c| c.type_ == "LocalDisks");
            match (got, cond) {
                (Some(o), Some(c)) if o == outcome && c.status == "True" => Ok(()),
                _ => Err(format!("{:?} / {cond:?}", st.local_disks)),
            }
        },
    )
    .await
    .unwrap();
}
