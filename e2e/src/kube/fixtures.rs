//! Builders of the objects the management-cluster tests create: BMC credentials, the test node image as a
//! BeowulfImage, BeowulfHosts that are QEMU machines behind ipmi_sim BMCs, and a generic create for any
//! manifest.

use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use super::mgmt::MgmtCluster;
use crate::ipmi_sim;
use crate::pxe::{Firmware, LabImage, Node};
use crate::qemu_bmc::{MachineSpec, QemuBmc};

pub const INFRA: &str = "infrastructure.cluster.x-k8s.io/v1alpha1";
/// The Secret every test host's BMC credentials are in.
pub const BMC_SECRET: &str = "bmc-creds";

/// Creates each object (JSON with `apiVersion`, `kind`, `metadata.name`, optional `metadata.namespace`).
pub async fn create_all(client: &kube::Client, objects: &[Value]) -> anyhow::Result<()> {
    for o in objects {
        let api_version = o["apiVersion"].as_str().context("apiVersion")?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, o["kind"].as_str().context("kind")?);
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("discovering {gvk:?}"))?;
        let api: Api<DynamicObject> = match (caps.scope, o["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            _ => Api::all_with(client.clone(), &ar),
        };
        let obj: DynamicObject = serde_json::from_value(o.clone())?;
        api.create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("creating {} {}", gvk.kind, o["metadata"]["name"]))?;
    }
    Ok(())
}

/// The namespace, and the BMC credentials Secret of ipmi_sim's admin user in it.
pub fn namespace_with_bmc_secret(ns: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": BMC_SECRET, "namespace": ns},
               "stringData": {"username": ipmi_sim::USER, "password": ipmi_sim::PASSWORD}}),
    ]
}

/// The test node image as BeowulfImage `name`, its artifacts relative to the manager's `--artifact-root`.
/// `testnode.stay_on` keeps a booted node running until its BMC powers it off (its user-data is kubeadm's,
/// which has no marker line).
pub fn testnode_image(ns: &str, name: &str, image: &LabImage) -> Value {
    let file = |p: &std::path::Path| {
        p.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    json!({"apiVersion": INFRA, "kind": "BeowulfImage", "metadata": {"name": name, "namespace": ns},
           "spec": {"kernel": {"url": file(&image.kernel)}, "initrds": [{"url": file(&image.initrd)}],
                    "rootfs": {"url": file(&image.rootfs)},
                    "cmdline": format!("{} testnode.stay_on", image.cmdline), "format": "live"}})
}

/// A server of the rack: a QEMU machine on the boot network behind its own ipmi_sim BMC, which listens on
/// the management network. Powered on only by its BMC.
pub struct QemuHost {
    pub node: Node,
    pub bmc: QemuBmc,
    pub labels: Value,
}

impl QemuHost {
    /// Host `name` with MAC `52:54:00:00:00:<n>` and address `10.99.0.(100+n)`.
    pub fn start(mc: &MgmtCluster, name: &str, n: u8, labels: Value) -> QemuHost {
        Self::start_sized(mc, name, n, labels, 512)
    }

    /// [`QemuHost::start`] with `memory_mib` MiB of RAM (what QEMU's `-m` gets).
    pub fn start_sized(
        mc: &MgmtCluster,
        name: &str,
        n: u8,
        labels: Value,
        memory_mib: u32,
    ) -> QemuHost {
        Self::start_with_args(mc, name, n, labels, memory_mib, Vec::new())
    }

    /// [`QemuHost::start`] with a blank virtio disk of `mib` MiB (a sparse raw file at `path`) whose serial is
    /// `serial`.
    pub fn start_with_disk(
        mc: &MgmtCluster,
        name: &str,
        n: u8,
        labels: Value,
        path: &std::path::Path,
        mib: u64,
        serial: &str,
    ) -> QemuHost {
        std::fs::File::create(path)
            .and_then(|f| f.set_len(mib << 20))
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let args = vec![
            "-drive".to_string(),
            format!("if=none,id=d0,format=raw,file={}", path.display()),
            "-device".to_string(),
            format!("virtio-blk-pci,drive=d0,serial={serial}"),
        ];
        Self::start_with_args(mc, name, n, labels, 512, args)
    }

    /// [`QemuHost::start_with_args`] with more QEMU arguments (disks: `-drive …`, `-device …`).
    pub fn start_with_args(
        mc: &MgmtCluster,
        name: &str,
        n: u8,
        labels: Value,
        memory_mib: u32,
        qemu_args: Vec<String>,
    ) -> QemuHost {
        Self::start_full(mc, name, n, labels, memory_mib, qemu_args, false)
    }

    /// [`QemuHost::start`] whose serial port is wired to its BMC's Serial over LAN (`e2e::serial_wire`).
    pub fn start_with_console(mc: &MgmtCluster, name: &str, n: u8, labels: Value) -> QemuHost {
        Self::start_full(mc, name, n, labels, 512, Vec::new(), true)
    }

    fn start_full(
        mc: &MgmtCluster,
        name: &str,
        n: u8,
        labels: Value,
        memory_mib: u32,
        qemu_args: Vec<String>,
        sol: bool,
    ) -> QemuHost {
        let node = Node::new(name, n, Firmware::Bios);
        let mut spec = MachineSpec::new(&mc.lan.name, "br0", &node.mac);
        spec.sol = sol;
        spec.bmc_ip = Some(mc.api_ip);
        spec.memory_mib = memory_mib;
        spec.qemu_args = qemu_args;
        // Long enough for a whole test (the machine stays on until its BMC powers it off).
        spec.max_runtime = Duration::from_secs(900);
        QemuHost {
            bmc: QemuBmc::start_with(spec),
            node,
            labels,
        }
    }

    /// Its BeowulfHost.
    pub fn object(&self, ns: &str) -> Value {
        json!({"apiVersion": INFRA, "kind": "BeowulfHost",
               "metadata": {"name": self.node.name, "namespace": ns, "labels": self.labels},
               "spec": {"bootMACAddress": self.node.mac, "bootMode": "legacy",
                        "interfaces": [{"macAddress": self.node.mac, "address": format!("{}/24", self.node.ip)}],
                        "bmc": {"address": self.bmc.endpoint(), "cipherSuite": 3,
                                "credentialsSecretRef": {"name": BMC_SECRET}}}})
    }

    /// Power as ipmitool (an independent client) reads it from the BMC: `on` or `off`.
    pub fn power(&self) -> String {
        let out = self.bmc.sim.ipmitool(&["power", "status"]);
        if out.contains("is on") {
            "on".into()
        } else if out.contains("is off") {
            "off".into()
        } else {
            out
        }
    }

    /// `TESTNODE: got user-data bytes=N sha256=X` from its console, once it fetched its user-data.
    pub fn user_data_line(&self) -> Option<String> {
        self.bmc
            .serial()
            .lines()
            .find(|l| l.starts_with("TESTNODE: got user-data"))
            .map(str::to_string)
    }
}

/// BeowulfMachineTemplate `name` for the test node image (BeowulfImage `testnode`).
pub fn machine_template(ns: &str, name: &str) -> Value {
    json!({"apiVersion": INFRA, "kind": "BeowulfMachineTemplate", "metadata": {"name": name, "namespace": ns},
           "spec": {"template": {"spec": {"imageRef": {"name": "testnode"}}}}})
}

/// Plain compute nodes under Cluster API: Cluster `cluster` (its BeowulfCluster's control-plane endpoint
/// `endpoint`, which nobody answers: no control plane ever starts), BeowulfMachineTemplate `template`, and
/// MachineDeployment `deployment` of `replicas` machines (label `pool: w`) whose bootstrap data is fixed: the
/// Secret `data`, a cloud-config that says `note`. The MachineDeployment is the last object.
pub fn workers(
    ns: &str,
    cluster: &str,
    endpoint: &str,
    deployment: &str,
    replicas: u32,
    template: &str,
    note: &str,
) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "data", "namespace": ns},
               "type": "cluster.x-k8s.io/secret",
               "stringData": {"value": format!("#cloud-config\n# {note}\n"), "format": "cloud-config"}}),
        json!({"apiVersion": INFRA, "kind": "BeowulfCluster", "metadata": {"name": cluster, "namespace": ns},
               "spec": {"controlPlaneEndpoint": {"host": endpoint, "port": 6443}}}),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
               "metadata": {"name": cluster, "namespace": ns},
               "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                              "kind": "BeowulfCluster", "name": cluster}}}),
        machine_template(ns, template),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
               "metadata": {"name": deployment, "namespace": ns},
               "spec": {"clusterName": cluster, "replicas": replicas,
                        "selector": {"matchLabels": {"pool": "w"}},
                        "template": {"metadata": {"labels": {"pool": "w"}},
                                     "spec": {"clusterName": cluster, "version": "v1.33.1",
                                              "bootstrap": {"dataSecretName": "data"},
                                              "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                                    "kind": "BeowulfMachineTemplate",
                                                                    "name": template}}}}}),
    ]
}
