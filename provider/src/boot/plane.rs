//! The boot plane's shared state: the [`Directory`] in service, per-boot tokens and boot phases. It is the
//! [`BootDirectory`] the DHCP and TFTP servers ask, and the state behind the HTTP server — the same for
//! `beowulf standalone` (directory loaded from the inventory file) and `beowulf manager` (from boot profiles).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::directory::{Directory, DirectoryHandle, Host, Image};
use super::inspection::{Inspection, InspectionStore};
use super::metrics::BootMetrics;
use super::phases::{BootRecord, PhaseLog};
use super::tokens::{Token, TokenGrant, TokenRejection, TokenStore};
use super::{BootDirectory, Lease, MacAddr, Phase};

/// What the completion callback reported (cloud-init `phone_home` fields). Public keys are not secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackReport {
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub pub_keys: Vec<(String, String)>,
    pub at: String,
}

/// Says whether a MAC belongs to a host the loader knows (discovery leaves it alone).
pub type KnownMacs = Box<dyn Fn(&MacAddr) -> bool + Send + Sync>;

/// Told about every phase any host reaches (the controllers map it back to their BeowulfHost).
pub type PhaseObserver = Box<dyn Fn(&MacAddr, Phase) + Send + Sync>;

pub struct BootPlane {
    pub directory: Arc<DirectoryHandle>,
    pub tokens: TokenStore,
    pub phases: PhaseLog,
    pub metrics: BootMetrics,
    /// The HTTP port hosts reach the boot plane on (the address is each network's `bootServer`).
    pub http_port: u16,
    /// Inspection reports received (and, in standalone mode, kept on disk).
    pub inspections: InspectionStore,
    /// Unknown hosts booting on a network with discovery.
    pub discovery: super::discovery::Discovery,
    /// MACs discovery must leave alone although the directory does not have them (the manager's registered
    /// hosts that are idle: their profile is published only while they boot).
    known: std::sync::OnceLock<KnownMacs>,
    callbacks: Mutex<std::collections::HashMap<String, CallbackReport>>,
    /// The current boot's local-disk report per host key (`crate::storage`).
    disk_reports: Mutex<std::collections::HashMap<String, crate::storage::DiskReport>>,
    observer: std::sync::OnceLock<PhaseObserver>,
    journal: std::sync::OnceLock<Arc<super::journal::Journal>>,
    /// Hosts' captured serial consoles, when capture runs (`crate::console`).
    consoles: std::sync::OnceLock<Arc<crate::console::ConsoleLogs>>,
    /// Hosts' power as their BMCs tell it, for the host pages (standalone: the inventory's BMC entries).
    power: std::sync::OnceLock<Arc<crate::bmc::power_cache::PowerCache>>,
}

impl BootPlane {
    pub fn new(
        directory: Arc<DirectoryHandle>,
        token_ttl: Duration,
        http_port: u16,
        metrics: BootMetrics,
    ) -> Self {
        metrics
            .inventory_hosts
            .set(directory.get().hosts.len() as i64);
        BootPlane {
            directory,
            tokens: TokenStore::new(token_ttl),
            phases: PhaseLog::new(),
            metrics,
            http_port,
            inspections: InspectionStore::in_memory(),
            discovery: Default::default(),
            known: std::sync::OnceLock::new(),
            callbacks: Mutex::new(Default::default()),
            disk_reports: Mutex::new(Default::default()),
            observer: std::sync::OnceLock::new(),
            journal: std::sync::OnceLock::new(),
            consoles: std::sync::OnceLock::new(),
            power: std::sync::OnceLock::new(),
        }
    }

    /// `http://<boot server of host's network>:<port>`.
    pub fn server_url(&self, dir: &Directory, host: &Host) -> String {
        let net = dir.network_of(host);
        format!("http://{}:{}", net.boot_server, self.http_port)
    }

    /// Called when the loader changed the directory: tokens of hosts that left it die with them.
    pub fn directory_changed(&self, dir: &Directory) {
        // Hosts taken into the inventory leave the discovered list.
        self.write_discovered(dir);
        self.tokens.retain_hosts(|h| dir.host(h).is_some());
        self.metrics.inventory_reloads.inc();
        self.metrics.inventory_hosts.set(dir.hosts.len() as i64);
    }

    /// Keeps live tokens, boot records and callback reports in `journal` (standalone: the state directory's
    /// `boots.journal`), starting from what it held: a boot in progress survives a restart.
    pub fn with_journal(
        self,
        journal: Arc<super::journal::Journal>,
        restored: super::journal::Restored,
    ) -> Self {
        self.tokens.restore(journal.clone(), restored.tokens);
        self.phases.restore(journal.clone(), restored.boots);
        {
            let mut cb = self.callbacks.lock().unwrap_or_else(|e| e.into_inner());
            cb.extend(restored.callbacks);
        }
        let _ = self.journal.set(journal);
        self
    }

    /// Serves hosts' captured consoles from `logs` (`/api/hosts/<name>/console`).
    pub fn with_consoles(self, logs: Arc<crate::console::ConsoleLogs>) -> Self {
        let _ = self.consoles.set(logs);
        self
    }

    /// Shows hosts' power state on their pages, asked through `cache`.
    pub fn with_power(self, cache: Arc<crate::bmc::power_cache::PowerCache>) -> Self {
        let _ = self.power.set(cache);
        self
    }

    /// Where the host pages read power states from, when this server knows hosts' BMCs.
    pub fn power(&self) -> Option<&Arc<crate::bmc::power_cache::PowerCache>> {
        self.power.get()
    }

    /// The captured consoles, when capture runs.
    pub fn consoles(&self) -> Option<&Arc<crate::console::ConsoleLogs>> {
        self.consoles.get()
    }

    /// Keeps inspection reports in `store` (standalone: on disk) instead of memory only.
    pub fn with_inspections(mut self, store: InspectionStore) -> Self {
        self.inspections = store;
        self
    }

    /// The host holding `ip`: a reservation of the directory, or a discovered host.
    pub fn host_at(&self, dir: &Directory, ip: Ipv4Addr) -> Option<Arc<Host>> {
        dir.shared_host_by_ip(ip)
            .or_else(|| self.discovery.host_at(ip))
    }

    /// The host of `mac`: a reservation, or a discovered host with a live lease.
    fn host_of(&self, dir: &Directory, mac: &MacAddr) -> Option<Arc<Host>> {
        match dir.host_by_mac(mac) {
            Some(h) => dir.shared_host_by_ip(h.ip),
            None => self.discovery.host_of(mac),
        }
    }

    /// The image `host` boots now: the directory's inspection image while the host is to be inspected (no
    /// report yet, or asked again), else its own.
    pub fn boot_image<'a>(&self, dir: &'a Directory, host: &Host) -> Option<&'a Image> {
        if let Some(inspector) = dir.inspection_image.as_deref() {
            let key = host_key(host);
            if self.inspections.get(&key).is_none() || self.inspections.requested(&key) {
                return dir.images.get(inspector).map(|i| &**i);
            }
        }
        dir.image_of(host)
    }

    /// The inspection boot of `grant`'s host reported its hardware: store it, record the phase, consume the
    /// token. On a storage error nothing is recorded and the token stays valid (the inspector may retry).
    pub fn complete_inspection(
        &self,
        grant: &TokenGrant,
        host: &Host,
        hardware: crate::hardware::Hardware,
    ) -> std::io::Result<Arc<Inspection>> {
        let inspection = self.inspections.record(&host_key(host), hardware)?;
        self.record(&grant.mac, Phase::Inspection);
        self.tokens.consume(&grant.host);
        if super::discovery::mac_of(&host.name).is_some() {
            self.write_discovered(&self.directory.get());
        }
        Ok(inspection)
    }

    /// Rewrites the state directory's `discovered.yaml` (standalone); failures are logged: the reports
    /// themselves are stored.
    pub fn write_discovered(&self, dir: &Directory) {
        if let Err(e) = self.inspections.write_discovered(dir) {
            tracing::warn!(error = %e, "discovered.yaml not written");
        }
    }

    /// Discovered hosts: those with a live discovery lease, then those that reported (and are not in the
    /// directory) without one, which have no address.
    pub fn discovered_hosts(&self, dir: &Directory) -> Vec<Arc<Host>> {
        let mut hosts = self.discovery.hosts();
        let prefix = format!("{}/", dir.namespace);
        for key in self.inspections.keys() {
            let Some(name) = key.strip_prefix(&prefix) else {
                continue;
            };
            let Some(mac) = super::discovery::mac_of(name) else {
                continue;
            };
            if dir.host_by_mac(&mac).is_some() || hosts.iter().any(|h| h.mac == mac) {
                continue;
            }
            hosts.push(Arc::new(Host {
                name: name.to_string(),
                namespace: dir.namespace.clone(),
                mac,
                ip: Ipv4Addr::UNSPECIFIED,
                network: usize::MAX,
                image: dir.inspection_image.clone().unwrap_or_default(),
                user_data: super::directory::Secret::new(""),
                vendor_data: None,
                network_config: None,
                ignition: None,
                local_disks: Vec::new(),
                cleaning: None,
            }));
        }
        hosts
    }

    /// Tells discovery which MACs it must not answer besides the directory's (once per plane).
    pub fn exclude_from_discovery(&self, known: KnownMacs) {
        let _ = self.known.set(known);
    }

    /// Calls `observer` for every phase recorded from now on (once per plane; a second observer is ignored).
    pub fn observe_phases(&self, observer: PhaseObserver) {
        let _ = self.observer.set(observer);
    }

    /// A new boot of `host` reached its script: mint its token (revoking any older one).
    pub fn start_boot(&self, host: &Host) -> Token {
        // A report is about one boot's disks: the new boot's node sends its own.
        self.disk_reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&host_key(host));
        self.tokens.issue(&host.name, host.mac)
    }

    /// The node of `host` reported on its local disks (the token stays valid: the callback comes after).
    pub fn store_disk_report(&self, host: &Host, report: crate::storage::DiskReport) {
        self.disk_reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host_key(host), report);
    }

    /// The current boot's local-disk report of the host `key` (`<namespace>/<name>`), once its node sent it.
    pub fn disk_report(&self, key: &str) -> Option<crate::storage::DiskReport> {
        self.disk_reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Checks a presented token, optionally for a known host. Rejections are counted here.
    pub fn verify(&self, token: &str, host: Option<&str>) -> Result<TokenGrant, TokenRejection> {
        let r = self.tokens.verify(token, host);
        if let Err(e) = &r {
            self.metrics
                .token_rejections
                .get_or_create(&vec![("reason", e.as_str())])
                .inc();
        }
        r
    }

    /// The boot of `grant`'s host completed: record it and consume the token.
    pub fn complete(&self, grant: &TokenGrant, report: CallbackReport) {
        self.record(&grant.mac, Phase::Callback);
        self.tokens.consume(&grant.host);
        if let Some(j) = self.journal.get() {
            j.callback(&grant.host, &report);
        }
        self.callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(grant.host.clone(), report);
    }

    pub fn boot_record(&self, mac: &MacAddr) -> Option<BootRecord> {
        self.phases.get(mac)
    }

    pub fn callback_report(&self, host: &str) -> Option<CallbackReport> {
        self.callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }
}

/// `<namespace>/<name>`: a host's key in the inspection store (and the manager's name for a BeowulfHost).
pub fn host_key(host: &Host) -> String {
    format!("{}/{}", host.namespace, host.name)
}

impl BootDirectory for BootPlane {
    fn lease(&self, mac: &MacAddr, relay: Option<Ipv4Addr>) -> Option<Lease> {
        let inv = self.directory.get();
        let discovered;
        let host = match inv.host_by_mac(mac) {
            Some(h) => h,
            None => {
                if self.known.get().is_some_and(|known| known(mac)) {
                    return None;
                }
                discovered = self
                    .discovery
                    .lease(&inv, mac, relay, |key| self.inspections.get(key).is_some())?;
                &*discovered
            }
        };
        let net = inv.network_of(host);
        let lease_secs = match (&net.discovery, inv.host_by_mac(mac)) {
            (Some(d), None) => d.lease_secs,
            _ => net.lease_secs,
        };
        if let Some(giaddr) = relay
            && !net.subnet.contains(&giaddr)
        {
            // The request came through a relay on another network than the host's reservation.
            return None;
        }
        Some(Lease {
            mac: host.mac,
            hostname: host.name.clone(),
            ip: host.ip,
            prefix_len: net.subnet.prefix_len(),
            gateway: net.gateway,
            dns: net.dns.clone(),
            domain: net.domain.clone(),
            mtu: net.mtu,
            lease_secs,
        })
    }

    fn ipxe_script_url(&self, mac: &MacAddr) -> Option<String> {
        let inv = self.directory.get();
        let host = self.host_of(&inv, mac)?;
        Some(format!(
            "{}/boot/{}.ipxe",
            self.server_url(&inv, &host),
            host.mac.to_string().replace(':', "-")
        ))
    }

    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.host_at(&self.directory.get(), ip).map(|h| h.mac)
    }

    fn record(&self, mac: &MacAddr, phase: Phase) {
        let r = self.phases.record(*mac, phase);
        if let Some(observe) = self.observer.get() {
            observe(mac, phase);
        }
        if r.new_boot {
            self.metrics.boots_started.inc();
        }
        if r.first_in_boot {
            self.metrics.phase(phase, r.since_start);
            if matches!(phase, Phase::Callback | Phase::Inspection) {
                self.metrics.boots_completed.inc();
            }
            tracing::info!(%mac, phase = phase.as_str(), "boot phase");
        }
    }
}
