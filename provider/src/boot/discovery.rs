//! Discovery (standalone, opt-in per network): an unknown MAC that network-boots on a network with a
//! `discovery` range gets a short-lived address from it and boots the inspection image as host
//! `discovered-<mac>`; its report is kept like any host's and listed in the state directory's
//! `discovered.yaml` for the operator to merge into the inventory.
//!
//! One machine is one discovered host: the name comes from the MAC, and a MAC keeps its address while its
//! lease lives, so a second boot (or a retried DISCOVER) finds the same host, never a second one. An address a
//! reservation owns is never handed out, also when the inventory gains that reservation while the lease lives
//! (the lease then moves). A discovered host that has reported gets no more answers until it is accepted into
//! the inventory (or its report is removed): it is known, and booting it again would only inspect it again.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::MacAddr;
use super::directory::{Directory, Host, Secret};

/// The name of the host discovered with `mac`: `discovered-525400abcdef`.
pub fn host_name(mac: &MacAddr) -> String {
    format!("discovered-{}", mac.to_string().replace(':', ""))
}

/// The MAC in a discovered host's name, if it is one.
pub fn mac_of(name: &str) -> Option<MacAddr> {
    let hex = name.strip_prefix("discovered-")?;
    if hex.len() != 12 {
        return None;
    }
    let mut b = [0u8; 6];
    for (i, o) in b.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(MacAddr(b))
}

struct Lease {
    host: Arc<Host>,
    expires: Instant,
}

#[derive(Default)]
pub struct Discovery {
    leases: Mutex<HashMap<MacAddr, Lease>>,
}

impl Discovery {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MacAddr, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The discovered host for an unknown `mac` asking on the network of `relay` (or, unrelayed, the first
    /// network with discovery whose boot server is on it): its current lease renewed, or a new one. `None`
    /// when discovery is off there, the range is exhausted, or `done` says the host already reported.
    pub fn lease(
        &self,
        dir: &Directory,
        mac: &MacAddr,
        relay: Option<Ipv4Addr>,
        done: impl Fn(&str) -> bool,
    ) -> Option<Arc<Host>> {
        let image = dir.inspection_image.as_ref()?;
        let (index, net) = dir.networks.iter().enumerate().find(|(_, n)| {
            n.discovery.is_some()
                && match relay {
                    Some(giaddr) => n.subnet.contains(&giaddr),
                    None => n.subnet.contains(&n.boot_server),
                }
        })?;
        let range = net.discovery?;
        let name = host_name(mac);
        let key = format!("{}/{name}", dir.namespace);
        let now = Instant::now();
        let ttl = Duration::from_secs(u64::from(range.lease_secs));
        let mut leases = self.lock();
        if done(&key) {
            leases.remove(mac);
            return None;
        }
        if let Some(l) = leases.get_mut(mac)
            && l.host.network == index
            && dir.host_by_ip(l.host.ip).is_none()
        {
            l.expires = now + ttl;
            return Some(l.host.clone());
        }
        leases.retain(|m, l| l.expires > now && m != mac);
        let taken: std::collections::HashSet<Ipv4Addr> =
            leases.values().map(|l| l.host.ip).collect();
        let ip = (u32::from(range.first)..=u32::from(range.last))
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip) && dir.host_by_ip(*ip).is_none());
        let Some(ip) = ip else {
            tracing::warn!(%mac, network = %net.name, "discovery range exhausted: unknown host not answered");
            return None;
        };
        let host = Arc::new(Host {
            name,
            namespace: dir.namespace.clone(),
            mac: *mac,
            ip,
            network: index,
            image: image.clone(),
            user_data: Secret::new(""),
            vendor_data: None,
            network_config: None,
            ignition: None,
            local_disks: Vec::new(),
            cleaning: None,
        });
        tracing::info!(%mac, %ip, host = %host.name, "unknown host discovered: it boots the inspection image");
        leases.insert(
            *mac,
            Lease {
                host: host.clone(),
                expires: now + ttl,
            },
        );
        Some(host)
    }

    /// The discovered host holding `ip` now.
    pub fn host_at(&self, ip: Ipv4Addr) -> Option<Arc<Host>> {
        let now = Instant::now();
        self.lock()
            .values()
            .find(|l| l.host.ip == ip && l.expires > now)
            .map(|l| l.host.clone())
    }

    /// The discovered host of `mac` while its lease lives.
    pub fn host_of(&self, mac: &MacAddr) -> Option<Arc<Host>> {
        let now = Instant::now();
        self.lock()
            .get(mac)
            .filter(|l| l.expires > now)
            .map(|l| l.host.clone())
    }

    /// Hosts with a live lease.
    pub fn hosts(&self) -> Vec<Arc<Host>> {
        let now = Instant::now();
        let mut v: Vec<_> = self
            .lock()
            .values()
            .filter(|l| l.expires > now)
            .map(|l| l.host.clone())
            .collect();
        v.sort_by_key(|h| h.mac);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::directory::{DiscoveryRange, Network};

    fn dir(reserved: &[(&str, [u8; 4])]) -> Directory {
        let mut images = std::collections::BTreeMap::new();
        let art = |n: &str| crate::boot::directory::Artifact {
            name: n.into(),
            source: crate::boot::directory::ArtifactSource::Url(format!("http://x/{n}")),
            sha256: None,
        };
        images.insert(
            "inspector".to_string(),
            crate::boot::directory::Image {
                name: "inspector".into(),
                format: crate::boot::directory::ImageFormat::Live,
                kernel: art("vmlinuz"),
                initrds: vec![],
                rootfs: None,
                cmdline: String::new(),
            },
        );
        let hosts = reserved
            .iter()
            .enumerate()
            .map(|(i, (name, ip))| Host {
                name: name.to_string(),
                namespace: "lab".into(),
                mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
                ip: Ipv4Addr::from(*ip),
                network: 0,
                image: "inspector".into(),
                user_data: Secret::new(""),
                vendor_data: None,
                network_config: None,
                ignition: None,
                local_disks: Vec::new(),
                cleaning: None,
            })
            .collect();
        let net = Network {
            name: "lab".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: None,
            dns: vec![],
            domain: None,
            mtu: None,
            lease_secs: 600,
            boot_server: [10, 0, 0, 1].into(),
            discovery: Some(DiscoveryRange {
                first: [10, 0, 0, 200].into(),
                last: [10, 0, 0, 202].into(),
                lease_secs: 300,
            }),
        };
        let mut d = Directory::new("lab".into(), vec![net], images, hosts).unwrap();
        d.inspection_image = Some("inspector".into());
        d
    }

    #[test]
    fn one_mac_is_one_host_and_reserved_addresses_are_never_handed_out() {
        let d = dir(&[("node-0", [10, 0, 0, 201])]);
        let disc = Discovery::default();
        let (a, b) = (
            MacAddr([0x52, 0x54, 0, 0, 0, 0xa]),
            MacAddr([0x52, 0x54, 0, 0, 0, 0xb]),
        );
        let ha = disc.lease(&d, &a, None, |_| false).unwrap();
        assert_eq!(
            (ha.name.as_str(), ha.ip),
            ("discovered-52540000000a", [10, 0, 0, 200].into())
        );
        assert_eq!(ha.image, "inspector");
        assert_eq!(mac_of(&ha.name), Some(a));
        // Asked again (a retry, a second boot): the same host.
        assert_eq!(disc.lease(&d, &a, None, |_| false).unwrap(), ha);
        // The next MAC skips .201, which node-0's reservation owns.
        let hb = disc.lease(&d, &b, None, |_| false).unwrap();
        assert_eq!(hb.ip, Ipv4Addr::from([10, 0, 0, 202]));
        // Range exhausted.
        assert!(
            disc.lease(&d, &MacAddr([0x52, 0x54, 0, 0, 0, 0xc]), None, |_| false)
                .is_none()
        );
        assert_eq!(disc.host_at([10, 0, 0, 202].into()), Some(hb.clone()));
        // The inventory gains a reservation on a's address: a's lease moves (here: nowhere free).
        let d2 = dir(&[("node-0", [10, 0, 0, 201]), ("node-1", [10, 0, 0, 200])]);
        assert!(disc.lease(&d2, &a, None, |_| false).is_none());
        // A host that reported is not answered any more.
        assert!(
            disc.lease(&d, &b, None, |k| k == "lab/discovered-52540000000b")
                .is_none()
        );
        assert!(disc.host_of(&b).is_none());
    }

    #[test]
    fn no_discovery_without_a_range_or_on_a_relayed_network_without_one() {
        let mut d = dir(&[]);
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let disc = Discovery::default();
        assert!(
            disc.lease(&d, &mac, Some([192, 168, 1, 1].into()), |_| false)
                .is_none()
        );
        d.inspection_image = None;
        assert!(disc.lease(&d, &mac, None, |_| false).is_none());
        assert_eq!(mac_of("discovered-52540000zz01"), None);
        assert_eq!(mac_of("node-1"), None);
    }
}
