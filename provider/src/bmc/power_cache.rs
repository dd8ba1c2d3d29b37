//! Power state for people to look at (the status pages): asked of the BMC when somebody looks, with a short
//! timeout, and kept for a few seconds so a page refreshed by many viewers costs the BMC one session, not
//! one per view. Provisioning never reads it: the engine asks the BMC itself when it must know.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{BmcError, PowerState};

/// How long an answer is shown before the BMC is asked again.
pub const FRESH: Duration = Duration::from_secs(5);
/// How long a page waits for the BMC.
pub const PATIENCE: Duration = Duration::from_secs(2);

/// Asks a host's BMC for its power state; `None` when the host has no BMC.
pub type Ask =
    Arc<dyn Fn(String) -> Option<BoxFuture<'static, Result<PowerState, BmcError>>> + Send + Sync>;

/// What a page shows for a host's power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// The host has no BMC entry.
    NoBmc,
    State(PowerState),
    /// The BMC did not tell: why, in words for the page (never credentials: errors do not carry them).
    Unknown(String),
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reading::NoBmc => f.write_str("no BMC"),
            Reading::State(s) => write!(f, "{s}"),
            Reading::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Reading)>>>;

pub struct PowerCache {
    ask: Ask,
    slots: Mutex<HashMap<String, Slot>>,
}

impl PowerCache {
    pub fn new(ask: Ask) -> PowerCache {
        PowerCache {
            ask,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// `host`'s power: from the last [`FRESH`] seconds, or asked now (at most [`PATIENCE`]). Viewers of one
    /// host at the same moment share one question.
    pub async fn get(&self, host: &str) -> Reading {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((at, r)) = &*slot
            && at.elapsed() < FRESH
        {
            return r.clone();
        }
        let reading = match (self.ask)(host.to_string()) {
            None => Reading::NoBmc,
            Some(ask) => match tokio::time::timeout(PATIENCE, ask).await {
                Ok(Ok(s)) => Reading::State(s),
                Ok(Err(e)) => Reading::Unknown(e.to_string()),
                Err(_) => Reading::Unknown(format!("the BMC did not answer within {PATIENCE:?}")),
            },
        };
        *slot = Some((Instant::now(), reading.clone()));
        reading
    }

    /// Forget hosts that are no longer in `keep` (the inventory changed).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|h, _| keep(h));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn answers_are_kept_briefly_shared_by_concurrent_viewers_and_bounded_in_time() {
        let asked = Arc::new(AtomicUsize::new(0));
        let a = asked.clone();
        let ask: Ask = Arc::new(move |host: String| {
            a.fetch_add(1, Ordering::SeqCst);
            match host.as_str() {
                "on" => Some(Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(PowerState::On)
                })),
                "mute" => Some(Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(PowerState::Off)
                })),
                "refused" => Some(Box::pin(async {
                    Err(BmcError::Auth {
                        bmc: "ipmi://10.0.0.9".into(),
                        detail: "bad password".into(),
                    })
                })),
                _ => None,
            }
        });
        let cache = Arc::new(PowerCache::new(ask));
        let (x, y) = tokio::join!(cache.get("on"), cache.get("on"));
        assert_eq!(
            (x.clone(), y),
            (
                Reading::State(PowerState::On),
                Reading::State(PowerState::On)
            )
        );
        assert_eq!(x.to_string(), "on");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "two viewers, one question");
        assert_eq!(cache.get("on").await, Reading::State(PowerState::On));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "answered from the cache");

        let started = Instant::now();
        let r = cache.get("mute").await;
        assert!(started.elapsed() < PATIENCE + Duration::from_secs(1));
        assert!(
            matches!(&r, Reading::Unknown(w) if w.contains("did not answer")),
            "{r:?}"
        );
        let r = cache.get("refused").await;
        assert!(
            r.to_string()
                .starts_with("unknown: BMC ipmi://10.0.0.9: authentication failed"),
            "{r}"
        );
        assert_eq!(cache.get("none").await, Reading::NoBmc);
        cache.retain(|h| h == "on");
        assert_eq!(cache.slots.lock().unwrap().len(), 1);
    }
}
