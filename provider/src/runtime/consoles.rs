//! Console capture for the manager: the hosts' BMCs as the controllers last resolved them (credentials from
//! their Secrets), a [`Capture`] that follows a host while it boots, and the last lines a failed boot's
//! condition quotes. Kube-free: the host controller tells it when a boot starts and ends.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::bmc::Limits;
use crate::console::capture::{KEEPALIVE, Open, Opener, bmc_identity};
use crate::console::{Capture, ConsoleLogs};
use crate::provisioning::io::BmcTarget;

pub struct Consoles {
    capture: Capture,
    targets: Arc<RwLock<HashMap<String, BmcTarget>>>,
    /// Capture every host with an IPMI BMC all the time, not only while it boots.
    always: bool,
}

impl Consoles {
    /// Capture into `logs`, at most `max` consoles at once, a boot followed for at most `window` (or every
    /// IPMI host all the time: `always`). Call inside the runtime.
    pub fn new(logs: Arc<ConsoleLogs>, max: usize, window: Duration, always: bool) -> Consoles {
        let targets: Arc<RwLock<HashMap<String, BmcTarget>>> = Arc::default();
        let t = targets.clone();
        let opener: Opener = Arc::new(move |host: String| {
            let target = t
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&host)
                .cloned()?;
            Some(Open {
                bmc: bmc_identity(&target.address),
                console: Box::pin(async move {
                    let bmc = super::power::connect(&target, Limits::new(1))?;
                    bmc.console(false, KEEPALIVE).await
                }),
            })
        });
        Consoles {
            capture: Capture::new(logs, opener, max, window),
            targets,
            always,
        }
    }

    /// What the host controller saw of host `key`: whether a boot is under way (provisioning, inspecting,
    /// cleaning) and the BMC it resolved, if it could. Starts, extends or winds down its capture.
    pub fn observe(&self, key: &str, booting: bool, target: Option<&BmcTarget>) {
        let Some(target) = target else {
            if !self.always {
                self.boot_ended(key);
            }
            return;
        };
        self.targets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), target.clone());
        if self.always {
            // Redfish has no standard serial console: trying every reconcile would only repeat that.
            if target.address.starts_with("ipmi://") {
                self.capture.forever(key);
            }
        } else if booting {
            self.capture.boot_started(key);
        } else {
            self.boot_ended(key);
        }
    }

    /// Host `key` is gone: its capture stops now (its log stays until the manager restarts, or in
    /// `--console-dir`).
    pub fn forget(&self, key: &str) {
        self.capture.stop(key);
        self.targets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Host `key` is not booting (any more).
    fn boot_ended(&self, key: &str) {
        if self.capture.active().iter().any(|h| h == key) {
            self.capture.boot_ended(key);
        }
    }

    /// The last `n` lines of `key`'s console as captured (`TIMESTAMP TEXT`, scrubbed); empty when none was.
    pub fn log_tail(&self, key: &str, n: usize) -> Vec<String> {
        self.capture
            .logs()
            .existing(key)
            .map(|l| l.tail(n))
            .unwrap_or_default()
    }

    /// The console lines of `key` worth quoting (`console::quote::last_lines`).
    pub fn last_lines(&self, key: &str) -> Vec<String> {
        self.capture
            .logs()
            .existing(key)
            .map(|l| crate::console::quote::last_lines(&l))
            .unwrap_or_default()
    }
}

/// `message` with the console's last lines appended, for a failed boot's condition and event.
pub fn with_console(message: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return message.to_string();
    }
    format!("{message}; last console lines: {}", lines.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str) -> BmcTarget {
        BmcTarget {
            address: address.into(),
            username: "u".into(),
            password: "p".into(),
            cipher_suite: None,
            bmc_key: None,
            insecure_tls: false,
            uefi: false,
        }
    }

    #[tokio::test]
    async fn boot_policy_follows_boots_and_always_follows_every_ipmi_host_until_it_is_forgotten() {
        // Nothing listens on these loopback ports: what is under test is which hosts are followed.
        let (ipmi, redfish) = (
            target("ipmi://127.0.0.1:9"),
            target("redfish://127.0.0.1:9"),
        );
        let boot = Consoles::new(
            Arc::new(ConsoleLogs::in_memory()),
            4,
            Duration::from_secs(60),
            false,
        );
        boot.observe("ns/idle", false, Some(&ipmi));
        boot.observe("ns/nobmc", true, None);
        assert!(boot.capture.active().is_empty());
        boot.observe("ns/b", true, Some(&ipmi));
        assert_eq!(boot.capture.active(), ["ns/b"]);

        let always = Consoles::new(
            Arc::new(ConsoleLogs::in_memory()),
            4,
            Duration::from_secs(60),
            true,
        );
        always.observe("ns/a", false, Some(&ipmi));
        always.observe("ns/r", false, Some(&redfish));
        always.observe("ns/c", true, Some(&ipmi));
        always.observe("ns/a", false, None);
        assert_eq!(always.capture.active(), ["ns/a", "ns/c"]);
        always.forget("ns/a");
        assert_eq!(always.capture.active(), ["ns/c"]);
    }

    #[tokio::test]
    async fn a_failed_boot_quotes_the_last_console_lines_without_notes_or_timestamps() {
        let logs = Arc::new(ConsoleLogs::in_memory());
        let c = Consoles::new(logs.clone(), 4, Duration::from_secs(60), false);
        assert!(c.last_lines("ns/h").is_empty());
        let log = logs.host("ns/h");
        log.note("console connected");
        for i in 0..10 {
            log.write(format!("line {i}\r\n").as_bytes());
        }
        let lines = c.last_lines("ns/h");
        assert_eq!(
            lines,
            (4..10).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        log.write(
            b"Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n",
        );
        for f in [
            "Call Trace:",
            " <TASK>",
            " dump_stack+0x1",
            " panic+0x2",
            " </TASK>",
        ] {
            log.write(format!("{f}\r\n").as_bytes());
        }
        log.write(format!("{}\n", "x".repeat(500)).as_bytes());
        let lines = c.last_lines("ns/h");
        // The panic line first, although the trace pushed it out of the last lines.
        assert_eq!(lines.len(), crate::console::quote::FAILED_BOOT_LINES + 1);
        assert!(
            lines[0].starts_with("Kernel panic - not syncing"),
            "{lines:?}"
        );
        assert_eq!(lines[1], "Call Trace:");
        assert_eq!(
            lines[6].chars().count(),
            crate::console::quote::QUOTED_LINE + 1
        );
        let m = with_console("boot attempt 1 made no progress", &lines[..2]);
        assert_eq!(
            m,
            "boot attempt 1 made no progress; last console lines: Kernel panic - not syncing: VFS: Unable to \
             mount root fs on unknown-block(0,0) | Call Trace:"
        );
        assert_eq!(with_console("m", &[]), "m");
    }
}
