//! The engine's boot profiles as the boot plane serves them: the manager's loader of the boot plane's
//! [`Directory`](crate::boot::directory::Directory) (the standalone inventory file is the other), and the
//! phases its services record, per host, for the engine.
//!
//! [`ProfileRegistry`] implements the engine's [`BootProfiles`]: publishing a profile puts one host into the
//! directory of the [`crate::boot::plane::BootPlane`] that `beowulf manager` serves (its network: one per
//! subnet; its image: one per distinct kernel/initrds/rootfs/command line), withdrawing takes it out — one host
//! at a time, never rebuilding the directory. The services then work exactly as in standalone mode: the iPXE
//! script mints the per-boot token, NoCloud data and the callback need it, and every phase they record (by
//! MAC) comes back here, keyed by `<namespace>/<host>`, for the engine.
//!
//! One boot network serves every namespace, so host names, MACs and addresses must be unique across the
//! published profiles; a profile that would clash is refused (the engine reports `BootPlaneError`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use crate::boot::directory::{
    Artifact, ArtifactSource, Directory, DirectoryHandle, Host, Image, ImageFormat, Network, Secret,
};
use crate::boot::metrics::BootMetrics;
use crate::boot::plane::BootPlane;
use crate::boot::{MacAddr, Phase};
use crate::provisioning::io::{BootProfile, BootProfiles, IoError, LiveBoot, UserDataFormat};

/// Unix seconds now (the controllers' injectable clock).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The namespace shown for the served directory (hosts carry their own).
const SERVED_NAMESPACE: &str = "beowulf-manager";

/// How the boot plane serves the profiles.
#[derive(Debug, Clone)]
pub struct ServedConfig {
    /// The boot plane's address on the boot network (DHCP server id, next-server, HTTP URLs).
    pub boot_server: Ipv4Addr,
    /// The HTTP port hosts fetch scripts, boot files and NoCloud data from.
    pub http_port: u16,
    /// Where image artifacts given as relative paths live; `None`: only `http(s)://` artifacts.
    pub artifact_root: Option<PathBuf>,
    /// How long a per-boot token stays valid.
    pub token_ttl: Duration,
    pub lease_secs: u32,
}

impl Default for ServedConfig {
    fn default() -> Self {
        ServedConfig {
            boot_server: Ipv4Addr::LOCALHOST,
            http_port: 8081,
            artifact_root: None,
            token_ttl: Duration::from_secs(1800),
            lease_secs: 3600,
        }
    }
}

/// What the boot plane serves for one profile, built at publish.
struct Served {
    host: Host,
    image: Image,
    network: Network,
}

/// A published profile without its user-data, which lives in the directory only (one copy per host).
struct Published {
    profile: BootProfile,
}

#[derive(Default)]
struct Inner {
    published: HashMap<String, Published>,
    phases: HashMap<String, (Phase, i64)>,
    by_mac: HashMap<MacAddr, String>,
}

impl Inner {
    fn record(&mut self, host: &str, phase: Phase, at: i64) {
        if self.published.contains_key(host) {
            let e = self.phases.entry(host.to_string()).or_insert((phase, at));
            if phase >= e.0 {
                *e = (phase, at);
            }
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    clock: Clock,
    /// Told the host key whenever a boot ends (callback or inspection report): the controllers reconcile that
    /// host at once instead of at their next poll.
    ends: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<String>>>,
    /// Told the MAC of every discovered host whose report arrived.
    discovered: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<MacAddr>>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a few map operations that cannot be left half-done: recover from a poisoned lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Profiles and phases by host key (`<namespace>/<host>`), and the boot plane that serves them.
pub struct ProfileRegistry {
    shared: Arc<Shared>,
    plane: Arc<BootPlane>,
    config: ServedConfig,
}

impl Default for ProfileRegistry {
    fn default() -> Self {
        ProfileRegistry::new(
            ServedConfig::default(),
            BootMetrics::default(),
            Arc::new(|| jiff::Timestamp::now().as_second()),
        )
    }
}

impl ProfileRegistry {
    pub fn new(config: ServedConfig, metrics: BootMetrics, clock: Clock) -> Self {
        let handle = Arc::new(DirectoryHandle::new(Directory::empty(
            SERVED_NAMESPACE.into(),
        )));
        let plane = Arc::new(BootPlane::new(
            handle,
            config.token_ttl,
            config.http_port,
            metrics,
        ));
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            clock,
            ends: Mutex::new(Vec::new()),
            discovered: Mutex::new(Vec::new()),
        });
        let s2 = shared.clone();
        plane.observe_phases(Box::new(move |mac, phase| {
            let now = (s2.clock)();
            let key = {
                let mut g = s2.lock();
                let key = g.by_mac.get(mac).cloned();
                if let Some(key) = &key {
                    g.record(key, phase, now);
                }
                key
            };
            match key {
                Some(key) if matches!(phase, Phase::Callback | Phase::Inspection) => {
                    let mut ends = s2.ends.lock().unwrap_or_else(|e| e.into_inner());
                    ends.retain(|tx| tx.send(key.clone()).is_ok());
                }
                // No profile: a discovered host (the plane records phases only of hosts it serves).
                None if phase == Phase::Inspection => {
                    let mut found = s2.discovered.lock().unwrap_or_else(|e| e.into_inner());
                    found.retain(|tx| tx.send(*mac).is_ok());
                }
                _ => {}
            }
        }));
        ProfileRegistry {
            shared,
            plane,
            config,
        }
    }

    /// The keys (`<namespace>/<host>`) of hosts whose boot ended (callback or inspection report), from now on.
    pub fn boot_ends(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared
            .ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// This boot plane's address as nodes reach it (`ADDRESS:PORT`).
    fn server(&self) -> String {
        format!("{}:{}", self.config.boot_server, self.config.http_port)
    }

    /// The boot plane to serve (DHCP, TFTP, HTTP) on these profiles.
    pub fn plane(&self) -> Arc<BootPlane> {
        self.plane.clone()
    }

    /// Records that `host` reached `phase` at `at` (Unix seconds); later phases only move forward. The served
    /// boot plane records through this too; tests and benchmarks without a network call it directly.
    pub fn record(&self, host: &str, phase: Phase, at: i64) {
        self.shared.lock().record(host, phase, at);
    }

    /// The published profile of `host` (`<namespace>/<host>`), its user-data as the boot plane serves it.
    pub fn profile(&self, host: &str) -> Option<BootProfile> {
        let g = self.shared.lock();
        let mut profile = g.published.get(host)?.profile.clone();
        let directory = self.plane.directory.get();
        let served = directory.host(&profile.hostname)?;
        let data = match profile.format {
            UserDataFormat::CloudConfig => Some(&served.user_data),
            UserDataFormat::Ignition => served.ignition.as_ref(),
        };
        profile.user_data = data
            .map(|d| d.expose().as_bytes().to_vec())
            .unwrap_or_default();
        Some(profile)
    }
}

/// `namespace` of a `<namespace>/<host>` key.
fn namespace_of(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

/// An image artifact as the boot plane serves it: `http(s)://` URLs are fetched by the host from there;
/// relative paths are files under the artifact root, served at `/images/<image>/<file>`.
fn artifact(url: &str, root: Option<&Path>, host: &str) -> Result<Artifact, IoError> {
    let name = |path: &str| {
        path.rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or_else(|| IoError(format!("host {host}: artifact {url:?} has no file name")))
    };
    if url.starts_with("http://") || url.starts_with("https://") {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        return Ok(Artifact {
            name: name(path)?,
            source: ArtifactSource::Url(url.to_string()),
            sha256: None,
        });
    }
    let rel = Path::new(url);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(IoError(format!(
            "host {host}: artifact {url:?} must be an http(s):// URL or a relative path without `..` under the \
             artifact root"
        )));
    }
    let Some(root) = root else {
        return Err(IoError(format!(
            "host {host}: artifact {url:?} is a path, but the manager has no --artifact-root: give an http(s):// \
             URL or start the manager with --artifact-root"
        )));
    };
    Ok(Artifact {
        name: name(url)?,
        source: ArtifactSource::File(root.join(rel)),
        sha256: None,
    })
}

/// The artifacts and command line of an image (a profile's, or the discovery image's).
pub struct ImageSource {
    pub kernel: String,
    pub initrds: Vec<String>,
    pub rootfs: Option<String>,
    pub cmdline: String,
}

impl ImageSource {
    fn of(p: &BootProfile) -> ImageSource {
        ImageSource {
            kernel: p.kernel.clone(),
            initrds: p.initrds.clone(),
            rootfs: p.rootfs.clone(),
            cmdline: p.cmdline.clone(),
        }
    }
}

impl ProfileRegistry {
    /// The image the boot plane serves for `src` (`what` names its user in errors). Hosts booting the same
    /// artifacts with the same command line share one served image.
    fn served_image(&self, src: &ImageSource, what: &str) -> Result<Image, IoError> {
        let root = self.config.artifact_root.as_deref();
        let kernel = artifact(&src.kernel, root, what)?;
        let initrds = src
            .initrds
            .iter()
            .map(|u| artifact(u, root, what))
            .collect::<Result<Vec<_>, _>>()?;
        let rootfs = src
            .rootfs
            .as_deref()
            .map(|u| artifact(u, root, what))
            .transpose()?;
        let mut h = Sha256::new();
        for part in std::iter::once(&src.kernel)
            .chain(&src.initrds)
            .chain(&src.rootfs)
            .chain(std::iter::once(&src.cmdline))
        {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let image = Image {
            name: format!("img-{}", &hex::encode(h.finalize())[..16]),
            format: ImageFormat::Live,
            kernel,
            initrds,
            rootfs,
            cmdline: src.cmdline.clone(),
        };
        crate::boot::script::check_cmdline(&image).map_err(|e| {
            IoError(format!(
                "{what}: the image's kernel command line template does not render: {e}"
            ))
        })?;
        Ok(image)
    }

    /// Discovery: unknown MACs (neither published nor `known`) that network-boot on `subnet` get an address
    /// from `range` and boot `image` (the inspection image); their reports arrive through
    /// [`ProfileRegistry::discoveries`]. Called again with another image, it replaces the first.
    pub fn enable_discovery(
        &self,
        subnet: Ipv4Net,
        range: crate::boot::directory::DiscoveryRange,
        image: &ImageSource,
    ) -> Result<(), IoError> {
        let image = self.served_image(image, "the discovery image")?;
        let _g = self.shared.lock();
        let name = image.name.clone();
        self.plane.directory.change(|d| {
            match d.networks.iter_mut().find(|n| n.subnet == subnet) {
                Some(n) => n.discovery = Some(range),
                None => d.networks.push(Network {
                    name: subnet.to_string(),
                    subnet,
                    gateway: None,
                    dns: Vec::new(),
                    domain: None,
                    mtu: None,
                    lease_secs: self.config.lease_secs,
                    discovery: Some(range),
                    boot_server: self.config.boot_server,
                }),
            }
            d.images
                .entry(name.clone())
                .or_insert_with(|| Arc::new(image));
            d.inspection_image = Some(name);
        });
        self.plane.directory_changed(&self.plane.directory.get());
        Ok(())
    }

    /// The MACs of hosts that finished a discovery boot (their report is in the boot plane's inspection store
    /// under `<served namespace>/discovered-<mac>`: [`ProfileRegistry::discovered_report`]), from now on.
    pub fn discoveries(&self) -> tokio::sync::mpsc::UnboundedReceiver<MacAddr> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// The report of the host discovered with `mac`, and when it arrived (Unix seconds).
    pub fn discovered_report(&self, mac: &MacAddr) -> Option<(crate::hardware::Hardware, i64)> {
        let key = format!(
            "{}/{}",
            self.plane.directory.get().namespace,
            crate::boot::discovery::host_name(mac)
        );
        self.plane
            .inspections
            .get(&key)
            .map(|i| (i.hardware.clone(), i.at.as_second()))
    }

    /// Checks `p` and builds what the boot plane serves for it.
    fn prepare(&self, p: &BootProfile) -> Result<Served, IoError> {
        let key = p.host.clone();
        let Some((ip, prefix)) = p.ip else {
            return Err(IoError(format!(
                "host {key}: no static address on its boot interface (spec.interfaces[].address): the boot \
                 plane answers DHCP from reservations only"
            )));
        };
        let subnet = Ipv4Net::new(ip, prefix)
            .map_err(|e| IoError(format!("host {key}: address {ip}/{prefix}: {e}")))?
            .trunc();
        let image = self.served_image(&ImageSource::of(p), &key)?;
        let text = String::from_utf8_lossy(&p.user_data).into_owned();
        let (user_data, ignition) = match p.format {
            UserDataFormat::CloudConfig => (Secret::new(text), None),
            UserDataFormat::Ignition => (Secret::default(), Some(Secret::new(text))),
        };
        let host = Host {
            name: p.hostname.clone(),
            namespace: namespace_of(&key).to_string(),
            mac: p.mac,
            ip,
            network: 0,
            image: image.name.clone(),
            user_data,
            vendor_data: None,
            network_config: None,
            ignition,
            local_disks: p.local_disks.clone(),
            cleaning: p.cleaning,
        };
        let network = Network {
            name: subnet.to_string(),
            subnet,
            gateway: p.gateway,
            dns: Vec::new(),
            domain: None,
            mtu: None,
            lease_secs: self.config.lease_secs,
            discovery: None,
            boot_server: self.config.boot_server,
        };
        Ok(Served {
            host,
            image,
            network,
        })
    }
}

impl BootProfiles for ProfileRegistry {
    fn publish(&self, profile: BootProfile) -> Result<(), IoError> {
        let Served {
            host,
            image,
            network,
        } = self.prepare(&profile)?;
        let key = profile.host.clone();
        let mut g = self.shared.lock();
        self.plane
            .directory
            .update(|d| d.upsert_host(host, image, network))
            .map_err(IoError)?;
        let (mac, name) = (profile.mac, profile.hostname.clone());
        let published = Published {
            profile: BootProfile {
                user_data: Vec::new(),
                ..profile
            },
        };
        if let Some(old) = g.published.insert(key.clone(), published) {
            g.by_mac.remove(&old.profile.mac);
            self.plane.tokens.consume(&old.profile.hostname);
        }
        g.by_mac.insert(mac, key.clone());
        g.phases.remove(&key);
        // A fresh boot: any token of an earlier one stops working.
        self.plane.tokens.consume(&name);
        self.plane.directory_changed(&self.plane.directory.get());
        Ok(())
    }

    fn live_boot(&self, host: &str) -> Option<LiveBoot> {
        let g = self.shared.lock();
        let published = g.published.get(host)?;
        let token = self.plane.tokens.issued(&published.profile.hostname)?;
        Some(LiveBoot {
            token_sha256: token.sha256,
            token_expires: token.expires,
            last_phase: g.phases.get(host).copied(),
            server: self.server(),
        })
    }

    fn resume(&self, profile: BootProfile, boot: &LiveBoot) -> Result<(), IoError> {
        let (key, name, mac) = (profile.host.clone(), profile.hostname.clone(), profile.mac);
        if boot.server != self.server() {
            return Err(IoError(format!(
                "host {key}: its node talks to the boot plane at {}, this one is at {}",
                boot.server,
                self.server()
            )));
        }
        self.publish(profile)?;
        let mut g = self.shared.lock();
        if let Some(p) = boot.last_phase {
            g.phases.insert(key, p);
        }
        self.plane.tokens.adopt(crate::boot::journal::TokenEntry {
            host: name,
            mac,
            sha256: boot.token_sha256,
            expires: boot.token_expires,
        });
        Ok(())
    }

    fn withdraw(&self, host: &str) {
        let mut g = self.shared.lock();
        g.phases.remove(host);
        if let Some(old) = g.published.remove(host) {
            g.by_mac.remove(&old.profile.mac);
            self.plane.tokens.consume(&old.profile.hostname);
            self.plane.directory.change(|d| {
                d.remove_host(&old.profile.hostname);
            });
            self.plane.directory_changed(&self.plane.directory.get());
        }
    }

    fn last_phase(&self, host: &str) -> Option<(Phase, i64)> {
        self.shared.lock().phases.get(host).copied()
    }

    fn serves(&self, host: &str) -> bool {
        self.shared.lock().published.contains_key(host)
    }

    fn inspection(&self, host: &str) -> Option<(crate::hardware::Hardware, i64)> {
        self.plane
            .inspections
            .get(host)
            .map(|i| (i.hardware.clone(), i.at.as_second()))
    }

    fn local_disks(
        &self,
        host: &str,
    ) -> Option<(
        Vec<crate::storage::DiskPlan>,
        Option<crate::storage::DiskReport>,
    )> {
        let plan = self
            .shared
            .lock()
            .published
            .get(host)?
            .profile
            .local_disks
            .clone();
        Some((plan, self.plane.disk_report(host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(ns: &str, name: &str, last: u8) -> BootProfile {
        BootProfile {
            host: format!("{ns}/{name}"),
            hostname: name.into(),
            mac: MacAddr([0x52, 0x54, 0, 0, 0, last]),
            ip: Some((Ipv4Addr::new(10, 0, 0, last), 24)),
            gateway: None,
            provider_id: format!("beowulf://{ns}/{name}"),
            kernel: "http://boot/vmlinuz".into(),
            initrds: vec!["http://boot/initrd.img".into()],
            rootfs: None,
            cmdline: "console=ttyS0 ds=nocloud;s={{ nocloud_url }}".into(),
            user_data: b"#cloud-config\n".to_vec(),
            format: UserDataFormat::CloudConfig,
            local_disks: Vec::new(),
            cleaning: None,
        }
    }

    #[test]
    fn profiles_become_the_served_inventory_and_leave_it() {
        let r = ProfileRegistry::default();
        r.publish(profile("a", "n1", 1)).unwrap();
        r.publish(profile("b", "n2", 2)).unwrap();
        let inv = r.plane().directory.get();
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(inv.networks.len(), 1, "one network per subnet");
        assert_eq!(inv.images.len(), 1, "same artifacts: one image");
        let h = inv.host_by_mac(&MacAddr([0x52, 0x54, 0, 0, 0, 2])).unwrap();
        assert_eq!((h.namespace.as_str(), h.name.as_str()), ("b", "n2"));
        assert_eq!(inv.network_of(h).boot_server, Ipv4Addr::LOCALHOST);
        r.withdraw("a/n1");
        let inv = r.plane().directory.get();
        assert_eq!(inv.hosts.len(), 1);
        assert!(inv.host("n1").is_none());
    }

    #[test]
    fn clashing_or_unservable_profiles_are_refused_and_change_nothing() {
        let r = ProfileRegistry::default();
        r.publish(profile("a", "n1", 1)).unwrap();
        // Same host name in another namespace: one boot network, names must be unique on it.
        let e = r.publish(profile("b", "n1", 3)).unwrap_err();
        assert!(e.0.contains("host name is already used"), "{e}");
        let e = r.publish(profile("b", "n4", 1)).unwrap_err();
        assert!(e.0.contains("MAC 52:54:00:00:00:01"), "{e}");
        let mut p = profile("b", "n5", 5);
        p.ip = None;
        assert!(r.publish(p).unwrap_err().0.contains("no static address"));
        let mut p = profile("b", "n6", 6);
        p.kernel = "../../etc/shadow".into();
        assert!(r.publish(p).unwrap_err().0.contains("without `..`"));
        let mut p = profile("b", "n7", 7);
        p.kernel = "images/vmlinuz".into();
        assert!(r.publish(p).unwrap_err().0.contains("--artifact-root"));
        let mut p = profile("b", "n8", 8);
        p.cmdline = "{{ no_such_variable }}".into();
        assert!(r.publish(p).unwrap_err().0.contains("does not render"));
        assert_eq!(r.plane().directory.get().hosts.len(), 1);
        assert!(r.profile("b/n1").is_none());
    }

    #[test]
    fn phases_recorded_by_the_services_reach_the_engine_by_host_key() {
        use crate::boot::BootDirectory;
        let r = ProfileRegistry::new(
            ServedConfig::default(),
            BootMetrics::default(),
            Arc::new(|| 4242),
        );
        r.publish(profile("a", "n1", 1)).unwrap();
        let plane = r.plane();
        plane.record(&MacAddr([0x52, 0x54, 0, 0, 0, 1]), Phase::DhcpOffer);
        assert_eq!(r.last_phase("a/n1"), Some((Phase::DhcpOffer, 4242)));
        plane.record(&MacAddr([0x52, 0x54, 0, 0, 0, 9]), Phase::DhcpOffer);
        assert_eq!(r.last_phase("a/n9"), None, "unknown MACs are ignored");
        // Republishing starts a fresh boot: phases are forgotten.
        r.publish(profile("a", "n1", 1)).unwrap();
        assert_eq!(r.last_phase("a/n1"), None);
    }
}
