//! Prometheus metrics of the boot plane's own HTTP side and of boot phases. The DHCP and TFTP servers register
//! their counters into the same [`Registry`], which `/metrics` encodes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Phase;

type Labels = Vec<(&'static str, &'static str)>;

fn phase_histogram() -> Histogram {
    // A TCG boot takes ~15 s, a real server several minutes: 0.25 s to ~17 min.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.25, 2.0, 13,
    ))
}

#[derive(Clone)]
pub struct BootMetrics {
    /// Times a host reached a phase for the first time in a boot.
    pub phases: Family<Labels, Counter>,
    /// Seconds from a boot's first phase to each phase.
    pub phase_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Boots started / completed (callback).
    pub boots_started: Counter,
    pub boots_completed: Counter,
    /// Requests refused for their token, by reason.
    pub token_rejections: Family<Labels, Counter>,
    /// Script or artifact requests from an address that is no host's reservation (or the wrong MAC).
    pub unknown_clients: Counter,
    /// Inventory reloads.
    pub inventory_reloads: Counter,
    pub inventory_hosts: Gauge,
    /// HTTP connections closed at once for a connection limit (`boot::http::accept`).
    pub http_refused: Counter,
}

impl Default for BootMetrics {
    fn default() -> Self {
        BootMetrics {
            phases: Family::default(),
            phase_seconds: Family::new_with_constructor(phase_histogram),
            boots_started: Counter::default(),
            boots_completed: Counter::default(),
            token_rejections: Family::default(),
            unknown_clients: Counter::default(),
            inventory_reloads: Counter::default(),
            inventory_hosts: Gauge::default(),
            http_refused: Counter::default(),
        }
    }
}

impl BootMetrics {
    /// Creates the metrics and registers them under `beowulf_boot_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = BootMetrics::default();
        let r = registry.sub_registry_with_prefix("beowulf_boot");
        r.register(
            "phase",
            "Hosts that reached a boot phase (first time in a boot)",
            m.phases.clone(),
        );
        r.register(
            "phase_seconds",
            "Seconds from the start of a boot (first phase seen) to each phase",
            m.phase_seconds.clone(),
        );
        r.register("boots_started", "Boots started", m.boots_started.clone());
        r.register(
            "boots_completed",
            "Boots that reached the completion callback",
            m.boots_completed.clone(),
        );
        r.register(
            "token_rejections",
            "Requests refused with 403 for their token, by reason",
            m.token_rejections.clone(),
        );
        r.register(
            "unknown_clients",
            "Boot script or file requests from an address that holds no reservation, or with the wrong MAC",
            m.unknown_clients.clone(),
        );
        r.register(
            "inventory_reloads",
            "Inventory reloads after a change",
            m.inventory_reloads.clone(),
        );
        r.register(
            "inventory_hosts",
            "Hosts in the inventory in service",
            m.inventory_hosts.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections closed at once because a client or the server was at its connection limit",
            m.http_refused.clone(),
        );
        m
    }

    pub fn phase(&self, phase: Phase, since_start: Option<f64>) {
        let l = vec![("phase", phase.as_str())];
        self.phases.get_or_create(&l).inc();
        if let Some(s) = since_start {
            self.phase_seconds.get_or_create(&l).observe(s);
        }
    }
}

/// Exposes the DHCP and TFTP servers' plain counters ([`super::counters::Sample`]s) through the registry: read
/// on every scrape, so nothing is copied in between.
pub struct SampleCollector<F>(pub F);

impl<F> std::fmt::Debug for SampleCollector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SampleCollector")
    }
}

impl<F> prometheus_client::collector::Collector for SampleCollector<F>
where
    F: Fn() -> Vec<super::counters::Sample> + Send + Sync + 'static,
{
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        // One descriptor per family; the samples come grouped by name but need not be adjacent.
        // name → (help, [(labels, value)])
        type Family<'a> = (&'a str, Vec<(Labels, u64)>);
        let mut families: std::collections::BTreeMap<&str, Family> = Default::default();
        for s in (self.0)() {
            let entry = families.entry(s.name).or_insert((s.help, Vec::new()));
            entry.1.push((s.label.into_iter().collect(), s.value));
        }
        for (name, (help, samples)) in families {
            // The text encoder appends `_total` to counters itself.
            let base = name.strip_suffix("_total").unwrap_or(name);
            let mut m = encoder.encode_descriptor(
                base,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            match samples.as_slice() {
                // An unlabelled counter: `name_total 3`, not `name_total{} 3`.
                [(labels, v)] if labels.is_empty() => ConstCounter::new(*v).encode(m)?,
                _ => {
                    for (labels, v) in &samples {
                        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
