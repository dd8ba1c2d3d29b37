//! Which console lines say why a boot failed: quoted in a stuck host's condition and event (the manager) and
//! shown as "last error" on a host's page. One definition, so both say the same.

use super::HostLog;

/// Console lines a failed boot's condition message quotes.
pub const FAILED_BOOT_LINES: usize = 6;
/// Longest console line quoted.
pub const QUOTED_LINE: usize = 200;
/// What makes a line worth quoting although it is not among the last ones: a kernel panic is followed by its
/// call trace, a failed unit by more output.
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

fn is_notable(text: &str) -> bool {
    NOTABLE.iter().any(|n| text.contains(n))
}

/// The node's lines from `log` (text only: no timestamps, not our own `[beowulf]` notes).
fn node_lines(log: &HostLog) -> Vec<String> {
    log.tail(super::log::TAIL_LINES)
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(_, text)| text.to_string()))
        .filter(|t| !t.starts_with("[beowulf]"))
        .collect()
}

fn cut(mut l: String) -> String {
    if l.len() > QUOTED_LINE {
        let mut at = QUOTED_LINE;
        while !l.is_char_boundary(at) {
            at -= 1;
        }
        l.truncate(at);
        l.push('…');
    }
    l
}

/// The lines worth quoting for a failed boot: the last [`FAILED_BOOT_LINES`], after the most recent notable
/// line before them (a panic, an error) if there is one; each cut to [`QUOTED_LINE`]; scrubbed of secrets
/// as they were captured.
pub fn last_lines(log: &HostLog) -> Vec<String> {
    let mut lines = node_lines(log);
    let last = lines.split_off(lines.len().saturating_sub(FAILED_BOOT_LINES));
    // "Kernel panic - not syncing: …" above its trace.
    let notable = lines
        .iter()
        .rev()
        .take(NOTABLE_WINDOW)
        .find(|l| is_notable(l))
        .cloned();
    notable.into_iter().chain(last).map(cut).collect()
}

/// The most recent notable line in `log` with its capture time (`TIMESTAMP TEXT`), cut to [`QUOTED_LINE`].
pub fn last_error(log: &HostLog) -> Option<String> {
    log.tail(super::log::TAIL_LINES)
        .into_iter()
        .rev()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, t)| !t.starts_with("[beowulf]") && is_notable(t))
        })
        .map(cut)
}
