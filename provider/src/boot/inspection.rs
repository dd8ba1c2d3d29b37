//! Inspection reports the boot plane received (the inspector posts them to `/inspection/<token>`), and, in
//! standalone mode, which hosts are to be inspected.
//!
//! `beowulf manager` keeps reports in memory only: the BeowulfHost controller copies each into the host's
//! `status.hardware`, which is where they persist. `beowulf standalone` has no API server, so the store
//! writes them under its state directory, one file per host (`hardware/<namespace>_<host>.json`, written to a
//! temporary file and renamed: a crash leaves the old report or the new one, never half of one), and reads
//! them back at start. A request to inspect a host again (`beowulf inspect HOST`, another process) is a file
//! `inspect/<namespace>_<host>` in the same directory, removed when the host's next report arrives.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::hardware::Hardware;

/// One host's latest inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    /// When the report arrived.
    pub at: jiff::Timestamp,
    pub hardware: Hardware,
}

pub struct InspectionStore {
    /// The state directory (standalone); `None`: memory only (manager).
    dir: Option<PathBuf>,
    records: Mutex<HashMap<String, Arc<Inspection>>>,
}

/// The file name of a host's records: `<namespace>_<host>` (both are DNS labels, which have no `_`).
fn file_stem(key: &str) -> String {
    key.replace('/', "_")
}

impl InspectionStore {
    pub fn in_memory() -> InspectionStore {
        InspectionStore {
            dir: None,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Opens (creating it if needed) the state directory `dir` and reads the reports in it. A report file that
    /// cannot be read is logged and skipped: that host is inspected again, nothing else is lost.
    pub fn open(dir: &Path) -> io::Result<InspectionStore> {
        let hw_dir = dir.join("hardware");
        std::fs::create_dir_all(&hw_dir).map_err(|e| with_path(e, &hw_dir))?;
        std::fs::create_dir_all(dir.join("inspect")).map_err(|e| with_path(e, dir))?;
        let mut records = HashMap::new();
        for entry in std::fs::read_dir(&hw_dir).map_err(|e| with_path(e, &hw_dir))? {
            let path = entry?.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let Some((ns, name)) = stem.split_once('_') else {
                continue;
            };
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Inspection>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(i) => {
                    records.insert(format!("{ns}/{name}"), Arc::new(i));
                }
                Err(error) => tracing::warn!(
                    path = %path.display(), %error,
                    "unreadable inspection report skipped; the host will be inspected again"
                ),
            }
        }
        Ok(InspectionStore {
            dir: Some(dir.to_path_buf()),
            records: Mutex::new(records),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Inspection>>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest inspection of host `key` (`<namespace>/<name>`).
    pub fn get(&self, key: &str) -> Option<Arc<Inspection>> {
        self.lock().get(key).cloned()
    }

    /// Stores a new report for `key` (on disk first, when there is a state directory) and clears a pending
    /// request to inspect it. On a write error nothing changes in memory either.
    pub fn record(&self, key: &str, hardware: Hardware) -> io::Result<Arc<Inspection>> {
        let inspection = Arc::new(Inspection {
            at: jiff::Timestamp::now(),
            hardware,
        });
        if let Some(dir) = &self.dir {
            let stem = file_stem(key);
            let path = dir.join("hardware").join(format!("{stem}.json"));
            let tmp = dir.join("hardware").join(format!(".{stem}.json.tmp"));
            let body = serde_json::to_vec_pretty(inspection.as_ref())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            std::fs::write(&tmp, body).map_err(|e| with_path(e, &tmp))?;
            std::fs::rename(&tmp, &path).map_err(|e| with_path(e, &path))?;
            match std::fs::remove_file(dir.join("inspect").join(&stem)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(host = key, error = %e, "inspection request not cleared")
                }
                _ => {}
            }
        }
        self.lock().insert(key.to_string(), inspection.clone());
        Ok(inspection)
    }

    /// Every host with a report, by key.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Rewrites `discovered.yaml` in the state directory: the discovered hosts of `dir`'s namespace that
    /// reported and are not in `dir` yet (sorted by MAC; one entry per MAC, however often it booted).
    pub fn write_discovered(&self, dir: &super::directory::Directory) -> io::Result<()> {
        let Some(state) = &self.dir else {
            return Ok(());
        };
        let prefix = format!("{}/", dir.namespace);
        let mut found: Vec<(super::MacAddr, String, Arc<Inspection>)> = self
            .lock()
            .iter()
            .filter_map(|(key, i)| {
                let name = key.strip_prefix(&prefix)?;
                let mac = super::discovery::mac_of(name)?;
                dir.host_by_mac(&mac)
                    .is_none()
                    .then(|| (mac, name.to_string(), i.clone()))
            })
            .collect();
        found.sort_by_key(|(mac, ..)| *mac);
        let mut y = String::from(
            "# Hosts `beowulf standalone` discovered: unknown MACs that network-booted on a network with\n\
             # discovery and reported their hardware. To take one into service, add it to the inventory's\n\
             # hosts with a name, an address and an image (it is inspected again under its new name).\n\
             hosts:\n",
        );
        if found.is_empty() {
            y.truncate(y.len() - 1);
            y.push_str(" []\n");
        }
        for (mac, name, i) in &found {
            // Summaries and names are checked text (no control characters); JSON strings are valid YAML.
            y.push_str(&format!(
                "  - mac: \"{mac}\"\n    discovered: {name}\n    inspectedAt: \"{}\"\n    hardware: {}\n",
                i.at,
                serde_json::to_string(&i.hardware.summary()).unwrap_or_default()
            ));
        }
        let path = state.join("discovered.yaml");
        let tmp = state.join(".discovered.yaml.tmp");
        std::fs::write(&tmp, y).map_err(|e| with_path(e, &tmp))?;
        std::fs::rename(&tmp, &path).map_err(|e| with_path(e, &path))
    }

    /// Whether someone asked for `key` to be inspected again (standalone: `beowulf inspect`).
    pub fn requested(&self, key: &str) -> bool {
        self.dir
            .as_ref()
            .is_some_and(|d| d.join("inspect").join(file_stem(key)).exists())
    }

    /// Asks the standalone server using state directory `dir` to inspect host `key` on its next boot.
    pub fn request(dir: &Path, key: &str) -> io::Result<PathBuf> {
        let requests = dir.join("inspect");
        std::fs::create_dir_all(&requests).map_err(|e| with_path(e, &requests))?;
        let path = requests.join(file_stem(key));
        std::fs::write(&path, b"").map_err(|e| with_path(e, &path))?;
        Ok(path)
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw() -> Hardware {
        Hardware::from_report(
            &serde_json::to_vec(&crate::hardware::tests::sample_report()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn reports_survive_a_restart_and_requests_clear_on_the_next_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = InspectionStore::open(dir.path()).unwrap();
        assert!(store.get("lab/n1").is_none());
        InspectionStore::request(dir.path(), "lab/n1").unwrap();
        assert!(store.requested("lab/n1"));
        let saved = store.record("lab/n1", hw()).unwrap();
        assert!(!store.requested("lab/n1"), "the report answers the request");

        // A garbled file for another host is skipped, not fatal.
        std::fs::write(dir.path().join("hardware/lab_n2.json"), b"{trunc").unwrap();
        let reopened = InspectionStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("lab/n1").as_deref(), Some(saved.as_ref()));
        assert!(reopened.get("lab/n2").is_none());
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = InspectionStore::open(dir.path()).unwrap();
        std::fs::remove_dir_all(dir.path().join("hardware")).unwrap();
        assert!(store.record("lab/n1", hw()).is_err());
        assert!(store.get("lab/n1").is_none());
    }
}
