//! One shutdown signal for every server and loop in the process. SIGTERM or
//! SIGINT trips it; readiness reads it first so load balancers stop sending
//! traffic, servers then drain in-flight requests within the grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cloneable handle on the process's shutdown signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
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

    /// Resolves `grace` after the signal is tripped: the moment to stop
    /// waiting for in-flight work.
    pub async fn grace_expired(&self, grace: Duration) {
        self.wait().await;
        tokio::time::sleep(grace).await;
    }
}
