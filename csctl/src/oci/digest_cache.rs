//! Remembers the digests of big files by their inode metadata, so republishing an unchanged release does
//! not re-read gigabytes of node images. An entry is used only if device, inode, size, mtime and ctime
//! (which no user tool can set back) are all unchanged — the same test git uses for its index.
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::client::write_atomic;
use super::digest::Digest;

/// Files smaller than this are simply hashed.
const MIN_SIZE: u64 = 1 << 20;
const MAX_ENTRIES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    stamp: Stamp,
    digest: Digest,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

pub struct DigestCache {
    file: Option<PathBuf>,
    entries: BTreeMap<PathBuf, Entry>,
    dirty: bool,
    /// Bytes actually read and hashed (for reports and tests).
    pub hashed_bytes: u64,
}

impl DigestCache {
    /// The cache in `state_dir` (`None`: no caching).
    pub fn open(state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|d| d.join("digests.json"));
        let entries = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default();
        DigestCache {
            file,
            entries,
            dirty: false,
            hashed_bytes: 0,
        }
    }

    /// Digest and size of `path`, from the cache if the file is provably unchanged.
    pub fn digest(&mut self, path: &Path) -> std::io::Result<(Digest, u64)> {
        let before = stamp(path)?;
        let key = path.canonicalize()?;
        if before.size >= MIN_SIZE
            && let Some(e) = self.entries.get(&key)
            && e.stamp == before
        {
            return Ok((e.digest.clone(), before.size));
        }
        let (digest, size) = Digest::of_file(path)?;
        self.hashed_bytes += size;
        // Only remember a digest if the file did not change while it was being read.
        if size >= MIN_SIZE && stamp(path)? == before && before.size == size {
            self.entries.insert(
                key,
                Entry {
                    stamp: before,
                    digest: digest.clone(),
                },
            );
            self.dirty = true;
        }
        Ok((digest, size))
    }

    /// Writes the cache back (best effort: a cache that cannot be written only costs time).
    pub fn save(&mut self) {
        let Some(file) = &self.file else { return };
        if !self.dirty {
            return;
        }
        self.entries.retain(|p, _| p.exists());
        while self.entries.len() > MAX_ENTRIES {
            let Some(k) = self.entries.keys().next().cloned() else {
                break;
            };
            self.entries.remove(&k);
        }
        if let Ok(text) = serde_json::to_vec(&self.entries) {
            let _ = write_atomic(file, &text);
        }
        self.dirty = false;
    }
}
