//! Two `beowulf manager` replicas with leader election on a real Lease, on two nodes of a real management
//! cluster: the leader is killed (SIGKILL, no goodbye) while it provisions two machines; the other takes
//! over within the lease time and the machines still provision; no host is ever held by two machines; then
//! that leader is killed too and a freshly started manager, which knows only what the API server holds,
//! carries on (scales the machines down without touching the machine that stays).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use beowulf::api::BeowulfHost;
use beowulf::api::host::HostStateName;
use e2e::kube::fixtures::{self, QemuHost};
use e2e::kube::holds::HoldWatch;
use e2e::kube::mgmt::MANAGER_USER;
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::{require_root_and_peers, run};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;

const NS: &str = "racks";
/// `beowulf manager`'s Lease duration.
const LEASE: Duration = Duration::from_secs(15);

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

fn lease_holder(mc: &MgmtCluster) -> String {
    let mut cmd = mc.kubectl();
    cmd.args(["get", "lease", "beowulf-manager", "-n", "beowulf-system"])
        .args(["-o", "jsonpath={.spec.holderIdentity}"]);
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

async fn wait_leader(mc: &MgmtCluster, who: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    eventually(&format!("{who} to hold the Lease"), within, || {
        let h = lease_holder(mc);
        async move { if h == who { Ok(()) } else { Err(h) } }
    })
    .await
    .unwrap();
    t0.elapsed()
}

/// `set power` calls the BMC got (what changes a machine; reads are free).
fn power_changes(h: &QemuHost) -> usize {
    h.bmc.calls().matches("set power").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_replica_takes_over_a_killed_leader_and_a_new_manager_rebuilds_from_the_api() {
    require_root_and_peers();
    let dir = e2e::Scratch::new("failover");
    let mc = MgmtCluster::start("failover", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();
    let image = LabImage::testnode(&dir.path().join("img"));
    let artifacts = dir.path().join("img");
    let hosts = [
        QemuHost::start(&mc, "node-0", 0x50, json!({"rack": "r1"})),
        QemuHost::start(&mc, "node-1", 0x51, json!({"rack": "r1"})),
    ];
    let mut objects = fixtures::namespace_with_bmc_secret(NS);
    objects.push(fixtures::testnode_image(NS, "testnode", &image));
    objects.extend(hosts.iter().map(|h| h.object(NS)));
    fixtures::create_all(&client, &objects).await.unwrap();

    let mut a = ManagerNode::start(&mc, &beowulf(), "mgr-a", &artifacts, &["--leader-elect"])
        .await
        .unwrap();
    wait_leader(&mc, "mgr-a", Duration::from_secs(30)).await;
    let b = ManagerNode::start(&mc, &beowulf(), "mgr-b", &artifacts, &["--leader-elect"])
        .await
        .unwrap();

    // The invariant, watched through the whole test: a host is held by at most one machine, a machine's host
    // is the host that names it, and no host ever changes hands.
    let mut first_consumer: BTreeMap<String, String> = BTreeMap::new();
    let holds = HoldWatch::start(client.clone(), NS, move |h| {
        let c = h.spec.consumer_ref.as_ref()?.name.clone();
        let first = first_consumer.entry(h.name_any()).or_insert(c.clone());
        (*first != c).then(|| format!("host {} went from {first} to {c}", h.name_any()))
    });

    // Two machines to provision: a Cluster without a control plane and a MachineDeployment with fixed data.
    let endpoint = mc.unanswered_ip().to_string();
    fixtures::create_all(
        &client,
        &fixtures::workers(NS, "c2", &endpoint, "c2-workers", 2, "rack", "failover"),
    )
    .await
    .unwrap();

    // The leader claims both hosts and powers them on; it dies before they call back.
    let host_api: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    eventually("both hosts provisioning", Duration::from_secs(120), || {
        let host_api = host_api.clone();
        async move {
            let hs = host_api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let states: Vec<_> = hs
                .iter()
                .map(|h| h.status.as_ref().map(|s| s.state))
                .collect();
            if states
                .iter()
                .all(|s| *s == Some(HostStateName::Provisioning))
            {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmgr-a:\n{}", a.log()));
    a.kill();
    let takeover = wait_leader(&mc, "mgr-b", LEASE + Duration::from_secs(10)).await;
    eprintln!(
        "mgr-b took over {:.1}s after mgr-a was killed",
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= LEASE + LEASE / 3 + Duration::from_secs(2),
        "{takeover:?}"
    );

    let provisioned = || {
        let mc = &mc;
        async move {
            let out = run(mc.kubectl().args([
                "get",
                "machines.cluster.x-k8s.io",
                "-n",
                NS,
                "-o",
                "jsonpath={range .items[*]}{.status.phase}={.spec.providerID} {end}",
            ]));
            let mut ids: Vec<String> = out
                .split_whitespace()
                .filter_map(|m| m.strip_prefix("Provisioned="))
                .map(str::to_string)
                .collect();
            ids.sort();
            if ids.len() == 2 { Ok(ids) } else { Err(out) }
        }
    };
    let ids = eventually(
        "both Machines Provisioned under mgr-b",
        Duration::from_secs(300),
        provisioned,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nmgr-b:\n{}", b.log()));
    assert_eq!(ids, ["beowulf://racks/node-0", "beowulf://racks/node-1"]);
    assert!(
        b.log().contains("started again"),
        "mgr-b restarted the boots mgr-a had begun:\n{}",
        b.log()
    );
    for h in &hosts {
        assert!(
            h.bmc.serial().contains("TESTNODE: callback ok"),
            "{}",
            h.node.name
        );
        assert_eq!(h.power(), "on");
    }

    // A manager that knows nothing but the API: mgr-b dies, mgr-c starts and leads.
    let mut b = b;
    b.kill();
    let before: Vec<usize> = hosts.iter().map(power_changes).collect();
    let c = ManagerNode::start(&mc, &beowulf(), "mgr-c", &artifacts, &["--leader-elect"])
        .await
        .unwrap();
    wait_leader(&mc, "mgr-c", LEASE + Duration::from_secs(10)).await;
    // Scaling down: it deprovisions exactly one host (powered off, released) and leaves the other alone.
    run(mc.kubectl().args([
        "scale",
        "machinedeployment",
        "c2-workers",
        "-n",
        NS,
        "--replicas=1",
    ]));
    let released = eventually("one host released", Duration::from_secs(120), || {
        let host_api = host_api.clone();
        async move {
            let hs = host_api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let free: Vec<String> = hs
                .iter()
                .filter(|h| {
                    h.spec.consumer_ref.is_none()
                        && h.status.as_ref().map(|s| s.state) == Some(HostStateName::Available)
                })
                .map(|h| h.name_any())
                .collect();
            if free.len() == 1 {
                Ok(free[0].clone())
            } else {
                Err(format!("{hs:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmgr-c:\n{}", c.log()));
    for (h, n) in hosts.iter().zip(before) {
        if h.node.name == released {
            assert_eq!(h.power(), "off", "{} released but on", h.node.name);
            assert!(power_changes(h) > n);
        } else {
            assert_eq!(
                power_changes(h),
                n,
                "mgr-c touched {}, which stays",
                h.node.name
            );
            assert_eq!(h.power(), "on");
            let st = host_api.get(&h.node.name).await.unwrap().status.unwrap();
            assert_eq!(st.state, HostStateName::Provisioned);
        }
    }

    let v = holds.stop().await;
    assert!(v.is_empty(), "{}", v.join("\n"));
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(forbidden.is_empty(), "forbidden:\n{}", forbidden.join("\n"));
}
