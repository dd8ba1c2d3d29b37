//! A DHCP datagram from anyone on the boot network: parsed, then answered from a one-host directory.
//! Invariants: a reply goes only to the one reserved MAC, and offers only its reserved address.
#![no_main]

use std::net::Ipv4Addr;

use beowulf::boot::dhcp::reply::{self, BootFiles, DhcpMode, Outcome, Port, Responder};
use beowulf::boot::{BootDirectory, Lease, MacAddr, Phase};
use libfuzzer_sys::fuzz_target;

const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);

struct OneHost;

impl BootDirectory for OneHost {
    fn lease(&self, mac: &MacAddr, _relay: Option<Ipv4Addr>) -> Option<Lease> {
        (*mac == MAC).then(|| Lease {
            mac: MAC,
            hostname: "node1".into(),
            ip: IP,
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 99, 0, 254)),
            dns: vec![Ipv4Addr::new(10, 99, 0, 53)],
            domain: Some("cluster.test".into()),
            mtu: Some(9000),
            lease_secs: 3600,
        })
    }
    fn ipxe_script_url(&self, mac: &MacAddr) -> Option<String> {
        (*mac == MAC).then(|| "http://10.99.0.1:8080/boot/52-54-00-12-34-56.ipxe".into())
    }
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        (ip == IP).then_some(MAC)
    }
    fn record(&self, _mac: &MacAddr, _phase: Phase) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = reply::parse(data) else { return };
    for mode in [DhcpMode::Authoritative, DhcpMode::Proxy] {
        let r = Responder {
            server_ip: Ipv4Addr::new(10, 99, 0, 1),
            next_server: Ipv4Addr::new(10, 99, 0, 1),
            mode,
            boot: BootFiles::default(),
        };
        for port in [Port::Dhcp, Port::ProxyBoot] {
            if let Outcome::Reply(rep) = reply::respond(&r, &OneHost, &req, port) {
                assert_eq!(rep.mac, MAC, "a reply for a MAC without a reservation");
                let yiaddr = rep.message.yiaddr();
                assert!(
                    yiaddr == IP || yiaddr == Ipv4Addr::UNSPECIFIED,
                    "offered {yiaddr}, not the reservation"
                );
                assert!(
                    reply::encode(&rep.message).is_ok(),
                    "our own reply does not encode"
                );
            }
        }
    }
});
