//! The boot plane's shared state: the [`Directory`] in service, per-boot tokens and boot phases. It is the
//! [`BootDirectory`] the DHCP and TFTP servers ask, and the state behind the HTTP server — the same for
//! `beowulf standalone` (directory loaded from the inventory file) and `beowulf manager` (from boot profiles).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::directory::{Directory, DirectoryHandle, Host};
use super::metrics::BootMetrics;
use super::phases::{BootRecord, PhaseLog};
use super::tokens::{Token, TokenGrant, TokenRejection, TokenStore};
use super::{BootDirectory, Lease, MacAddr, Phase};

/// What the completion callback reported (cloud-init `phone_home` fields). Public keys are not secret.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallbackReport {
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub pub_keys: Vec<(String, String)>,
    pub at: String,
}

/// Told about every phase any host reaches (the controllers map it back to their BeowulfHost).
pub type PhaseObserver = Box<dyn Fn(&MacAddr, Phase) + Send + Sync>;

pub struct BootPlane {
    pub directory: Arc<DirectoryHandle>,
    pub tokens: TokenStore,
    pub phases: PhaseLog,
    pub metrics: BootMetrics,
    /// The HTTP port hosts reach the boot plane on (the address is each network's `bootServer`).
    pub http_port: u16,
    callbacks: Mutex<std::collections::HashMap<String, CallbackReport>>,
    observer: std::sync::OnceLock<PhaseObserver>,
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
            callbacks: Mutex::new(Default::default()),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// `http://<boot server of host's network>:<port>`.
    pub fn server_url(&self, dir: &Directory, host: &Host) -> String {
        let net = dir.network_of(host);
        format!("http://{}:{}", net.boot_server, self.http_port)
    }

    /// Called when the loader changed the directory: tokens of hosts that left it die with them.
    pub fn directory_changed(&self, dir: &Directory) {
        self.tokens.retain_hosts(|h| dir.host(h).is_some());
        self.metrics.inventory_reloads.inc();
        self.metrics.inventory_hosts.set(dir.hosts.len() as i64);
    }

    /// Calls `observer` for every phase recorded from now on (once per plane; a second observer is ignored).
    pub fn observe_phases(&self, observer: PhaseObserver) {
        let _ = self.observer.set(observer);
    }

    /// A new boot of `host` reached its script: mint its token (revoking any older one).
    pub fn start_boot(&self, host: &Host) -> Token {
        self.tokens.issue(&host.name, host.mac)
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

impl BootDirectory for BootPlane {
    fn lease(&self, mac: &MacAddr, relay: Option<Ipv4Addr>) -> Option<Lease> {
        let inv = self.directory.get();
        let host = inv.host_by_mac(mac)?;
        let net = inv.network_of(host);
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
            lease_secs: net.lease_secs,
        })
    }

    fn ipxe_script_url(&self, mac: &MacAddr) -> Option<String> {
        let inv = self.directory.get();
        let host = inv.host_by_mac(mac)?;
        Some(format!(
            "{}/boot/{}.ipxe",
            self.server_url(&inv, host),
            host.mac.to_string().replace(':', "-")
        ))
    }

    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.directory.get().host_by_ip(ip).map(|h| h.mac)
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
            if phase == Phase::Callback {
                self.metrics.boots_completed.inc();
            }
            tracing::info!(%mac, phase = phase.as_str(), "boot phase");
        }
    }
}
