//! The standalone inventory: hosts, images and networks from one YAML file (README, "Standalone inventory"),
//! one of the two loaders of the boot plane's [`Directory`] (the other is the manager's, from boot profiles).
//!
//! [`Inventory::load`] parses and validates the whole file, reports every problem with its line and column,
//! and gives the [`Directory`] to serve plus what only the file has: each host's `bmc` entry (read by `beowulf
//! bmc` alone) and the files the inventory refers to. [`watch`] re-reads it when it changes and keeps the last
//! good version when an edit is broken.

mod file;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use crate::boot::MacAddr;
pub use crate::boot::directory::{
    Artifact, ArtifactSource, Directory, DiscoveryRange, Host, Image, ImageFormat, Network, Secret,
};

/// The namespace in provider IDs when the file names none.
pub const DEFAULT_NAMESPACE: &str = "standalone";
const DEFAULT_LEASE_SECS: u32 = 3600;

/// A validated inventory: what the boot plane serves, and what only the file has.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Networks, images and hosts, as the boot plane serves them.
    pub directory: Directory,
    /// Host name → its `bmc` entry (hosts without one have none).
    pub bmcs: BTreeMap<String, Bmc>,
    /// Files the inventory was built from besides itself (data files, boot files): the watcher polls them.
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmc {
    /// `ipmi://host[:port]` or `redfish://host[/path]`.
    pub address: String,
    pub username: Option<String>,
    /// Where the password is; it is read only when the BMC is used, and never stored in the inventory.
    pub password: Option<PasswordRef>,
    /// The file holding the IPMI BMC key (Kg), hex; read only when the BMC is used.
    pub bmc_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordRef {
    File(PathBuf),
    Env(String),
}

impl PasswordRef {
    pub fn resolve(&self) -> std::io::Result<Secret> {
        match self {
            PasswordRef::File(p) => {
                let s = std::fs::read_to_string(p)?;
                Ok(Secret::new(s.trim_end_matches(['\n', '\r'])))
            }
            PasswordRef::Env(v) => std::env::var(v).map(Secret::new).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("environment variable {v} is not set"),
                )
            }),
        }
    }
}

/// One thing wrong in the file, at a line and column (1-based; 0 when the parser could not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// The inventory file could not be used. Lists every problem found, each as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InventoryError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{} in the inventory",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(
                f,
                "\n  {}:{}:{}: {}",
                self.path.display(),
                p.line,
                p.column,
                p.message
            )?;
        }
        Ok(())
    }
}

impl Inventory {
    /// Reads, parses and validates the inventory at `path`. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| InventoryError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read the inventory file: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Inventory::parse(&text, base).map_err(|problems| InventoryError {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates inventory text; file references resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Inventory, Vec<Problem>> {
        // YAML 1.1 integers as go-yaml v2 (kubectl, Helm) read them: a leading `0` is octal (`0644` is 420).
        // csctl/tests/yaml_differential.rs compares this reading with sigs.k8s.io/yaml.
        let options = serde_saphyr::options! { legacy_octal_numbers: true };
        let raw: file::InventoryFile =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                vec![Problem {
                    line,
                    column,
                    message: first_line(&e.to_string()),
                }]
            })?;
        let mut v = Validator {
            base,
            problems: Vec::new(),
            files: Vec::new(),
        };
        let inv = v.inventory(raw);
        // Empty messages only mark entries dropped because of a problem reported elsewhere.
        let had_problems = !v.problems.is_empty();
        v.problems.retain(|p| !p.message.is_empty());
        if !had_problems {
            Ok(inv)
        } else {
            v.problems.sort_by_key(|p| (p.line, p.column));
            Err(v.problems)
        }
    }

    /// The `bmc` entry of host `name`.
    pub fn bmc(&self, name: &str) -> Option<&Bmc> {
        self.bmcs.get(name)
    }

    /// Every local file the inventory was built from (data and boot files), without the inventory itself.
    pub fn referenced_files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// serde-saphyr renders a snippet of the source under its message; the location is printed separately.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

struct Known<'a> {
    namespace: &'a str,
    networks: &'a [Network],
    net_names: &'a HashMap<String, usize>,
    images: &'a BTreeMap<String, Image>,
    declared_networks: &'a HashSet<String>,
    declared_images: &'a HashSet<String>,
}

struct Validator<'a> {
    base: &'a Path,
    problems: Vec<Problem>,
    files: Vec<PathBuf>,
}

impl Validator<'_> {
    fn err(&mut self, at: &Location, message: impl Into<String>) {
        self.problems.push(Problem {
            line: at.line(),
            column: at.column(),
            message: message.into(),
        });
    }

    fn ip(&mut self, s: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
        match s.value.trim().parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(
                    &s.referenced,
                    format!(
                        "{what} {:?} is not an IPv4 address (like 10.0.0.1)",
                        s.value
                    ),
                );
                None
            }
        }
    }

    fn name(&mut self, s: &Spanned<String>, what: &str) -> bool {
        // Names end up in URLs, iPXE scripts and hostnames: keep them to DNS labels.
        let ok = !s.value.is_empty()
            && s.value.len() <= 63
            && s.value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.value.starts_with('-')
            && !s.value.ends_with('-');
        if !ok {
            self.err(
                &s.referenced,
                format!(
                    "{what} name {:?} must be a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'",
                    s.value
                ),
            );
        }
        ok
    }

    fn read_file(&mut self, p: &Spanned<PathBuf>, what: &str) -> Option<String> {
        let full = self.base.join(&p.value);
        self.files.push(full.clone());
        match std::fs::read_to_string(&full) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(
                    &p.referenced,
                    format!("cannot read {what} file {}: {e}", full.display()),
                );
                None
            }
        }
    }

    fn inventory(&mut self, raw: file::InventoryFile) -> Inventory {
        let namespace = match raw.namespace {
            Some(ns) => {
                self.name(&ns, "namespace");
                ns.value
            }
            None => DEFAULT_NAMESPACE.to_string(),
        };

        let mut networks = Vec::new();
        let mut net_names: HashMap<String, usize> = HashMap::new();
        for n in &raw.networks {
            if let Some(net) = self.network(n) {
                if net_names.contains_key(&net.name) {
                    self.err(
                        &n.name.referenced,
                        format!("network {:?} is defined twice", net.name),
                    );
                    continue;
                }
                net_names.insert(net.name.clone(), networks.len());
                networks.push(net);
            }
        }

        let discovery_at = raw
            .networks
            .iter()
            .find_map(|n| n.discovery.as_ref().map(|d| d.range.referenced));
        // Entries that are declared but broken: references to them are not reported a second time.
        let declared_networks: HashSet<String> =
            raw.networks.iter().map(|n| n.name.value.clone()).collect();
        let declared_images: HashSet<String> =
            raw.images.iter().map(|i| i.name.value.clone()).collect();
        let mut images = BTreeMap::new();
        for i in raw.images {
            let at = i.name.referenced;
            if let Some(img) = self.image(i) {
                if images.contains_key(&img.name) {
                    self.err(&at, format!("image {:?} is defined twice", img.name));
                    continue;
                }
                images.insert(img.name.clone(), img);
            }
        }

        let mut hosts: Vec<Host> = Vec::new();
        let mut bmcs = BTreeMap::new();
        let mut by_mac = HashMap::new();
        let mut by_ip = HashMap::new();
        let mut by_name = HashSet::new();
        for h in raw.hosts {
            let (name_at, mac_at, ip_at) = (h.name.referenced, h.mac.referenced, h.ip.referenced);
            let known = Known {
                namespace: &namespace,
                networks: &networks,
                net_names: &net_names,
                images: &images,
                declared_networks: &declared_networks,
                declared_images: &declared_images,
            };
            let Some((host, bmc)) = self.host(h, &known) else {
                continue;
            };
            if by_name.contains(&host.name) {
                self.err(&name_at, format!("host {:?} is defined twice", host.name));
                continue;
            }
            if let Some(&other) = by_mac.get(&host.mac) {
                let other: &Host = &hosts[other];
                self.err(
                    &mac_at,
                    format!("MAC {} is already used by host {:?}", host.mac, other.name),
                );
                continue;
            }
            if let Some(&other) = by_ip.get(&host.ip) {
                let other: &Host = &hosts[other];
                self.err(
                    &ip_at,
                    format!(
                        "address {} is already used by host {:?}",
                        host.ip, other.name
                    ),
                );
                continue;
            }
            by_name.insert(host.name.clone());
            by_mac.insert(host.mac, hosts.len());
            by_ip.insert(host.ip, hosts.len());
            if let Some(b) = bmc {
                bmcs.insert(host.name.clone(), b);
            }
            hosts.push(host);
        }

        if raw.inspection.is_none()
            && let Some(d) = discovery_at
        {
            self.err(
                &d,
                "discovery needs an inspection image (discovered hosts boot it): add `inspection: {image: NAME}`"
                    .to_string(),
            );
        }
        let inspection_image = raw.inspection.map(|i| {
            if !images.contains_key(&i.image.value) {
                self.err(
                    &i.image.referenced,
                    format!(
                        "inspection image {:?} is not one of `images`: add it there (images/inspector builds one)",
                        i.image.value
                    ),
                );
            }
            i.image.value
        });

        // Everything was checked above, entry by entry with its position; the directory checks the same
        // references and uniqueness again, so a refusal here would be a bug in this validator.
        let directory = match Directory::new(namespace.clone(), networks, images, hosts) {
            Ok(mut d) => {
                d.inspection_image = inspection_image;
                d
            }
            Err(e) => {
                self.problems.push(Problem {
                    line: 0,
                    column: 0,
                    message: e,
                });
                Directory::empty(namespace)
            }
        };
        Inventory {
            directory,
            bmcs,
            files: std::mem::take(&mut self.files),
        }
    }

    fn network(&mut self, n: &file::NetworkFile) -> Option<Network> {
        let before = self.problems.len();
        self.name(&n.name, "network");
        let subnet = match n.subnet.value.trim().parse::<Ipv4Net>() {
            Ok(s) => Some(s),
            Err(_) => {
                self.err(
                    &n.subnet.referenced,
                    format!(
                        "subnet {:?} is not an IPv4 network in CIDR form (like 10.0.0.0/24)",
                        n.subnet.value
                    ),
                );
                None
            }
        };
        let gateway = n.gateway.as_ref().and_then(|g| self.ip(g, "gateway"));
        let dns: Vec<Ipv4Addr> = n
            .dns
            .iter()
            .filter_map(|d| self.ip(d, "DNS server"))
            .collect();
        let boot_server = self.ip(&n.boot_server, "bootServer");
        if let (Some(s), Some(g)) = (subnet, gateway)
            && !s.contains(&g)
        {
            self.err(
                &n.gateway.as_ref()?.referenced,
                format!("gateway {g} is outside the subnet {s}"),
            );
        }
        if let Some(m) = &n.mtu
            && !(576..=9216).contains(&m.value)
        {
            self.err(
                &m.referenced,
                format!("MTU {} is out of range (576 to 9216)", m.value),
            );
        }
        if let Some(l) = &n.lease_seconds
            && l.value < 60
        {
            self.err(
                &l.referenced,
                format!(
                    "leaseSeconds {} is too short (at least 60: hosts renew at half the lease)",
                    l.value
                ),
            );
        }
        if self.problems.len() != before {
            return None;
        }
        // A broken discovery range is reported, but the network stays (its hosts are not reported again).
        let discovery = n
            .discovery
            .as_ref()
            .and_then(|d| self.discovery(d, subnet, gateway, boot_server));
        Some(Network {
            discovery,
            name: n.name.value.clone(),
            subnet: subnet?.trunc(),
            gateway,
            dns,
            domain: n.domain.as_ref().map(|d| d.value.clone()),
            mtu: n.mtu.as_ref().map(|m| m.value),
            lease_secs: n
                .lease_seconds
                .as_ref()
                .map(|l| l.value)
                .unwrap_or(DEFAULT_LEASE_SECS),
            boot_server: boot_server?,
        })
    }

    /// A discovery range: `FIRST-LAST` inside the subnet, without the gateway or the boot server.
    fn discovery(
        &mut self,
        d: &file::DiscoveryFile,
        subnet: Option<Ipv4Net>,
        gateway: Option<Ipv4Addr>,
        boot_server: Option<Ipv4Addr>,
    ) -> Option<DiscoveryRange> {
        let at = &d.range.referenced;
        let bounds = d.range.value.split_once('-').and_then(|(a, b)| {
            Some((
                a.trim().parse::<Ipv4Addr>().ok()?,
                b.trim().parse::<Ipv4Addr>().ok()?,
            ))
        });
        let Some((first, last)) = bounds else {
            self.err(
                at,
                format!(
                    "discovery range {:?} is not FIRST-LAST (like 10.0.0.200-10.0.0.250)",
                    d.range.value
                ),
            );
            return None;
        };
        let subnet = subnet?;
        if first > last || !subnet.contains(&first) || !subnet.contains(&last) {
            self.err(
                at,
                format!("discovery range {first}-{last} must be ascending and inside the subnet {subnet}"),
            );
            return None;
        }
        for (what, a) in [("gateway", gateway), ("bootServer", boot_server)] {
            if let Some(a) = a
                && first <= a
                && a <= last
            {
                self.err(
                    at,
                    format!("discovery range {first}-{last} contains the {what} {a}"),
                );
                return None;
            }
        }
        let lease_secs = d.lease_seconds.as_ref().map_or(300, |l| l.value);
        if lease_secs < 60 {
            self.err(
                &d.lease_seconds.as_ref()?.referenced,
                format!("discovery leaseSeconds {lease_secs} is too short (at least 60)"),
            );
            return None;
        }
        Some(DiscoveryRange {
            first,
            last,
            lease_secs,
        })
    }

    fn image(&mut self, i: file::ImageFile) -> Option<Image> {
        let before = self.problems.len();
        self.name(&i.name, "image");
        let format = match i.format.as_ref().map(|f| f.value.as_str()) {
            None | Some("live") => ImageFormat::Live,
            Some("disk") => ImageFormat::Disk,
            Some(other) => {
                self.err(
                    &i.format.as_ref()?.referenced,
                    format!("image format {other:?} is unknown: use live or disk"),
                );
                ImageFormat::Live
            }
        };
        let kernel = self.artifact(&i.kernel, &i.name, "kernel");
        let initrds: Vec<Option<Artifact>> = i
            .initrds
            .iter()
            .map(|a| self.artifact(a, &i.name, "initrd"))
            .collect();
        let rootfs = i
            .rootfs
            .as_ref()
            .map(|a| self.artifact(a, &i.name, "rootfs"));
        let cmdline = i
            .cmdline
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default();
        let image = Image {
            name: i.name.value.clone(),
            format,
            kernel: kernel.clone().unwrap_or(Artifact {
                name: String::new(),
                source: ArtifactSource::Url(String::new()),
                sha256: None,
            }),
            initrds: initrds.iter().flatten().cloned().collect(),
            rootfs: rootfs.clone().flatten(),
            cmdline,
        };
        // Names must be unique within the image: they are URL path segments and `initrd=` names.
        let mut seen = HashSet::new();
        for a in std::iter::once(&image.kernel)
            .chain(&image.initrds)
            .chain(&image.rootfs)
        {
            if !a.name.is_empty() && !seen.insert(a.name.clone()) {
                self.err(
                    &i.name.referenced,
                    format!(
                        "image {:?} has two boot files named {:?}: file names must differ",
                        image.name, a.name
                    ),
                );
            }
        }
        // Render the command line once with sample values: an unknown variable or a syntax error shows now,
        // with the file position, instead of at a host's boot.
        if let Some(c) = &i.cmdline
            && let Err(e) = crate::boot::script::check_cmdline(&image)
        {
            self.err(
                &c.referenced,
                format!("cmdline template of image {:?}: {e}", image.name),
            );
        }
        if self.problems.len() != before || kernel.is_none() {
            return None;
        }
        Some(image)
    }

    fn artifact(
        &mut self,
        a: &file::ArtifactFile,
        image: &Spanned<String>,
        what: &str,
    ) -> Option<Artifact> {
        let at = a
            .path
            .as_ref()
            .map(|p| p.referenced)
            .or(a.url.as_ref().map(|u| u.referenced))
            .unwrap_or(image.referenced);
        let (name, source) = match (&a.path, &a.url) {
            (Some(p), None) => {
                let full = self.base.join(&p.value);
                self.files.push(full.clone());
                let name = full
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match std::fs::metadata(&full) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => {
                        self.err(
                            &at,
                            format!("{what} {} is not a regular file", full.display()),
                        );
                        return None;
                    }
                    Err(e) => {
                        self.err(
                            &at,
                            format!("{what} {} cannot be read: {e}", full.display()),
                        );
                        return None;
                    }
                }
                (name, ArtifactSource::File(full))
            }
            (None, Some(u)) => {
                if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
                    self.err(
                        &at,
                        format!(
                            "{what} URL {:?} must start with http:// or https://",
                            u.value
                        ),
                    );
                    return None;
                }
                let path = u.value.split(['?', '#']).next().unwrap_or("");
                let name = path.rsplit('/').next().unwrap_or("").to_string();
                (name, ArtifactSource::Url(u.value.clone()))
            }
            _ => {
                self.err(
                    &at,
                    format!(
                        "{what} of image {:?} needs exactly one of `path` (served by the boot plane) or `url`",
                        image.value
                    ),
                );
                return None;
            }
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            self.err(
                &at,
                format!(
                    "{what} file name {name:?} must be non-empty and use only A-Z, a-z, 0-9, '.', '-' and '_' (it goes on the kernel command line)"
                ),
            );
            return None;
        }
        let sha256 = match &a.sha256 {
            None => None,
            Some(s) => {
                let want = s.value.trim().to_ascii_lowercase();
                if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
                    self.err(
                        &s.referenced,
                        format!("sha256 of {what} {name:?} must be 64 hex digits"),
                    );
                    return None;
                }
                if let ArtifactSource::File(p) = &source {
                    match sha256_file(p) {
                        Ok(got) if got == want => {}
                        Ok(got) => {
                            self.err(
                                &s.referenced,
                                format!(
                                    "{what} {} has sha256 {got}, but the inventory says {want}: rebuild the image or fix the checksum",
                                    p.display()
                                ),
                            );
                            return None;
                        }
                        Err(e) => {
                            self.err(&at, format!("cannot hash {what} {}: {e}", p.display()));
                            return None;
                        }
                    }
                }
                Some(want)
            }
        };
        Some(Artifact {
            name,
            source,
            sha256,
        })
    }

    fn host(&mut self, h: file::HostFile, known: &Known) -> Option<(Host, Option<Bmc>)> {
        let Known {
            networks,
            net_names,
            images,
            ..
        } = *known;
        let before = self.problems.len();
        self.name(&h.name, "host");
        let mac = match h.mac.value.parse::<MacAddr>() {
            Ok(m) => Some(m),
            Err(e) => {
                self.err(&h.mac.referenced, format!("host {:?}: {e}", h.name.value));
                None
            }
        };
        let ip = self.ip(&h.ip, "host address");
        let network = match (&h.network, ip) {
            (Some(n), _) => match net_names.get(&n.value) {
                Some(&i) => Some(i),
                None if known.declared_networks.contains(&n.value) => {
                    // Broken network, reported where it is defined; skip this host quietly.
                    self.problems.push(Problem {
                        line: 0,
                        column: 0,
                        message: String::new(),
                    });
                    None
                }
                None => {
                    self.err(
                        &n.referenced,
                        format!(
                            "host {:?} refers to network {:?}, which is not defined under `networks`",
                            h.name.value, n.value
                        ),
                    );
                    None
                }
            },
            (None, Some(ip)) => {
                let found = networks.iter().position(|n| n.subnet.contains(&ip));
                if found.is_none() {
                    self.err(
                        &h.ip.referenced,
                        format!(
                            "host {:?}: no network under `networks` contains {ip}",
                            h.name.value
                        ),
                    );
                }
                found
            }
            (None, None) => None,
        };
        if let (Some(i), Some(ip)) = (network, ip) {
            let net = &networks[i];
            if !net.subnet.contains(&ip) {
                self.err(
                    &h.ip.referenced,
                    format!(
                        "host {:?}: address {ip} is outside network {:?} ({})",
                        h.name.value, net.name, net.subnet
                    ),
                );
            } else if ip == net.subnet.network()
                || ip == net.subnet.broadcast()
                || Some(ip) == net.gateway
                || ip == net.boot_server
            {
                self.err(
                    &h.ip.referenced,
                    format!(
                        "host {:?}: address {ip} is the network, broadcast, gateway or boot server address of {:?}",
                        h.name.value, net.name
                    ),
                );
            }
        }
        if !images.contains_key(&h.image.value) && known.declared_images.contains(&h.image.value) {
            // Broken image, reported where it is defined.
            self.problems.push(Problem {
                line: 0,
                column: 0,
                message: String::new(),
            });
        } else if !images.contains_key(&h.image.value) {
            self.err(
                &h.image.referenced,
                format!(
                    "host {:?} refers to image {:?}, which is not defined under `images`",
                    h.name.value, h.image.value
                ),
            );
        }
        let user_data = match (h.user_data, &h.user_data_file) {
            (Some(s), None) => Some(s),
            (None, Some(p)) => self.read_file(p, "userData"),
            (None, None) => Some(String::new()),
            (Some(_), Some(p)) => {
                self.err(
                    &p.referenced,
                    "give either userData or userDataFile, not both",
                );
                None
            }
        };
        let vendor_data = match (h.vendor_data, &h.vendor_data_file) {
            (Some(s), None) => Some(Some(s)),
            (None, Some(p)) => self.read_file(p, "vendorData").map(Some),
            (None, None) => Some(None),
            (Some(_), Some(p)) => {
                self.err(
                    &p.referenced,
                    "give either vendorData or vendorDataFile, not both",
                );
                None
            }
        };
        let ignition = match (h.ignition, &h.ignition_file) {
            (Some(s), None) => Some(Some(s)),
            (None, Some(p)) => self.read_file(p, "ignition").map(Some),
            (None, None) => Some(None),
            (Some(_), Some(p)) => {
                self.err(
                    &p.referenced,
                    "give either ignition or ignitionFile, not both",
                );
                None
            }
        };
        let bmc = h.bmc.map(|b| {
            let password = match (&b.password_file, &b.password_env) {
                (Some(p), None) => Some(PasswordRef::File(self.base.join(&p.value))),
                (None, Some(e)) => Some(PasswordRef::Env(e.value.clone())),
                (None, None) => None,
                (Some(p), Some(_)) => {
                    self.err(
                        &p.referenced,
                        "give either passwordFile or passwordEnv, not both",
                    );
                    None
                }
            };
            if !(b.address.value.starts_with("ipmi://")
                || b.address.value.starts_with("redfish://"))
            {
                self.err(
                    &b.address.referenced,
                    format!(
                        "BMC address {:?} must start with ipmi:// or redfish://",
                        b.address.value
                    ),
                );
            }
            Bmc {
                address: b.address.value.clone(),
                username: b.username.clone(),
                password,
                bmc_key_file: b.bmc_key_file.as_ref().map(|p| self.base.join(&p.value)),
            }
        });
        let local_disks = match crate::storage::resolve(&h.local_disks, None) {
            Ok(plan) => Some(plan),
            Err(crate::storage::StorageError::NotInspected(disk)) => {
                self.err(
                    &h.name.referenced,
                    format!(
                        "host {:?}: local disk {disk:?}: the inventory names disks by serial, wwn or byPath (`beowulf inspect {}` shows them), not by kind or size",
                        h.name.value, h.name.value
                    ),
                );
                None
            }
            Err(e) => {
                self.err(&h.name.referenced, format!("host {:?}: {e}", h.name.value));
                None
            }
        };
        if self.problems.len() != before {
            return None;
        }
        let host = Host {
            name: h.name.value,
            namespace: known.namespace.to_string(),
            mac: mac?,
            ip: ip?,
            network: network?,
            image: h.image.value,
            user_data: Secret::new(user_data?),
            vendor_data: vendor_data?.map(Secret::new),
            network_config: h.network_config,
            ignition: ignition?.map(Secret::new),
            local_disks: local_disks?,
            cleaning: None,
        };
        Some((host, bmc))
    }
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests;
