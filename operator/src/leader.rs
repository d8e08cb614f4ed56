//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one
//! of several operator replicas reconciles. Updates use the Lease's
//! resourceVersion: of two replicas racing for it, one gets a conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the lease {lease} to {holder}")]
    Lost { lease: String, holder: String },
}

/// What to do with the lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// It is free or expired: take it over.
    TakeOver,
    /// Someone else holds it.
    Wait { holder: String },
}

/// Decides from the lease's spec, our identity and the time.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(holder) => {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let expired = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .is_none_or(|renewed| renewed.0 + duration < now);
            if expired {
                Decision::TakeOver
            } else {
                Decision::Wait {
                    holder: holder.to_owned(),
                }
            }
        }
    }
}

/// One replica's side of the election.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    retry: Duration,
}

impl LeaderElector {
    /// `lease_duration` is how long a silent leader keeps the lease; it
    /// renews at a third of that.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        LeaderElector {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            retry: lease_duration / 3,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp, take_over: bool) -> LeaseSpec {
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: if take_over {
                Some(MicroTime(now))
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if take_over && previous.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// One round: returns whether we hold the lease afterwards, or the
    /// current holder when someone else does.
    pub async fn try_acquire_or_renew(&self) -> Result<Result<(), String>, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let outcome = match (&decision, current) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, now, true)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(drop)
            }
            (Decision::Renew | Decision::TakeOver, Some(mut lease)) => {
                let take_over = decision == Decision::TakeOver;
                lease.spec = Some(self.spec(lease.spec.as_ref(), now, take_over));
                // The resourceVersion read above makes this a compare-and-swap.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(drop)
            }
            (Decision::Wait { holder }, _) => return Ok(Err(holder.clone())),
            (Decision::Renew | Decision::TakeOver, None) => return Ok(Err(String::new())),
        };
        match outcome {
            Ok(()) => Ok(Ok(())),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Err("another replica".to_owned())),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Ok(())) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return Ok(());
                }
                Ok(Err(holder)) => debug!(lease = %self.name, %holder, "waiting for the lease"),
                Err(error) => warn!(lease = %self.name, %error, "cannot read the lease"),
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    /// Keeps renewing; returns when the lease is lost (another replica took
    /// it, or renewals failed for longer than the lease lasts).
    pub async fn hold(&self) -> LeaderError {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry).await;
            match self.try_acquire_or_renew().await {
                Ok(Ok(())) => last_renewal = tokio::time::Instant::now(),
                Ok(Err(holder)) => {
                    return LeaderError::Lost {
                        lease: self.name.clone(),
                        holder,
                    };
                }
                Err(error) => {
                    warn!(lease = %self.name, %error, "cannot renew the lease");
                    if last_renewal.elapsed() >= self.lease_duration {
                        return LeaderError::Kube(error);
                    }
                }
            }
        }
    }

    /// Gives the lease up so that a standby takes over at once.
    pub async fn release(&self) -> Result<(), LeaderError> {
        if let Some(mut lease) = self.api.get_opt(&self.name).await?
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
            info!(lease = %self.name, "released the lease");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid")
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", at(100)), Decision::Create);
        assert_eq!(
            decide(Some(&held_by("a", 99)), "a", at(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 90)), "a", at(100)),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&held_by("b", 80)), "a", at(100)),
            Decision::TakeOver
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("b", 99)
        };
        assert_eq!(decide(Some(&released), "a", at(100)), Decision::TakeOver);
    }
}
