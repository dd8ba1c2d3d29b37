//! Capture: which hosts' consoles are read, and for how long. Each captured host has one task that opens
//! its console, writes what comes into the host's [`HostLog`], and reopens it when it is lost (BMC restarted,
//! taken over by an interactive console) with a backoff of at most [`MAX_BACKOFF`]. At most `max` consoles
//! are open at once (a permit per open console); at most one per host, and at most one per BMC: a BMC has one
//! SOL session, so hosts that share one (a multi-node chassis, a typo) take turns instead of taking it over
//! from each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::log::{ConsoleLogs, HostLog};
use crate::bmc::BmcError;
use crate::bmc::ipmi::sol::{Console, SolEnd};

/// When capture runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// Never.
    Off,
    /// From the first DHCP request of a boot until a while after it ends.
    #[default]
    Boot,
    /// All the time, for every host with an IPMI BMC.
    Always,
}

/// Longest wait between two attempts to (re)open a console.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long capture goes on after a boot's callback (what the node prints while it settles).
pub const LINGER: Duration = Duration::from_secs(120);
/// How often an open console proves the BMC is there (three missed answers end it).
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// Opens the console of a host; `None` when the host has no BMC to open one with.
pub type Opener = Arc<dyn Fn(String) -> Option<Open> + Send + Sync>;

/// A console about to be opened: on which BMC, and the opening itself.
pub struct Open {
    /// The BMC's identity (`HOST:PORT`): consoles on the same one are never open at once.
    pub bmc: String,
    pub console: BoxFuture<'static, Result<Console, BmcError>>,
}

/// The identity [`Open::bmc`] wants for a BMC address: `HOST:PORT` whatever the protocol or spelling
/// (`ipmi://10.0.0.1` and `ipmi://10.0.0.1:623` are one BMC); the address itself if it does not parse.
pub fn bmc_identity(address: &str) -> String {
    match crate::bmc::Endpoint::parse(address) {
        Ok(e) => format!("{}:{}", e.host, e.port),
        Err(_) => address.to_string(),
    }
}

/// One lock per BMC, held while a console on it is being opened or is open.
#[derive(Default)]
struct BmcLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl BmcLocks {
    fn of(&self, bmc: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Locks nobody holds or waits for go, so the map stays as small as the set of BMCs in use.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(bmc.to_string()).or_default().clone()
    }
}

/// Until when a host's console is captured: `None` for as long as the capture lives.
type Until = Option<Instant>;

pub struct Capture {
    logs: Arc<ConsoleLogs>,
    opener: Opener,
    permits: Arc<Semaphore>,
    bmcs: Arc<BmcLocks>,
    /// Boot window: how long a boot may take before capture stops by itself.
    window: Duration,
    hosts: Mutex<HashMap<String, watch::Sender<Until>>>,
    /// Phases are recorded on the boot plane's own threads too (TFTP): tasks go to this runtime.
    runtime: tokio::runtime::Handle,
}

impl Capture {
    /// `max`: consoles open at once; `window`: the longest a boot is followed (the token lifetime). Call it
    /// inside the Tokio runtime the capture tasks are to run on.
    pub fn new(logs: Arc<ConsoleLogs>, opener: Opener, max: usize, window: Duration) -> Capture {
        Capture {
            logs,
            opener,
            permits: Arc::new(Semaphore::new(max.max(1))),
            bmcs: Arc::default(),
            window,
            hosts: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    pub fn logs(&self) -> &Arc<ConsoleLogs> {
        &self.logs
    }

    /// A boot of `host` began: capture it for the boot window.
    pub fn boot_started(&self, host: &str) {
        self.extend(host, Some(Instant::now() + self.window));
    }

    /// A boot of `host` ended (callback or report): capture a little longer, then stop.
    pub fn boot_ended(&self, host: &str) {
        self.extend(host, Some(Instant::now() + LINGER));
    }

    /// Capture `host` for as long as the capture lives (until [`Capture::stop`]).
    pub fn forever(&self, host: &str) {
        self.extend(host, None);
    }

    /// Stop capturing `host` now.
    pub fn stop(&self, host: &str) {
        let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.remove(host) {
            let _ = tx.send(Some(Instant::now()));
        }
    }

    /// Capture exactly `hosts`, for as long as the capture lives; others stop.
    pub fn always(&self, hosts: &[String]) {
        {
            let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|h, tx| {
                let keep = hosts.contains(h);
                if !keep {
                    // Wakes the task, which sees its time is up.
                    let _ = tx.send(Some(Instant::now()));
                }
                keep
            });
        }
        for h in hosts {
            self.extend(h, None);
        }
    }

    /// Hosts being captured now.
    pub fn active(&self) -> Vec<String> {
        let map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(h, _)| h.clone())
            .collect();
        v.sort();
        v
    }

    fn extend(&self, host: &str, until: Until) {
        let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(host).filter(|tx| !tx.is_closed()) {
            // Forever stays forever; otherwise the later time wins (a callback never shortens "always").
            tx.send_if_modified(|cur| match (*cur, until) {
                (None, _) => false,
                (Some(_), None) => {
                    *cur = None;
                    true
                }
                (Some(c), Some(u)) if u > c || u <= Instant::now() => {
                    *cur = Some(u);
                    true
                }
                _ => false,
            });
            return;
        }
        let (tx, rx) = watch::channel(until);
        map.insert(host.to_string(), tx);
        let task = HostCapture {
            host: host.to_string(),
            log: self.logs.host(host),
            opener: self.opener.clone(),
            permits: self.permits.clone(),
            bmcs: self.bmcs.clone(),
        };
        self.runtime.spawn(task.run(rx));
    }
}

struct HostCapture {
    host: String,
    log: Arc<HostLog>,
    opener: Opener,
    permits: Arc<Semaphore>,
    bmcs: Arc<BmcLocks>,
}

fn over(until: &watch::Receiver<Until>) -> bool {
    matches!(*until.borrow(), Some(t) if t <= Instant::now())
}

/// Resolves when `until` has passed (or changes to a time that has).
async fn stopped(until: &mut watch::Receiver<Until>) {
    loop {
        let deadline = *until.borrow_and_update();
        match deadline {
            Some(t) if t <= Instant::now() => return,
            Some(t) => {
                tokio::select! {
                    () = tokio::time::sleep_until(t) => {}
                    r = until.changed() => if r.is_err() { return },
                }
            }
            None => {
                if until.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

impl HostCapture {
    async fn run(self, mut until: watch::Receiver<Until>) {
        let mut backoff = Duration::from_secs(1);
        let mut last_error = String::new();
        while !over(&until) {
            let Some(open) = (self.opener)(self.host.clone()) else {
                tracing::debug!(host = %self.host, "no IPMI BMC to capture the console from");
                break;
            };
            let lock = self.bmcs.of(&open.bmc);
            let opened = tokio::select! {
                r = async {
                    let turn = match lock.clone().try_lock_owned() {
                        Ok(t) => t,
                        Err(_) => {
                            self.log.note(&format!(
                                "waiting for BMC {}: another host's console is open on it (one SOL session per BMC)",
                                open.bmc
                            ));
                            lock.lock_owned().await
                        }
                    };
                    let permit = self.permits.clone().acquire_owned().await;
                    (open.console.await, permit, turn)
                } => Some(r),
                () = stopped(&mut until) => None,
            };
            let Some((result, permit, turn)) = opened else {
                break;
            };
            match result {
                Ok(console) => {
                    backoff = Duration::from_secs(1);
                    last_error.clear();
                    self.log.note("console connected");
                    tracing::info!(host = %self.host, "capturing the serial console");
                    let end = self.follow(console, &mut until).await;
                    self.log.flush();
                    match end {
                        Ok(SolEnd::Closed) => break,
                        Ok(SolEnd::Deactivated) => self
                            .log
                            .note("console taken over by another session; reconnecting"),
                        Err(e) => {
                            tracing::warn!(host = %self.host, error = %e, "serial console lost; reconnecting");
                            self.log
                                .note(&format!("console lost ({}); reconnecting", e.kind()));
                        }
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        tracing::warn!(host = %self.host, error = %e, "cannot open the serial console");
                        self.log.note(&format!("cannot open the console: {text}"));
                        last_error = text;
                    }
                    // Retrying cannot help what the BMC does not offer.
                    if matches!(e, BmcError::Unsupported { .. } | BmcError::Auth { .. }) {
                        break;
                    }
                }
            }
            // Another host on the same BMC gets its turn while this one waits.
            drop((permit, turn));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut until) => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        tracing::debug!(host = %self.host, "console capture stopped");
    }

    /// Copies the console into the log until it ends or the capture's time is up.
    async fn follow(
        &self,
        console: Console,
        until: &mut watch::Receiver<Until>,
    ) -> Result<SolEnd, BmcError> {
        // Capture never types: the input side stays open and empty until the end.
        let (input, input_rx) = mpsc::channel(1);
        let (out_tx, mut out) = mpsc::channel::<Vec<u8>>(64);
        let mut run = std::pin::pin!(console.run(input_rx, out_tx));
        let mut input = Some(input);
        loop {
            tokio::select! {
                end = &mut run => {
                    while let Ok(b) = out.try_recv() {
                        self.log.write(&b);
                    }
                    return end;
                }
                Some(b) = out.recv() => self.log.write(&b),
                () = stopped(until), if input.is_some() => {
                    // Closing the input ends the console cleanly (SOL deactivated, session closed).
                    input = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An opener whose BMCs never answer (each try takes 200 ms and fails as unreachable), counting how many
    /// consoles are being opened at once per BMC. A stand-in for the BMC: scheduling is what is under test
    /// here; real SOL sessions are in `e2e/tests/console.rs`.
    fn counting(
        bmc_of: HashMap<&'static str, &'static str>,
    ) -> (Opener, Arc<Mutex<HashMap<String, usize>>>) {
        let now: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let most: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let m = most.clone();
        let opener: Opener = Arc::new(move |host: String| {
            let bmc = bmc_of.get(host.as_str())?.to_string();
            let (now, most) = (now.clone(), m.clone());
            let key = bmc.clone();
            Some(Open {
                bmc,
                console: Box::pin(async move {
                    let n = {
                        let mut now = now.lock().unwrap();
                        let n = now.entry(key.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    {
                        let mut most = most.lock().unwrap();
                        let m = most.entry(key.clone()).or_default();
                        *m = (*m).max(n);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    *now.lock().unwrap().get_mut(&key).unwrap() -= 1;
                    Err(BmcError::Unreachable {
                        bmc: key,
                        detail: "test".into(),
                    })
                }),
            })
        });
        (opener, most)
    }

    #[tokio::test]
    async fn hosts_sharing_a_bmc_take_turns_and_hosts_on_different_bmcs_do_not_wait() {
        let bmc_of = HashMap::from([
            ("a1", "10.0.0.1:623"),
            ("a2", "10.0.0.1:623"),
            ("a3", "10.0.0.1:623"),
            ("b1", "10.0.0.2:623"),
            ("c1", "10.0.0.3:623"),
        ]);
        let (opener, most) = counting(bmc_of);
        let logs = Arc::new(ConsoleLogs::in_memory());
        let capture = Capture::new(logs.clone(), opener, 16, Duration::from_secs(60));
        for h in ["a1", "a2", "a3", "b1", "c1"] {
            capture.forever(h);
        }
        // Until every host has had a try (each try takes 200 ms; the three on one BMC take turns).
        let tried = |h: &str| {
            logs.existing(h)
                .is_some_and(|l| l.tail(100).iter().any(|l| l.contains("cannot open")))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !["a1", "a2", "a3", "b1", "c1"].iter().all(|h| tried(h)) {
            assert!(
                Instant::now() < deadline,
                "not every host got a turn within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let most = most.lock().unwrap().clone();
        assert_eq!(most.get("10.0.0.1:623"), Some(&1), "{most:?}");
        assert_eq!(most.len(), 3, "every BMC was tried: {most:?}");
        // Each of the three sharing hosts got turns (not one starving the others) and said why it waited.
        let waited = ["a1", "a2", "a3"]
            .iter()
            .filter(|h| {
                logs.existing(h).is_some_and(|l| {
                    l.tail(100)
                        .iter()
                        .any(|l| l.contains("waiting for BMC 10.0.0.1:623"))
                })
            })
            .count();
        assert!(waited >= 2, "at most one host never waited");
        assert_eq!(capture.active().len(), 5);
        capture.stop("a1");
        assert_eq!(capture.active().len(), 4);
    }
}
