//! What the boot plane serves: networks, images with their boot files, and hosts (a static reservation, the
//! image it boots and its cloud-init data), indexed by MAC, address and name. No YAML and no Kubernetes here.
//!
//! Two loaders fill it, like the backends of Tinkerbell's boot server: the standalone inventory file
//! ([`crate::inventory`]: parse, validate, then [`Directory::new`]) and the manager's boot profiles
//! ([`crate::runtime::profiles`]: one host at a time, [`Directory::upsert_host`] / [`Directory::remove_host`]).
//! The servers read it through a [`DirectoryHandle`]: one consistent snapshot per request, swapped whole by
//! the loader. Hosts and images are shared (`Arc`) between snapshots, so a loader's copy-on-write update of one
//! host costs a copy of the indexes, not of every host.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use ipnet::Ipv4Net;

use super::MacAddr;
pub use super::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub lease_secs: u32,
    /// The boot plane's address as the hosts on this network reach it (next-server, HTTP URLs).
    pub boot_server: Ipv4Addr,
    /// Discovery: unknown MACs that network-boot here get an address from this range and boot the
    /// inspection image (standalone only; `None`: unknown MACs get no answer).
    pub discovery: Option<DiscoveryRange>,
}

/// The addresses discovery hands out on a network (never one a reservation owns), and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub lease_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Runs from RAM (a live squashfs rootfs or just the initramfs): nothing is written to disk.
    Live,
    /// An installer image that writes the OS to disk.
    Disk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub format: ImageFormat,
    pub kernel: Artifact,
    pub initrds: Vec<Artifact>,
    pub rootfs: Option<Artifact>,
    /// The kernel command line template (minijinja; variables in README).
    pub cmdline: String,
}

impl Image {
    /// The artifact served as `/images/<image>/<name>`.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        std::iter::once(&self.kernel)
            .chain(&self.initrds)
            .chain(&self.rootfs)
            .find(|a| a.name == name)
    }
}

/// A boot file: either served by the boot plane from a local file, or fetched by the host from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The file name: the last URL path segment and the `initrd=` name on the kernel command line.
    pub name: String,
    pub source: ArtifactSource,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// The namespace of its provider ID (`beowulf://<namespace>/<name>`): the inventory's own in a file; the
    /// BeowulfHost's in `beowulf manager`, where one boot plane serves hosts of several namespaces.
    pub namespace: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Index into [`Directory::networks`].
    pub network: usize,
    pub image: String,
    pub user_data: Secret,
    pub vendor_data: Option<Secret>,
    pub network_config: Option<String>,
    pub ignition: Option<Secret>,
    /// The local disks its node keeps (`crate::storage`), each with its disk identified: its boots carry them
    /// on the kernel command line and its node reports on them to `/disks/<token>`.
    pub local_disks: Vec<crate::storage::DiskPlan>,
    /// Its boot is a cleaning boot (the manager's release of a host with a cleaning policy).
    pub cleaning: Option<crate::storage::Cleaning>,
}

/// The indexed directory: every host's network and image exist, and names, MACs and addresses are unique.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Shown on the status page (the inventory's namespace, or the manager's name for its directory).
    pub namespace: String,
    pub networks: Vec<Network>,
    pub images: BTreeMap<String, Arc<Image>>,
    /// In the loader's order (the inventory file's; the order profiles were published in).
    pub hosts: Vec<Arc<Host>>,
    /// The image hosts boot to be inspected (standalone: the inventory's `inspection.image`): a host with no
    /// inspection report yet, or one asked to be inspected again, boots it instead of its own. The manager
    /// leaves it unset: it publishes an inspection profile for the host instead.
    pub inspection_image: Option<String>,
    by_mac: HashMap<MacAddr, usize>,
    by_ip: HashMap<Ipv4Addr, usize>,
    by_name: HashMap<String, usize>,
}

impl Directory {
    /// No hosts, images or networks.
    pub fn empty(namespace: String) -> Directory {
        Directory {
            namespace,
            ..Directory::default()
        }
    }

    /// A directory of `hosts`; fails naming the first host whose network or image is missing, or whose name,
    /// MAC or address another host already has.
    pub fn new(
        namespace: String,
        networks: Vec<Network>,
        images: BTreeMap<String, Image>,
        hosts: Vec<Host>,
    ) -> Result<Directory, String> {
        let mut d = Directory {
            namespace,
            networks,
            images: images.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            ..Directory::default()
        };
        for h in hosts {
            d.check(&h)?;
            d.index(d.hosts.len(), &h);
            d.hosts.push(Arc::new(h));
        }
        Ok(d)
    }

    /// Adds `host` booting `image` on `network` (added when no network has its subnet; the host's
    /// `network` index is set here), or replaces the host of the same name and namespace. Refused, changing
    /// nothing, when a host of another namespace has its name, or another host its MAC or address.
    pub fn upsert_host(
        &mut self,
        mut host: Host,
        image: Image,
        network: Network,
    ) -> Result<(), String> {
        let existing = self.by_name.get(&host.name).copied();
        if let Some(i) = existing
            && self.hosts[i].namespace != host.namespace
        {
            return Err(self.clash(&host, "the host name", i));
        }
        let known = self
            .networks
            .iter()
            .position(|n| n.subnet == network.subnet);
        host.network = known.unwrap_or(self.networks.len());
        // Checked before anything changes: a refused host leaves the directory as it was.
        self.check_unique(&host, existing)?;
        if known.is_none() {
            self.networks.push(network);
        }
        self.images
            .entry(image.name.clone())
            .or_insert_with(|| Arc::new(image));
        match existing {
            Some(i) => {
                self.unindex(&self.hosts[i].clone());
                self.index(i, &host);
                self.hosts[i] = Arc::new(host);
            }
            None => {
                self.index(self.hosts.len(), &host);
                self.hosts.push(Arc::new(host));
            }
        }
        self.drop_unused_images();
        Ok(())
    }

    /// Removes the host `name`; its image goes too when no other host boots it.
    pub fn remove_host(&mut self, name: &str) -> Option<Arc<Host>> {
        let i = self.by_name.get(name).copied()?;
        let host = self.hosts.remove(i);
        self.by_mac.clear();
        self.by_ip.clear();
        self.by_name.clear();
        let hosts = std::mem::take(&mut self.hosts);
        for (j, h) in hosts.iter().enumerate() {
            self.index(j, h);
        }
        self.hosts = hosts;
        self.drop_unused_images();
        Some(host)
    }

    pub fn host_by_mac(&self, mac: &MacAddr) -> Option<&Host> {
        self.by_mac.get(mac).map(|&i| &*self.hosts[i])
    }

    pub fn host_by_ip(&self, ip: Ipv4Addr) -> Option<&Host> {
        self.by_ip.get(&ip).map(|&i| &*self.hosts[i])
    }

    /// The host holding `ip`, shared (to hold beyond this snapshot's borrow).
    pub fn shared_host_by_ip(&self, ip: Ipv4Addr) -> Option<Arc<Host>> {
        self.by_ip.get(&ip).map(|&i| self.hosts[i].clone())
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.by_name.get(name).map(|&i| &*self.hosts[i])
    }

    pub fn network_of(&self, host: &Host) -> &Network {
        &self.networks[host.network]
    }

    pub fn image_of(&self, host: &Host) -> Option<&Image> {
        self.images.get(&host.image).map(|i| &**i)
    }

    /// A new host's network and image exist, and its name, MAC and address are no other host's.
    fn check(&self, h: &Host) -> Result<(), String> {
        if h.network >= self.networks.len() {
            return Err(format!("host {:?}: no network {}", h.name, h.network));
        }
        if !self.images.contains_key(&h.image) {
            return Err(format!("host {:?}: no image {:?}", h.name, h.image));
        }
        if let Some(&o) = self.by_name.get(&h.name) {
            return Err(self.clash(h, "the host name", o));
        }
        self.check_unique(h, None)
    }

    /// Its MAC and address are no other host's (the one it replaces aside).
    fn check_unique(&self, h: &Host, replacing: Option<usize>) -> Result<(), String> {
        if let Some(&o) = self.by_mac.get(&h.mac)
            && Some(o) != replacing
        {
            return Err(self.clash(h, &format!("MAC {}", h.mac), o));
        }
        if let Some(&o) = self.by_ip.get(&h.ip)
            && Some(o) != replacing
        {
            return Err(self.clash(h, &format!("address {}", h.ip), o));
        }
        Ok(())
    }

    fn clash(&self, h: &Host, what: &str, other: usize) -> String {
        let o = &self.hosts[other];
        format!(
            "host {:?} ({}/{}): {what} is already used by host {:?} ({}/{})",
            h.name, h.namespace, h.name, o.name, o.namespace, o.name
        )
    }

    fn index(&mut self, i: usize, h: &Host) {
        self.by_name.insert(h.name.clone(), i);
        self.by_mac.insert(h.mac, i);
        self.by_ip.insert(h.ip, i);
    }

    fn unindex(&mut self, h: &Host) {
        self.by_name.remove(&h.name);
        self.by_mac.remove(&h.mac);
        self.by_ip.remove(&h.ip);
    }

    fn drop_unused_images(&mut self) {
        let hosts = &self.hosts;
        let inspection = self.inspection_image.as_deref();
        self.images.retain(|name, _| {
            Some(name.as_str()) == inspection || hosts.iter().any(|h| h.image == *name)
        });
    }
}

/// The directory in service, swapped whole by its loader.
pub struct DirectoryHandle {
    current: RwLock<Arc<Directory>>,
}

impl DirectoryHandle {
    pub fn new(directory: Directory) -> Self {
        DirectoryHandle {
            current: RwLock::new(Arc::new(directory)),
        }
    }

    /// A consistent snapshot: callers keep it for one request, so a reload mid-request cannot mix versions.
    pub fn get(&self) -> Arc<Directory> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set(&self, directory: Directory) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(directory);
    }

    /// Changes the directory in service with `f`, which cannot fail (copy on write, serialized like
    /// [`DirectoryHandle::update`]).
    pub fn change(&self, f: impl FnOnce(&mut Directory)) {
        let _ = self.update(|d| {
            f(d);
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Changes the directory in service with `f` (copy on write); nothing changes when `f` fails. Updates
    /// are serialized, so two loaders' changes never overwrite each other.
    pub fn update<E>(&self, f: impl FnOnce(&mut Directory) -> Result<(), E>) -> Result<(), E> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**current).clone();
        f(&mut next)?;
        *current = Arc::new(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(subnet: &str, server: [u8; 4]) -> Network {
        Network {
            name: subnet.into(),
            subnet: subnet.parse().unwrap(),
            gateway: None,
            dns: Vec::new(),
            domain: None,
            mtu: None,
            lease_secs: 3600,
            discovery: None,
            boot_server: Ipv4Addr::from(server),
        }
    }

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            format: ImageFormat::Live,
            kernel: Artifact {
                name: "vmlinuz".into(),
                source: ArtifactSource::Url("http://boot/vmlinuz".into()),
                sha256: None,
            },
            initrds: Vec::new(),
            rootfs: None,
            cmdline: String::new(),
        }
    }

    fn host(name: &str, last: u8, image: &str) -> Host {
        Host {
            name: name.into(),
            namespace: "ns".into(),
            mac: MacAddr([0x52, 0x54, 0, 0, 0, last]),
            ip: Ipv4Addr::new(10, 0, 0, last),
            network: 0,
            image: image.into(),
            user_data: Secret::new("#cloud-config\n"),
            vendor_data: None,
            network_config: None,
            ignition: None,
            local_disks: Vec::new(),
            cleaning: None,
        }
    }

    #[test]
    fn hosts_are_added_replaced_and_removed_one_at_a_time() {
        let mut d = Directory::empty("m".into());
        d.upsert_host(
            host("a", 1, "i1"),
            image("i1"),
            net("10.0.0.0/24", [10, 0, 0, 254]),
        )
        .unwrap();
        d.upsert_host(
            host("b", 2, "i2"),
            image("i2"),
            net("10.0.0.0/24", [10, 0, 0, 254]),
        )
        .unwrap();
        assert_eq!(d.networks.len(), 1, "one network per subnet");
        assert_eq!(
            d.host_by_mac(&MacAddr([0x52, 0x54, 0, 0, 0, 2]))
                .unwrap()
                .name,
            "b"
        );
        assert_eq!(d.host_by_ip(Ipv4Addr::new(10, 0, 0, 1)).unwrap().name, "a");

        // Replacing "a": a new address and image; the old ones are free again.
        d.upsert_host(
            host("a", 3, "i2"),
            image("i2"),
            net("10.0.0.0/24", [10, 0, 0, 254]),
        )
        .unwrap();
        assert!(d.host_by_ip(Ipv4Addr::new(10, 0, 0, 1)).is_none());
        assert_eq!(d.host_by_ip(Ipv4Addr::new(10, 0, 0, 3)).unwrap().name, "a");
        assert_eq!(
            d.images.keys().collect::<Vec<_>>(),
            ["i2"],
            "i1 is no one's now"
        );
        assert_eq!(
            d.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );

        // A clash changes nothing.
        let err = d
            .upsert_host(
                host("c", 2, "i3"),
                image("i3"),
                net("10.0.0.0/24", [10, 0, 0, 254]),
            )
            .unwrap_err();
        assert!(
            err.contains("MAC 52:54:00:00:00:02 is already used by host \"b\""),
            "{err}"
        );
        assert!(d.host("c").is_none() && !d.images.contains_key("i3"));

        assert_eq!(d.remove_host("a").unwrap().name, "a");
        assert!(d.host("a").is_none());
        assert_eq!(d.host_by_ip(Ipv4Addr::new(10, 0, 0, 2)).unwrap().name, "b");
        assert!(d.remove_host("a").is_none());
    }

    #[test]
    fn a_directory_refuses_missing_references_and_duplicates() {
        let nets = vec![net("10.0.0.0/24", [10, 0, 0, 254])];
        let images = BTreeMap::from([("i".to_string(), image("i"))]);
        let ok = Directory::new(
            "n".into(),
            nets.clone(),
            images.clone(),
            vec![host("a", 1, "i")],
        );
        assert_eq!(ok.unwrap().hosts.len(), 1);
        let missing = Directory::new(
            "n".into(),
            nets.clone(),
            images.clone(),
            vec![host("a", 1, "x")],
        );
        assert!(missing.unwrap_err().contains("no image"));
        let twice = Directory::new(
            "n".into(),
            nets,
            images,
            vec![host("a", 1, "i"), host("a", 2, "i")],
        );
        assert!(twice.unwrap_err().contains("the host name is already used"));
    }

    #[test]
    fn a_failed_update_leaves_the_served_snapshot_as_it_was() {
        let handle = DirectoryHandle::new(Directory::empty("m".into()));
        handle
            .update(|d| {
                d.upsert_host(
                    host("a", 1, "i"),
                    image("i"),
                    net("10.0.0.0/24", [10, 0, 0, 254]),
                )
            })
            .unwrap();
        let before = handle.get();
        let r = handle.update(|d| {
            d.upsert_host(
                host("b", 1, "i"),
                image("i"),
                net("10.0.0.0/24", [10, 0, 0, 254]),
            )
        });
        assert!(r.is_err());
        assert!(Arc::ptr_eq(&before, &handle.get()));
    }
}
