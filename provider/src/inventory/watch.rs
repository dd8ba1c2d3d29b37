//! Re-reading the inventory when it changes.
//!
//! Polling, not inotify: it works the same on every filesystem (NFS, bind mounts, editors that replace the
//! file), and a one-second poll of a few `stat` calls costs nothing. A broken edit is logged with its line and
//! column and the last good inventory stays in service; nothing is lost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::Inventory;

/// The inventory in service, swapped whole on a good reload.
pub struct InventoryHandle {
    path: PathBuf,
    current: RwLock<Arc<Inventory>>,
}

impl InventoryHandle {
    pub fn new(path: PathBuf, inventory: Inventory) -> Self {
        InventoryHandle {
            path,
            current: RwLock::new(Arc::new(inventory)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent snapshot: callers keep it for one request, so a reload mid-request cannot mix versions.
    pub fn get(&self) -> Arc<Inventory> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set(&self, inventory: Inventory) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inventory);
    }
}

/// (mtime, length) of each watched file; `None` for a file that is missing.
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn watched(handle: &InventoryHandle, inv: &Inventory) -> Vec<PathBuf> {
    let mut files = vec![handle.path.clone()];
    files.extend(inv.referenced_files().iter().cloned());
    files
}

/// Polls the inventory file (and the files it refers to) every `interval`; on a change, reloads it and calls
/// `on_reload` with the new inventory. Runs until the task is dropped.
pub async fn watch(
    handle: Arc<InventoryHandle>,
    interval: Duration,
    on_reload: impl Fn(&Inventory) + Send + Sync + 'static,
) {
    let mut files = watched(&handle, &handle.get());
    let mut seen = fingerprint(&files);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = fingerprint(&files);
        if now == seen {
            continue;
        }
        seen = now;
        let path = handle.path.clone();
        // Hashing boot files may take a moment: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || Inventory::load(&path)).await;
        match loaded {
            Ok(Ok(inv)) => {
                tracing::info!(
                    path = %handle.path.display(),
                    hosts = inv.hosts.len(),
                    images = inv.images.len(),
                    "inventory reloaded"
                );
                files = watched(&handle, &inv);
                seen = fingerprint(&files);
                on_reload(&inv);
                handle.set(inv);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "inventory change rejected; still serving the last good inventory");
            }
            Err(e) => tracing::error!(error = %e, "inventory reload task failed"),
        }
    }
}
