//! The HPC stack as a cluster that computes: the stack's SLURM and LDAP workloads run on the
//! host (`e2e::pods`), two compute nodes PXE-boot the HPC node image through `beowulf standalone`, powered on
//! through their BMCs (`ipmi_sim` in front of QEMU), with the user-data of the stack's example.
//!
//! Everything is configured from the stack (`providers/beowulf/hpc/1-33`), not beside it:
//! - `csctl create` builds the release; its cluster-addon chart's `slurm`, `ldap` and `cvmfs` subcharts are
//!   rendered by `helm template` (the Go peer) with the values the cluster-stack-operator would give them:
//!   each addon's `overwrite.yaml` rendered with the stack's example Cluster (`examples/cluster.yaml`: the
//!   service addresses 10.10.0.201–203, the partitions), plus values for what differs in this lab: the two small nodes and their addresses, and fresh secrets.
//! - The nodes' user-data is `examples/compute-user-data.yaml` with the cluster's munge key put in.
//! - slurmctld, slurmdbd, the login pod and their munged run on the stack's SLURM image (`images/slurm`, CI
//!   variant: built here, pinned in the values by its digest, unpacked); MariaDB and 389 Directory Server
//!   on Debian 12's packages (their images cannot be pulled here).
//!
//! Network: the lab's namespace holds the boot plane (10.99.0.1 on `br0`) and the Service addresses; the
//! nodes (10.99.0.132, .133) reach 10.10.0.x through their gateway 10.99.0.1, i.e. this namespace.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;

use crate::tail;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::kube::GoPeers;
use crate::pods::{Image, Manifests, Pod, PodHost};
use crate::pxe::{BeowulfCmd, Firmware, LabImage, Node, PxeLab};
use crate::qemu_bmc::{MachineSpec, QemuBmc};
use crate::run;

/// The stack this lab runs.
pub const STACK: &str = "providers/beowulf/hpc/1-33";
/// The compute nodes: inventory name, QEMU/lab number (MAC `52:54:00:00:00:NN`, address 10.99.0.(100+NN)).
pub const NODES: [(&str, u8); 2] = [("compute-0", 0x20), ("compute-1", 0x21)];
/// The example Cluster's service addresses (`hpcServices`), which its compute user-data uses.
pub const LDAP_ADDRESS: &str = "10.10.0.201";
pub const SLURMCTLD_ADDRESS: &str = "10.10.0.202";
pub const CVMFS_PROXY_ADDRESS: &str = "10.10.0.203";

/// The stack rendered for this lab.
pub struct Rendered {
    pub manifests: Manifests,
    /// `examples/compute-user-data.yaml`'s user-data with the cluster's munge key.
    pub compute_user_data: String,
    pub dir: PathBuf,
}

/// `n` random bytes from the kernel.
fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The SLURM controller image (`images/slurm`, CI variant: the SLURM of the CI node image), built (cached) as
/// an OCI image layout and unpacked for [`PodHost`].
pub struct SlurmImage {
    pub image: Image,
    /// Its `image.yaml`.
    pub record: Value,
}

impl SlurmImage {
    pub fn build_ci() -> SlurmImage {
        let out = crate::build_ci_image("slurm");
        let record: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(out.join("image.yaml")).unwrap())
                .unwrap();
        let tag = record["version"]
            .as_str()
            .expect("image.yaml has no version");
        let image = Image::from_layout(
            &out,
            tag,
            &crate::target_dir().join("images/slurm-ci.unpacked"),
        );
        assert_eq!(
            record["digest"].as_str(),
            Some(image.digest.as_str()),
            "image.yaml and the layout disagree"
        );
        SlurmImage { image, record }
    }

    /// The version of `package` in the image (`image.yaml`, `packages:`).
    pub fn package(&self, package: &str) -> String {
        self.record["packages"][package]
            .as_str()
            .unwrap_or_else(|| panic!("the slurm image records no version of {package}"))
            .to_string()
    }
}

/// Builds the stack's release and renders its slurm, ldap and cvmfs addons for this lab into `dir`, the slurm
/// addon's images pinned to `slurm`'s tag and digest.
pub fn render_stack(dir: &Path, slurm: &SlurmImage) -> Rendered {
    let stack = crate::repo_root().join(STACK);
    let out = dir.join("release");
    crate::csctl(&[
        "create".as_ref(),
        stack.as_os_str(),
        "--mode".as_ref(),
        "hash".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    // The cluster-addon archive holds one directory per addon chart: write them out for helm.
    let release = crate::release_dir(&out);
    let addon = std::fs::read_dir(&release)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("-cluster-addon-") && n.ends_with(".tgz"))
        })
        .expect("csctl create wrote no cluster-addon archive");
    let charts = dir.join("cluster-addon");
    for (path, data) in
        csctl::archive::read_files(&std::fs::read(&addon).unwrap(), 64 << 20).unwrap()
    {
        let file = charts.join(&path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, data).unwrap();
    }

    // The per-cluster values, as the operator makes them: each addon's overwrite.yaml with the Cluster.
    let cluster = yaml_docs(&stack.join("examples/cluster.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Cluster")
        .expect("examples/cluster.yaml has no Cluster");
    let munge_key = base64::engine::general_purpose::STANDARD.encode(random(1024));
    let hex = |n| hex::encode(random(n));
    let nodes_addresses = format!(
        "10.99.0.[{}-{}]",
        100 + u32::from(NODES[0].1),
        100 + u32::from(NODES[1].1)
    );
    let lab_values = [
        (
            "slurm",
            format!(
                "munge:\n  key: {munge_key}\naccounting:\n  database:\n    password: {}\n\
                 # Two QEMU nodes with one CPU and 2 GiB each (slurmd drains a node with less than it is told).\n\
                 nodes:\n  - names: compute-[0-1]\n    addresses: \"{nodes_addresses}\"\n    cpus: 1\n    realMemory: 1024\n\
                 # The SLURM image built here, pinned as a user pins the one they pushed.\n\
                 images:\n{}",
                hex(16),
                ["slurmctld", "slurmdbd", "login"]
                    .map(|c| format!(
                        "  {c}:\n    tag: {}\n    digest: {}\n",
                        slurm.record["version"].as_str().unwrap(),
                        slurm.image.digest
                    ))
                    .concat()
            ),
        ),
        (
            "ldap",
            format!("directoryManager:\n  password: {}\n", hex(16)),
        ),
        ("cvmfs", String::new()),
    ];
    let helm = GoPeers::find()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .bin("helm");
    let mut manifests = Manifests::default();
    for (chart, values) in lab_values {
        let overwrite = std::fs::read_to_string(charts.join(chart).join("overwrite.yaml")).unwrap();
        let rendered =
            csctl::render::render_str(&overwrite, &serde_json::json!({ "Cluster": cluster }))
                .unwrap_or_else(|e| panic!("{chart}/overwrite.yaml: {e}"));
        let doc: Value = serde_saphyr::from_str(&rendered).unwrap();
        let cluster_values = dir.join(format!("{chart}-cluster-values.yaml"));
        std::fs::write(&cluster_values, doc["values"].as_str().unwrap_or_default()).unwrap();
        let lab = dir.join(format!("{chart}-lab-values.yaml"));
        std::fs::write(&lab, values).unwrap();
        let out = run(Command::new(&helm)
            .args(["template", "hpc"])
            .arg(charts.join(chart))
            .arg("--namespace")
            .arg("hpc")
            .arg("-f")
            .arg(&cluster_values)
            .arg("-f")
            .arg(&lab));
        std::fs::write(dir.join(format!("{chart}.yaml")), &out).unwrap();
        manifests.extend(Manifests::parse(&out));
    }

    let example = yaml_docs(&stack.join("examples/compute-user-data.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Secret")
        .expect("examples/compute-user-data.yaml has no Secret");
    let user_data = example["stringData"]["user-data"].as_str().unwrap();
    const PLACEHOLDER: &str = "REPLACE-WITH-THE-CLUSTER-MUNGE-KEY-BASE64";
    assert!(
        user_data.contains(PLACEHOLDER),
        "the example user-data no longer has {PLACEHOLDER}"
    );
    Rendered {
        compute_user_data: user_data.replace(PLACEHOLDER, &munge_key),
        manifests,
        dir: dir.to_path_buf(),
    }
}

/// The running lab.
pub struct HpcLab {
    // Field order is drop order: machines and services before the namespace they live in.
    pub bmcs: Vec<QemuBmc>,
    pub pods: PodHost,
    pub lab: PxeLab,
    pub nodes: Vec<Node>,
    pub login: Pod,
    pub slurmctld: Pod,
    pub ldap: Pod,
    pub rendered: Rendered,
    pub slurm: SlurmImage,
    _dir: tempfile::TempDir,
}

impl HpcLab {
    /// Renders the stack, starts the boot plane and the stack's services, and puts a BMC in front of each
    /// node (powered off). `say` reports progress.
    pub fn start(beowulf: BeowulfCmd, say: &dyn Fn(&str)) -> HpcLab {
        let dir = tempfile::tempdir().unwrap();
        say("building the HPC node image (images/hpc-node, CI variant; cached)");
        let image = LabImage::hpc_node_ci();
        say("building the SLURM controller image (images/slurm, CI variant; cached)");
        let slurm = SlurmImage::build_ci();
        say(&format!("rendering {STACK} (csctl create, helm template)"));
        let rendered = render_stack(&dir.path().join("stack"), &slurm);
        let nodes: Vec<Node> = NODES
            .iter()
            .map(|(name, n)| {
                let mut node = Node::new(name, *n, Firmware::Bios);
                node.user_data = rendered.compute_user_data.clone();
                node
            })
            .collect();
        say("starting `beowulf standalone` in a network namespace");
        let mut lab = PxeLab::start_with_image("hpcslurm", beowulf, nodes.clone(), image);

        let mut pods = PodHost::new(
            &lab.ns,
            "br0",
            &dir.path().join("pods"),
            rendered.manifests.clone(),
        );
        // The slurm addon's containers run on the image built above, by the reference the chart rendered.
        let pinned: Vec<String> = rendered
            .manifests
            .images()
            .into_iter()
            .filter(|i| i.ends_with(&format!("@{}", slurm.image.digest)))
            .collect();
        assert!(
            !pinned.is_empty(),
            "no container names the SLURM image's digest"
        );
        for reference in pinned {
            pods.add_image(&reference, slurm.image.clone());
        }
        let ready = Duration::from_secs(120);
        let up = |pods: &mut PodHost, kind: &str, name: &str, skip: &[&str]| -> Pod {
            say(&format!("starting {kind} {name}"));
            let pod = pods.pod(kind, name);
            pods.start(&pod, skip);
            pods.wait_ready(&pod, skip, ready);
            pod
        };
        up(&mut pods, "StatefulSet", "mariadb", &[]);
        up(&mut pods, "Deployment", "slurmdbd", &[]);
        let slurmctld = up(&mut pods, "StatefulSet", "slurmctld", &[]);
        let ldap = up(&mut pods, "StatefulSet", "ldap", &[]);
        let seed = rendered
            .manifests
            .of_kind("Job")
            .find_map(|j| {
                j["metadata"]["name"]
                    .as_str()
                    .filter(|n| n.starts_with("ldap-seed"))
            })
            .expect("the ldap chart has no seed Job")
            .to_string();
        say(&format!("running Job {seed}"));
        pods.run_job(&seed, ready);
        // Not the cvmfs-proxy StatefulSet: squid is not served by the Debian mirror this suite installs from.
        let login = up(&mut pods, "Deployment", "login", &[]);

        say("putting a BMC (ipmi_sim) in front of each node");
        let mut bmcs = Vec::new();
        let mut nodes = nodes;
        for node in &mut nodes {
            let mut spec = MachineSpec::new(&lab.ns.name, "br0", &node.mac);
            spec.memory_mib = lab.image.memory_mib;
            spec.max_runtime = Duration::from_secs(1800);
            let bmc = QemuBmc::start_with(spec);
            node.bmc = Some(bmc.endpoint());
            bmcs.push(bmc);
        }
        lab.rewrite_inventory(nodes.clone());
        HpcLab {
            bmcs,
            pods,
            lab,
            nodes,
            login,
            slurmctld,
            ldap,
            rendered,
            slurm,
            _dir: dir,
        }
    }

    /// `beowulf bmc --inventory <lab inventory> --host HOSTS ARGS…` (with the lab's `beowulf` command).
    pub fn bmc(&self, beowulf: &BeowulfCmd, hosts: &str, args: &[&str]) -> String {
        let (prog, pre) = beowulf.split_first().unwrap();
        run(Command::new(prog)
            .args(pre)
            .arg("bmc")
            .arg("--inventory")
            .arg(self.lab.inventory_path())
            .args(["--host", hosts, "--cipher-suite", "3"])
            .args(args))
    }

    /// A command in the login pod (the stack's SLURM client configuration, its munge socket).
    pub fn login(&mut self, cmd: &[&str]) -> Output {
        let login = self.login.clone();
        self.pods
            .command(&login, "login", Some(cmd))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }

    /// Like [`HpcLab::login`], panicking with the output when the command fails; returns stdout.
    pub fn login_ok(&mut self, cmd: &[&str]) -> String {
        let out = self.login(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\n{}{}\nslurmctld:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.slurmctld.log("slurmctld"), 40),
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `sinfo`'s node states: (node, state) per node and partition, e.g. ("compute-0", "idle").
    pub fn node_states(&mut self) -> Vec<(String, String)> {
        let out = self.login(&["sinfo", "-h", "-N", "-o", "%N %t"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, s)| (n.to_string(), s.trim().to_string()))
            .collect()
    }

    /// A field of `scontrol show node NAME` (`BootTime`, `State`, …).
    pub fn node_field(&mut self, node: &str, field: &str) -> Option<String> {
        let out = self.login(&["scontrol", "show", "node", node]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
            .map(str::to_string)
    }

    /// The last `n` lines of each node's console and of the services' logs, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (node, bmc) in self.nodes.iter().zip(&self.bmcs) {
            s.push_str(&format!(
                "--- {} console (last 40 lines):\n{}\n",
                node.name,
                tail(&bmc.serial(), 40)
            ));
        }
        s.push_str(&format!(
            "--- slurmctld (last 40 lines):\n{}\n",
            tail(&self.slurmctld.log("slurmctld"), 40)
        ));
        s
    }
}

/// The version of `package` the built CI node image carries (its `image.yaml`, `packages:`).
pub fn image_package(package: &str) -> String {
    let path = crate::target_dir().join("images/hpc-node-ci/image.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc["packages"][package]
        .as_str()
        .unwrap_or_else(|| panic!("{} records no version of {package}", path.display()))
        .to_string()
}

/// SLURM's major releases in order. slurmctld talks to daemons (slurmd, slurmdbd) and clients of its own
/// major release and of the two before it, never to newer ones.
pub const SLURM_RELEASES: &[&str] = &[
    "20.02", "20.11", "21.08", "22.05", "23.02", "23.11", "24.05", "24.11", "25.05", "25.11",
    "26.05",
];

/// Whether a slurmctld of version `controller` works with a slurmd of version `node` (`22.05.8`,
/// `22.05.8-4+deb12u3`, `26.05`…): `Err` says why not.
pub fn slurm_compatible(controller: &str, node: &str) -> Result<(), String> {
    let major = |v: &str| -> Result<usize, String> {
        let mm: Vec<&str> = v.split(['.', '-']).take(2).collect();
        let mm = mm.join(".");
        SLURM_RELEASES
            .iter()
            .position(|r| *r == mm)
            .ok_or_else(|| format!("{v}: not a known SLURM major release ({SLURM_RELEASES:?})"))
    };
    let (c, n) = (major(controller)?, major(node)?);
    if n > c {
        return Err(format!(
            "slurmd {node} is newer than slurmctld {controller}"
        ));
    }
    if c - n > 2 {
        return Err(format!(
            "slurmd {node} is {} major releases behind slurmctld {controller} (at most 2)",
            c - n
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_talks_to_its_own_and_two_previous_major_releases() {
        assert_eq!(slurm_compatible("22.05.8", "22.05.8-4+deb12u3"), Ok(()));
        assert_eq!(slurm_compatible("24.05.1", "23.02.7"), Ok(()));
        assert_eq!(slurm_compatible("26.05", "25.05.3"), Ok(()));
        let e = slurm_compatible("26.05", "22.05.8").unwrap_err();
        assert!(e.contains("7 major releases behind"), "{e}");
        let e = slurm_compatible("22.05.8", "23.02.1").unwrap_err();
        assert!(e.contains("newer"), "{e}");
        assert!(slurm_compatible("19.05", "22.05").is_err());
    }
}
