//! Benchmarks against named peers: each workload runs ours and each peer in alternation (A B C A B C …) in
//! network namespaces it creates, and reports the median, min, max and the per-round ratio ours/peer.
//! Driven by the `bench` binary (`cargo run --release -p e2e --bin bench -- <workload>`); not part of
//! `cargo test`.

pub mod dhcp;

use std::fmt::Write as _;

pub use crate::harness::{Netns, Proc, veth};

/// Median, min and max of a sample (empty → NaN).
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// The `p`-th percentile (0..=100) by nearest rank of an already sorted sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One metric measured for several servers over the same rounds; `values[server][round]`.
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub values: Vec<Vec<f64>>,
}

/// A Markdown table: one row per (metric, server) with median, min, max, and for peers the ratio ours/peer
/// of each round (ours is server 0).
pub fn table(servers: &[&str], metrics: &[Metric]) -> String {
    let mut s = String::from(
        "| metric | server | median | min | max | ours/peer per round |\n|---|---|---:|---:|---:|---|\n",
    );
    for m in metrics {
        for (i, name) in servers.iter().enumerate() {
            let (med, min, max) = summary(&m.values[i]);
            let ratios = if i == 0 {
                "—".to_string()
            } else {
                m.values[0]
                    .iter()
                    .zip(&m.values[i])
                    .map(|(o, p)| format!("{:.2}", o / p))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                s,
                "| {} ({}{}) | {} | {} | {} | {} | {} |",
                m.name,
                m.unit,
                if m.higher_is_better {
                    ", higher is better"
                } else {
                    ", lower is better"
                },
                name,
                fmt(med),
                fmt(min),
                fmt(max),
                ratios
            );
        }
    }
    s
}

fn fmt(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}
