//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one
//! of several operator replicas reconciles. Updates use the Lease's
//! resourceVersion: of two replicas racing for it, one gets a conflict.
//! As in client-go, the leader gives up at a renew deadline shorter than the
//! lease duration, counted from the renewal time it last stamped into the
//! Lease, so that it has stopped before a standby may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the lease {lease} to {holder}")]
    Lost { lease: String, holder: String },
    #[error("no renewal of the lease {lease} within {deadline:?}: stepping down")]
    RenewDeadline { lease: String, deadline: Duration },
}

/// The intervals of the election, all derived from the lease duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a silent leader keeps the lease: when a standby may take over.
    pub lease_duration: Duration,
    /// How long after its last stamped renewal the leader gives up; the rest
    /// of the lease duration is its margin to stop reconciling.
    pub renew_deadline: Duration,
    /// The pause between two attempts.
    pub retry: Duration,
}

impl Timing {
    /// client-go's proportions: 15 s lease, 10 s renew deadline, and here an
    /// attempt every 3 s, so that three attempts fit before the deadline.
    pub fn new(lease_duration: Duration) -> Self {
        Timing {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry: lease_duration / 5,
        }
    }

    /// How long the next renewal attempt may take, `since_renewed` after the
    /// last renewal was stamped; `None` once the renew deadline has passed,
    /// when the leader must step down.
    pub fn renewal_budget(&self, since_renewed: Duration) -> Option<Duration> {
        self.renew_deadline
            .checked_sub(since_renewed)
            .filter(|left| !left.is_zero())
    }
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
    timing: Timing,
}

impl LeaderElector {
    /// `lease_duration` is how long a silent leader keeps the lease; the
    /// other intervals follow from it (see [`Timing::new`]).
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        LeaderElector {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing: Timing::new(lease_duration),
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp, take_over: bool) -> LeaseSpec {
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
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

    /// One round within `limit`; on success, returns when the round began,
    /// which is no later than the renewal time it stamped into the lease.
    async fn attempt(&self, limit: Duration) -> Result<Instant, AttemptError> {
        let started = Instant::now();
        // A hung connection must not hold the leader past its deadline.
        let round = tokio::time::timeout(limit, self.try_acquire_or_renew())
            .await
            .map_err(|_| AttemptError::TimedOut(limit))?;
        match round {
            Ok(Ok(())) => Ok(started),
            Ok(Err(holder)) => Err(AttemptError::Held(holder)),
            Err(error) => Err(AttemptError::Kube(error)),
        }
    }

    /// Waits until this replica holds the lease; returns when the renewal
    /// that won it began, for [`LeaderElector::hold`].
    pub async fn acquire(&self) -> Result<Instant, LeaderError> {
        loop {
            match self.attempt(self.timing.renew_deadline).await {
                Ok(renewed) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return Ok(renewed);
                }
                Err(AttemptError::Held(holder)) => {
                    debug!(lease = %self.name, %holder, "waiting for the lease")
                }
                Err(error) => warn!(lease = %self.name, %error, "cannot read the lease"),
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Keeps renewing the lease last renewed at `renewed`; returns when it is
    /// lost: another replica took it, or no renewal succeeded within the
    /// renew deadline (each attempt is cut off there).
    pub async fn hold(&self, mut renewed: Instant) -> LeaderError {
        let step_down = || LeaderError::RenewDeadline {
            lease: self.name.clone(),
            deadline: self.timing.renew_deadline,
        };
        loop {
            let Some(left) = self.timing.renewal_budget(renewed.elapsed()) else {
                return step_down();
            };
            tokio::time::sleep(self.timing.retry.min(left)).await;
            let Some(left) = self.timing.renewal_budget(renewed.elapsed()) else {
                return step_down();
            };
            match self.attempt(left).await {
                Ok(started) => renewed = started,
                Err(AttemptError::Held(holder)) => {
                    return LeaderError::Lost {
                        lease: self.name.clone(),
                        holder,
                    };
                }
                Err(error) => warn!(lease = %self.name, %error, "cannot renew the lease"),
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

/// Why a round did not end with this replica holding the lease.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("held by {0}")]
    Held(String),
    #[error("kubernetes api: {0}")]
    Kube(kube::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::Method;
    use kube::Client;
    use serde_json::Value;

    use super::*;
    use crate::testing::{client, status};

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

    #[test]
    fn the_renew_deadline_leaves_the_leader_time_to_stop_before_the_lease_expires() {
        // Arrange
        let timing = Timing::new(Duration::from_secs(15));

        // Act
        let budgets = [0, 9, 10, 12].map(|s| timing.renewal_budget(Duration::from_secs(s)));

        // Assert
        assert_eq!(timing.renew_deadline, Duration::from_secs(10));
        assert_eq!(timing.retry, Duration::from_secs(3));
        assert_eq!(
            budgets,
            [
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(1)),
                None,
                None
            ]
        );
    }

    const LEASE_DURATION: Duration = Duration::from_secs(15);

    fn lease_of(holder: &str) -> Value {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("operator".to_owned()),
                namespace: Some("ops".to_owned()),
                resource_version: Some("1".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        serde_json::to_value(lease).expect("json")
    }

    fn elector(client: Client) -> LeaderElector {
        LeaderElector::new(
            Api::namespaced(client, "ops"),
            "operator",
            "me",
            LEASE_DURATION,
        )
    }

    /// Holds the lease renewed now against `client`; `None` if the leader
    /// still leads when the lease would expire.
    async fn hold_until_expiry(client: Client) -> Option<(LeaderError, Duration)> {
        let renewed = Instant::now();
        let held = tokio::time::timeout(LEASE_DURATION, elector(client).hold(renewed)).await;
        held.ok().map(|error| (error, renewed.elapsed()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_renewals_hang_or_fail_steps_down_at_the_renew_deadline() {
        // Arrange
        type Answer = fn(&Method, &str, Value) -> Option<(u16, Value)>;
        let hung: Answer = |_, _, _| None;
        let failed: Answer = |_, _, _| Some(status(500, "InternalError"));

        for (case, answer) in [("hung", hung), ("failed", failed)] {
            // Act
            let stepped_down = hold_until_expiry(client(answer)).await;

            // Assert
            let (error, after) = stepped_down.expect(case);
            assert!(
                matches!(error, LeaderError::RenewDeadline { .. }),
                "{case}: {error}"
            );
            assert_eq!(after, Timing::new(LEASE_DURATION).renew_deadline, "{case}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_renews_keeps_leading_and_stamps_each_renewal() {
        // Arrange
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let recorded = stamps.clone();
        let client = client(move |method, _, body| match *method {
            Method::GET => Some((200, lease_of("me"))),
            _ => {
                let renewed = body["spec"]["renewTime"].as_str().map(str::to_owned);
                recorded.lock().expect("stamps").push(renewed);
                Some((200, body))
            }
        });
        let renewed = Instant::now();

        // Act
        let held = tokio::time::timeout(LEASE_DURATION * 4, elector(client).hold(renewed)).await;

        // Assert
        assert!(held.is_err(), "stepped down: {held:?}");
        let stamps = stamps.lock().expect("stamps");
        assert!(stamps.len() >= 19, "{} renewals in a minute", stamps.len());
        assert!(stamps.iter().all(Option::is_some), "{stamps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_finds_another_holder_steps_down_at_once() {
        // Arrange
        let client =
            client(|method, _, _| (*method == Method::GET).then(|| (200, lease_of("other"))));

        // Act
        let stepped_down = hold_until_expiry(client).await;

        // Assert
        let (error, after) = stepped_down.expect("stepped down");
        assert!(
            matches!(&error, LeaderError::Lost { holder, .. } if holder == "other"),
            "{error}"
        );
        assert_eq!(after, Timing::new(LEASE_DURATION).retry);
    }
}
