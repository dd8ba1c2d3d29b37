//! Re-reading the inventory when it changes.
//!
//! Polling, not inotify: it works the same on every filesystem (NFS, bind mounts, editors that replace the
//! file), and a one-second poll of a few `stat` calls costs nothing. A broken edit is logged with its line and
//! column and the last good inventory stays in service; nothing is lost. A change is read once it has held
//! still for one interval, and applied only if the files did not change while they were read, so a file
//! caught between truncation and write (an empty inventory: valid, and without hosts) never goes in service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Inventory;
use crate::boot::directory::DirectoryHandle;

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

fn watched(path: &std::path::Path, inv: &Inventory) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    files.extend(inv.referenced_files().iter().cloned());
    files
}

/// Polls the inventory file at `path` (and `referenced`, the files the inventory in service was built from)
/// every `interval`; on a change, reloads it, calls `on_reload` with the new inventory and puts it in service
/// in `handle`. Runs until the task is dropped.
///
/// The files are fingerprinted when `watch` is called, not when the returned future first runs: an edit
/// made after the inventory was loaded but before a busy runtime got to the watcher is still seen.
pub fn watch(
    handle: Arc<DirectoryHandle>,
    path: PathBuf,
    referenced: Vec<PathBuf>,
    interval: Duration,
    on_reload: impl Fn(&Inventory) + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send {
    let files: Vec<PathBuf> = std::iter::once(path.clone()).chain(referenced).collect();
    let seen = fingerprint(&files);
    poll(handle, path, files, seen, interval, on_reload)
}

async fn poll(
    handle: Arc<DirectoryHandle>,
    path: PathBuf,
    mut files: Vec<PathBuf>,
    mut seen: Fingerprint,
    interval: Duration,
    on_reload: impl Fn(&Inventory) + Send + Sync + 'static,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A change is acted on once it has held still for a tick: an editor, `cp` or `>` truncates the file and
    // then writes it, and an empty file is a valid inventory (no hosts) that must not be put in service.
    let mut settling: Option<Fingerprint> = None;
    loop {
        ticker.tick().await;
        let now = fingerprint(&files);
        if now == seen {
            settling = None;
            continue;
        }
        if settling.as_ref() != Some(&now) {
            settling = Some(now);
            continue;
        }
        settling = None;
        seen = now.clone();
        let p = path.clone();
        // Hashing boot files may take a moment: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || Inventory::load(&p)).await;
        match loaded {
            // Changed while it was read: what was read may be half of it; the next ticks read it again.
            Ok(Ok(_)) if fingerprint(&files) != now => {
                seen = Fingerprint::new();
            }
            Ok(Ok(inv)) => {
                tracing::info!(
                    path = %path.display(),
                    hosts = inv.directory.hosts.len(),
                    images = inv.directory.images.len(),
                    "inventory reloaded"
                );
                files = watched(&path, &inv);
                seen = fingerprint(&files);
                on_reload(&inv);
                handle.set(inv.directory);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "inventory change rejected; still serving the last good inventory");
            }
            Err(e) => tracing::error!(error = %e, "inventory reload task failed"),
        }
    }
}
