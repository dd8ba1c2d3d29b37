//! Per-host console logs: what a host's serial port printed, one timestamped line per console line, cleaned
//! and scrubbed ([`super::scrub`]), written to `<dir>/<host>.log` (rotated to `<host>.log.1` at a size cap,
//! so a host keeps at most twice the cap), with the last lines in memory for pages and a broadcast of new
//! lines for live readers. A reader that stops reading loses lines (it is told how many); it never holds up
//! the capture.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::scrub;

/// Lines kept in memory per host (the API's and the pages' tail).
pub const TAIL_LINES: usize = 2000;
/// A line longer than this is cut into pieces (a console without newlines still gets logged).
pub const MAX_LINE: usize = 4096;
/// Default size at which a host's log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;
/// Lines a live reader may fall behind before it loses some.
const FOLLOW_BACKLOG: usize = 1024;

/// The console logs of all hosts.
pub struct ConsoleLogs {
    /// `None`: in memory only (tests, and the manager until it has a state directory).
    dir: Option<PathBuf>,
    max_bytes: u64,
    hosts: Mutex<HashMap<String, Arc<HostLog>>>,
}

impl ConsoleLogs {
    /// Logs kept in `dir` (created if missing); existing logs are read back on first use.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<ConsoleLogs> {
        std::fs::create_dir_all(dir)?;
        Ok(ConsoleLogs {
            dir: Some(dir.to_path_buf()),
            max_bytes: max_bytes.max(4096),
            hosts: Mutex::new(HashMap::new()),
        })
    }

    pub fn in_memory() -> ConsoleLogs {
        ConsoleLogs {
            dir: None,
            max_bytes: DEFAULT_MAX_BYTES,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The file of `host`'s log: a standalone host name (a DNS label), or the manager's `<namespace>/<name>`
    /// as `<namespace>_<name>` (neither part can hold `_`, so names stay apart).
    fn file(&self, host: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.log", host.replace('/', "_"))))
    }

    /// The log of `host`.
    pub fn host(&self, host: &str) -> Arc<HostLog> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(HostLog::open(self.file(host), self.max_bytes)))
            .clone()
    }

    /// The log of `host` if it has one (in memory or on disk), without creating it.
    pub fn existing(&self, host: &str) -> Option<Arc<HostLog>> {
        if let Some(l) = self
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return Some(l.clone());
        }
        let on_disk = self.file(host).is_some_and(|f| f.exists());
        on_disk.then(|| self.host(host))
    }
}

/// One host's console log.
pub struct HostLog {
    path: Option<PathBuf>,
    max_bytes: u64,
    inner: Mutex<Inner>,
    follow: broadcast::Sender<String>,
}

struct Inner {
    /// Characters after the last newline.
    partial: Vec<u8>,
    file: Option<std::fs::File>,
    size: u64,
    tail: VecDeque<String>,
    /// Whether the last write to the file failed (reported once, not per line).
    failing: bool,
}

impl HostLog {
    fn open(path: Option<PathBuf>, max_bytes: u64) -> HostLog {
        let mut tail = VecDeque::new();
        let mut size = 0;
        if let Some(p) = &path {
            // What the last run captured: the older file first, then the current one.
            for f in [p.with_extension("log.1"), p.clone()] {
                if let Ok(text) = std::fs::read_to_string(&f) {
                    for l in text.lines() {
                        push_tail(&mut tail, l.to_string());
                    }
                    if f == *p {
                        size = text.len() as u64;
                    }
                }
            }
        }
        HostLog {
            path,
            max_bytes,
            inner: Mutex::new(Inner {
                partial: Vec::new(),
                file: None,
                size,
                tail,
                failing: false,
            }),
            follow: broadcast::channel(FOLLOW_BACKLOG).0,
        }
    }

    /// Bytes from the serial port: complete lines are logged, the rest waits for its newline.
    pub fn write(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for &b in bytes {
            if b == b'\n' {
                let raw = std::mem::take(&mut inner.partial);
                self.emit(&mut inner, &scrub::line(&raw));
            } else {
                inner.partial.push(b);
                if inner.partial.len() >= MAX_LINE {
                    let raw = std::mem::take(&mut inner.partial);
                    self.emit(&mut inner, &scrub::line(&raw));
                }
            }
        }
    }

    /// Logs what is left after the last newline (the console ended, or went quiet on a prompt).
    pub fn flush(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.partial.is_empty() {
            let raw = std::mem::take(&mut inner.partial);
            self.emit(&mut inner, &scrub::line(&raw));
        }
    }

    /// A line from Beowulf itself (connected, lost, taken over), marked as such.
    pub fn note(&self, text: &str) {
        self.flush();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.emit(
            &mut inner,
            &format!("[beowulf] {}", scrub::line(text.as_bytes())),
        );
    }

    /// The last `n` lines, oldest first, each `TIMESTAMP TEXT`.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let skip = inner.tail.len().saturating_sub(n);
        inner.tail.iter().skip(skip).cloned().collect()
    }

    /// New lines as they are logged.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.follow.subscribe()
    }

    fn emit(&self, inner: &mut Inner, text: &str) {
        // Blank lines (cleared screens, CR LF pairs) carry nothing worth a timestamp.
        if text.trim().is_empty() {
            return;
        }
        let stamp = jiff::Timestamp::now()
            .round(jiff::Unit::Millisecond)
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let line = format!("{stamp} {}", text.trim_end());
        self.append(inner, &line);
        push_tail(&mut inner.tail, line.clone());
        // No receiver is fine: nobody follows this host now.
        let _ = self.follow.send(line);
    }

    fn append(&self, inner: &mut Inner, line: &str) {
        let Some(path) = &self.path else { return };
        let result = (|| -> std::io::Result<()> {
            if inner.size + line.len() as u64 + 1 > self.max_bytes && inner.size > 0 {
                inner.file = None;
                std::fs::rename(path, path.with_extension("log.1"))?;
                inner.size = 0;
            }
            if inner.file.is_none() {
                inner.file = Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?,
                );
            }
            if let Some(f) = &mut inner.file {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
            }
            inner.size += line.len() as u64 + 1;
            Ok(())
        })();
        match result {
            Ok(()) => inner.failing = false,
            Err(e) => {
                inner.file = None;
                if !std::mem::replace(&mut inner.failing, true) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the console log; keeping lines in memory only");
                }
            }
        }
    }
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(l: &str) -> &str {
        l.split_once(' ').map_or("", |(_, t)| t)
    }

    #[test]
    fn lines_are_assembled_cleaned_and_scrubbed() {
        let logs = ConsoleLogs::in_memory();
        let log = logs.host("node-0");
        log.write(b"Linux version 6.1\r\nCommand line: s=http://x/nocloud/");
        log.write(&[b'a'; 64]);
        log.write(b"/ quiet\r\n\r\n\x1b[2Jlogin: ");
        let t = log.tail(10);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(text(&t[0]), "Linux version 6.1");
        assert_eq!(
            text(&t[1]),
            "Command line: s=http://x/nocloud/[redacted]/ quiet"
        );
        log.flush();
        assert_eq!(text(&log.tail(1)[0]), "login:");
        // Timestamps are RFC 3339.
        assert!(
            t[0].split(' ')
                .next()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
    }

    #[test]
    fn logs_rotate_at_the_cap_and_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let logs = ConsoleLogs::open(dir.path(), 4096).unwrap();
        let log = logs.host("node-1");
        for i in 0..200 {
            log.write(format!("line {i:04} {}\n", "x".repeat(40)).as_bytes());
        }
        let cur = std::fs::metadata(dir.path().join("node-1.log"))
            .unwrap()
            .len();
        let old = std::fs::metadata(dir.path().join("node-1.log.1"))
            .unwrap()
            .len();
        assert!(cur <= 4096 && old <= 4096, "{cur} {old}");
        drop(logs);
        // A new run reads back what is on disk: the newest line last.
        let logs = ConsoleLogs::open(dir.path(), 4096).unwrap();
        let log = logs.existing("node-1").expect("on disk");
        let tail = log.tail(3);
        assert!(text(&tail[2]).starts_with("line 0199 "), "{tail:?}");
        assert!(logs.existing("node-9").is_none());
        // The manager's keys are namespace/name.
        logs.host("rack-1/node-2").write(b"hello\n");
        assert!(dir.path().join("rack-1_node-2.log").exists());
    }

    #[test]
    fn a_reader_that_stops_reading_never_holds_up_the_capture() {
        let logs = ConsoleLogs::in_memory();
        let log = logs.host("n");
        let mut slow = log.subscribe();
        for i in 0..(FOLLOW_BACKLOG + 10) {
            log.write(format!("{i}\n").as_bytes());
        }
        // The writer went on; the reader learns it missed lines.
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        assert_eq!(log.tail(1).len(), 1);
    }

    #[test]
    fn long_lines_are_cut() {
        let logs = ConsoleLogs::in_memory();
        let log = logs.host("n");
        log.write(&vec![b'y'; MAX_LINE * 2 + 5]);
        assert_eq!(log.tail(10).len(), 2);
    }
}
