//! BMC addresses and credentials.
//!
//! Address URLs:
//! - `ipmi://HOST[:PORT]` — IPMI v2.0 lanplus (RMCP+) over UDP, port 623 by default.
//! - `redfish://HOST[:PORT][/SYSTEM-ID]` — Redfish over HTTPS (port 443). Without a system id the BMC must
//!   expose exactly one system.
//! - `redfish+https://…` — the same, spelled out.
//! - `redfish+http://HOST[:PORT][/SYSTEM-ID]` — Redfish over plain HTTP (port 80). Only for emulators such as
//!   sushy-tools on a trusted network: credentials cross the wire in clear.
//!
//! HOST may be a name, an IPv4 address or a bracketed IPv6 address.

use std::fmt;

use super::error::BmcError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Ipmi,
    Redfish { tls: bool },
}

/// A parsed BMC address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub protocol: Protocol,
    /// Host name or address, without brackets.
    pub host: String,
    pub port: u16,
    /// Redfish system id (the last path segment of `/redfish/v1/Systems/<id>`).
    pub system: Option<String>,
}

impl Endpoint {
    pub const IPMI_PORT: u16 = 623;

    pub fn parse(s: &str) -> Result<Endpoint, BmcError> {
        // Never echo an address that embeds credentials.
        let shown = match s.rsplit_once('@') {
            Some((_, after)) => format!("<redacted>@{after}"),
            None => s.to_string(),
        };
        let bad = |why: &str| BmcError::Unsupported {
            bmc: shown.clone(),
            what: format!(
                "this address ({why}); use ipmi://HOST[:PORT], redfish://HOST[:PORT][/SYSTEM-ID] or \
                 redfish+http://HOST[:PORT][/SYSTEM-ID]"
            ),
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "ipmi" => Protocol::Ipmi,
            "redfish" | "redfish+https" => Protocol::Redfish { tls: true },
            "redfish+http" => Protocol::Redfish { tls: false },
            _ => return Err(bad("unknown scheme")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the address; use a password file or secret",
            ));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = path.trim_matches('/');
        let system = match protocol {
            Protocol::Ipmi if !path.is_empty() => return Err(bad("ipmi:// takes no path")),
            Protocol::Ipmi => None,
            Protocol::Redfish { .. } => {
                // Accept both `/ID` and a full `/redfish/v1/Systems/ID`.
                let id = path.strip_prefix("redfish/v1/Systems/").unwrap_or(path);
                if id.contains('/') || id.contains('?') || id.contains('#') {
                    return Err(bad("the path must be a single system id"));
                }
                (!id.is_empty()).then(|| id.to_string())
            }
        };
        let port = port.unwrap_or(match protocol {
            Protocol::Ipmi => Self::IPMI_PORT,
            Protocol::Redfish { tls: true } => 443,
            Protocol::Redfish { tls: false } => 80,
        });
        Ok(Endpoint {
            protocol,
            host: host.to_string(),
            port,
            system,
        })
    }

    /// `host:port`, with brackets around IPv6 literals.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        Some(_) => None, // an unbracketed IPv6 literal is ambiguous
        None => Some((authority, None)),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.protocol {
            Protocol::Ipmi => "ipmi",
            Protocol::Redfish { tls: true } => "redfish",
            Protocol::Redfish { tls: false } => "redfish+http",
        };
        write!(f, "{scheme}://{}", self.authority())?;
        if let Some(s) = &self.system {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Endpoint {
    type Err = BmcError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

/// A username and password for one BMC. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    password: String,
    /// IPMI v2.0 BMC key (Kg), up to 20 bytes; keys the session integrity key instead of the password.
    bmc_key: Option<Vec<u8>>,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            bmc_key: None,
        }
    }

    /// With the BMC's IPMI key (Kg, `ipmitool -y`); ignored by Redfish.
    pub fn with_bmc_key(mut self, key: Vec<u8>) -> Self {
        self.bmc_key = Some(key);
        self
    }

    /// The password; only the protocol code should call this.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The IPMI BMC key (Kg), if one is set; only the protocol code should call this.
    pub fn bmc_key(&self) -> Option<&[u8]> {
        self.bmc_key.as_deref()
    }
}

/// Parses a BMC key (Kg) as `ipmitool -y` takes it: up to 40 hex digits (20 bytes), optional `0x`, surrounding
/// whitespace ignored; shorter keys are padded with zeros as IPMI stores them.
pub fn parse_bmc_key(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty()
        || t.len() > 40
        || !t.len().is_multiple_of(2)
        || !t.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(
            "a BMC key (Kg) is 2 to 40 hex digits (an even number, at most 20 bytes), as for `ipmitool -y`"
                .into(),
        );
    }
    let mut key: Vec<u8> = (0..t.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&t[i..i + 2], 16).ok())
        .collect();
    key.resize(20, 0);
    Ok(key)
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Credentials");
        d.field("username", &self.username)
            .field("password", &"<redacted>");
        if self.bmc_key.is_some() {
            d.field("bmc_key", &"<redacted>");
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipmi_and_redfish_addresses() {
        let e = Endpoint::parse("ipmi://10.0.0.5").unwrap();
        assert_eq!(
            (e.protocol, e.host.as_str(), e.port, e.system.as_deref()),
            (Protocol::Ipmi, "10.0.0.5", 623, None)
        );
        let e = Endpoint::parse("ipmi://127.0.0.9:6230").unwrap();
        assert_eq!(e.port, 6230);
        let e = Endpoint::parse("redfish://bmc.example/abc-1").unwrap();
        assert_eq!(e.protocol, Protocol::Redfish { tls: true });
        assert_eq!((e.port, e.system.as_deref()), (443, Some("abc-1")));
        let e = Endpoint::parse("redfish+http://127.0.0.1:8000/redfish/v1/Systems/xyz").unwrap();
        assert_eq!(e.protocol, Protocol::Redfish { tls: false });
        assert_eq!((e.port, e.system.as_deref()), (8000, Some("xyz")));
        let e = Endpoint::parse("redfish://[fd00::1]:8443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("fd00::1", 8443));
        assert_eq!(e.to_string(), "redfish://[fd00::1]:8443");
        assert_eq!(
            Endpoint::parse("ipmi://h:624").unwrap().to_string(),
            "ipmi://h:624"
        );
    }

    #[test]
    fn bmc_keys_parse_like_ipmitool_y_and_stay_redacted() {
        let k = parse_bmc_key(" 0x0102ff\n").unwrap();
        assert_eq!(k.len(), 20);
        assert_eq!(&k[..4], &[1, 2, 0xff, 0]);
        assert_eq!(parse_bmc_key(&"ab".repeat(20)).unwrap(), vec![0xab; 20]);
        for bad in ["", "0x", "abc", "zz", &"00".repeat(21), "secret key"] {
            let e = parse_bmc_key(bad).unwrap_err();
            assert!(e.contains("40 hex digits"), "{bad:?}: {e}");
            assert!(
                bad.is_empty() || !e.contains(bad),
                "the input is not echoed"
            );
        }
        let c = Credentials::new("admin", "pw").with_bmc_key(vec![0x5a; 20]);
        assert_eq!(c.bmc_key(), Some(&[0x5a; 20][..]));
        let dbg = format!("{c:?}");
        assert!(dbg.contains("bmc_key: \"<redacted>\""), "{dbg}");
        assert!(!dbg.contains("90") && !dbg.contains("5a"), "{dbg}");
    }

    #[test]
    fn rejects_bad_addresses_with_a_hint() {
        for bad in [
            "10.0.0.5",
            "http://x",
            "ipmi://",
            "ipmi://h:notaport",
            "ipmi://h/path",
            "ipmi://fd00::1",
            "redfish://user:pw@h",
            "redfish://h/a/b",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(matches!(err, BmcError::Unsupported { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("ipmi://HOST"), "{bad}: {err}");
            assert!(!err.to_string().contains("pw@"), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = Credentials::new("admin", "s3cr3t-pw");
        let d = format!("{c:?} {c:#?}");
        assert!(!d.contains("s3cr3t-pw"), "{d}");
        assert!(d.contains("admin") && d.contains("redacted"));
    }
}
