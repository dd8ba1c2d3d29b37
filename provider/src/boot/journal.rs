//! What a boot in progress needs from the boot plane, kept across restarts of `beowulf standalone`: the live
//! per-boot tokens (as SHA-256 digests, never the tokens), each host's current boot record (its phases) and the
//! last callback report.
//!
//! An append-only file, `boots.journal` in the state directory, one JSON entry per line, written as things
//! happen (a token issued or consumed, a phase first reached in a boot, a callback). Opening it replays it —
//! the last entry for a host or MAC wins, expired tokens are dropped, a line that does not parse (the tail of a
//! write cut short by a crash) is skipped and counted — and then compacts it: the live state is written to a
//! new file, synced, and renamed over the old one, so the file stays as small as the state it holds. Appends
//! are one `write` each on an `O_APPEND` file: a restart (or a crash of the process) loses nothing already
//! written; a power loss may lose the last lines, as it loses the boots in flight anyway.
//!
//! A write that fails is logged and does not fail the boot: the journal makes restarts safe, it must never
//! make the boot plane itself less available.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::phases::BootRecord;
use super::plane::CallbackReport;
use super::{MacAddr, Phase};

/// The journal's file name in the state directory.
pub const FILE: &str = "boots.journal";

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "lowercase")]
enum Entry {
    /// A token was issued to `host`: its SHA-256 (hex), the MAC it is bound to, and when it expires (Unix s).
    Token {
        host: String,
        mac: String,
        sha256: String,
        expires: i64,
    },
    /// `host`'s token was consumed or revoked.
    Consumed { host: String },
    /// `mac`'s current boot record: boot number and phase → RFC 3339 time.
    Boot {
        mac: String,
        boot: u64,
        phases: BTreeMap<String, String>,
    },
    /// `host`'s last callback report.
    Callback {
        host: String,
        report: CallbackReport,
    },
}

/// A live token as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub host: String,
    pub mac: MacAddr,
    pub sha256: [u8; 32],
    /// Unix seconds.
    pub expires: i64,
}

/// The state a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Restored {
    pub tokens: Vec<TokenEntry>,
    pub boots: Vec<(MacAddr, BootRecord)>,
    pub callbacks: Vec<(String, CallbackReport)>,
    /// Lines that did not parse (skipped).
    pub skipped: usize,
}

/// The open journal; appends are serialized.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn boot_entry(mac: &MacAddr, rec: &BootRecord) -> Entry {
    Entry::Boot {
        mac: mac.to_string(),
        boot: rec.boot,
        phases: rec
            .phases
            .iter()
            .map(|(p, t)| (p.as_str().to_string(), t.to_string()))
            .collect(),
    }
}

fn boot_record(boot: u64, phases: &BTreeMap<String, String>) -> Option<BootRecord> {
    let mut out = BTreeMap::new();
    for (p, t) in phases {
        let phase = Phase::ALL.into_iter().find(|x| x.as_str() == p)?;
        out.insert(phase, t.parse::<Timestamp>().ok()?);
    }
    Some(BootRecord { boot, phases: out })
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, replays it at time `now` (Unix seconds: tokens expired by
    /// then are dropped) and compacts it.
    pub fn open(dir: &Path, now: i64) -> io::Result<(Journal, Restored)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut tokens: HashMap<String, TokenEntry> = HashMap::new();
        let mut boots: HashMap<MacAddr, BootRecord> = HashMap::new();
        let mut callbacks: HashMap<String, CallbackReport> = HashMap::new();
        let mut skipped = 0;
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).split(b'\n') {
                    let line = line?;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let Ok(entry) = serde_json::from_slice::<Entry>(&line) else {
                        skipped += 1;
                        continue;
                    };
                    if apply(entry, &mut tokens, &mut boots, &mut callbacks).is_none() {
                        skipped += 1;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tokens.retain(|_, t| t.expires > now);
        let mut restored = Restored {
            tokens: tokens.into_values().collect(),
            boots: boots.into_iter().collect(),
            callbacks: callbacks.into_iter().collect(),
            skipped,
        };
        restored.tokens.sort_by(|a, b| a.host.cmp(&b.host));
        restored.boots.sort_by_key(|(m, _)| *m);
        restored.callbacks.sort_by(|a, b| a.0.cmp(&b.0));

        // Compact: the live state, written whole to a new file that replaces the old one.
        let tmp = dir.join(format!("{FILE}.tmp"));
        {
            let mut out = io::BufWriter::new(File::create(&tmp)?);
            for t in &restored.tokens {
                writeln!(out, "{}", line(&token_entry(t)))?;
            }
            for (mac, rec) in &restored.boots {
                writeln!(out, "{}", line(&boot_entry(mac, rec)))?;
            }
            for (host, report) in &restored.callbacks {
                let e = Entry::Callback {
                    host: host.clone(),
                    report: report.clone(),
                };
                writeln!(out, "{}", line(&e))?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok((
            Journal {
                path,
                file: Mutex::new(file),
            },
            restored,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, e: &Entry) {
        let mut text = line(e);
        text.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = f.write_all(text.as_bytes()) {
            tracing::warn!(journal = %self.path.display(), error = %err,
                "boot journal not written: a restart now would lose this boot's state");
        }
    }

    pub fn token_issued(&self, t: &TokenEntry) {
        self.append(&token_entry(t));
    }

    pub fn token_consumed(&self, host: &str) {
        self.append(&Entry::Consumed {
            host: host.to_string(),
        });
    }

    pub fn boot(&self, mac: &MacAddr, rec: &BootRecord) {
        self.append(&boot_entry(mac, rec));
    }

    pub fn callback(&self, host: &str, report: &CallbackReport) {
        self.append(&Entry::Callback {
            host: host.to_string(),
            report: report.clone(),
        });
    }
}

fn token_entry(t: &TokenEntry) -> Entry {
    Entry::Token {
        host: t.host.clone(),
        mac: t.mac.to_string(),
        sha256: hex::encode(t.sha256),
        expires: t.expires,
    }
}

fn line(e: &Entry) -> String {
    // Serializing these plain structs cannot fail; an empty line would be skipped on replay.
    serde_json::to_string(e).unwrap_or_default()
}

/// Applies one entry; `None` when its content is unusable (a bad MAC, digest or phase).
fn apply(
    entry: Entry,
    tokens: &mut HashMap<String, TokenEntry>,
    boots: &mut HashMap<MacAddr, BootRecord>,
    callbacks: &mut HashMap<String, CallbackReport>,
) -> Option<()> {
    match entry {
        Entry::Token {
            host,
            mac,
            sha256,
            expires,
        } => {
            let digest: [u8; 32] = hex::decode(sha256).ok()?.try_into().ok()?;
            let mac = mac.parse().ok()?;
            tokens.insert(
                host.clone(),
                TokenEntry {
                    host,
                    mac,
                    sha256: digest,
                    expires,
                },
            );
        }
        Entry::Consumed { host } => {
            tokens.remove(&host);
        }
        Entry::Boot { mac, boot, phases } => {
            boots.insert(mac.parse().ok()?, boot_record(boot, &phases)?);
        }
        Entry::Callback { host, report } => {
            callbacks.insert(host, report);
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn token(host: &str, n: u8, expires: i64) -> TokenEntry {
        TokenEntry {
            host: host.into(),
            mac: mac(n),
            sha256: [n; 32],
            expires,
        }
    }

    fn record(boot: u64, phases: &[(Phase, i64)]) -> BootRecord {
        BootRecord {
            boot,
            phases: phases
                .iter()
                .map(|(p, s)| (*p, Timestamp::from_second(1_800_000_000 + s).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn the_last_word_per_host_survives_a_reopen_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let (j, r) = Journal::open(dir.path(), 100).unwrap();
        assert!(r.tokens.is_empty() && r.boots.is_empty() && r.skipped == 0);
        j.token_issued(&token("a", 1, 1000));
        j.token_issued(&token("b", 2, 1000));
        j.token_issued(&token("a", 3, 2000)); // a new boot of a: its first token is gone
        j.token_consumed("b");
        j.token_issued(&token("old", 4, 150)); // expires before the reopen
        j.boot(&mac(1), &record(1, &[(Phase::DhcpOffer, 0)]));
        j.boot(
            &mac(1),
            &record(1, &[(Phase::DhcpOffer, 0), (Phase::IpxeScript, 2)]),
        );
        let report = CallbackReport {
            hostname: Some("a".into()),
            at: "2027-01-15T08:00:00Z".into(),
            ..CallbackReport::default()
        };
        j.callback("a", &report);
        drop(j);
        let before = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(before.lines().count(), 8);

        let (j, r) = Journal::open(dir.path(), 200).unwrap();
        assert_eq!(r.tokens, [token("a", 3, 2000)]);
        assert_eq!(
            r.boots,
            [(
                mac(1),
                record(1, &[(Phase::DhcpOffer, 0), (Phase::IpxeScript, 2)])
            )]
        );
        assert_eq!(r.callbacks[0].1.hostname.as_deref(), Some("a"));
        let after = std::fs::read_to_string(j.path()).unwrap();
        assert_eq!(after.lines().count(), 3, "compacted:\n{after}");
        // No token in the clear: the file holds digests only (the test's digests are bytes n).
        assert!(after.contains(&hex::encode([3u8; 32])));
    }

    #[test]
    fn a_torn_or_foreign_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 0).unwrap();
        j.token_issued(&token("a", 1, 1000));
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        // A write cut short, a line from elsewhere, an entry with a bad MAC, then a good one.
        f.write_all(b"{\"e\":\"token\",\"host\":\"b\",\"ma\n")
            .unwrap();
        f.write_all(b"\x00\xffgarbage\n").unwrap();
        f.write_all(b"{\"e\":\"consumed\"}\n").unwrap();
        f.write_all(
            b"{\"e\":\"boot\",\"mac\":\"nope\",\"boot\":1,\"phases\":{}}\n{\"e\":\"consumed\",\"host\":\"zz\"}\n",
        )
        .unwrap();
        drop(f);
        let (_, r) = Journal::open(dir.path(), 0).unwrap();
        assert_eq!(r.skipped, 4);
        assert_eq!(r.tokens, [token("a", 1, 1000)]);
    }
}
