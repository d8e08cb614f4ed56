//! Readiness: whether this process should receive traffic. It is false while
//! the process is starting and as soon as shutdown starts, and otherwise true
//! when every registered dependency (database, broker) answers. Liveness is
//! separate and never looks at dependencies: a database outage must not make
//! Kubernetes restart us.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::Shutdown;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The process's readiness checks. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    shutdown: Shutdown,
    checks: Arc<RwLock<Vec<(String, Check)>>>,
    starting: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").finish_non_exhaustive()
    }
}

/// The outcome of one readiness evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ready: bool,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Readiness {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            checks: Arc::default(),
            starting: Arc::default(),
        }
    }

    /// Registers a dependency check; it must answer within two seconds.
    pub fn add_check<F>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.checks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.into(), Arc::new(check)));
    }

    /// Registers a PostgreSQL pool: ready when `SELECT 1` answers.
    pub fn add_postgres(&self, name: impl Into<String>, pool: sqlx::PgPool) {
        self.add_check(name, move || {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        });
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Marks the process as starting: [`Readiness::evaluate`] fails, with
    /// the check `startup`, until [`Readiness::started`]. Without it a
    /// process whose components start one after another, or wait for their
    /// database, would read as ready before it serves anything.
    pub fn starting(&self) {
        self.starting.store(true, Ordering::Release);
    }

    /// Marks the process as started.
    pub fn started(&self) {
        self.starting.store(false, Ordering::Release);
    }

    /// Whether the process should receive traffic: the checks, run
    /// concurrently, and whether it is starting or shutting down.
    pub async fn evaluate(&self) -> Report {
        let mut report = self.evaluate_serving().await;
        if self.starting.load(Ordering::Acquire) {
            report.checks.push(CheckResult {
                name: "startup".to_owned(),
                ok: false,
                error: Some("still starting".to_owned()),
            });
            report.ready = false;
        }
        report
    }

    /// [`Readiness::evaluate`] for a server that is already serving, which
    /// the rest of its process starting does not concern: a service's gRPC
    /// health.
    pub async fn evaluate_serving(&self) -> Report {
        let checks: Vec<(String, Check)> = self
            .checks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let results =
            futures::future::join_all(checks.into_iter().map(|(name, check)| async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                CheckResult {
                    name,
                    ok: outcome.is_ok(),
                    error: outcome.err(),
                }
            }))
            .await;
        let mut checks = results;
        if self.shutdown.is_triggered() {
            checks.push(CheckResult {
                name: "shutdown".to_owned(),
                ok: false,
                error: Some("shutting down".to_owned()),
            });
        }
        Report {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_turns_false_when_shutdown_starts() {
        let readiness = Readiness::new(Shutdown::new());
        readiness.add_check("always", || Box::pin(async { Ok(()) }));
        assert!(readiness.evaluate().await.ready);

        readiness.shutdown().trigger();
        let report = readiness.evaluate().await;
        assert!(!report.ready);
        assert!(report.checks.iter().any(|c| c.name == "shutdown" && !c.ok));
    }

    #[tokio::test]
    async fn a_failing_dependency_makes_the_process_unready_and_says_which() {
        let readiness = Readiness::new(Shutdown::new());
        readiness.add_check("db", || {
            Box::pin(async { Err("connection refused".to_owned()) })
        });
        let report = readiness.evaluate().await;
        assert!(!report.ready);
        assert_eq!(report.checks[0].name, "db");
        assert_eq!(
            report.checks[0].error.as_deref(),
            Some("connection refused")
        );
    }

    #[tokio::test]
    async fn a_starting_process_is_unready_until_started_while_its_servers_serve() {
        let readiness = Readiness::new(Shutdown::new());
        readiness.add_check("always", || Box::pin(async { Ok(()) }));

        readiness.starting();
        let starting = readiness.evaluate().await;
        let serving = readiness.evaluate_serving().await;
        readiness.started();
        let started = readiness.evaluate().await;

        assert!(!starting.ready);
        assert!(starting.checks.iter().any(|c| c.name == "startup" && !c.ok));
        assert!(serving.ready);
        assert!(started.ready);
    }
}
