//! Console capture for the manager: the hosts' BMCs as the controllers last resolved them (credentials from
//! their Secrets), a [`Capture`] that follows a host while it boots, and the last lines a failed boot's
//! condition quotes. Kube-free: the host controller tells it when a boot starts and ends.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::bmc::Limits;
use crate::console::capture::{KEEPALIVE, Opener};
use crate::console::{Capture, ConsoleLogs};
use crate::provisioning::io::BmcTarget;

/// Console lines a failed boot's condition message quotes.
pub const FAILED_BOOT_LINES: usize = 6;
/// Longest console line quoted in a condition.
const QUOTED_LINE: usize = 200;
/// What makes a line earlier than the last ones worth quoting too: a kernel panic is followed by its call
/// trace, a failed unit by more output.
const NOTABLE: [&str; 7] = [
    "Kernel panic",
    "BUG:",
    "Oops",
    "FAILED",
    "Failed",
    "error",
    "Error",
];
/// How far back (in lines before the last ones) a notable line is looked for.
const NOTABLE_WINDOW: usize = 100;

pub struct Consoles {
    capture: Capture,
    targets: Arc<RwLock<HashMap<String, BmcTarget>>>,
}

impl Consoles {
    /// Capture into `logs`, at most `max` consoles at once, a boot followed for at most `window`. Call inside
    /// the runtime.
    pub fn new(logs: Arc<ConsoleLogs>, max: usize, window: Duration) -> Consoles {
        let targets: Arc<RwLock<HashMap<String, BmcTarget>>> = Arc::default();
        let t = targets.clone();
        let opener: Opener = Arc::new(move |host: String| {
            let target = t
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&host)
                .cloned()?;
            Some(Box::pin(async move {
                let bmc = super::power::connect(&target, Limits::new(1))?;
                bmc.console(false, KEEPALIVE).await
            }))
        });
        Consoles {
            capture: Capture::new(logs, opener, max, window),
            targets,
        }
    }

    /// A boot of host `key` is under way (or about to be) through `target`'s BMC.
    pub fn boot_started(&self, key: &str, target: &BmcTarget) {
        self.targets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), target.clone());
        self.capture.boot_started(key);
    }

    /// Host `key` is not booting (any more).
    pub fn boot_ended(&self, key: &str) {
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

    /// The console lines of `key` worth quoting: the last [`FAILED_BOOT_LINES`], after the most recent
    /// notable line before them (a panic, an error) if there is one; text only (no timestamps, not our own
    /// notes), each cut to a sane length; scrubbed of secrets when they were captured.
    pub fn last_lines(&self, key: &str) -> Vec<String> {
        let Some(log) = self.capture.logs().existing(key) else {
            return Vec::new();
        };
        let mut lines: Vec<String> = log
            .tail(crate::console::log::TAIL_LINES)
            .into_iter()
            .filter_map(|l| l.split_once(' ').map(|(_, text)| text.to_string()))
            .filter(|t| !t.starts_with("[beowulf]"))
            .collect();
        let last = lines.split_off(lines.len().saturating_sub(FAILED_BOOT_LINES));
        // The most recent notable line before them, if any: "Kernel panic - not syncing: …" above its trace.
        let notable = lines
            .iter()
            .rev()
            .take(NOTABLE_WINDOW)
            .find(|l| NOTABLE.iter().any(|n| l.contains(n)))
            .cloned();
        notable
            .into_iter()
            .chain(last)
            .map(|mut l| {
                if l.len() > QUOTED_LINE {
                    let mut cut = QUOTED_LINE;
                    while !l.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    l.truncate(cut);
                    l.push('…');
                }
                l
            })
            .collect()
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

    #[tokio::test]
    async fn a_failed_boot_quotes_the_last_console_lines_without_notes_or_timestamps() {
        let logs = Arc::new(ConsoleLogs::in_memory());
        let c = Consoles::new(logs.clone(), 4, Duration::from_secs(60));
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
        assert_eq!(lines.len(), FAILED_BOOT_LINES + 1);
        assert!(
            lines[0].starts_with("Kernel panic - not syncing"),
            "{lines:?}"
        );
        assert_eq!(lines[1], "Call Trace:");
        assert_eq!(lines[6].chars().count(), QUOTED_LINE + 1);
        let m = with_console("boot attempt 1 made no progress", &lines[..2]);
        assert_eq!(
            m,
            "boot attempt 1 made no progress; last console lines: Kernel panic - not syncing: VFS: Unable to \
             mount root fs on unknown-block(0,0) | Call Trace:"
        );
        assert_eq!(with_console("m", &[]), "m");
    }
}
