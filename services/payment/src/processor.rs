//! The simulated card processor. It behaves by payment-method token, so every
//! path of the order saga can be exercised: capture, decline, transient
//! failures that exhaust the retries, and an answer that comes too late.

use std::time::Duration;

use uuid::Uuid;

use crate::domain::Method;

/// What became of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Captured { reference: String },
    Declined { reason: String },
    Failed { reason: String },
}

#[derive(Debug, Clone)]
pub struct Processor {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Processor {
    /// Charges, retrying transient failures with exponential backoff.
    /// `deadline` is the caller's time left; a slow charge overruns it.
    /// Returns the outcome and the number of processor calls made.
    pub async fn charge(&self, method: Method, deadline: Option<Duration>) -> (Outcome, u32) {
        match method {
            Method::Ok => (captured(), 1),
            Method::Declined => (
                Outcome::Declined {
                    reason: "card declined".to_owned(),
                },
                1,
            ),
            Method::Error => {
                let mut wait = self.backoff;
                for attempt in 1..self.attempts {
                    tracing::warn!(attempt, "processor failed transiently, retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                (
                    Outcome::Failed {
                        reason: format!("processor unavailable after {} attempts", self.attempts),
                    },
                    self.attempts,
                )
            }
            Method::Slow => {
                let late =
                    deadline.map_or(Duration::from_secs(3), |d| d + Duration::from_millis(250));
                tokio::time::sleep(late).await;
                (captured(), 1)
            }
        }
    }

    /// Refunds always go through in the simulation. The refund's id is the
    /// processor's idempotency key, as a real processor's API takes one: a
    /// refund asked for again (its worker failed after the call) is made
    /// once and answered with the same reference.
    pub async fn refund(&self, refund_id: Uuid) -> String {
        format!("sim_re_{}", refund_id.simple())
    }
}

fn captured() -> Outcome {
    Outcome::Captured {
        reference: format!("sim_ch_{}", Uuid::new_v4().simple()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor() -> Processor {
        Processor {
            attempts: 3,
            backoff: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn each_token_behaves_as_documented() {
        let (ok, _) = processor().charge(Method::Ok, None).await;
        assert!(matches!(ok, Outcome::Captured { .. }));
        assert_eq!(
            processor().charge(Method::Declined, None).await.1,
            1,
            "declines are not retried"
        );
        let (failed, attempts) = processor().charge(Method::Error, None).await;
        assert!(matches!(failed, Outcome::Failed { .. }));
        assert_eq!(
            attempts, 3,
            "transient failures are retried until the attempts run out"
        );
    }

    #[tokio::test]
    async fn a_slow_charge_answers_after_the_deadline() {
        let started = tokio::time::Instant::now();
        let (outcome, _) = processor()
            .charge(Method::Slow, Some(Duration::from_millis(20)))
            .await;
        assert!(matches!(outcome, Outcome::Captured { .. }));
        assert!(started.elapsed() > Duration::from_millis(20));
    }
}
