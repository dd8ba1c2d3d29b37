//! `clusterctl init --infrastructure beowulf` against a real management cluster (kube-apiserver + etcd and
//! Cluster API's own managers, all built from their Go modules): every object of our components file is
//! accepted, our CRDs are Established, their CEL rules are enforced by the API server, `beowulf manager` runs
//! with exactly the RBAC our components file grants it (nothing it does is forbidden), and the HPC stack,
//! published by `csctl publish` to an HTTPS registry, is installed by the cluster-stack-operator as a
//! ClusterClass that Cluster API's topology controller reconciles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use beowulf::api::host::HostStateName;
use beowulf::api::{BeowulfHost, BeowulfMachine};
use e2e::kube::cso::ClusterStackOperator;
use e2e::kube::mgmt::{MANAGER_USER, RELEASE_VERSION};
use e2e::kube::{BeowulfBin, ManagerNode, MgmtCluster, eventually};
use e2e::{ipmi_sim, require_root_and_peers, run};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn beowulf() -> BeowulfBin {
    BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into())
}

/// The API server's answer to a request our CEL rules forbid: 422 with the rule's message.
fn assert_refused_by_server(r: Result<impl std::fmt::Debug, kube::Error>, message: &str) {
    match r {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains(message), "{}", e.message);
        }
        other => panic!("the API server accepted what our CEL rule forbids ({message}): {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterctl_init_installs_beowulf_and_the_api_server_enforces_its_crds_and_rbac() {
    require_root_and_peers();
    let dir = e2e::Scratch::new("install");
    let mc = MgmtCluster::start("install", &beowulf(), dir.path())
        .await
        .unwrap();
    let client = mc.client().await.unwrap();

    // clusterctl installed the four providers, ours without a warning from the API server (formats it does
    // not know, fields it drops).
    assert!(
        mc.init_output.contains(&format!(
            "Installing provider=\"infrastructure-beowulf\" version=\"{RELEASE_VERSION}\""
        )),
        "{}",
        mc.init_output
    );
    for warning in ["unrecognized format", "Warning", "unknown field"] {
        assert!(!mc.init_output.contains(warning), "{}", mc.init_output);
    }
    let providers = run(mc.kubectl().args([
        "get",
        "providers.clusterctl.cluster.x-k8s.io",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.version} {end}",
    ]));
    for p in [
        "cluster-api=v1.14",
        "bootstrap-kubeadm=v1.14",
        "control-plane-kubeadm=v1.14",
        "infrastructure-beowulf=v0.1.0",
    ] {
        assert!(providers.contains(p), "{providers}");
    }

    // Every object of our components file is in the cluster (kubectl reads kind/namespace/name from it).
    let components = mc.release_dir.join("infrastructure-components.yaml");
    let docs = std::fs::read_to_string(&components)
        .unwrap()
        .matches("\nkind: ")
        .count();
    let found = run(mc
        .kubectl()
        .args(["get", "-o", "name", "-f"])
        .arg(&components));
    assert_eq!(found.lines().count(), docs, "{found}");

    // Our CRDs are Established, carry the contract label, and every other version clusterctl checks.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in [
        "beowulfclusters",
        "beowulfclustertemplates",
        "beowulfhosts",
        "beowulfimages",
        "beowulfmachines",
        "beowulfmachinetemplates",
        "beowulfremediations",
        "beowulfremediationtemplates",
    ] {
        let crd = crds
            .get(&format!("{kind}.infrastructure.cluster.x-k8s.io"))
            .await
            .unwrap();
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{kind}: {:?}", crd.status);
        assert_eq!(
            crd.metadata.labels.unwrap().get("cluster.x-k8s.io/v1beta2"),
            Some(&"v1alpha1".to_string())
        );
    }

    // The CEL rules compile in the real API server and it enforces them.
    let ns = "cel";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let machines: Api<BeowulfMachine> = Api::namespaced(client.clone(), ns);
    let bm: BeowulfMachine = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfMachine",
        "metadata": {"name": "m0", "namespace": ns},
        "spec": {"imageRef": {"name": "img"}, "providerID": "beowulf://cel/node-0", "hostRef": {"name": "node-0"}}}))
    .unwrap();
    machines.create(&PostParams::default(), &bm).await.unwrap();
    let pp = PatchParams::default();
    assert_refused_by_server(
        machines
            .patch(
                "m0",
                &pp,
                &Patch::Merge(json!({"spec": {"providerID": "beowulf://cel/node-1"}})),
            )
            .await,
        "providerID is immutable once set",
    );
    assert_refused_by_server(
        machines
            .patch(
                "m0",
                &pp,
                &Patch::Merge(json!({"spec": {"hostRef": {"name": "node-1"}}})),
            )
            .await,
        "hostRef is immutable once set",
    );
    let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), ns);
    let host: BeowulfHost = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
        "metadata": {"name": "node-0", "namespace": ns},
        "spec": {"bootMACAddress": "52:54:00:00:00:01",
                 "bmc": {"address": "ipmi://192.0.2.1", "credentialsSecretRef": {"name": "none"}},
                 "consumerRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfMachine", "name": "m0"}}}))
    .unwrap();
    hosts.create(&PostParams::default(), &host).await.unwrap();
    assert_refused_by_server(
        hosts
            .patch(
                "node-0",
                &pp,
                &Patch::Merge(json!({"spec": {"consumerRef": {"name": "m1"}}})),
            )
            .await,
        "consumerRef cannot move from one consumer to another",
    );
    hosts
        .patch(
            "node-0",
            &pp,
            &Patch::Merge(json!({"spec": {"consumerRef": null}})),
        )
        .await
        .expect("releasing a host is allowed");

    // `beowulf manager` with the ServiceAccount and ClusterRole we ship: it takes the Lease, registers a host
    // through its BMC (reading the credentials Secret, writing status and events), and is never forbidden.
    let bmc = ipmi_sim::IpmiSim::start_at(std::net::SocketAddr::from((
        mc.api_ip,
        ipmi_sim::free_udp_port(mc.api_ip),
    )));
    let objects = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bmc-creds", "namespace": ns},
               "stringData": {"username": ipmi_sim::USER, "password": ipmi_sim::PASSWORD}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
               "metadata": {"name": "node-1", "namespace": ns},
               "spec": {"bootMACAddress": "52:54:00:00:00:02",
                        "bmc": {"address": bmc.endpoint(), "cipherSuite": 3, "credentialsSecretRef": {"name": "bmc-creds"}}}}),
    ];
    e2e::kube::fixtures::create_all(&client, &objects)
        .await
        .unwrap();
    let manager = ManagerNode::start(&mc, &beowulf(), "mgr-0", dir.path(), &["--leader-elect"])
        .await
        .unwrap();
    let registered = eventually("node-1 to be registered", Duration::from_secs(60), || {
        let hosts = hosts.clone();
        async move {
            let h = hosts.get("node-1").await.map_err(|e| e.to_string())?;
            let st = h.status.clone().unwrap_or_default();
            if st.state == HostStateName::Available && st.power_state.as_deref() == Some("off") {
                Ok(h)
            } else {
                Err(format!("{:?}", h.status))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmanager log:\n{}", manager.log()));
    assert!(registered.finalizers().is_empty() || registered.finalizers().len() == 1);
    let leases = run(mc.kubectl().args([
        "get",
        "lease",
        "beowulf-manager",
        "-n",
        "beowulf-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_eq!(leases, "mgr-0");
    let events = run(mc.kubectl().args([
        "get",
        "events.events.k8s.io",
        "-n",
        ns,
        "-o",
        "jsonpath={range .items[*]}{.reportingController}/{.reason} {end}",
    ]));
    assert!(events.contains("beowulf-manager/Available"), "{events}");

    // /metrics (the manager's default, HTTPS on :8443, self-signed) for callers the API server vouches for:
    // a ServiceAccount bound to our beowulf-metrics-reader ClusterRole reads it; one without the binding is
    // refused (403); no token or a forged one is not authenticated (401).
    run(mc
        .kubectl()
        .args(["create", "serviceaccount", "prometheus", "-n", ns]));
    run(mc
        .kubectl()
        .args(["create", "serviceaccount", "stranger", "-n", ns]));
    run(mc.kubectl().args([
        "create",
        "clusterrolebinding",
        "prometheus-beowulf-metrics",
        "--clusterrole=beowulf-metrics-reader",
        &format!("--serviceaccount={ns}:prometheus"),
    ]));
    let scrape = |token: Option<String>| manager.diagnostics_get("/metrics", token.as_deref());
    let prometheus = mc
        .control_plane
        .service_account_token(ns, "prometheus")
        .await
        .unwrap();
    let stranger = mc
        .control_plane
        .service_account_token(ns, "stranger")
        .await
        .unwrap();
    let (code, body) = scrape(Some(prometheus));
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("beowulf_reconciles_total"), "{body}");
    let (code, body) = scrape(Some(stranger));
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains(&format!(
            "system:serviceaccount:{ns}:stranger may not get /metrics"
        )),
        "{body}"
    );
    assert_eq!(scrape(None).0, "401");
    assert_eq!(scrape(Some("forged.token.value".into())).0, "401");
    assert!(mc.control_plane.requests_by(MANAGER_USER) > 10);
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(
        forbidden.is_empty(),
        "the API server refused the manager (RBAC as shipped):\n{}\nmanager log:\n{}",
        forbidden.join("\n"),
        manager.log()
    );
    let log = manager.log();
    assert!(
        !log.contains(ipmi_sim::PASSWORD),
        "the BMC password is in the log"
    );
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log that is not a terminal"
    );
    drop(manager);

    hpc_cluster_stack_through_the_operator_reconciles(&mc).await;
}

/// The HPC stack's release, built by `csctl create` and pushed by `csctl publish` to an HTTPS registry, is
/// consumed by Sovereign Cloud Stack's cluster-stack-operator (the real one, built from its Go module): a
/// ClusterStack for `beowulf/hpc/1-33` makes it create the ClusterStackRelease, download the release from the
/// registry (byte for byte what we published), render the cluster-class chart with `helm template` and apply
/// it. The ClusterClass it applied is one Cluster API accepts, and a Cluster of it (the stack's example) gets
/// its control plane, machine deployments and our templates, patched by the class's variables, from the
/// topology controller.
async fn hpc_cluster_stack_through_the_operator_reconciles(mc: &MgmtCluster) {
    let stack = e2e::repo_root().join("providers/beowulf/hpc/1-33");
    let out = mc.dir.join("hpc-release");
    let csctl = e2e::csctl;
    csctl(&[
        "create".as_ref(),
        stack.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    let release = e2e::release_dir(&out);
    let release_name = release.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(release_name, "beowulf-hpc-1-33-v1");

    // The registry speaks HTTPS only, as the operator does.
    let registry = e2e::registry::Registry::start_tls(&mc.dir.join("registry")).unwrap();
    let ca = registry.ca.clone().unwrap();
    let repository = "beowulf/cluster-stacks";
    let to = format!("oci://{}/{repository}", registry.addr);
    let publish = [
        "publish".as_ref(),
        release.as_os_str(),
        "--to".as_ref(),
        to.as_ref(),
        "--plain-http=false".as_ref(),
        "--ca-file".as_ref(),
        ca.as_os_str(),
    ]
    .map(std::ffi::OsStr::to_os_string);
    // csctl runs its own runtime: off this one's worker threads.
    tokio::task::spawn_blocking(move || {
        csctl(&publish.each_ref().map(std::ffi::OsString::as_os_str))
    })
    .await
    .unwrap();

    let operator = ClusterStackOperator::start(
        &mc.peers,
        &mc.control_plane,
        &registry.addr,
        repository,
        &ca,
        &mc.dir.join("cluster-stack-operator"),
    )
    .await
    .unwrap();
    let ns = "hpc";
    run(mc.kubectl().args(["create", "namespace", ns]));
    let cluster_stack = mc.dir.join("hpc-cluster-stack.yaml");
    std::fs::write(
        &cluster_stack,
        "apiVersion: clusterstack.x-k8s.io/v1alpha1\nkind: ClusterStack\nmetadata:\n  name: beowulf-hpc-1-33\n  \
         namespace: hpc\nspec:\n  provider: beowulf\n  name: hpc\n  kubernetesVersion: \"1.33\"\n  channel: stable\n  \
         autoSubscribe: false\n  noProvider: true\n  versions: [v1]\n",
    )
    .unwrap();
    run(mc.kubectl().arg("apply").arg("-f").arg(&cluster_stack));
    let kubectl = |args: &[&str]| run(mc.kubectl().args(args));
    eventually(
        "the operator's ClusterStackRelease beowulf-hpc-1-33-v1 to be ready",
        Duration::from_secs(180),
        || {
            let ready = mc
                .kubectl()
                .args([
                    "get",
                    "clusterstackrelease",
                    &release_name,
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.status.ready}",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let tail = e2e::kube::peers::tail(&operator.process.log, 15);
            async move { (ready == "true").then_some(()).ok_or(tail) }
        },
    )
    .await
    .unwrap();
    // What it downloaded is what csctl published, and it came over HTTPS from our registry.
    let downloaded = operator
        .release_dir
        .join("cluster-stacks")
        .join(&release_name);
    let files: Vec<_> = std::fs::read_dir(&release)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        assert_eq!(
            std::fs::read(downloaded.join(&file)).ok(),
            std::fs::read(release.join(&file)).ok(),
            "{file:?} as the operator downloaded it"
        );
    }
    assert!(
        registry
            .log()
            .contains(&format!("/v2/{repository}/manifests/{release_name}")),
        "{}",
        registry.log()
    );
    let summary = kubectl(&[
        "get",
        "clusterstack",
        "beowulf-hpc-1-33",
        "-n",
        ns,
        "-o",
        "jsonpath={.status.summary[*].name}={.status.summary[*].ready}",
    ]);
    assert_eq!(
        summary, "v1=true",
        "the ClusterStack sums up its one version as ready"
    );
    let helm_name: Vec<&str> = release_name.split('-').take(4).collect();
    let class = format!("{}-v1", helm_name.join("-"));
    // The example's endpoint, 10.10.0.100, could be somebody's address: one on the test's own network instead
    // (Cluster API probes the endpoint; nothing answers there).
    let endpoint_ip = mc.unanswered_ip().to_string();
    let cluster = std::fs::read_to_string(stack.join("examples/cluster.yaml"))
        .unwrap()
        .replace("10.10.0.100", &endpoint_ip);
    assert!(cluster.contains(&class), "the example uses {class}");
    let cluster_file = mc.dir.join("hpc-cluster.yaml");
    std::fs::write(&cluster_file, cluster).unwrap();
    run(mc.kubectl().arg("apply").arg("-f").arg(&cluster_file));

    let condition = |kind: &str, name: &str, cond: &str| {
        kubectl(&[
            "get",
            kind,
            name,
            "-n",
            ns,
            "-o",
            &format!("jsonpath={{.status.conditions[?(@.type==\"{cond}\")].status}}"),
        ])
    };
    eventually(
        "the HPC ClusterClass's variables to be reconciled",
        Duration::from_secs(60),
        || {
            let s = condition("clusterclass", &class, "VariablesReady");
            async move { (s == "True").then_some(()).ok_or(s) }
        },
    )
    .await
    .unwrap();
    eventually(
        "the topology of hpc1 to be reconciled",
        Duration::from_secs(90),
        || {
            let s = condition("cluster", "hpc1", "TopologyReconciled");
            let all = kubectl(&[
                "get",
                "cluster",
                "hpc1",
                "-n",
                ns,
                "-o",
                "jsonpath={.status.conditions}",
            ]);
            async move { (s == "True").then_some(()).ok_or(all) }
        },
    )
    .await
    .unwrap();
    // What the topology controller made of our templates, with the class's patches applied.
    let endpoint = kubectl(&[
        "get",
        "beowulfcluster",
        "-n",
        ns,
        "-l",
        "cluster.x-k8s.io/cluster-name=hpc1",
        "-o",
        "jsonpath={.items[0].spec.controlPlaneEndpoint.host}",
    ]);
    assert_eq!(endpoint, endpoint_ip);
    let selectors = kubectl(&[
        "get",
        "beowulfmachinetemplate",
        "-n",
        ns,
        "-l",
        "cluster.x-k8s.io/cluster-name=hpc1",
        "-o",
        "jsonpath={range .items[*]}{.spec.template.spec.hostSelector.matchLabels.beowulf\\.io/role} {end}",
    ]);
    assert!(
        selectors.contains("control-plane") && selectors.contains("k8s-worker"),
        "{selectors}"
    );
    let kcp = kubectl(&[
        "get",
        "kubeadmcontrolplane",
        "-n",
        ns,
        "-l",
        "cluster.x-k8s.io/cluster-name=hpc1",
        "-o",
        "json",
    ]);
    assert!(
        kcp.contains("kube-vip"),
        "the VIP static pod is patched into the control plane: {kcp}"
    );
    let mds = kubectl(&[
        "get",
        "machinedeployment",
        "-n",
        ns,
        "-l",
        "cluster.x-k8s.io/cluster-name=hpc1",
        "-o",
        "name",
    ]);
    assert_eq!(mds.lines().count(), 1, "{mds}");
    // The compute class's health check became a MachineHealthCheck whose remediation is ours.
    let mhc = kubectl(&[
        "get",
        "machinehealthcheck",
        "-n",
        ns,
        "-l",
        "cluster.x-k8s.io/cluster-name=hpc1",
        "-o",
        "jsonpath={range .items[*]}{.spec.remediation.templateRef.kind}/{.spec.remediation.templateRef.name} {.spec.checks.nodeStartupTimeoutSeconds}{end}",
    ]);
    assert!(
        mhc.starts_with("BeowulfRemediationTemplate/") && mhc.ends_with(" 1800"),
        "{mhc}"
    );
}
