//! A failed boot says why, on a real management cluster: `beowulf manager` captures a BeowulfHost's serial
//! console over IPMI Serial-over-LAN while it boots (a QEMU machine whose serial port is wired to its
//! ipmi_sim BMC's SOL), and when the boot gets stuck it quotes the node's last console lines in the host's
//! `Provisioned` condition and its `ProvisioningFailed` event. The image boots a kernel without its initrd,
//! so the node panics ("VFS: Unable to mount root fs"); the boot token the kernel prints on its command line
//! is on the raw serial port but nowhere in the API. The captured console is served on the manager's
//! diagnostics endpoint to a ServiceAccount bound to `beowulf-console-reader` (the API server authorizes
//! `get beowulfhosts/console`), refused (403) to one that is not, and to a request without a token (401).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use beowulf::api::BeowulfHost;
use beowulf::api::host::HostStateName;
use e2e::kube::fixtures::{self, QemuHost};
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::pxe::LabImage;
use e2e::{require_root_and_peers, tail};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

const NS: &str = "consoles";

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

/// The first run of exactly 64 hex digits in `s` (a boot token).
fn token_in(s: &str) -> Option<String> {
    s.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_boot_quotes_the_nodes_last_console_lines_in_its_condition() {
    require_root_and_peers();
    let dir = e2e::Scratch::new("mgmt-console");
    let mc = MgmtCluster::start("console", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();
    let artifacts = dir.path().join("img");
    let image = LabImage::testnode(&artifacts);
    let host = QemuHost::start_with_console(&mc, "panicky", 0x52, json!({}));

    // The test node's kernel without its initrd, and not quiet: it prints its command line, then panics.
    let mut broken = fixtures::testnode_image(NS, "no-initrd", &image);
    broken["spec"]["initrds"] = json!([]);
    let cmdline = broken["spec"]["cmdline"]
        .as_str()
        .unwrap()
        .replace("quiet loglevel=3", "loglevel=7");
    broken["spec"]["cmdline"] = json!(cmdline);
    let mut objects = fixtures::namespace_with_bmc_secret(NS);
    objects.push(broken);
    objects.push(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "panicky-user-data", "namespace": NS},
        "stringData": {"value": "#cloud-config\nruncmd: [\"true\"]\n"}}));
    let mut object = host.object(NS);
    object["spec"]["image"] = json!({"name": "no-initrd"});
    object["spec"]["userData"] = json!({"name": "panicky-user-data"});
    objects.push(object);
    fixtures::create_all(&client, &objects).await.unwrap();
    let manager = ManagerNode::start(
        &mc,
        &beowulf(),
        "mgr",
        &artifacts,
        &["--boot-load-timeout", "15", "--boot-attempts", "1"],
    )
    .await
    .unwrap();
    let log = || tail(&manager.log(), 60);

    let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    let message = eventually(
        "the host to fail its boot, quoting its console",
        Duration::from_secs(150),
        || {
            let hosts = hosts.clone();
            async move {
                let h = hosts.get("panicky").await.map_err(|e| e.to_string())?;
                let status = h.status.clone().unwrap_or_default();
                let c = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Provisioned")
                    .cloned();
                match (status.state, c) {
                    (HostStateName::Error, Some(c)) => Ok((c.reason, c.message)),
                    (state, c) => Err(format!("{state:?} {c:?}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nserial:\n{}\nmanager:\n{}", host.bmc.serial(), log()));
    let (reason, message) = message;
    assert!(
        reason.starts_with("BootStalledAfter"),
        "{reason}: {message}"
    );
    assert!(
        message.contains("last console lines:") && message.contains("Kernel panic - not syncing"),
        "{message}\nserial:\n{}",
        host.bmc.serial()
    );

    // The event says it too.
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let note = eventually(
        "the ProvisioningFailed event",
        Duration::from_secs(30),
        || {
            let events = events.clone();
            async move {
                let list = events
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                list.items
                    .iter()
                    .find(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
                    .and_then(|e| e.message.clone())
                    .ok_or_else(|| format!("{} events", list.items.len()))
            }
        },
    )
    .await
    .unwrap();
    assert!(note.contains("Kernel panic - not syncing"), "{note}");

    // The token was on the serial port (the kernel printed its command line); the API never holds it.
    let serial = host.bmc.serial();
    let token = token_in(&serial).unwrap_or_else(|| panic!("no token on the console:\n{serial}"));
    let h = serde_json::to_string(&hosts.get("panicky").await.unwrap()).unwrap();
    let all_events =
        serde_json::to_string(&events.list(&ListParams::default()).await.unwrap()).unwrap();
    assert!(!h.contains(&token) && !all_events.contains(&token));
    assert!(
        !manager.log().contains(&token),
        "token in the manager's log"
    );

    // The console itself, from the manager's diagnostics endpoint, for whom Kubernetes allows it.
    e2e::run(
        mc.kubectl()
            .args(["create", "serviceaccount", "operator", "-n", NS]),
    );
    e2e::run(
        mc.kubectl()
            .args(["create", "serviceaccount", "stranger", "-n", NS]),
    );
    e2e::run(mc.kubectl().args([
        "create",
        "rolebinding",
        "operator-consoles",
        "-n",
        NS,
        "--clusterrole=beowulf-console-reader",
        &format!("--serviceaccount={NS}:operator"),
    ]));
    let read = |token: Option<String>| {
        manager.diagnostics_get(&format!("/consoles/{NS}/panicky"), token.as_deref())
    };
    let operator = mc
        .control_plane
        .service_account_token(NS, "operator")
        .await
        .unwrap();
    let stranger = mc
        .control_plane
        .service_account_token(NS, "stranger")
        .await
        .unwrap();
    let (code, body) = read(Some(operator.clone()));
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains("Kernel panic - not syncing") && body.contains("Linux version"),
        "{body}"
    );
    assert!(!body.contains(&token), "token in the served console");
    assert!(body.contains("[redacted]"), "{body}");
    let (code, body) = read(Some(stranger));
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains(&format!(
            "system:serviceaccount:{NS}:stranger may not get beowulfhosts/console of {NS}/panicky"
        )),
        "{body}"
    );
    assert_eq!(read(None).0, "401");
    // A host in another namespace is another resource: the operator's binding is for this namespace only.
    let (code, body) = manager.diagnostics_get("/consoles/elsewhere/panicky", Some(&operator));
    assert_eq!(code, "403", "{body}");
}
