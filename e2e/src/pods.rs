//! The workloads of rendered Helm charts, run as host processes: the stack's own pods without a kubelet or a
//! container engine.
//!
//! `helm template` of a chart gives Deployments, StatefulSets and Jobs; [`PodHost`] runs their containers
//! with what a kubelet would give them — the chart's `command`/`args` and `env` (values and `secretKeyRef`s
//! resolved from the rendered Secrets), its volumes (ConfigMap and Secret files with their modes, `emptyDir`,
//! one directory per volume claim template) bind-mounted at the `mountPath`s (`subPath` too), the pod's
//! hostname (StatefulSet `<name>-0`, `spec.hostname`, else the workload's name) and an `/etc/hosts` naming the
//! Services — in a network namespace of the test. Each container process gets a root of its own: an overlay of
//! its image's root or the host's `/` with a RAM upper layer (what it writes stays in its "container"), its own
//! `/dev`, mount, UTS, PID and cgroup namespaces, its `resources.limits.memory` as a memory cgroup it sees as
//! its root, and a bounded open-files limit; nothing it does reaches the host's files and stopping it stops
//! all it started.
//!
//! Images: a container whose image was given to [`PodHost::add_image`] (an [`Image`] unpacked from an OCI image
//! layout, its digests checked) runs on that image's root filesystem, with the image's default command when
//! the chart gives none — what the stack ships, run without a container engine. Any other image is not
//! available here: its container runs on the host's own programs (Debian's packages) instead, and where the
//! chart does not override its entrypoint, on a stand-in named in [`ENTRYPOINTS`].
//!
//! Services: a LoadBalancer Service with a `metallb.io/loadBalancerIPs` address gets that address on the
//! namespace's bridge, with a DNAT rule where its `port` and `targetPort` differ (what kube-proxy does); every
//! Service name (`name`, `name.<ns>.svc`, `name.<ns>.svc.cluster.local`) resolves to its address, or to
//! 127.0.0.1 (all pods share the namespace's network).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::{Netns, Proc, poll, run};

/// Stand-ins for the entrypoints of images the charts run without a `command`: (image repository, command).
/// The chart's `args` follow the command, as they would follow the image's entrypoint.
pub const ENTRYPOINTS: &[(&str, &[&str])] = &[
    // The 389ds image's CMD is this very program (389-ds-base's container entrypoint).
    (
        "quay.io/389ds/dirsrv",
        &["/usr/libexec/dirsrv/dscontainer", "-r"],
    ),
    // docker-entrypoint.sh of the mariadb image: a data directory on first start, the database and user of
    // MARIADB_DATABASE/MARIADB_USER/MARIADB_PASSWORD, no anonymous users, then the server in the foreground.
    (
        "docker.io/library/mariadb",
        &["/bin/sh", "-ec", MARIADB_ENTRYPOINT, "mariadb-entrypoint"],
    ),
];

const MARIADB_ENTRYPOINT: &str = r#"
if [ ! -d /var/lib/mysql/mysql ]; then
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql --auth-root-authentication-method=socket \
    --skip-test-db >/dev/null
fi
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld /var/lib/mysql
cat >/run/mysqld/init.sql <<SQL
DELETE FROM mysql.global_priv WHERE User='';
CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;
CREATE USER IF NOT EXISTS '$MARIADB_USER'@'%' IDENTIFIED BY '$MARIADB_PASSWORD';
GRANT ALL ON \`$MARIADB_DATABASE\`.* TO '$MARIADB_USER'@'%';
FLUSH PRIVILEGES;
SQL
exec mariadbd --no-defaults --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
  --port=3306 --init-file=/run/mysqld/init.sql "$@"
"#;

/// Run by `unshare` as the container's PID 1:
/// `pod-exec ROOT LOWER HOSTNAME [SRC DST]... -- [NAME=VALUE]... CMD...`.
/// Builds the container's root (overlay of LOWER — the image's root or the host's `/` —, RAM upper layer),
/// mounts the volumes, sets the hostname and limits, and runs the command with exactly the given environment. It stays PID 1 (no `exec`): the parent-death signal
/// that ends the container must reach a process that keeps it, and a daemon that changes its user (mariadbd,
/// slurmctld) loses it; when PID 1 dies, the kernel kills everything else in the PID namespace.
const POD_EXEC: &str = r#"#!/bin/sh
set -e
R=$1; L=$2; H=$3; shift 3
mount -t tmpfs -o mode=0700 pod "$R"
mkdir "$R/upper" "$R/work" "$R/root"
mount -t overlay overlay -o "lowerdir=$L,upperdir=$R/upper,workdir=$R/work" "$R/root"
mount -t proc proc "$R/root/proc"
mount --rbind /sys "$R/root/sys"
# Its own /dev, as a container runtime makes it: with the host's, something the HPC lab runs left the host's
# /dev/null mode 0644, and every unprivileged writer to it failed from then on.
mount -t tmpfs -o mode=0755,nosuid dev "$R/root/dev"
for n in null:3 zero:5 full:7 random:8 urandom:9; do mknod -m 666 "$R/root/dev/${n%:*}" c 1 "${n#*:}"; done
mknod -m 666 "$R/root/dev/tty" c 5 0
mkdir "$R/root/dev/pts" "$R/root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/root/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/root/dev/shm"
ln -s pts/ptmx "$R/root/dev/ptmx"
ln -s /proc/self/fd "$R/root/dev/fd"
for f in stdin:0 stdout:1 stderr:2; do ln -s "/proc/self/fd/${f#*:}" "$R/root/dev/${f%:*}"; done
mount -t tmpfs -o mode=1777 tmp "$R/root/tmp"
while [ "$1" != -- ]; do
  s=$1; d=$R/root$2; shift 2
  if [ -d "$s" ]; then mkdir -p "$d"; else mkdir -p "$(dirname "$d")"; [ -e "$d" ] || : >"$d"; fi
  mount --bind "$s" "$d"
done
shift
hostname "$H"
# The container's memory limit (POD_MEMORY_LIMIT bytes, from resources.limits.memory), as a kubelet sets it: a
# memory cgroup of its own (POD_CGROUP), which a cgroup namespace shows as the root of /sys/fs/cgroup —
# daemons size their caches by it (ns-slapd's database cache, else sized by the host's memory, needs that
# much free disk in its volume). Without a memory controller to use, the container runs unlimited and says so.
limit_memory() {
  mkdir "$R/cg"
  if mount -t cgroup -o memory memory "$R/cg" 2>/dev/null; then
    f=memory.limit_in_bytes; m='mount -t tmpfs -o mode=0755 cgroup "$0/sys/fs/cgroup" && mkdir "$0/sys/fs/cgroup/memory" && mount -t cgroup -o memory,ro memory "$0/sys/fs/cgroup/memory"'
  elif mount -t cgroup2 cgroup2 "$R/cg" 2>/dev/null && grep -qw memory "$R/cg/cgroup.controllers"; then
    f=memory.max; m='mount -t cgroup2 -o ro cgroup2 "$0/sys/fs/cgroup"'
  else
    return 1
  fi
  mkdir "$R/cg/$POD_CGROUP" && echo "$POD_MEMORY_LIMIT" >"$R/cg/$POD_CGROUP/$f" && echo $$ >"$R/cg/$POD_CGROUP/cgroup.procs"
  s=$?; umount "$R/cg"; return $s
}
m=
if [ -n "${POD_MEMORY_LIMIT:-}" ] && ! limit_memory; then
  echo "pod-exec: no memory cgroup to use: running without the limit of $POD_MEMORY_LIMIT bytes" >&2; m=
fi
# A container runtime bounds the open-files limit; a host's unbounded one would make ns-slapd size its
# connection table by it and die before writing its pid file. Lower only: raising needs CAP_SYS_RESOURCE.
lower() { l=$(ulimit "$1" -n); if [ "$l" = unlimited ] || [ "$l" -gt "$2" ]; then ulimit "$1" -n "$2"; fi; }
lower -S 1024; lower -H 65536
unshare --cgroup sh -c "${m:-true}"' && exec "$@"' "$R/root" chroot "$R/root" \
  /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root HOSTNAME="$H" "$@"
"#;

/// The documents of `helm template` output.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub docs: Vec<Value>,
}

impl Manifests {
    pub fn parse(yaml: &str) -> Manifests {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
            .unwrap_or_else(|e| panic!("rendered manifests are not YAML: {e}"));
        Manifests {
            docs: docs.into_iter().filter(|d| d.is_object()).collect(),
        }
    }

    pub fn extend(&mut self, other: Manifests) {
        self.docs.extend(other.docs);
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }

    /// Every container image the workloads name (init containers too), without repeats.
    pub fn images(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .docs
            .iter()
            .flat_map(|d| {
                let spec = &d["spec"]["template"]["spec"];
                ["containers", "initContainers"]
                    .into_iter()
                    .flat_map(|k| spec[k].as_array().cloned().unwrap_or_default())
            })
            .filter_map(|c| c["image"].as_str().map(str::to_string))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs.iter().filter(move |d| d["kind"] == kind)
    }

    /// A ConfigMap's `data`.
    pub fn config_map(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        let cm = self
            .find("ConfigMap", name)
            .unwrap_or_else(|| panic!("no ConfigMap {name} in the rendered charts"));
        strings(&cm["data"])
    }

    /// A Secret's `data` (decoded) and `stringData`.
    pub fn secret(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        let s = self
            .find("Secret", name)
            .unwrap_or_else(|| panic!("no Secret {name} in the rendered charts (set its value)"));
        let mut out = strings(&s["stringData"]);
        if let Some(data) = s["data"].as_object() {
            for (k, v) in data {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .unwrap_or_else(|e| panic!("Secret {name} key {k}: not base64: {e}"));
                out.insert(k.clone(), b);
            }
        }
        out
    }
}

fn strings(v: &Value) -> BTreeMap<String, Vec<u8>> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().unwrap_or_default().as_bytes().to_vec(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A workload's pod, as far as this host runs it.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub hostname: String,
    spec: Value,
    dir: PathBuf,
}

impl Pod {
    fn container(&self, name: &str) -> &Value {
        self.spec["containers"]
            .as_array()
            .into_iter()
            .chain(self.spec["initContainers"].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("pod {} has no container {name}", self.name))
    }

    /// The ports the pod's containers but `skip` declare (readiness: every one of them listening).
    pub fn ports(&self, skip: &[&str]) -> Vec<u16> {
        self.spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| !skip.iter().any(|s| c["name"] == *s))
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["containerPort"].as_u64())
            .filter_map(|p| u16::try_from(p).ok())
            .collect()
    }

    /// A file in one of the pod's volumes (`volume` as the pod names it, `path` relative to its root), as the
    /// pod's processes wrote it; empty when there is none.
    pub fn volume_file(&self, volume: &str, path: &str) -> String {
        std::fs::read_to_string(self.dir.join("volumes").join(volume).join(path))
            .unwrap_or_default()
    }

    /// A container's log (stdout and stderr).
    pub fn log(&self, container: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{container}.log"))).unwrap_or_default()
    }

    /// What to show when a container fails: its log, then the last lines of every log file the pod's
    /// daemons wrote into its volumes (a daemon that detaches, like ns-slapd, says why it died only there).
    fn failure_report(&self, container: &str) -> String {
        self.log(container) + &self.volume_logs()
    }

    fn volume_logs(&self) -> String {
        let mut out = String::new();
        let mut dirs = vec![self.dir.join("volumes")];
        while let Some(d) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(t) = e.file_type() else { continue };
                let in_log_dir = d.file_name().is_some_and(|n| n == "logs" || n == "log");
                if t.is_dir() {
                    dirs.push(path);
                } else if t.is_file()
                    && (in_log_dir || path.extension().is_some_and(|x| x == "log"))
                {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                    out.push_str(&format!("\n--- {} (last lines):\n{tail}", path.display()));
                }
            }
        }
        out
    }
}

/// A container image unpacked from an OCI image layout: the root filesystem its containers run on, and its
/// default command.
#[derive(Debug, Clone)]
pub struct Image {
    pub rootfs: PathBuf,
    /// The config's `Entrypoint` and `Cmd`.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The image manifest's digest, `sha256:…`.
    pub digest: String,
}

impl Image {
    /// Unpacks the image tagged `tag` in the OCI image layout `layout` (read with csctl's layout code, every
    /// blob's digest checked) into `cache/<manifest digest>/rootfs`; an image unpacked before is reused (a
    /// finished unpack leaves `.unpacked`; other images in `cache` are removed). Layers are applied in order
    /// with GNU tar, keeping owners, modes and device nodes; whiteouts are refused (the images run here have
    /// one layer).
    pub fn from_layout(layout: &Path, tag: &str, cache: &Path) -> Image {
        use csctl::oci::manifest::ImageManifest;
        let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{}: {e}", layout.display()) };
        let store = csctl::oci::layout::Layout::open(layout).unwrap_or_else(|e| fail(&e));
        let descriptor = store
            .resolve(tag)
            .unwrap_or_else(|e| fail(&e))
            .unwrap_or_else(|| fail(&format!("no image tagged {tag}")));
        let blob = |d: &csctl::oci::digest::Digest| store.read_blob(d).unwrap_or_else(|e| fail(&e));
        let manifest: ImageManifest =
            serde_json::from_slice(&blob(&descriptor.digest)).unwrap_or_else(|e| fail(&e));
        let config: Value =
            serde_json::from_slice(&blob(&manifest.config.digest)).unwrap_or_else(|e| fail(&e));
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let digest = descriptor.digest.to_string();
        let dir = cache.join(digest.replace(':', "-"));
        let rootfs = dir.join("rootfs");
        for old in std::fs::read_dir(cache).into_iter().flatten().flatten() {
            if old.path() != dir {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        if !dir.join(".unpacked").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&rootfs).unwrap();
            for layer in &manifest.layers {
                let file = dir.join("layer.tar.gz");
                std::fs::write(&file, blob(&layer.digest)).unwrap();
                let names = run(Command::new("tar").arg("-tzf").arg(&file));
                assert!(
                    !names
                        .lines()
                        .any(|n| n.rsplit('/').next().unwrap_or(n).starts_with(".wh.")),
                    "{}: layers with whiteouts are not supported here",
                    layout.display()
                );
                run(Command::new("tar")
                    .args(["--numeric-owner", "-xpzf"])
                    .arg(&file)
                    .arg("-C")
                    .arg(&rootfs));
                std::fs::remove_file(&file).unwrap();
            }
            std::fs::write(dir.join(".unpacked"), &digest).unwrap();
        }
        Image {
            rootfs,
            entrypoint: strings(&config["config"]["Entrypoint"]),
            cmd: strings(&config["config"]["Cmd"]),
            digest,
        }
    }
}

/// Runs pods of rendered charts in a network namespace (see the module documentation).
pub struct PodHost {
    // Field order is drop order: the processes before the files they use.
    procs: Vec<Proc>,
    ns: String,
    bridge: String,
    dir: PathBuf,
    manifests: Manifests,
    hosts: PathBuf,
    runs: usize,
    /// Image reference (as the manifests write it) → the unpacked image.
    images: BTreeMap<String, Image>,
    /// The memory cgroups made for containers with a limit, removed on drop.
    cgroups: Vec<String>,
}

impl PodHost {
    /// Pods in namespace `ns` (Service addresses go on `bridge`); `dir` holds volumes, logs and roots.
    pub fn new(ns: &Netns, bridge: &str, dir: &Path, manifests: Manifests) -> PodHost {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("pod-exec"), POD_EXEC).unwrap();
        let host = PodHost {
            procs: Vec::new(),
            ns: ns.name.clone(),
            bridge: bridge.to_string(),
            dir: dir.to_path_buf(),
            manifests,
            hosts: dir.join("hosts"),
            images: BTreeMap::new(),
            cgroups: Vec::new(),
            runs: 0,
        };
        host.expose_services();
        host
    }

    pub fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    /// Service addresses on the bridge, DNAT for differing target ports, and the `/etc/hosts` of every pod.
    fn expose_services(&self) {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for svc in self.manifests.of_kind("Service") {
            let name = svc["metadata"]["name"].as_str().unwrap();
            let ns = svc["metadata"]["namespace"].as_str().unwrap_or("default");
            let addr = svc["metadata"]["annotations"]["metallb.io/loadBalancerIPs"]
                .as_str()
                .filter(|_| svc["spec"]["type"] == "LoadBalancer")
                .unwrap_or("127.0.0.1");
            if addr != "127.0.0.1" {
                run(Command::new("ip").args([
                    "-n",
                    &self.ns,
                    "addr",
                    "add",
                    &format!("{addr}/32"),
                    "dev",
                    &self.bridge,
                ]));
            }
            for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
                let port = p["port"].as_u64().unwrap();
                let Some(target) = p["targetPort"].as_u64().filter(|t| *t != port) else {
                    continue;
                };
                for chain in ["PREROUTING", "OUTPUT"] {
                    run(Command::new("ip").args(["netns", "exec", &self.ns]).args([
                        "iptables",
                        "-t",
                        "nat",
                        "-A",
                        chain,
                        "-d",
                        &format!("{addr}/32"),
                        "-p",
                        "tcp",
                        "--dport",
                        &port.to_string(),
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &format!("{addr}:{target}"),
                    ]));
                }
            }
            hosts.push_str(&format!(
                "{addr} {name} {name}.{ns}.svc {name}.{ns}.svc.cluster.local\n"
            ));
        }
        for w in self.workloads() {
            hosts.push_str(&format!("127.0.0.1 {}\n", hostname_of(w)));
        }
        std::fs::write(&self.hosts, hosts).unwrap();
    }

    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.manifests.docs.iter().filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "Job")
            )
        })
    }

    /// The pod of workload `kind`/`name`, its volumes created (not started).
    pub fn pod(&self, kind: &str, name: &str) -> Pod {
        let w = self
            .manifests
            .find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the rendered charts"));
        let spec = w["spec"]["template"]["spec"].clone();
        let dir = self.dir.join(format!("{}-{name}", kind.to_lowercase()));
        let pod = Pod {
            name: name.to_string(),
            hostname: hostname_of(w),
            spec,
            dir,
        };
        std::fs::create_dir_all(pod.dir.join("volumes")).unwrap();
        for v in pod.spec["volumes"].as_array().into_iter().flatten() {
            self.make_volume(&pod, v);
        }
        for c in w["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let claim = c["metadata"]["name"].as_str().unwrap();
            std::fs::create_dir_all(pod.dir.join("volumes").join(claim)).unwrap();
        }
        pod
    }

    fn make_volume(&self, pod: &Pod, v: &Value) {
        use std::os::unix::fs::PermissionsExt;
        let dir = pod.dir.join("volumes").join(v["name"].as_str().unwrap());
        if dir.exists() {
            return;
        }
        std::fs::create_dir_all(&dir).unwrap();
        let (files, mode) = if let Some(cm) = v["configMap"]["name"].as_str() {
            (
                self.manifests.config_map(cm),
                v["configMap"]["defaultMode"].as_u64(),
            )
        } else if let Some(s) = v["secret"]["secretName"].as_str() {
            (
                self.manifests.secret(s),
                v["secret"]["defaultMode"].as_u64(),
            )
        } else {
            return; // emptyDir (and anything else): an empty directory
        };
        let mode = u32::try_from(mode.unwrap_or(0o644)).unwrap();
        for (k, bytes) in files {
            let f = dir.join(&k);
            std::fs::write(&f, bytes).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    /// Containers whose image is `reference` (exactly as the rendered manifests name it) run on `image`.
    pub fn add_image(&mut self, reference: &str, image: Image) {
        self.images.insert(reference.to_string(), image);
    }

    /// The process of `container` of `pod`, with `cmd` instead of the container's command when given.
    pub fn command(&mut self, pod: &Pod, container: &str, cmd: Option<&[&str]>) -> Command {
        self.runs += 1;
        let c = pod.container(container);
        let image = self.images.get(c["image"].as_str().unwrap_or_default());
        let root = pod.dir.join(format!("root-{container}-{}", self.runs));
        std::fs::create_dir_all(&root).unwrap();
        let mut args: Vec<String> = vec![
            self.dir.join("pod-exec").display().to_string(),
            root.display().to_string(),
            image.map_or("/".into(), |i| i.rootfs.display().to_string()),
            pod.hostname.clone(),
            self.hosts.display().to_string(),
            "/etc/hosts".into(),
        ];
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let mut src = pod.dir.join("volumes").join(m["name"].as_str().unwrap());
            if let Some(sub) = m["subPath"].as_str() {
                src = src.join(sub);
            }
            args.push(src.display().to_string());
            args.push(m["mountPath"].as_str().unwrap().to_string());
        }
        args.push("--".into());
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                let secret = self.manifests.secret(r["name"].as_str().unwrap());
                let key = r["key"].as_str().unwrap();
                String::from_utf8(secret[key].clone()).unwrap()
            } else {
                panic!(
                    "env {name} of {}: only value and secretKeyRef are supported",
                    pod.name
                )
            };
            args.push(format!("{name}={value}"));
        }
        match cmd {
            Some(cmd) => args.extend(cmd.iter().map(|s| s.to_string())),
            None => args.extend(container_command(c, image)),
        }
        let mut command = Command::new("ip");
        if let Some(q) = c["resources"]["limits"]["memory"].as_str() {
            let bytes = quantity_bytes(q)
                .unwrap_or_else(|| panic!("{}/{container}: memory limit {q:?}", pod.name));
            let cgroup = format!("beowulf-pods-{}-{}", std::process::id(), self.runs);
            command
                .env("POD_MEMORY_LIMIT", bytes.to_string())
                .env("POD_CGROUP", &cgroup);
            self.cgroups.push(cgroup);
        }
        command
            .args(["netns", "exec", &self.ns])
            .args([
                "unshare",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "sh",
            ])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Starts `pod`: its init containers to completion (in order), then its containers except `skip`.
    pub fn start(&mut self, pod: &Pod, skip: &[&str]) {
        for c in pod.spec["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = c["name"].as_str().unwrap();
            let mut cmd = self.command(pod, name, None);
            let log = pod.dir.join(format!("{name}.log"));
            let st = run_until(&mut cmd, &log, Instant::now() + Duration::from_secs(60));
            assert!(
                st.is_some_and(|s| s.success()),
                "init container {name} of {}: {st:?}; its output:\n{}",
                pod.name,
                pod.failure_report(name)
            );
        }
        for c in pod.spec["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = c["name"].as_str().unwrap();
            if skip.contains(&name) {
                continue;
            }
            let log = std::fs::File::create(pod.dir.join(format!("{name}.log"))).unwrap();
            let mut cmd = self.command(pod, name, None);
            cmd.stdout(log.try_clone().unwrap()).stderr(log);
            self.procs
                .push(Proc::spawn(&format!("{}/{name}", pod.name), &mut cmd));
        }
    }

    /// Runs a Job's pod until it succeeds (the Job's `backoffLimit` retries), within `timeout`.
    pub fn run_job(&mut self, name: &str, timeout: Duration) -> Pod {
        let pod = self.pod("Job", name);
        let c = pod.spec["containers"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let tries = pod_backoff(self.manifests.find("Job", name).unwrap());
        let deadline = Instant::now() + timeout;
        for n in 0..=tries {
            let mut cmd = self.command(&pod, &c, None);
            match run_until(&mut cmd, &pod.dir.join(format!("{c}.log")), deadline) {
                Some(st) if st.success() => return pod,
                Some(_) if n < tries && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                st => panic!(
                    "Job {name}: {} after {} tries; its output:\n{}",
                    st.map_or("timed out".to_string(), |s| s.to_string()),
                    n + 1,
                    pod.failure_report(&c)
                ),
            }
        }
        unreachable!()
    }

    /// Waits until every port the containers of `pod` but `skip` declare is listening in the namespace (its
    /// readiness), failing early when one of the pod's processes exits.
    pub fn wait_ready(&mut self, pod: &Pod, skip: &[&str], timeout: Duration) {
        let ports = pod.ports(skip);
        let ns = self.ns.clone();
        let prefix = format!("{}/", pod.name);
        let r = poll(&format!("pod {} ready", pod.name), timeout, || {
            for p in self
                .procs
                .iter_mut()
                .filter(|p| p.name.starts_with(&prefix))
            {
                if let Some(st) = p.exited() {
                    let c = p.name.rsplit('/').next().unwrap().to_string();
                    panic!("{} exited ({st}):\n{}", p.name, pod.failure_report(&c));
                }
            }
            let listening = run(Command::new("ip").args(["netns", "exec", &ns, "ss", "-Hltn"]));
            ports
                .iter()
                .all(|p| {
                    listening.lines().any(|l| {
                        l.split_whitespace()
                            .nth(3)
                            .is_some_and(|a| a.ends_with(&format!(":{p}")))
                    })
                })
                .then_some(())
        });
        if let Err(e) = r {
            let logs: Vec<String> = pod.spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let n = c["name"].as_str().unwrap();
                    format!("--- {n}:\n{}", pod.log(n))
                })
                .collect();
            panic!("{e}\n{}{}", logs.join("\n"), pod.volume_logs());
        }
    }
}

impl Drop for PodHost {
    /// SIGKILL to each container's `unshare`, which passes it on to the container's PID 1, `pod-exec`
    /// (`--kill-child`): the kernel then ends everything in that PID namespace. (A polite SIGTERM would not
    /// do: `unshare` ignores it while it waits.)
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        // A cgroup can go once the last process in it has (the kernel ends them right after PID 1).
        for name in &self.cgroups {
            for dir in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"].map(|d| Path::new(d).join(name))
            {
                let deadline = Instant::now() + Duration::from_secs(5);
                while dir.exists()
                    && std::fs::remove_dir(&dir).is_err()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Runs `cmd` to completion with its output in `log`; `None` (and the process killed) at `deadline`.
fn run_until(cmd: &mut Command, log: &Path, deadline: Instant) -> Option<std::process::ExitStatus> {
    let out = std::fs::File::create(log).unwrap();
    let mut child = cmd
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pod_backoff(job: &Value) -> u64 {
    job["spec"]["backoffLimit"].as_u64().unwrap_or(6)
}

/// A StatefulSet's first pod is `<name>-0`; otherwise `spec.hostname` or the workload's name.
fn hostname_of(w: &Value) -> String {
    let name = w["metadata"]["name"].as_str().unwrap();
    if let Some(h) = w["spec"]["template"]["spec"]["hostname"].as_str() {
        return h.to_string();
    }
    if w["kind"] == "StatefulSet" {
        format!("{name}-0")
    } else {
        name.to_string()
    }
}

/// `command` + `args`; without `command`, the image's entrypoint stand-in + `args`.
/// A Kubernetes memory quantity in bytes: `1Gi`, `512Mi`, `64Ki`, `1G`, `500M`, `1k`, `1048576`.
fn quantity_bytes(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.parse::<u64>().ok()?.checked_mul(factor)
}

/// The container's command, as a kubelet makes it: `command` + `args`; without a `command`, the image's
/// entrypoint + (`args`, else the image's `Cmd`) when the image is here, else its stand-in from
/// [`ENTRYPOINTS`] + `args`.
fn container_command(c: &Value, image: Option<&Image>) -> Vec<String> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let (command, args) = (list(&c["command"]), list(&c["args"]));
    if !command.is_empty() {
        return [command, args].concat();
    }
    if let Some(image) = image {
        let rest = if args.is_empty() { &image.cmd } else { &args };
        return [image.entrypoint.as_slice(), rest].concat();
    }
    let name = c["image"].as_str().unwrap_or_default();
    let (_, entry) = ENTRYPOINTS
        .iter()
        .find(|(repo, _)| name.starts_with(repo))
        .unwrap_or_else(|| {
            panic!(
                "container {} runs the entrypoint of {name}, which is neither here (PodHost::add_image) nor \
                 has a stand-in (e2e::pods::ENTRYPOINTS)",
                c["name"]
            )
        });
    [entry.iter().map(|s| s.to_string()).collect(), args].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_from_the_chart_or_the_image_stand_in() {
        let c: Value =
            serde_json::json!({"name": "x", "command": ["slurmctld", "-D"], "args": ["-i"]});
        assert_eq!(container_command(&c, None), ["slurmctld", "-D", "-i"]);
        let c: Value = serde_json::json!({"name": "db", "image": "docker.io/library/mariadb:11.4@sha256:61",
            "args": ["--innodb-lock-wait-timeout=900"]});
        let cmd = container_command(&c, None);
        assert_eq!(cmd[0], "/bin/sh");
        assert_eq!(cmd.last().unwrap(), "--innodb-lock-wait-timeout=900");
    }

    #[test]
    fn memory_quantities_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1048576"), Some(1_048_576));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        assert_eq!(quantity_bytes("Gi"), None);
    }

    #[test]
    fn hostnames_follow_the_workload_kind() {
        let sts = serde_json::json!({"kind": "StatefulSet", "metadata": {"name": "slurmctld"}, "spec": {}});
        assert_eq!(hostname_of(&sts), "slurmctld-0");
        let dep = serde_json::json!({"kind": "Deployment", "metadata": {"name": "slurmdbd"},
            "spec": {"template": {"spec": {"hostname": "dbd"}}}});
        assert_eq!(hostname_of(&dep), "dbd");
    }

    #[test]
    fn manifests_resolve_config_maps_and_secrets() {
        let m = Manifests::parse(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: aGk=}\nstringData: {t: plain}\n---\n\
             # empty document\n---\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a.conf: \"x=1\\n\"}\n",
        );
        assert_eq!(m.docs.len(), 2);
        assert_eq!(m.secret("s")["k"], b"hi");
        assert_eq!(m.secret("s")["t"], b"plain");
        assert_eq!(m.config_map("c")["a.conf"], b"x=1\n");
    }
}
