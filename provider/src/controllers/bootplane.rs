//! The controllers' side of the boot plane: the boot profiles the engine publishes, with their per-boot
//! tokens, and the phases recorded per host.
//!
//! This is the in-process index the boot plane's services read (they key phases by `<namespace>/<host>`).
//! Until `beowulf manager` starts those services on it (open, see docs/architecture.md), nothing
//! records phases here in production and hosts time out into retries.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::boot::Phase;
use crate::provisioning::io::{BootPlane, BootProfile, IoError};

/// Profiles and phases by host key.
#[derive(Default)]
pub struct ProfileRegistry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    profiles: HashMap<String, BootProfile>,
    phases: HashMap<String, (Phase, i64)>,
}

impl ProfileRegistry {
    /// Records that `host` reached `phase` at `at` (Unix seconds); later phases only move forward.
    pub fn record(&self, host: &str, phase: Phase, at: i64) {
        if let Ok(mut g) = self.inner.lock()
            && g.profiles.contains_key(host)
        {
            let e = g.phases.entry(host.to_string()).or_insert((phase, at));
            if phase >= e.0 {
                *e = (phase, at);
            }
        }
    }

    /// The published profile of `host`.
    pub fn profile(&self, host: &str) -> Option<BootProfile> {
        self.inner.lock().ok()?.profiles.get(host).cloned()
    }
}

impl BootPlane for ProfileRegistry {
    fn publish(&self, profile: BootProfile) -> Result<(), IoError> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| IoError("boot profile registry poisoned".into()))?;
        g.phases.remove(&profile.host);
        g.profiles.insert(profile.host.clone(), profile);
        Ok(())
    }
    fn withdraw(&self, host: &str) {
        if let Ok(mut g) = self.inner.lock() {
            g.profiles.remove(host);
            g.phases.remove(host);
        }
    }
    fn last_phase(&self, host: &str) -> Option<(Phase, i64)> {
        self.inner.lock().ok()?.phases.get(host).copied()
    }
}
