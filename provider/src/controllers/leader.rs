//! Leader election over a `coordination.k8s.io/v1` Lease, so only one manager replica reconciles.
//!
//! kube-rs has none and kube-lease-manager needs kube 5, hence this small elector: a replica takes the
//! Lease when it is free, its own, or expired (`renewTime + leaseDurationSeconds` in the past), always with
//! a resourceVersion-guarded write, so two candidates can never both win; the holder renews it every third
//! of the duration and stops (exits) if a renewal fails, letting Kubernetes restart it as a follower.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use super::Error;

/// One candidate.
pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl Elector {
    fn secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One attempt to take or keep the Lease at time `now`; `Ok(true)` when this candidate holds it.
    pub async fn try_acquire(&self, now: jiff::Timestamp) -> Result<bool, Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.secs()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(t), Some(d)) => t.0 + jiff::SignedDuration::from_secs(i64::from(d)) < now,
            _ => true,
        };
        if !mine && !expired && spec.holder_identity.is_some() {
            return Ok(false);
        }
        let mut next = lease.clone();
        let mut s = spec.clone();
        if !mine {
            s.holder_identity = Some(self.identity.clone());
            s.acquire_time = Some(MicroTime(now));
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        s.renew_time = Some(MicroTime(now));
        s.lease_duration_seconds = Some(self.secs());
        next.spec = Some(s);
        // `replace` carries the resourceVersion we read: a concurrent taker makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Blocks until this candidate holds the Lease, then renews it in the background; the returned future
    /// completes (with the reason) when leadership is lost.
    pub async fn lead(self) -> Result<impl std::future::Future<Output = Error>, Error> {
        let retry = (self.duration / 3).max(Duration::from_secs(1));
        loop {
            if self.try_acquire(jiff::Timestamp::now()).await? {
                break;
            }
            tracing::info!(lease = %self.name, "another replica leads; waiting");
            tokio::time::sleep(retry).await;
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
        Ok(async move {
            loop {
                tokio::time::sleep(retry).await;
                match self.try_acquire(jiff::Timestamp::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Error::Invalid(format!("lost the leader Lease {}", self.name));
                    }
                    Err(e) => return e,
                }
            }
        })
    }
}
