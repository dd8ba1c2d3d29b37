//! Per-host boot phase timestamps, kept in memory (and, in standalone mode, in the state directory's journal:
//! [`super::journal`]).
//!
//! One boot passes several DHCP exchanges (firmware, iPXE, the booted OS) and may fetch the script more than
//! once, so a phase keeps the time it was *first* reached in the current boot. A new boot starts when
//! - a DHCP offer arrives for a host whose last boot completed (callback seen),
//! - TFTP or the iPXE script is requested again after the script was already served in this boot (the host
//!   rebooted, e.g. after a failed kernel); DHCP/TFTP seen since that last script are carried into the new boot,
//!   so its record still starts at the firmware's DHCP.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use jiff::Timestamp;
use serde::Serialize;

use super::{MacAddr, Phase};

/// One boot of one host: when each phase was first reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BootRecord {
    /// Counts boots of this host since the boot plane started, or since its state directory was new (1 = first).
    pub boot: u64,
    #[serde(serialize_with = "phases_ser")]
    pub phases: BTreeMap<Phase, Timestamp>,
}

fn phases_ser<S: serde::Serializer>(
    p: &BTreeMap<Phase, Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(p.len()))?;
    for (k, v) in p {
        m.serialize_entry(k.as_str(), &v.to_string())?;
    }
    m.end()
}

impl BootRecord {
    pub fn started(&self) -> Option<Timestamp> {
        self.phases.values().min().copied()
    }

    pub fn latest(&self) -> Option<Phase> {
        self.phases.keys().max().copied()
    }

    /// The boot reached its end: the node's callback, or an inspection boot's report.
    pub fn completed(&self) -> bool {
        self.phases.contains_key(&Phase::Callback) || self.phases.contains_key(&Phase::Inspection)
    }
}

/// What recording one phase did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recorded {
    /// The phase was reached for the first time in this boot.
    pub first_in_boot: bool,
    /// This event started a new boot record.
    pub new_boot: bool,
    /// Seconds since the boot's first phase (when first in boot).
    pub since_start: Option<f64>,
}

/// Earlier boots kept per host (in memory: the journal keeps the current boot only).
pub const HISTORY: usize = 5;

#[derive(Default)]
struct HostPhases {
    current: BootRecord,
    /// The boots before the current one, newest first, at most [`HISTORY`].
    earlier: std::collections::VecDeque<BootRecord>,
    /// Most recent time each early phase was seen, to seed a boot detected only at its script request.
    last_seen: BTreeMap<Phase, Timestamp>,
}

/// Boot phases of all hosts, keyed by MAC.
#[derive(Default)]
pub struct PhaseLog {
    hosts: Mutex<HashMap<MacAddr, HostPhases>>,
    journal: OnceLock<Arc<super::journal::Journal>>,
}

impl PhaseLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes back the current boots a journal held, and records every change of one in it from now on.
    pub fn restore(
        &self,
        journal: Arc<super::journal::Journal>,
        boots: Vec<(MacAddr, BootRecord)>,
    ) {
        let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for (mac, current) in boots {
            map.entry(mac).or_default().current = current;
        }
        let _ = self.journal.set(journal);
    }

    pub fn record(&self, mac: MacAddr, phase: Phase) -> Recorded {
        self.record_at(mac, phase, Timestamp::now())
    }

    pub fn record_at(&self, mac: MacAddr, phase: Phase, now: Timestamp) -> Recorded {
        let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let h = map.entry(mac).or_default();
        let cur = &h.current;
        let script_seen = cur.phases.contains_key(&Phase::IpxeScript);
        let mut new_boot = cur.phases.is_empty();
        let mut carry = BTreeMap::new();
        match phase {
            Phase::DhcpOffer if cur.completed() => new_boot = true,
            Phase::Tftp if script_seen => new_boot = true,
            Phase::IpxeScript if script_seen => {
                new_boot = true;
                let since = cur.phases[&Phase::IpxeScript];
                for p in [Phase::DhcpOffer, Phase::DhcpAck, Phase::Tftp] {
                    if let Some(t) = h.last_seen.get(&p)
                        && *t > since
                    {
                        carry.insert(p, *t);
                    }
                }
            }
            _ => {}
        }
        if new_boot {
            let boot = h.current.boot + 1;
            let done = std::mem::replace(
                &mut h.current,
                BootRecord {
                    boot,
                    phases: carry,
                },
            );
            if !done.phases.is_empty() {
                h.earlier.push_front(done);
                h.earlier.truncate(HISTORY);
            }
        }
        if phase <= Phase::Tftp {
            h.last_seen.insert(phase, now);
        }
        let first_in_boot = !h.current.phases.contains_key(&phase);
        if first_in_boot {
            h.current.phases.insert(phase, now);
        }
        if (first_in_boot || new_boot)
            && let Some(j) = self.journal.get()
        {
            j.boot(&mac, &h.current);
        }
        let since_start = first_in_boot
            .then(|| h.current.started())
            .flatten()
            .map(|s| now.duration_since(s).as_secs_f64());
        Recorded {
            first_in_boot,
            new_boot,
            since_start,
        }
    }

    /// The boots of `mac` before the current one, newest first (at most [`HISTORY`], since the process
    /// started).
    pub fn earlier(&self, mac: &MacAddr) -> Vec<BootRecord> {
        let map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        map.get(mac)
            .map(|h| h.earlier.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The current boot of `mac`, if it ever started one.
    pub fn get(&self, mac: &MacAddr) -> Option<BootRecord> {
        let map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        map.get(mac).map(|h| h.current.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    #[test]
    fn earlier_boots_are_kept_newest_first_up_to_the_limit() {
        let log = PhaseLog::new();
        for b in 0..(HISTORY as i64 + 2) {
            log.record_at(MAC, Phase::DhcpOffer, t(100 * b));
            log.record_at(MAC, Phase::IpxeScript, t(100 * b + 1));
            log.record_at(MAC, Phase::Callback, t(100 * b + 9));
        }
        let earlier = log.earlier(&MAC);
        assert_eq!(earlier.len(), HISTORY);
        assert_eq!(
            earlier.iter().map(|r| r.boot).collect::<Vec<_>>(),
            (2..=(HISTORY as u64 + 1)).rev().collect::<Vec<_>>()
        );
        assert!(earlier.iter().all(BootRecord::completed));
        assert_eq!(log.get(&MAC).unwrap().boot, HISTORY as u64 + 2);
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn full_boot_keeps_first_times_in_order() {
        let log = PhaseLog::new();
        let seq = [
            (Phase::DhcpOffer, 0),
            (Phase::DhcpAck, 1),
            (Phase::Tftp, 2),
            (Phase::DhcpOffer, 3), // iPXE's own DHCP
            (Phase::DhcpAck, 3),
            (Phase::IpxeScript, 4),
            (Phase::Kernel, 5),
            (Phase::Initrd, 6),
            (Phase::DhcpOffer, 8), // the booted OS's DHCP
            (Phase::DhcpAck, 8),
            (Phase::Rootfs, 9),
            (Phase::Metadata, 10),
            (Phase::Callback, 11),
        ];
        for (p, s) in seq {
            log.record_at(MAC, p, t(s));
        }
        let r = log.get(&MAC).unwrap();
        assert_eq!(r.boot, 1);
        let got: Vec<(Phase, i64)> = r
            .phases
            .iter()
            .map(|(p, ts)| (*p, ts.as_second() - 1_800_000_000))
            .collect();
        assert_eq!(
            got,
            vec![
                (Phase::DhcpOffer, 0),
                (Phase::DhcpAck, 1),
                (Phase::Tftp, 2),
                (Phase::IpxeScript, 4),
                (Phase::Kernel, 5),
                (Phase::Initrd, 6),
                (Phase::Rootfs, 9),
                (Phase::Metadata, 10),
                (Phase::Callback, 11),
            ]
        );
        assert!(r.completed());
        // The next DHCP after completion starts boot 2.
        let rec = log.record_at(MAC, Phase::DhcpOffer, t(100));
        assert!(rec.new_boot);
        let r = log.get(&MAC).unwrap();
        assert_eq!(r.boot, 2);
        assert_eq!(r.phases.len(), 1);
    }

    #[test]
    fn reboot_before_completion_is_a_new_boot_with_its_dhcp() {
        let log = PhaseLog::new();
        log.record_at(MAC, Phase::DhcpOffer, t(0));
        log.record_at(MAC, Phase::IpxeScript, t(1));
        log.record_at(MAC, Phase::Kernel, t(2));
        // Kernel panicked; the firmware boots again.
        log.record_at(MAC, Phase::DhcpOffer, t(20));
        log.record_at(MAC, Phase::DhcpAck, t(21));
        let rec = log.record_at(MAC, Phase::IpxeScript, t(22));
        assert!(rec.new_boot);
        assert_eq!(rec.since_start, Some(2.0));
        let r = log.get(&MAC).unwrap();
        assert_eq!(r.boot, 2);
        assert_eq!(
            r.phases.keys().copied().collect::<Vec<_>>(),
            vec![Phase::DhcpOffer, Phase::DhcpAck, Phase::IpxeScript]
        );
        assert_eq!(r.started(), Some(t(20)));
    }
}
