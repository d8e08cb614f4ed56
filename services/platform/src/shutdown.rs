//! One shutdown signal for every server and loop in the process. SIGTERM or
//! SIGINT trips it; readiness reads it first so load balancers stop sending
//! traffic, servers then drain in-flight requests within the grace period.
//!
//! Internal gRPC servers keep answering for a short drain after the signal
//! (their health already says NOT_SERVING): a request their caller accepted
//! just before the signal still needs them, whether that caller is another
//! pod or the gateway in the same `gocommerce all` process.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cloneable handle on the process's shutdown signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    drain: Duration,
}

impl Shutdown {
    /// A signal whose internal servers stop as soon as it trips.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal whose internal servers keep answering `drain` after it trips.
    pub fn with_drain(drain: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            drain,
        }
    }

    /// Trips the signal on SIGTERM or SIGINT.
    pub fn listen_for_signals(&self) {
        let token = self.token.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut sigterm) => {
                        sigterm.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for SIGTERM");
                        std::future::pending::<()>().await;
                    }
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
                () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
            }
            token.cancel();
        });
    }

    /// Trips the signal by hand (tests, fatal errors).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the signal is tripped.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// Resolves once the signal is tripped and the drain is over: the moment
    /// internal servers stop taking new requests.
    pub async fn drained(&self) {
        self.wait().await;
        tokio::time::sleep(self.drain).await;
    }

    /// Resolves `grace` after the signal is tripped: the moment to stop
    /// waiting for in-flight work.
    pub async fn grace_expired(&self, grace: Duration) {
        self.wait().await;
        tokio::time::sleep(grace).await;
    }
}
