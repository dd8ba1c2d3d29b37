//! A boot in progress survives a crash of `beowulf manager`, on a real management cluster: a QEMU host
//! provisions a BeowulfHost through the manager's boot plane and is held after its script, kernel, initrd
//! and rootfs, before its NoCloud data (`testnode.gate_metadata=`). The host's status then carries the boot
//! (`liveBoot`: the token's SHA-256, never the token). The manager is killed (SIGKILL) and started again on
//! the same node; it takes the boot over from the status, the node fetches its data and calls back with the
//! token it already had, and the host is provisioned in the same boot attempt — no power cycle, no second
//! boot, no token anywhere in the API or the manager's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use beowulf::api::BeowulfHost;
use beowulf::api::host::HostStateName;
use e2e::kube::fixtures::{self, QemuHost};
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::{Proc, require_root_and_peers, tail};
use kube::api::Api;
use serde_json::json;

const NS: &str = "restarts";
const GATE_PORT: u16 = 8082;

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

/// What a failed wait shows: the node's console and the end of the manager's log.
fn serial_and_manager_log(host: &QemuHost, manager: &ManagerNode) -> String {
    format!(
        "serial:\n{}\nmanager:\n{}",
        host.bmc.serial(),
        tail(&manager.log(), 40)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_in_progress_survives_a_manager_crash() {
    require_root_and_peers();
    let dir = e2e::Scratch::new("mgmt-restart");
    let mc = MgmtCluster::start("restart", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();
    let artifacts = dir.path().join("img");
    let image = LabImage::testnode(&artifacts);
    let host = QemuHost::start(&mc, "steady", 0x61, json!({}));
    let manager = ManagerNode::start(&mc, &beowulf(), "mgr", &artifacts, &[])
        .await
        .unwrap();

    // The gate the node waits at: a plain HTTP server on the manager's node (it outlives the manager).
    let gates = dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let _gate_server = Proc::spawn(
        "gate server",
        manager
            .ns
            .cmd("python3")
            .args(["-m", "http.server", "--bind"])
            .arg(manager.boot_ip.to_string())
            .arg("--directory")
            .arg(&gates)
            .arg(GATE_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut held = fixtures::testnode_image(NS, "held", &image);
    let cmdline = format!(
        "{} testnode.gate_metadata=http://{}:{GATE_PORT}/go",
        held["spec"]["cmdline"].as_str().unwrap(),
        manager.boot_ip
    );
    held["spec"]["cmdline"] = json!(cmdline);
    let mut objects = fixtures::namespace_with_bmc_secret(NS);
    objects.push(held);
    objects.push(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "steady-user-data", "namespace": NS},
        "stringData": {"value": "#cloud-config\nruncmd: [\"true\"]\n"}}));
    let mut object = host.object(NS);
    object["spec"]["image"] = json!({"name": "held"});
    object["spec"]["userData"] = json!({"name": "steady-user-data"});
    objects.push(object);
    fixtures::create_all(&client, &objects).await.unwrap();

    // Held before its NoCloud data, with the boot in the host's status.
    let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    let live = eventually(
        "the node held at the gate, its boot in the status",
        Duration::from_secs(180),
        || {
            let hosts = hosts.clone();
            let serial = host.bmc.serial();
            async move {
                let h = hosts.get("steady").await.map_err(|e| e.to_string())?;
                let status = h.status.clone().unwrap_or_default();
                match (
                    &status.live_boot,
                    serial.contains("TESTNODE: waiting at metadata"),
                ) {
                    (Some(l), true) if l.phase.as_deref() == Some("rootfs") => Ok(l.clone()),
                    _ => Err(format!("{:?} {:?}", status.state, status.live_boot)),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serial_and_manager_log(&host, &manager)));
    let before = hosts.get("steady").await.unwrap().status.unwrap();
    assert_eq!(before.state, HostStateName::Provisioning);
    assert_eq!(before.boot_attempt, 1);
    assert!(
        live.server.starts_with(&format!("{}:", manager.boot_ip)),
        "{}",
        live.server
    );

    // The crash, and a new manager on the same node.
    let manager = manager
        .restart(&mc, &beowulf(), &artifacts, &[])
        .await
        .unwrap();
    eventually(
        "the new manager to take the boot over",
        Duration::from_secs(60),
        || {
            let log = manager.log();
            async move {
                if log.contains("boot in progress taken over from the host's status") {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nmanager:\n{}", tail(&manager.log(), 40)));
    std::fs::write(gates.join("go"), "go\n").unwrap();

    // The node finishes the boot it began, with its token, against the new process.
    let done = eventually("the host provisioned", Duration::from_secs(120), || {
        let hosts = hosts.clone();
        async move {
            let h = hosts.get("steady").await.map_err(|e| e.to_string())?;
            let status = h.status.clone().unwrap_or_default();
            if status.state == HostStateName::Provisioned {
                Ok(status)
            } else {
                Err(format!("{:?} {:?}", status.state, status.last_boot_phase))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serial_and_manager_log(&host, &manager)));
    let serial = host.bmc.serial();
    assert!(serial.contains("TESTNODE: callback ok"), "{serial}");
    assert!(!serial.contains("TESTNODE: FAILED"), "{serial}");
    assert_eq!(
        serial.matches("TESTNODE: seed=").count(),
        1,
        "one boot, not two:\n{serial}"
    );
    assert_eq!(done.boot_attempt, 1);
    assert_eq!(done.live_boot, None);
    assert!(
        !manager.log().contains("started again"),
        "{}",
        manager.log()
    );

    // The token: on the node's console, never in the API or the manager's log.
    let token = serial
        .split("/nocloud/")
        .nth(1)
        .and_then(|t| t.get(..64))
        .expect("the node printed its seed URL")
        .to_string();
    let h = serde_json::to_string(&hosts.get("steady").await.unwrap()).unwrap();
    assert!(!h.contains(&token));
    assert!(!manager.log().contains(&token));
}
