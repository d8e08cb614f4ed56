//! The baselines each scenario is divided by, measured in the same run on the
//! same machine: a bare axum handler, pgbench running the services' own SQL,
//! and the login's Argon2id hash in a plain loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use tokio::process::Command;

use crate::server::Postgres;
use crate::stats::{Failure, Recorder, Summary};

/// A bare axum server answering `GET /v1/products/{id}` with fixed JSON
/// bytes, on its own two-thread runtime (as the gateway has its process).
#[derive(Debug)]
pub struct BareServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareServer {
    pub fn start(body: Bytes) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let app = Router::new().route(
                    "/v1/products/{id}",
                    get(move || {
                        let body = body.clone();
                        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
                    }),
                );
                if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                    // TCP_NODELAY like the gateway's listener.
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                }
            });
        });
        Ok(Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The auth service's hasher: Argon2id, 19 MiB, 2 passes, 1 lane
/// (services/auth/src/password.rs).
fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes on `threads` threads back to back for `duration`: hashes a second
/// and each hash's latency.
pub async fn argon2_loop(threads: usize, duration: Duration) -> anyhow::Result<Summary> {
    let hasher = argon2()?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let hasher = hasher.clone();
            let stop = stop.clone();
            let done = done.clone();
            tokio::task::spawn_blocking(move || {
                let mut recorder = Recorder::new();
                while !stop.load(Ordering::Relaxed) {
                    let salt = SaltString::generate(&mut OsRng);
                    let began = Instant::now();
                    let outcome = hasher
                        .hash_password(b"bench-customer-password", &salt)
                        .map(drop)
                        .map_err(|_| Failure::Wrong);
                    recorder.record(began.elapsed(), outcome);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                recorder
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Recorder::new();
    for handle in handles {
        all.merge(&handle.await?);
    }
    Ok(all.summary(start.elapsed()))
}

/// One pgbench run: a custom script, prepared statements, `clients`
/// connections on two threads, optionally at a fixed rate (`-R`, whose
/// latencies count from each transaction's scheduled start).
#[derive(Debug, Clone)]
pub struct Pgbench {
    pub binary: PathBuf,
    pub postgres: Postgres,
    pub database: String,
    pub script: PathBuf,
    pub defines: Vec<(String, String)>,
}

impl Pgbench {
    pub async fn run(
        &self,
        clients: usize,
        seconds: u64,
        rate: Option<f64>,
    ) -> anyhow::Result<Summary> {
        let dir =
            std::env::temp_dir().join(format!("gocommerce-bench-pgbench-{}", uuid::Uuid::new_v4()));
        tokio::fs::create_dir_all(&dir).await?;
        let result = self.run_in(&dir, clients, seconds, rate).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    async fn run_in(
        &self,
        dir: &Path,
        clients: usize,
        seconds: u64,
        rate: Option<f64>,
    ) -> anyhow::Result<Summary> {
        let mut command = Command::new(&self.binary);
        command
            .args(["-n", "-M", "prepared", "-l", "--log-prefix"])
            .arg(dir.join("log"))
            .args(["-c", &clients.max(1).to_string()])
            .args(["-j", &clients.clamp(1, 2).to_string()])
            .args(["-T", &seconds.max(1).to_string()])
            .args([
                "-h",
                &self.postgres.host,
                "-p",
                &self.postgres.port.to_string(),
            ])
            .args(["-U", &self.postgres.user])
            .arg("-f")
            .arg(&self.script)
            .stdin(Stdio::null());
        if let Some(rate) = rate {
            command.args(["-R", &format!("{:.1}", rate.max(0.1))]);
        }
        for (name, value) in &self.defines {
            command.args(["-D", &format!("{name}={value}")]);
        }
        command.arg(&self.database);
        let output = crate::server::checked_output(&mut command, "pgbench").await?;
        let mut recorder = Recorder::new();
        let mut entries = tokio::fs::read_dir(dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let text = tokio::fs::read_to_string(entry.path()).await?;
            parse_log(&text, &mut recorder);
        }
        if recorder.count() == 0 {
            bail!(
                "pgbench ran no transaction: {}",
                String::from_utf8_lossy(&output.stdout).trim()
            );
        }
        Ok(recorder.summary(Duration::from_secs(seconds.max(1))))
    }
}

/// Records the transactions of a pgbench per-transaction log: lines of
/// `client_id transaction_no time script_no time_epoch time_us [schedule_lag]`
/// where `time` is µs from the scheduled start (which under `-R` includes
/// the schedule lag), or `failed`/`skipped`.
pub fn parse_log(text: &str, recorder: &mut Recorder) {
    for line in text.lines() {
        let Some(time) = line.split_whitespace().nth(2) else {
            continue;
        };
        match time.parse::<u64>() {
            Ok(micros) => recorder.record(Duration::from_micros(micros), Ok(())),
            Err(_) => recorder.record(Duration::ZERO, Err(Failure::Wrong)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_log_lines_become_latencies_and_failures_become_errors() {
        let log = "0 1 1500 0 1700000000 123456\n\
                   1 1 2500 0 1700000000 223456 300\n\
                   1 2 failed 0 1700000000 323456\n\
                   \n";
        let mut recorder = Recorder::new();
        parse_log(log, &mut recorder);
        let summary = recorder.summary(Duration::from_secs(1));
        assert_eq!(summary.requests, 3);
        assert_eq!(summary.errors, 1);
        assert_eq!(summary.failures["wrong answer"], 1);
        assert!((summary.max_ms - 2.5).abs() < 0.01, "{summary:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bare_server_answers_with_the_given_bytes() {
        let server = BareServer::start(Bytes::from_static(b"{\"id\":\"x\"}")).expect("server");
        let body = reqwest::get(format!("http://{}/v1/products/abc", server.addr))
            .await
            .expect("answer")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "{\"id\":\"x\"}");
    }
}
