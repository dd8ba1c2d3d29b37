//! The boot plane: the DHCP, TFTP and HTTP services that network-boot hosts, and [`directory`], its model of
//! what it serves (hosts, images, networks), which two loaders fill: the standalone inventory file
//! ([`crate::inventory`]) and the manager's boot profiles ([`crate::runtime::profiles`]).
//!
//! DHCP and TFTP ask a [`BootDirectory`] (implemented by [`plane::BootPlane`] over the directory, and by a
//! fixed test double), never the inventory or the Kubernetes API: the network code does not know where the
//! data comes from.

pub mod counters;
pub mod dhcp;
pub mod directory;
pub mod discovery;
pub mod http;
pub mod inspection;
pub mod journal;
pub mod metrics;
pub mod phases;
pub mod plane;
pub mod script;
pub mod secret;
#[cfg(test)]
pub(crate) mod testdir;
pub mod tftp;
pub mod tokens;
pub mod udp;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A host's hardware (MAC) address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The form dracut's `BOOTIF=` expects: `01-aa-bb-cc-dd-ee-ff` (hardware type 1, Ethernet).
    pub fn bootif(&self) -> String {
        let b = self.0;
        format!(
            "01-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not six hex octets separated by `:` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets like aa:bb:cc:dd:ee:ff")]
pub struct InvalidMac(pub String);

impl FromStr for MacAddr {
    type Err = InvalidMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(InvalidMac(s.to_string()));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(InvalidMac(s.to_string()));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| InvalidMac(s.to_string()))?;
        }
        Ok(MacAddr(out))
    }
}

/// The phases of one network boot, in the order a successful boot passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    DhcpOffer,
    DhcpAck,
    Tftp,
    IpxeScript,
    Kernel,
    Initrd,
    Rootfs,
    Metadata,
    Callback,
    /// The end of an inspection boot: the inspector's hardware report arrived (instead of a callback).
    Inspection,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::DhcpOffer,
        Phase::DhcpAck,
        Phase::Tftp,
        Phase::IpxeScript,
        Phase::Kernel,
        Phase::Initrd,
        Phase::Rootfs,
        Phase::Metadata,
        Phase::Callback,
        Phase::Inspection,
    ];

    /// The name used in the JSON API, metrics labels and the status page.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::DhcpOffer => "dhcp-offer",
            Phase::DhcpAck => "dhcp-ack",
            Phase::Tftp => "tftp",
            Phase::IpxeScript => "ipxe-script",
            Phase::Kernel => "kernel",
            Phase::Initrd => "initrd",
            Phase::Rootfs => "rootfs",
            Phase::Metadata => "metadata",
            Phase::Callback => "callback",
            Phase::Inspection => "inspection",
        }
    }
}

impl Phase {
    /// The phase named `s` ([`Phase::as_str`]).
    pub fn from_name(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the DHCP server hands one known host: a static reservation and its network's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: MacAddr,
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub lease_secs: u32,
}

/// The boot plane's view of the directory, as the DHCP and TFTP services need it.
///
/// Implemented by [`plane::BootPlane`] (and a fixed test double); the services only ever ask this.
pub trait BootDirectory: Send + Sync + 'static {
    /// The reservation for `mac`. `relay` is the giaddr of a relayed request: the lease must then be on the
    /// network that contains the relay address. `None` for an unknown MAC: the DHCP server stays silent.
    fn lease(&self, mac: &MacAddr, relay: Option<Ipv4Addr>) -> Option<Lease>;

    /// The HTTP URL that iPXE (DHCP user class `iPXE`) chains to for this host: its per-host boot script.
    fn ipxe_script_url(&self, mac: &MacAddr) -> Option<String>;

    /// The host that holds the reserved address `ip` (TFTP and HTTP see addresses, not MACs).
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr>;

    /// Records that `mac` reached `phase` now.
    fn record(&self, mac: &MacAddr, phase: Phase);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_formats_bootif() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(mac.bootif(), "01-52-54-00-ab-cd-0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), mac);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "zz:54:00:ab:cd:0f",
            "525:4:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} should be rejected");
        }
    }
}
