//! A management cluster with its networks, as a rack has them:
//!
//! ```text
//!  host namespace                      namespace "lan" (the switch)                 node namespaces
//!  kube-apiserver, CAPI managers,      br0  boot network 10.99.0.0/24  ───────────  eth0 10.99.0.(1+k)
//!  ipmi_sim BMCs, the test   ── veth ─ mg0  management network 10.251.S.0/24 ───── eth1 10.251.S.(10+k)
//!  10.251.S.1 (API server, BMCs)       QEMU machines' taps on br0, IPv6 RAs         beowulf manager k
//! ```
//!
//! The API server and the BMC simulators listen on the host end of the management network (a local address
//! of the host namespace, so the test and Cluster API's managers reach them directly); each `beowulf
//! manager` runs in a namespace of its own, like a node of the management cluster with one leg on the boot
//! network (its DHCP, TFTP and HTTP) and one on the management network (the API server, the BMCs). No
//! address outside these namespaces is ever used.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;

use super::capi::{self, CapiManagers};
use super::control_plane::{ControlPlane, Logged, free_port};
use super::peers::GoPeers;
use crate::harness::{Netns, Proc};

/// The ServiceAccount our components file creates for the manager.
pub const MANAGER_SERVICE_ACCOUNT: (&str, &str) = ("beowulf-system", "beowulf-manager");
/// Its user name in the audit log.
pub const MANAGER_USER: &str = "system:serviceaccount:beowulf-system:beowulf-manager";
/// The version `beowulf release` writes for the tests.
pub const RELEASE_VERSION: &str = "v0.1.0";

pub struct MgmtCluster {
    // Field order is drop order: managers, control plane, then the networks.
    pub capi: CapiManagers,
    pub control_plane: ControlPlane,
    _ra: Proc,
    pub lan: Netns,
    pub peers: GoPeers,
    /// The host end of the management network: the API server's and the BMCs' address.
    pub api_ip: Ipv4Addr,
    /// Third octet of this cluster's management network.
    subnet: u8,
    next_node: AtomicU32,
    /// Output of `clusterctl init`.
    pub init_output: String,
    /// `beowulf release`'s repository directory (`…/infrastructure-beowulf/<version>/`).
    pub release_dir: PathBuf,
    pub clusterctl_config: PathBuf,
    pub dir: PathBuf,
}

/// What `beowulf release` is run as (the e2e copy of the CLI).
pub struct BeowulfBin(pub PathBuf);

impl Drop for MgmtCluster {
    /// A failed test shows what the management cluster's processes were doing: whether each is still
    /// running, with the tail of the log of each that exited.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let cp = &mut self.control_plane;
        let mut states = vec![cp.etcd.state(""), cp.apiserver.state("")];
        states.extend(cp.controller_manager.as_mut().map(|m| m.state("")));
        states.extend(self.capi.states());
        for s in states {
            eprintln!("management cluster at the failure: {s}");
        }
    }
}

impl MgmtCluster {
    /// Networks, control plane, `beowulf release`, `clusterctl init` of the four providers, Cluster API's
    /// managers. `test` names the namespaces; `dir` holds every file (logs included).
    pub async fn start(test: &str, beowulf: &BeowulfBin, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_release(test, beowulf, dir, &[]).await
    }

    /// [`MgmtCluster::start`] with extra `beowulf release` flags (`--binaries … --push`: a components file
    /// that runs the image by digest). The repository is `dir/repository`, the image layout
    /// `dir/repository/image`.
    pub async fn start_with_release(
        test: &str,
        beowulf: &BeowulfBin,
        dir: &Path,
        release_args: &[std::ffi::OsString],
    ) -> anyhow::Result<Self> {
        let peers = GoPeers::find()?;
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        let subnet =
            ((std::process::id() + CLUSTERS.fetch_add(1, Ordering::Relaxed) * 37) % 200 + 20) as u8;
        let api_ip = Ipv4Addr::new(10, 251, subnet, 1);

        // The switch: boot bridge (with the IPv6 RA iPXE waits for) and management bridge, uplinked to the
        // host namespace.
        let lan = Netns::create(&format!("bw-{test}-{}", std::process::id()))?;
        lan.try_ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.try_ip(&["link", "set", "br0", "up"])?;
        lan.try_ip(&["addr", "add", "fd99::1/64", "dev", "br0", "nodad"])?;
        lan.try_ip(&["link", "add", "mg0", "type", "bridge"])?;
        lan.try_ip(&["link", "set", "mg0", "up"])?;
        let uplink = format!("bwm{subnet}x{}", std::process::id() % 10000);
        crate::harness::try_run(Command::new("ip").args([
            "link", "add", &uplink, "type", "veth", "peer", "name", "up0", "netns", &lan.name,
        ]))?;
        crate::harness::try_run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{api_ip}/24"),
            "dev",
            &uplink,
        ]))?;
        crate::harness::try_run(Command::new("ip").args(["link", "set", &uplink, "up"]))?;
        lan.try_ip(&["link", "set", "up0", "master", "mg0"])?;
        lan.try_ip(&["link", "set", "up0", "up"])?;
        let ra = crate::pxe::ipv6_router(&lan, "br0", dir)?;

        let control_plane = ControlPlane::start(&peers, &dir.join("control-plane"), api_ip).await?;
        crate::harness::try_run(
            capi::kubectl(&peers, &control_plane)
                .args(["apply", "--server-side", "-f"])
                .arg(peers.cert_manager_crds()),
        )
        .context("applying cert-manager's CRDs")?;

        let repo = dir.join("repository");
        crate::harness::try_run(
            Command::new(&beowulf.0)
                .args(["release", "--version", RELEASE_VERSION, "--out"])
                .arg(&repo)
                .args(release_args),
        )?;
        let release_dir = repo.join("infrastructure-beowulf").join(RELEASE_VERSION);
        let clusterctl_config = capi::write_clusterctl_config(
            &peers,
            &release_dir.join("infrastructure-components.yaml"),
            dir,
        )?;
        let init_output = capi::clusterctl_init(
            &peers,
            &control_plane,
            &clusterctl_config,
            dir,
            &format!("beowulf:{RELEASE_VERSION}"),
        )?;
        let capi = CapiManagers::start(&peers, &control_plane, &dir.join("capi")).await?;
        Ok(MgmtCluster {
            capi,
            control_plane,
            _ra: ra,
            lan,
            peers,
            api_ip,
            subnet,
            next_node: AtomicU32::new(1),
            init_output,
            release_dir,
            clusterctl_config,
            dir: dir.to_path_buf(),
        })
    }

    /// An address on the management network that nobody answers: the control-plane endpoint of workload
    /// clusters whose control plane never starts here. Cluster API's managers keep probing it; the host
    /// routes it into the test's namespaces (the management network is on-link), so nothing leaves them.
    pub fn unanswered_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.subnet, 250)
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.control_plane.client().await
    }

    pub fn kubectl(&self) -> Command {
        capi::kubectl(&self.peers, &self.control_plane)
    }

    /// Cluster API's Machines in `ns` as kubectl reads them: (name, providerID, phase), by providerID.
    pub fn machines(&self, ns: &str) -> Vec<(String, String, String)> {
        let out = crate::run(self.kubectl().args([
            "get",
            "machines.cluster.x-k8s.io",
            "-n",
            ns,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name},{.spec.providerID},{.status.phase} {end}",
        ]));
        let mut v: Vec<_> = out
            .split_whitespace()
            .filter_map(|m| {
                let mut f = m.split(',');
                Some((
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                ))
            })
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    }

    pub fn clusterctl(&self) -> Command {
        capi::clusterctl(
            &self.peers,
            &self.control_plane,
            &self.clusterctl_config,
            &self.dir,
        )
    }

    /// A node namespace: `eth0` on the boot network (`10.99.0.(1+k)`), `eth1` on the management network.
    /// Returns it with its boot-network address.
    pub fn node(&self, name: &str) -> anyhow::Result<(Netns, Ipv4Addr)> {
        let k = self.next_node.fetch_add(1, Ordering::Relaxed);
        let k8 = u8::try_from(k).context("too many nodes")?;
        let ns = Netns::create(&format!("{}-{name}", self.lan.name))?;
        let boot_ip = Ipv4Addr::new(10, 99, 0, k8);
        for (inner, outer, bridge, cidr) in [
            ("eth0", format!("n{k}b"), "br0", format!("{boot_ip}/24")),
            (
                "eth1",
                format!("n{k}m"),
                "mg0",
                format!("10.251.{}.{}/24", self.subnet, 10 + k8),
            ),
        ] {
            crate::harness::try_run(Command::new("ip").args([
                "-n",
                &self.lan.name,
                "link",
                "add",
                &outer,
                "type",
                "veth",
                "peer",
                "name",
                inner,
                "netns",
                &ns.name,
            ]))?;
            self.lan
                .try_ip(&["link", "set", &outer, "master", bridge])?;
            self.lan.try_ip(&["link", "set", &outer, "up"])?;
            ns.try_ip(&["addr", "add", &cidr, "dev", inner])?;
            ns.try_ip(&["link", "set", inner, "up"])?;
        }
        Ok((ns, boot_ip))
    }
}

/// `beowulf manager` on a node of its own, with the kubeconfig of the ServiceAccount our components file
/// creates. Stopped (SIGTERM, then SIGKILL) on drop, before its namespace goes.
pub struct ManagerNode {
    pub process: Logged,
    pub ns: Netns,
    pub boot_ip: Ipv4Addr,
    pub health_port: u16,
    name: String,
}

impl ManagerNode {
    /// Starts `beowulf manager` with the boot plane on `eth0` (TFTP root `/usr/lib/ipxe`, artifacts from
    /// `artifact_root`) plus `extra` flags; waits until it answers `/readyz`.
    pub async fn start(
        mc: &MgmtCluster,
        beowulf: &BeowulfBin,
        name: &str,
        artifact_root: &Path,
        extra: &[&str],
    ) -> anyhow::Result<ManagerNode> {
        let (ns, boot_ip) = mc.node(name)?;
        Self::spawn(mc, beowulf, name, ns, boot_ip, artifact_root, extra).await
    }

    /// The manager process crashes (SIGKILL) and a new one starts on the same node (the same boot-network
    /// address), with `extra` flags; returns when it answers `/readyz`. Its log goes on in the same file.
    pub async fn restart(
        mut self,
        mc: &MgmtCluster,
        beowulf: &BeowulfBin,
        artifact_root: &Path,
        extra: &[&str],
    ) -> anyhow::Result<ManagerNode> {
        self.kill();
        let ManagerNode {
            ns, boot_ip, name, ..
        } = self;
        Self::spawn(mc, beowulf, &name, ns, boot_ip, artifact_root, extra).await
    }

    async fn spawn(
        mc: &MgmtCluster,
        beowulf: &BeowulfBin,
        name: &str,
        ns: Netns,
        boot_ip: Ipv4Addr,
        artifact_root: &Path,
        extra: &[&str],
    ) -> anyhow::Result<ManagerNode> {
        let (sa_ns, sa) = MANAGER_SERVICE_ACCOUNT;
        let kubeconfig = mc
            .control_plane
            .service_account_kubeconfig(sa_ns, sa, &mc.dir.join(format!("{name}.kubeconfig")))
            .await?;
        let health_port = free_port(Ipv4Addr::LOCALHOST)?;
        let mut cmd = ns.cmd(&beowulf.0);
        cmd.arg("manager")
            .args(["--boot-interface", "eth0"])
            .arg(format!("--boot-server-ip={boot_ip}"))
            .args(["--tftp-root", "/usr/lib/ipxe"])
            .arg("--artifact-root")
            .arg(artifact_root)
            .arg(format!("--health-bind-address=127.0.0.1:{health_port}"))
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            // What the Deployment sets from the downward API.
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", sa_ns)
            .env("RUST_LOG", "info,beowulf=debug");
        let mut process = Logged::spawn(
            &format!("beowulf manager {name}"),
            &mut cmd,
            &mc.dir.join(format!("{name}.log")),
        )?;
        let ns_name = ns.name.clone();
        process
            .wait_ready(Duration::from_secs(30), || {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &ns_name, "curl", "-sf", "-m", "2"])
                    .arg(format!("http://127.0.0.1:{health_port}/readyz"))
                    .output()
                    .is_ok_and(|o| o.status.success());
                async move { ok }
            })
            .await?;
        Ok(ManagerNode {
            process,
            ns,
            boot_ip,
            health_port,
            name: name.to_string(),
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// GET `path` on the manager's diagnostics endpoint (HTTPS on :8443, self-signed), with `token` as the
    /// bearer if given (passed to curl on stdin, not in argv): `(status code, body)`.
    pub fn diagnostics_get(&self, path: &str, token: Option<&str>) -> (String, String) {
        use std::io::Write as _;
        let mut child = self
            .ns
            .cmd("curl")
            .args(["-sk", "-m", "10", "-H", "@-", "-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:8443{path}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl runs");
        let header = token
            .map(|t| format!("Authorization: Bearer {t}\n"))
            .unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(header.as_bytes());
        }
        let out = child.wait_with_output().expect("curl runs");
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        (code.to_string(), body.to_string())
    }

    /// SIGKILL: a crash, not a shutdown (no Lease release, nothing flushed).
    pub fn kill(&mut self) {
        let _ = self.process.proc.child.kill();
        let _ = self.process.proc.child.wait();
    }
}
