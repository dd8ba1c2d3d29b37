//! Remediation on a real management cluster: Cluster API's own MachineHealthCheck controller finds a Machine
//! unhealthy and hands it to `BeowulfRemediation` (external remediation), which power-cycles the QEMU host
//! through its ipmi_sim BMC, re-provisions it, and — with the host kept broken — gives up: the host is
//! marked unhealthy, the Machine deleted, and its MachineSet's replacement provisions on the other host.
//!
//! Why the `cluster.x-k8s.io/remediate-machine` annotation marks the Machine unhealthy here, not a node
//! condition or the node-startup timeout: the workload cluster's control plane never starts in this
//! harness, and MachineHealthCheck evaluates neither for a worker before the control plane is initialized;
//! the annotation is the one check it makes first (CAPI's own e2e uses a node condition, which needs a
//! running workload cluster).
//!
//! Kept broken: once the power cycle's boot is running (its command line is the kernel's by then), the test
//! points the image's callback at a closed port, so the re-provisioning boots but never calls back; it
//! restores the image once that boot is running, for the replacement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use beowulf::api::host::HostStateName;
use beowulf::api::remediation::RemediationPhase;
use beowulf::api::{BeowulfHost, BeowulfMachine, BeowulfRemediation};
use e2e::kube::fixtures::{self, INFRA, QemuHost};
use e2e::kube::mgmt::MANAGER_USER;
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::tail;
use e2e::{require_root_and_peers, run};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const NS: &str = "remedy";
/// The strategy: one power cycle with a 60 s wait, then a re-provisioning with 60 s. Each wait must outlast
/// a boot: the power cycle's up to the second boot's init (where the test breaks the image for the next
/// boot), the re-provisioning's up to its failed callback. A boot takes 18 s to its init on an idle 2-vCPU
/// machine under TCG, and took over 20 s in a CI run that had a 20 s wait and failed.
const POWER_CYCLE_WAIT: u64 = 60;
const REPROVISION_WAIT: u64 = 60;

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

/// `set power` calls the BMC got.
fn power_changes(h: &QemuHost) -> usize {
    h.bmc.calls().matches("set power").count()
}

/// The per-boot token of the boot on the machine's console (the console starts afresh at each power-on).
fn seed(h: &QemuHost) -> Option<String> {
    h.bmc
        .serial()
        .lines()
        .find_map(|l| l.strip_prefix("TESTNODE: seed=").map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_machine_is_power_cycled_reprovisioned_then_replaced_on_another_host() {
    require_root_and_peers();
    let start = Instant::now();
    let dir = e2e::Scratch::new("remediation");
    let mc = MgmtCluster::start("remedy", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();
    let artifacts = dir.path().join("img");
    let image = LabImage::testnode(&artifacts);
    let hosts = [
        QemuHost::start(&mc, "node-0", 0x70, json!({"rack": "r1"})),
        QemuHost::start(&mc, "node-1", 0x71, json!({"rack": "r1"})),
    ];
    let mut objects = fixtures::namespace_with_bmc_secret(NS);
    objects.push(fixtures::testnode_image(NS, "testnode", &image));
    objects.extend(hosts.iter().map(|h| h.object(NS)));
    fixtures::create_all(&client, &objects).await.unwrap();
    let manager = ManagerNode::start(&mc, &beowulf(), "mgr", &artifacts, &[])
        .await
        .unwrap();
    let log = || tail(&manager.log(), 80);

    // A Cluster without a control plane, a MachineDeployment of one with fixed bootstrap data, and a
    // MachineHealthCheck over it whose remediation is ours.
    let endpoint = mc.unanswered_ip().to_string();
    let mut objects = fixtures::workers(NS, "c1", &endpoint, "workers", 1, "rack", "remediation");
    objects.extend([
        json!({"apiVersion": INFRA, "kind": "BeowulfRemediationTemplate",
                   "metadata": {"name": "cycle-then-reprovision", "namespace": NS},
                   "spec": {"template": {"spec": {"strategy": {
                       "powerCycles": 1, "timeoutSeconds": POWER_CYCLE_WAIT,
                       "reprovision": true, "reprovisionTimeoutSeconds": REPROVISION_WAIT}}}}}),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineHealthCheck",
                   "metadata": {"name": "workers", "namespace": NS},
                   "spec": {"clusterName": "c1", "selector": {"matchLabels": {"pool": "w"}},
                            "checks": {"nodeStartupTimeoutSeconds": 0},
                            "remediation": {"templateRef": {"apiVersion": INFRA,
                                                            "kind": "BeowulfRemediationTemplate",
                                                            "name": "cycle-then-reprovision"}}}}),
    ]);
    fixtures::create_all(&client, &objects).await.unwrap();

    // The Machine provisions on node-0 (the first free host by name).
    let first = eventually(
        "the Machine provisioned",
        Duration::from_secs(240),
        || async {
            let ms = mc.machines(NS);
            match ms.as_slice() {
                [(name, id, phase)] if phase == "Provisioned" => Ok((name.clone(), id.clone())),
                _ => Err(format!("{ms:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert_eq!(first.1, "beowulf://remedy/node-0");
    let machine = first.0;
    let boot1 = seed(&hosts[0]).expect("node-0 booted");
    let powers = power_changes(&hosts[0]);
    let provisioned = start.elapsed();

    // Unhealthy: Cluster API creates the remediation, named after the Machine, from our template.
    run(mc.kubectl().args([
        "annotate",
        "machines.cluster.x-k8s.io",
        &machine,
        "-n",
        NS,
        "cluster.x-k8s.io/remediate-machine=",
    ]));
    let remediations: Api<BeowulfRemediation> = Api::namespaced(client.clone(), NS);
    let host_api: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    let r = eventually(
        "MachineHealthCheck to create the BeowulfRemediation",
        Duration::from_secs(60),
        || async {
            remediations
                .get_opt(&machine)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await
    .unwrap();
    assert_eq!(r.spec.strategy.power_cycles, 1);
    assert!(
        r.owner_references()
            .iter()
            .any(|o| o.kind == "Machine" && o.name == machine)
    );

    // Step 1: a power cycle through ipmi_sim; the node boots its image again with a fresh token.
    let record = |n: usize| {
        let host_api = host_api.clone();
        async move {
            let h = host_api.get("node-0").await.map_err(|e| e.to_string())?;
            let recs = h.status.map(|s| s.remediations).unwrap_or_default();
            recs.get(n)
                .map(|r| r.action.clone())
                .ok_or_else(|| format!("{recs:?}"))
        }
    };
    let action = eventually("the power cycle", Duration::from_secs(60), || record(0))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert_eq!(action, "PowerCycle");
    let cycled = Instant::now();
    // A new boot: the console starts afresh at power-on, and a new seed carries the new per-boot token.
    let new_boot = |after: String| {
        let host = &hosts[0];
        async move {
            match seed(host) {
                Some(s) if s != after => Ok(s),
                other => Err(format!("{other:?}")),
            }
        }
    };
    let boot2 = eventually(
        "node-0 to boot again",
        Duration::from_secs(POWER_CYCLE_WAIT),
        || new_boot(boot1.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let to_init = cycled.elapsed();

    // Kept broken: the next boot's callback goes to a closed port on the node itself. This boot's command
    // line is already the kernel's; the re-provisioning, asked for when the power cycle's wait ends, renders
    // the changed one.
    let images: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(
                "infrastructure.cluster.x-k8s.io",
                "v1alpha1",
                "BeowulfImage",
            ),
            "beowulfimages",
        ),
    );
    let good = fixtures::testnode_image(NS, "testnode", &image)["spec"]["cmdline"]
        .as_str()
        .unwrap()
        .to_string();
    let broken = good.replace("cb={{ callback_url }}", "cb=http://127.0.0.1:9/broken");
    assert_ne!(broken, good);
    let set_cmdline = |c: String| {
        let images = images.clone();
        async move {
            images
                .patch(
                    "testnode",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"cmdline": c}})),
                )
                .await
                .unwrap();
        }
    };
    set_cmdline(broken).await;
    assert!(
        record(1).await.is_err(),
        "the re-provisioning was asked for before the test could break the image ({to_init:?} from the \
         power cycle to the second boot's init); raise POWER_CYCLE_WAIT"
    );
    eventually(
        "node-0's second boot to call back",
        Duration::from_secs(120),
        || async {
            let serial = hosts[0].bmc.serial();
            if seed(&hosts[0]).as_ref() == Some(&boot2) && serial.contains("TESTNODE: callback ok")
            {
                Ok(())
            } else {
                Err(tail(&serial, 3))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    eprintln!(
        "remediation: second boot at its init {:.0}s and called back {:.0}s after the power cycle",
        to_init.as_secs_f64(),
        cycled.elapsed().as_secs_f64()
    );
    assert!(
        power_changes(&hosts[0]) >= powers + 2,
        "off and on through the BMC"
    );
    let h = host_api.get("node-0").await.unwrap();
    assert_eq!(h.status.unwrap().state, HostStateName::Provisioned);

    // Step 2 (after the power cycle's wait): the same host is provisioned again — and never calls back.
    let action = eventually(
        "the re-provisioning",
        Duration::from_secs(POWER_CYCLE_WAIT + 60),
        || record(1),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert_eq!(action, "Reprovision");
    // Restored as soon as the re-provisioning's boot is running, long before the replacement is rendered.
    eventually(
        "node-0's re-provisioning boot",
        Duration::from_secs(REPROVISION_WAIT),
        || new_boot(boot2.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    set_cmdline(good).await;
    eventually("node-0's broken boot", Duration::from_secs(120), || async {
        if hosts[0].bmc.serial().contains("TESTNODE: callback FAILED") {
            Ok(())
        } else {
            Err(tail(&hosts[0].bmc.serial(), 3))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let r = remediations.get(&machine).await.unwrap();
    assert_eq!(
        r.status.as_ref().and_then(|s| s.phase),
        Some(RemediationPhase::Reprovisioning)
    );

    // Step 3: give up. node-0 is marked unhealthy, the Machine deleted, and the MachineSet's replacement
    // provisions on node-1.
    let replaced = eventually(
        "a replacement Machine provisioned",
        Duration::from_secs(REPROVISION_WAIT + 240),
        || async {
            let ms = mc.machines(NS);
            match ms.as_slice() {
                [(name, id, phase)] if *name != machine && phase == "Provisioned" => Ok(id.clone()),
                _ => Err(format!("{ms:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert_eq!(replaced, "beowulf://remedy/node-1");
    let h0 = eventually("node-0 released", Duration::from_secs(60), || async {
        let h = host_api.get("node-0").await.map_err(|e| e.to_string())?;
        let state = h.status.as_ref().map(|s| s.state);
        if h.spec.consumer_ref.is_none() && state == Some(HostStateName::Available) {
            Ok(h)
        } else {
            Err(format!("{state:?} {:?}", h.spec.consumer_ref))
        }
    })
    .await
    .unwrap();
    let why = h0
        .annotations()
        .get(beowulf::controllers::remediation::UNHEALTHY_ANNOTATION)
        .cloned()
        .expect("node-0 marked unhealthy");
    assert!(
        why.contains("1 power cycle(s) and a re-provisioning did not make the Machine healthy"),
        "{why}"
    );
    assert_eq!(hosts[0].power(), "off");
    let recs = h0.status.unwrap().remediations;
    let actions: Vec<&str> = recs.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["PowerCycle", "Reprovision"]);
    assert!(
        recs.iter()
            .all(|r| r.machine.as_deref() == Some(machine.as_str()))
    );
    // The remediation went with its Machine (garbage collection); the replacement is healthy so has none.
    eventually("the remediation gone", Duration::from_secs(60), || async {
        match remediations.get_opt(&machine).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let bms: Api<BeowulfMachine> = Api::namespaced(client.clone(), NS);
    let held: Vec<String> = bms
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .filter_map(|m| m.spec.host_ref.as_ref().map(|r| r.name.clone()))
        .collect();
    assert_eq!(held, ["node-1"]);
    eprintln!(
        "remediation: provisioned after {:.0}s, replaced after {:.0}s",
        provisioned.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(forbidden.is_empty(), "forbidden:\n{}", forbidden.join("\n"));
}
