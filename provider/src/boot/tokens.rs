//! Per-boot tokens: the secret that every per-host, secret-bearing URL carries.
//!
//! A token is 256 random bits from the OS-seeded CSPRNG, printed as 64 hex digits. It is bound to one host (name
//! and MAC), valid for one boot and a bounded time: minting a new one for a host (a new boot started) revokes the
//! old one, and the completion callback consumes it. The store keeps only each token's SHA-256 (so does the
//! standalone journal that carries live tokens across a restart, [`super::journal`]); lookups hash the
//! presented token and compare digests in constant time, so response timing does not reveal how close a guess
//! was.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::MacAddr;
use super::journal::{Journal, TokenEntry};

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
    sha256: [u8; 32],
    mac: MacAddr,
    /// Unix seconds (wall clock: it must mean the same after a restart).
    expires: i64,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// All live tokens, at most one per host.
pub struct TokenStore {
    ttl: Duration,
    by_host: Mutex<HashMap<String, Issued>>,
    journal: OnceLock<Arc<Journal>>,
}

impl TokenStore {
    /// `ttl` bounds how long a boot may take from the iPXE script to the callback.
    pub fn new(ttl: Duration) -> Self {
        TokenStore {
            ttl,
            by_host: Mutex::new(HashMap::new()),
            journal: OnceLock::new(),
        }
    }

    /// Takes back the live tokens a journal held, and records every change in it from now on.
    pub fn restore(&self, journal: Arc<Journal>, live: Vec<TokenEntry>) {
        let mut map = self.lock();
        for t in live {
            map.insert(
                t.host,
                Issued {
                    sha256: t.sha256,
                    mac: t.mac,
                    expires: t.expires,
                },
            );
        }
        let _ = self.journal.set(journal);
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a new boot for `host`: mints its token and revokes any earlier one.
    pub fn issue(&self, host: &str, mac: MacAddr) -> Token {
        self.issue_at(host, mac, unix_now())
    }

    fn issue_at(&self, host: &str, mac: MacAddr, now: i64) -> Token {
        let token = Token::generate();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let issued = Issued {
            sha256: digest(token.expose()),
            mac,
            expires: now.saturating_add(ttl),
        };
        if let Some(j) = self.journal.get() {
            j.token_issued(&TokenEntry {
                host: host.to_string(),
                mac,
                sha256: issued.sha256,
                expires: issued.expires,
            });
        }
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
        self.verify_at(presented, expected_host, unix_now())
    }

    fn verify_at(
        &self,
        presented: &str,
        expected_host: Option<&str>,
        now: i64,
    ) -> Result<TokenGrant, TokenRejection> {
        let presented = digest(presented);
        let map = self.lock();
        // Compare against every live token (constant time each, no early exit) so timing says nothing about
        // which host a guess was close to.
        let mut found: Option<(&String, &Issued)> = None;
        for (host, issued) in map.iter() {
            let eq: bool = issued.sha256.ct_eq(&presented).into();
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

    /// `host`'s live token as kept (digest, MAC, expiry), for a process that must hand the boot on.
    pub fn issued(&self, host: &str) -> Option<TokenEntry> {
        self.lock().get(host).map(|i| TokenEntry {
            host: host.to_string(),
            mac: i.mac,
            sha256: i.sha256,
            expires: i.expires,
        })
    }

    /// Takes over a token another process issued (known by its digest only), replacing any of `entry.host`.
    pub fn adopt(&self, entry: TokenEntry) {
        if let Some(j) = self.journal.get() {
            j.token_issued(&entry);
        }
        self.lock().insert(
            entry.host,
            Issued {
                sha256: entry.sha256,
                mac: entry.mac,
                expires: entry.expires,
            },
        );
    }

    /// Consumes `host`'s token (its boot completed): it is refused from now on.
    pub fn consume(&self, host: &str) {
        if self.lock().remove(host).is_some()
            && let Some(j) = self.journal.get()
        {
            j.token_consumed(host);
        }
    }

    /// Drops tokens of hosts that left the inventory.
    pub fn retain_hosts(&self, keep: impl Fn(&str) -> bool) {
        let journal = self.journal.get();
        self.lock().retain(|h, _| {
            let k = keep(h);
            if !k && let Some(j) = journal {
                j.token_consumed(h);
            }
            k
        });
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
        let now = unix_now();
        let t = store.issue_at("node-0", mac(1), now);
        assert!(store.verify_at(t.expose(), None, now + 59).is_ok());
        assert_eq!(
            store.verify_at(t.expose(), None, now + 60),
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

    #[test]
    fn live_tokens_survive_a_restart_through_the_journal_and_only_as_digests() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, restored) = Journal::open(dir.path(), unix_now()).unwrap();
        let store = TokenStore::new(Duration::from_secs(60));
        store.restore(Arc::new(journal), restored.tokens);
        let a = store.issue("a", mac(1));
        let b = store.issue("b", mac(2));
        let gone = store.issue("c", mac(3));
        store.consume("c");
        drop(store);
        let text = std::fs::read_to_string(dir.path().join(super::super::journal::FILE)).unwrap();
        for t in [&a, &b, &gone] {
            assert!(!text.contains(t.expose()), "a token in the clear:\n{text}");
        }

        // The restarted store accepts the live tokens for their hosts, and not the consumed one.
        let (journal, restored) = Journal::open(dir.path(), unix_now()).unwrap();
        let store = TokenStore::new(Duration::from_secs(60));
        store.restore(Arc::new(journal), restored.tokens);
        assert_eq!(store.verify(a.expose(), Some("a")).unwrap().mac, mac(1));
        assert_eq!(store.verify(b.expose(), Some("b")).unwrap().mac, mac(2));
        assert_eq!(
            store.verify(gone.expose(), None),
            Err(TokenRejection::Unknown)
        );
        assert_eq!(
            store.verify(a.expose(), Some("b")),
            Err(TokenRejection::WrongHost)
        );
    }
}
