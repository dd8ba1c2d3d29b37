//! Hardware inspection and selection by hardware on a real management cluster.
//!
//! `beowulf manager --inspection-image inspector` (its own ServiceAccount, on a node namespace) finds three
//! new BeowulfHosts — QEMU machines of 512, 768 and 1024 MiB behind ipmi_sim BMCs — with no
//! `status.hardware`, PXE-boots each into the inspection image (`images/inspector`), takes the report the
//! machine posts with its boot's token, powers the machine off and only then makes the host `available`.
//! A watch records every state each host goes through.
//!
//! Then Cluster API's own controllers (a Cluster without a control plane, MachineDeployments whose machines
//! carry fixed bootstrap data, as in `mgmt_failover`) create BeowulfMachines from templates with
//! `hardwareRequirements`: `memory: 1Gi` claims exactly the 1024 MiB host, which boots the test node image to
//! `provisioned`; `memory: 64Gi` claims nothing and says why, counting the two hosts still free.
//!
//! The big host has two disks, one blank and one holding someone's ext4; the 1Gi template keeps two local
//! disks chosen by size from the inspected hardware. The node formats and mounts the blank one and leaves the
//! other untouched (its image's SHA-256 is unchanged); the host's `LocalDisks` condition says which and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::kube::fixtures::{self, INFRA, QemuHost};
use e2e::kube::mgmt::MANAGER_USER;
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::require_root_and_peers;
use e2e::tail;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NS: &str = "lab";
/// The inspection image's name (`--inspection-image`) and its command line.
const INSPECTOR: &str = "inspector";
const INSPECTOR_CMDLINE: &str = "console=ttyS0,115200 quiet panic=-1 BOOTIF={{ bootif }} beowulf.lldp_wait=0 beowulf.inspect={{ inspection_url }}";
/// The bootstrap data of the deployments' machines.
const DATA: &str = "#cloud-config\n# big memory\nruncmd: [\"echo big\"]\n";
/// The rack: name, MAC/address suffix, memory (MiB).
const RACK: [(&str, u8, u32); 3] = [
    ("small", 0x60, 512),
    ("medium", 0x61, 768),
    ("big", 0x62, 1024),
];

/// Per host: each state it was seen in (consecutive repeats folded), and whether it had `status.hardware`.
type StatesSeen = BTreeMap<String, Vec<(String, bool)>>;

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

fn api(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// Every object of `api` as the API server stores it (JSON), by name.
async fn objects(api: &Api<DynamicObject>) -> Result<BTreeMap<String, Value>, String> {
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    list.items
        .into_iter()
        .map(|o| {
            let v = serde_json::to_value(&o).map_err(|e| e.to_string())?;
            Ok((v["metadata"]["name"].as_str().unwrap_or("").to_string(), v))
        })
        .collect()
}

fn condition<'a>(obj: &'a Value, cond: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == cond)
}

fn state(host: &Value) -> &str {
    host["status"]["state"].as_str().unwrap_or("-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_inspected_before_they_are_available_and_machines_select_them_by_hardware() {
    require_root_and_peers();
    let start = Instant::now();
    let dir = e2e::Scratch::new("inspection");
    let mc = MgmtCluster::start("inspect", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();
    let cluster_up = start.elapsed();

    // The artifact root: the test node image at its top, the inspection image in `inspector/`.
    let artifacts = dir.path().join("img");
    let image = LabImage::testnode(&artifacts);
    let inspector = e2e::inspector::build(&artifacts.join(INSPECTOR));
    let rel = |p: &std::path::Path| {
        p.strip_prefix(&artifacts)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };

    let hosts_api = api(
        &client,
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "BeowulfHost",
        "beowulfhosts",
    );
    let machines_api = api(
        &client,
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "BeowulfMachine",
        "beowulfmachines",
    );
    let capi_machines_api = api(
        &client,
        "cluster.x-k8s.io",
        "v1beta2",
        "Machine",
        "machines",
    );

    // Every state each host is seen in (consecutive repeats folded), with whether it had `status.hardware`.
    let seen: Arc<Mutex<StatesSeen>> = Arc::default();
    let recorder = {
        let (hosts_api, seen) = (hosts_api.clone(), seen.clone());
        tokio::spawn(async move {
            // With back-off: once the API server is gone (teardown, or a failed test unwinding), a watcher
            // without it retries in a busy loop that never yields, and the runtime's shutdown waits on it forever.
            let mut events = std::pin::pin!(
                watcher(hosts_api, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(event) = events.next().await {
                let Ok(h) = event else { continue };
                let v = serde_json::to_value(&h).unwrap();
                let entry = (state(&v).to_string(), v["status"]["hardware"].is_object());
                let mut seen = seen.lock().unwrap();
                let states = seen
                    .entry(v["metadata"]["name"].as_str().unwrap().to_string())
                    .or_default();
                if states.last() != Some(&entry) {
                    states.push(entry);
                }
            }
        })
    };

    // The big host's disks: 48 MiB blank, 40 MiB holding someone's filesystem.
    let blank = dir.path().join("blank-48.raw");
    let precious = dir.path().join("precious-40.raw");
    for (path, mib) in [(&blank, 48u64), (&precious, 40)] {
        std::fs::File::create(path)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
    }
    e2e::run(
        std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "precious"])
            .arg(&precious),
    );
    let precious_sha = hex::encode(Sha256::digest(std::fs::read(&precious).unwrap()));
    let disk_args = |path: &std::path::Path, id: &str, serial: &str| {
        vec![
            "-drive".to_string(),
            format!("if=none,id={id},format=raw,file={}", path.display()),
            "-device".to_string(),
            format!("virtio-blk-pci,drive={id},serial={serial}"),
        ]
    };
    let rack: Vec<(QemuHost, u32)> = RACK
        .iter()
        .map(|&(name, n, mib)| {
            let args = if name == "big" {
                [
                    disk_args(&blank, "d0", "BLANK-48"),
                    disk_args(&precious, "d1", "PRECIOUS-40"),
                ]
                .concat()
            } else {
                Vec::new()
            };
            (
                QemuHost::start_with_args(&mc, name, n, json!({"rack": "r1"}), mib, args),
                mib,
            )
        })
        .collect();
    let mut objects_to_create = fixtures::namespace_with_bmc_secret(NS);
    objects_to_create.push(fixtures::testnode_image(NS, "testnode", &image));
    objects_to_create.push(json!({"apiVersion": INFRA, "kind": "BeowulfImage",
        "metadata": {"name": INSPECTOR, "namespace": NS},
        "spec": {"kernel": {"url": rel(&inspector.kernel)}, "initrds": [{"url": rel(&inspector.initrd)}],
                 "cmdline": INSPECTOR_CMDLINE, "format": "live"}}));
    objects_to_create.extend(rack.iter().map(|(h, _)| h.object(NS)));
    fixtures::create_all(&client, &objects_to_create)
        .await
        .unwrap();

    let manager = ManagerNode::start(
        &mc,
        &beowulf(),
        "mgr-0",
        &artifacts,
        &[
            "--inspection-image",
            INSPECTOR,
            "--discovery-namespace",
            NS,
            "--discovery-network",
            "10.99.0.0/24",
            "--discovery-range",
            "10.99.0.200-10.99.0.210",
        ],
    )
    .await
    .unwrap();
    let t0 = Instant::now();

    // Every host inspected, powered off by the manager, then available.
    let inspected = eventually(
        "every host inspected and available",
        Duration::from_secs(300),
        || {
            let hosts_api = hosts_api.clone();
            async move {
                let hosts = objects(&hosts_api).await?;
                let done = hosts.len() == RACK.len()
                    && hosts.values().all(|h| {
                        state(h) == "available"
                            && h["status"]["hardware"].is_object()
                            && condition(h, "Inspected").is_some_and(|c| c["status"] == "True")
                    });
                if done {
                    Ok(hosts)
                } else {
                    Err(hosts
                        .iter()
                        .map(|(n, h)| {
                            format!("{n}: {} (phase {})", state(h), h["status"]["lastBootPhase"])
                        })
                        .collect::<Vec<_>>()
                        .join(", "))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        let consoles: Vec<String> = rack
            .iter()
            .map(|(h, _)| format!("--- {}:\n{}", h.node.name, tail(&h.bmc.serial(), 15)))
            .collect();
        panic!(
            "{e}\nconsoles:\n{}\nmanager log:\n{}",
            consoles.join("\n"),
            tail(&manager.log(), 60)
        )
    });
    let all_inspected = t0.elapsed();
    eprintln!(
        "all {} hosts inspected and available {:.1}s after the manager was ready",
        RACK.len(),
        all_inspected.as_secs_f64()
    );

    for (h, mib) in &rack {
        let name = &h.node.name;
        let host = &inspected[name];
        let hw = &host["status"]["hardware"];
        assert_eq!(hw["memory"]["bytes"], u64::from(*mib) << 20, "{name}: {hw}");
        assert!(
            hw["nics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["mac"] == h.node.mac.as_str()),
            "{name}: no NIC with the boot MAC {} in {}",
            h.node.mac,
            hw["nics"]
        );
        let cond = condition(host, "Inspected").unwrap();
        assert_eq!(cond["reason"], "Inspected", "{name}: {cond}");
        assert!(host["status"]["inspectedAt"].is_string(), "{name}: {host}");
        assert_eq!(host["status"]["powerState"], "off", "{name}");
        assert!(host["spec"]["consumerRef"].is_null(), "{name}");
        // The machine really ran the inspector (its report is the one above), and its BMC says it is off. Not
        // "posted ok": the manager powers the host off as soon as the report is in, often before that line.
        assert!(
            h.bmc.serial().contains("INSPECTOR: BEGIN"),
            "{name}:\n{}",
            h.bmc.serial()
        );
        assert_eq!(h.power(), "off", "{name}");
        assert_eq!(h.bmc.qemu_pid(), None, "{name}'s machine still runs");
        // Through `inspecting` to `available`; never available without a report.
        let states = seen.lock().unwrap()[name.as_str()].clone();
        let first = |s: &str| states.iter().position(|(st, _)| st == s);
        let (Some(inspecting), Some(available)) = (first("inspecting"), first("available")) else {
            panic!("{name}: states seen {states:?}");
        };
        assert!(inspecting < available, "{name}: states seen {states:?}");
        assert!(
            states.iter().all(|(st, hw)| st != "available" || *hw),
            "{name} was available without a report: {states:?}"
        );
        eprintln!("{name} ({mib} MiB): {states:?}");
    }

    // Discovery: a machine no BeowulfHost names network-boots (someone powers it on at its BMC). It becomes
    // exactly one BeowulfHost `discovered-<mac>`, with its hardware, waiting to be accepted.
    let stranger = QemuHost::start_sized(&mc, "stranger", 0x63, json!({}), 640);
    stranger.bmc.sim.ipmitool(&["chassis", "bootdev", "pxe"]);
    stranger.bmc.sim.ipmitool(&["power", "on"]);
    let t_discovery = Instant::now();
    let found = eventually(
        "the unknown machine recorded as a discovered host",
        Duration::from_secs(180),
        || {
            let hosts_api = hosts_api.clone();
            async move {
                let hosts = objects(&hosts_api).await?;
                match hosts.get("discovered-525400000063") {
                    Some(h) if state(h) == "discovered" && h["status"]["hardware"].is_object() => {
                        Ok((hosts.len(), h.clone()))
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nstranger's console:\n{}\nmanager log:\n{}",
            tail(&stranger.bmc.serial(), 20),
            tail(&manager.log(), 40)
        )
    });
    let (count, discovered) = found;
    assert_eq!(count, RACK.len() + 1, "one discovered host, no other");
    assert_eq!(
        discovered["status"]["hardware"]["memory"]["bytes"],
        640u64 << 20
    );
    assert_eq!(
        discovered["spec"]["bootMACAddress"],
        stranger.node.mac.as_str()
    );
    assert_eq!(discovered["spec"]["online"], false);
    assert_eq!(
        discovered["metadata"]["labels"]["beowulf.infrastructure.cluster.x-k8s.io/discovered"],
        "true"
    );
    assert!(
        discovered["metadata"]["finalizers"].is_null(),
        "{discovered}"
    );
    assert!(stranger.bmc.serial().contains("INSPECTOR: BEGIN"));
    eprintln!(
        "unknown machine powered on → discovered host recorded: {:.1}s",
        t_discovery.elapsed().as_secs_f64()
    );

    // Selection: a Cluster without a control plane, and a MachineDeployment of one machine that needs 1Gi.
    let endpoint = mc.unanswered_ip().to_string();
    // Two local disks picked by size from the inspected hardware: the smallest of at least 44 MiB (the blank
    // one), then the smallest free one of at least 36 MiB (the one holding a filesystem).
    let template = |name: &str, memory: &str| {
        json!({"apiVersion": INFRA, "kind": "BeowulfMachineTemplate", "metadata": {"name": name, "namespace": NS},
               "spec": {"template": {"spec": {"imageRef": {"name": "testnode"},
                                              "hardwareRequirements": {"memory": memory},
                                              "localDisks": [
                   {"name": "scratch", "mountPath": "/scratch", "disk": {"minSizeBytes": 44u64 << 20}},
                   {"name": "keep", "mountPath": "/keep", "disk": {"minSizeBytes": 36u64 << 20}}]}}}})
    };
    let deployment = |name: &str, template: &str| {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
               "metadata": {"name": name, "namespace": NS},
               "spec": {"clusterName": "c3", "replicas": 1,
                        "selector": {"matchLabels": {"pool": name}},
                        "template": {"metadata": {"labels": {"pool": name}},
                                     "spec": {"clusterName": "c3", "version": "v1.33.1",
                                              "bootstrap": {"dataSecretName": "data"},
                                              "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                                    "kind": "BeowulfMachineTemplate", "name": template}}}}})
    };
    let t1 = Instant::now();
    fixtures::create_all(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "data", "namespace": NS},
                   "type": "cluster.x-k8s.io/secret",
                   "stringData": {"value": DATA, "format": "cloud-config"}}),
            json!({"apiVersion": INFRA, "kind": "BeowulfCluster", "metadata": {"name": "c3", "namespace": NS},
                   "spec": {"controlPlaneEndpoint": {"host": endpoint, "port": 6443}}}),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": "c3", "namespace": NS},
                   "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                  "kind": "BeowulfCluster", "name": "c3"}}}),
            template("big-memory", "1Gi"),
            deployment("big", "big-memory"),
        ],
    )
    .await
    .unwrap();

    let requirement = |bm: &Value| {
        bm["spec"]["hardwareRequirements"]["memory"]
            .as_str()
            .map(str::to_string)
    };
    let big_machine = eventually(
        "the 1Gi machine to claim a host",
        Duration::from_secs(120),
        || {
            let machines_api = machines_api.clone();
            async move {
                let machines = objects(&machines_api).await?;
                let mine: Vec<&Value> = machines
                    .values()
                    .filter(|m| requirement(m).as_deref() == Some("1Gi"))
                    .collect();
                match mine.as_slice() {
                    [m] if m["spec"]["hostRef"].is_object() => Ok((*m).clone()),
                    _ => Err(format!("{mine:?}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nmanager log:\n{}", tail(&manager.log(), 60)));
    let claimed = t1.elapsed();
    let big_name = big_machine["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        big_machine["spec"]["hostRef"]["name"], "big",
        "{big_machine}"
    );
    let hosts = objects(&hosts_api).await.unwrap();
    assert_eq!(
        hosts["big"]["spec"]["consumerRef"]["name"],
        big_name.as_str(),
        "{}",
        hosts["big"]
    );
    for other in ["small", "medium"] {
        assert!(
            hosts[other]["spec"]["consumerRef"].is_null(),
            "{}",
            hosts[other]
        );
    }

    // A machine no host fits: it claims nothing and counts the two hosts still free under its requirement.
    fixtures::create_all(
        &client,
        &[
            template("huge-memory", "64Gi"),
            deployment("huge", "huge-memory"),
        ],
    )
    .await
    .unwrap();
    let expected = "no host meets the hardware requirements: 2 hosts have less than 64Gi of memory";
    let huge = eventually(
        "the 64Gi machine to find no host",
        Duration::from_secs(120),
        || {
            let machines_api = machines_api.clone();
            async move {
                let machines = objects(&machines_api).await?;
                let mine: Vec<&Value> = machines
                    .values()
                    .filter(|m| requirement(m).as_deref() == Some("64Gi"))
                    .collect();
                match mine.as_slice() {
                    [m] if condition(m, "Ready").is_some_and(|c| c["message"] == expected) => {
                        Ok((*m).clone())
                    }
                    _ => Err(format!(
                        "{:?}",
                        mine.iter()
                            .map(|m| condition(m, "Ready"))
                            .collect::<Vec<_>>()
                    )),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nmanager log:\n{}", tail(&manager.log(), 60)));
    let ready = condition(&huge, "Ready").unwrap();
    assert_eq!(ready["status"], "False", "{ready}");
    assert_eq!(ready["reason"], "NoHostAvailable", "{ready}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("no host meets the hardware requirements:"),
        "{message}"
    );
    assert!(
        message.contains("2 hosts have less than 64Gi of memory"),
        "{message}"
    );
    assert!(huge["spec"]["hostRef"].is_null(), "{huge}");

    // The big host boots the test node image and calls back.
    let provisioned = eventually("the big host provisioned", Duration::from_secs(240), || {
        let (hosts_api, machines_api, capi_machines_api, big_name) = (
            hosts_api.clone(),
            machines_api.clone(),
            capi_machines_api.clone(),
            big_name.clone(),
        );
        async move {
            let hosts = objects(&hosts_api).await?;
            let bm = objects(&machines_api)
                .await?
                .remove(&big_name)
                .unwrap_or_default();
            // Cluster API's Machine has the BeowulfMachine's name.
            let machine = objects(&capi_machines_api)
                .await?
                .remove(&big_name)
                .unwrap_or_default();
            if state(&hosts["big"]) == "provisioned"
                && bm["status"]["initialization"]["provisioned"] == true
                && machine["status"]["phase"] == "Provisioned"
            {
                Ok((hosts, bm, machine))
            } else {
                Err(format!(
                    "big: {} (phase {}); BeowulfMachine Ready: {:?}; Machine phase {}",
                    state(&hosts["big"]),
                    hosts["big"]["status"]["lastBootPhase"],
                    condition(&bm, "Ready"),
                    machine["status"]["phase"]
                ))
            }
        }
    })
    .await
    .unwrap_or_else(|e| {
        let big = &rack.iter().find(|(h, _)| h.node.name == "big").unwrap().0;
        panic!(
            "{e}\nbig's console:\n{}\nmanager log:\n{}",
            tail(&big.bmc.serial(), 20),
            tail(&manager.log(), 60)
        )
    });
    let to_provisioned = t1.elapsed();
    let (hosts, bm, machine) = provisioned;
    assert_eq!(bm["spec"]["providerID"], "beowulf://lab/big", "{bm}");
    assert_eq!(
        machine["spec"]["providerID"], "beowulf://lab/big",
        "{machine}"
    );
    assert_eq!(
        condition(&bm, "Ready").map(|c| &c["status"]),
        Some(&Value::from("True")),
        "{bm}"
    );
    let big = &rack.iter().find(|(h, _)| h.node.name == "big").unwrap().0;
    // The node got exactly the deployment's bootstrap data, and called back.
    assert_eq!(
        big.user_data_line().as_deref(),
        Some(
            format!(
                "TESTNODE: got user-data bytes={} sha256={}",
                DATA.len(),
                hex::encode(Sha256::digest(DATA))
            )
            .as_str()
        )
    );
    assert!(big.bmc.serial().contains("TESTNODE: callback ok"));
    assert_eq!(big.power(), "on");
    // Its local disks: the blank one formatted and mounted, the other left alone, and the host says so.
    let disks = eventually(
        "the big host's LocalDisks condition",
        Duration::from_secs(60),
        || {
            let hosts_api = hosts_api.clone();
            async move {
                let hosts = objects(&hosts_api).await?;
                let big = &hosts["big"];
                match condition(big, "LocalDisks") {
                    Some(c) => Ok((c.clone(), big["status"]["localDisks"].clone())),
                    None => Err(format!("{}", big["status"])),
                }
            }
        },
    )
    .await
    .unwrap();
    let (cond, results) = disks;
    assert_eq!(cond["status"], "False", "{cond}");
    assert_eq!(cond["reason"], "ForeignFilesystem", "{cond}");
    let message = cond["message"].as_str().unwrap();
    assert!(
        message.starts_with("keep (serial=PRECIOUS-40) foreign: TYPE=ext4 LABEL=precious; "),
        "{message}"
    );
    assert_eq!(
        results,
        json!([{"name": "scratch", "outcome": "formatted", "device": "vda", "detail": "/scratch"},
               {"name": "keep", "outcome": "foreign", "device": "vdb", "detail": "TYPE=ext4 LABEL=precious"}])
    );
    assert!(
        big.bmc.serial().contains("TESTNODE: disk /scratch boots=1"),
        "{}",
        big.bmc.serial()
    );
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&precious).unwrap())),
        precious_sha,
        "the disk holding a filesystem was written to"
    );
    for (h, _) in rack.iter().filter(|(h, _)| h.node.name != "big") {
        let name = h.node.name.as_str();
        assert_eq!(state(&hosts[name]), "available", "{}", hosts[name]);
        assert!(
            hosts[name]["spec"]["consumerRef"].is_null(),
            "{}",
            hosts[name]
        );
        assert_eq!(h.power(), "off", "{name}");
    }
    // The 64Gi machine still holds nothing.
    let machines = objects(&machines_api).await.unwrap();
    assert!(machines[huge["metadata"]["name"].as_str().unwrap()]["spec"]["hostRef"].is_null());

    recorder.abort();
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(forbidden.is_empty(), "forbidden:\n{}", forbidden.join("\n"));
    assert!(!manager.log().contains(e2e::ipmi_sim::PASSWORD));

    eprintln!(
        "timings: management cluster {:.1}s; manager ready → all inspected {:.1}s; \
         MachineDeployment → big host claimed {:.1}s, provisioned {:.1}s; total {:.1}s",
        cluster_up.as_secs_f64(),
        all_inspected.as_secs_f64(),
        claimed.as_secs_f64(),
        to_provisioned.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}
