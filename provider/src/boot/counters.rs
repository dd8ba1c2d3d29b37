//! Plain counters the UDP services keep and the HTTP side exposes (Prometheus text, `/api`).
//!
//! Atomics rather than prometheus-client types: the DHCP and TFTP servers stay free of the exporter, and the
//! HTTP side turns [`Sample`]s into whatever it serves. Every counter is monotonic (a Prometheus `counter`).

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter value, in the shape Prometheus wants: a metric family name, an optional label, help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Family name, `beowulf_<service>_<what>_total`.
    pub name: &'static str,
    /// At most one label, e.g. `("type", "discover")`.
    pub label: Option<(&'static str, &'static str)>,
    pub help: &'static str,
    pub value: u64,
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
