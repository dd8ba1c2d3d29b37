//! Per-boot tokens: the secret that every per-host, secret-bearing URL carries.
//!
//! A token is 256 random bits from the OS-seeded CSPRNG, printed as 64 hex digits. It is bound to one host (name
//! and MAC), valid for one boot and a bounded time: minting a new one for a host (a new boot started) revokes the
//! old one, and the completion callback consumes it. Lookups compare in constant time, so response timing does
//! not reveal how many leading characters of a guess were right.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::MacAddr;

/// Bytes of randomness per token (256 bits; the requirement is at least 128).
const TOKEN_BYTES: usize = 32;

/// A per-boot token. `Debug` and `Display` never show it: only [`Token::expose`] does, where a URL is built.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    fn generate() -> Token {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::fill(&mut bytes);
        Token(hex::encode(bytes))
    }

    /// The token text, for building the URLs that carry it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a presented token was refused. The HTTP layer answers all of them with the same 403 and no data; the
/// reason goes to the log and the metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error(
        "unknown token (never issued, revoked by a newer boot, or consumed by the completion callback)"
    )]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token belongs to another host")]
    WrongHost,
}

impl TokenRejection {
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenRejection::Unknown => "unknown",
            TokenRejection::Expired => "expired",
            TokenRejection::WrongHost => "wrong-host",
        }
    }
}

/// The host a valid token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub host: String,
    pub mac: MacAddr,
}

struct Issued {
    token: Token,
    mac: MacAddr,
    expires: Instant,
}

/// All live tokens, at most one per host.
pub struct TokenStore {
    ttl: Duration,
    by_host: Mutex<HashMap<String, Issued>>,
}

impl TokenStore {
    /// `ttl` bounds how long a boot may take from the iPXE script to the callback.
    pub fn new(ttl: Duration) -> Self {
        TokenStore {
            ttl,
            by_host: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a new boot for `host`: mints its token and revokes any earlier one.
    pub fn issue(&self, host: &str, mac: MacAddr) -> Token {
        self.issue_at(host, mac, Instant::now())
    }

    fn issue_at(&self, host: &str, mac: MacAddr, now: Instant) -> Token {
        let token = Token::generate();
        let issued = Issued {
            token: token.clone(),
            mac,
            expires: now + self.ttl,
        };
        self.lock().insert(host.to_string(), issued);
        token
    }

    /// Checks `presented` for a request that claims to come from `expected_host` (when the caller knows the host,
    /// e.g. from the source address), or finds which host it belongs to (`None`).
    pub fn verify(
        &self,
        presented: &str,
        expected_host: Option<&str>,
    ) -> Result<TokenGrant, TokenRejection> {
        self.verify_at(presented, expected_host, Instant::now())
    }

    fn verify_at(
        &self,
        presented: &str,
        expected_host: Option<&str>,
        now: Instant,
    ) -> Result<TokenGrant, TokenRejection> {
        let map = self.lock();
        // Compare against every live token (constant time each, no early exit) so timing says nothing about
        // which host a guess was close to.
        let mut found: Option<(&String, &Issued)> = None;
        for (host, issued) in map.iter() {
            let eq: bool = issued.token.0.as_bytes().ct_eq(presented.as_bytes()).into();
            if eq {
                found = Some((host, issued));
            }
        }
        let (host, issued) = found.ok_or(TokenRejection::Unknown)?;
        if let Some(expected) = expected_host
            && expected != host
        {
            return Err(TokenRejection::WrongHost);
        }
        if now >= issued.expires {
            return Err(TokenRejection::Expired);
        }
        Ok(TokenGrant {
            host: host.clone(),
            mac: issued.mac,
        })
    }

    /// Consumes `host`'s token (its boot completed): it is refused from now on.
    pub fn consume(&self, host: &str) {
        self.lock().remove(host);
    }

    /// Drops tokens of hosts that left the inventory.
    pub fn retain_hosts(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|h, _| keep(h));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts/removes): recover.
        self.by_host.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    #[test]
    fn tokens_are_long_random_and_redacted() {
        let store = TokenStore::new(Duration::from_secs(60));
        let a = store.issue("a", mac(1));
        let b = store.issue("b", mac(2));
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn valid_token_grants_its_host() {
        let store = TokenStore::new(Duration::from_secs(60));
        let t = store.issue("node-0", mac(1));
        let g = store.verify(t.expose(), None).unwrap();
        assert_eq!(g.host, "node-0");
        assert_eq!(g.mac, mac(1));
        assert_eq!(store.verify(t.expose(), Some("node-0")).unwrap(), g);
    }

    #[test]
    fn expired_token_is_refused() {
        let store = TokenStore::new(Duration::from_secs(60));
        let now = Instant::now();
        let t = store.issue_at("node-0", mac(1), now);
        assert!(
            store
                .verify_at(t.expose(), None, now + Duration::from_secs(59))
                .is_ok()
        );
        assert_eq!(
            store.verify_at(t.expose(), None, now + Duration::from_secs(60)),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn other_hosts_token_is_refused() {
        let store = TokenStore::new(Duration::from_secs(60));
        let a = store.issue("a", mac(1));
        let _b = store.issue("b", mac(2));
        assert_eq!(
            store.verify(a.expose(), Some("b")),
            Err(TokenRejection::WrongHost)
        );
    }

    #[test]
    fn replay_after_completion_or_new_boot_is_refused() {
        let store = TokenStore::new(Duration::from_secs(60));
        let first = store.issue("a", mac(1));
        let second = store.issue("a", mac(1));
        assert_eq!(
            store.verify(first.expose(), None),
            Err(TokenRejection::Unknown)
        );
        assert!(store.verify(second.expose(), None).is_ok());
        store.consume("a");
        assert_eq!(
            store.verify(second.expose(), None),
            Err(TokenRejection::Unknown)
        );
    }

    #[test]
    fn garbage_and_prefixes_are_refused() {
        let store = TokenStore::new(Duration::from_secs(60));
        let t = store.issue("a", mac(1));
        for bad in ["", "x", &t.expose()[..63], &format!("{}0", t.expose())] {
            assert_eq!(store.verify(bad, None), Err(TokenRejection::Unknown));
        }
    }
}
