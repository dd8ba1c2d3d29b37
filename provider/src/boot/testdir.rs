//! A fixed, in-memory [`BootDirectory`] for the boot plane's own tests (the real ones are the standalone
//! inventory and the controllers' index). It records every lookup and phase so tests can assert on them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{BootDirectory, Lease, MacAddr, Phase};

#[derive(Default)]
pub struct TestDirectory {
    pub leases: Vec<Lease>,
    pub scripts: HashMap<MacAddr, String>,
    pub lookups: Mutex<Vec<(MacAddr, Option<Ipv4Addr>)>>,
    pub records: Mutex<Vec<(MacAddr, Phase)>>,
}

pub const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

pub fn lease(mac: MacAddr, ip: Ipv4Addr) -> Lease {
    Lease {
        mac,
        hostname: "node1".into(),
        ip,
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(10, 99, 0, 254)),
        dns: vec![Ipv4Addr::new(10, 99, 0, 53), Ipv4Addr::new(10, 99, 0, 54)],
        domain: Some("cluster.test".into()),
        mtu: Some(9000),
        lease_secs: 3600,
    }
}

impl TestDirectory {
    /// One host, `MAC` → 10.99.0.10, with a per-host script URL.
    pub fn one_host() -> Self {
        let mut d = TestDirectory {
            leases: vec![lease(MAC, Ipv4Addr::new(10, 99, 0, 10))],
            ..Default::default()
        };
        d.scripts.insert(
            MAC,
            "http://10.99.0.1:8080/boot/0123456789abcdef/script.ipxe".into(),
        );
        d
    }

    /// `n` hosts (fewer than 65,536): MAC `52:54:01:00:hi:lo` → 10.99.hi.lo for host number `hi·256 + lo`,
    /// counting from 1.
    pub fn rack(n: u32) -> Self {
        let leases = (1..=n)
            .map(|i| {
                let [_, _, hi, lo] = i.to_be_bytes();
                lease(
                    MacAddr([0x52, 0x54, 1, 0, hi, lo]),
                    Ipv4Addr::new(10, 99, hi, lo),
                )
            })
            .collect();
        TestDirectory {
            leases,
            ..Default::default()
        }
    }

    pub fn phases(&self) -> Vec<(MacAddr, Phase)> {
        self.records.lock().unwrap().clone()
    }
}

fn same_net(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::from(super::dhcp::reply::prefix_to_mask(prefix));
    u32::from(a) & mask == u32::from(b) & mask
}

impl BootDirectory for TestDirectory {
    fn lease(&self, mac: &MacAddr, relay: Option<Ipv4Addr>) -> Option<Lease> {
        self.lookups.lock().unwrap().push((*mac, relay));
        self.leases
            .iter()
            .find(|l| &l.mac == mac && relay.is_none_or(|r| same_net(r, l.ip, l.prefix_len)))
            .cloned()
    }
    fn ipxe_script_url(&self, mac: &MacAddr) -> Option<String> {
        self.scripts.get(mac).cloned()
    }
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.leases.iter().find(|l| l.ip == ip).map(|l| l.mac)
    }
    fn record(&self, mac: &MacAddr, phase: Phase) {
        self.records.lock().unwrap().push((*mac, phase));
    }
}
