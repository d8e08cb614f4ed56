//! Starting `gocommerce all` on free loopback ports with fresh databases (as
//! scripts/schemathesis.sh does), reading its memory, stopping it and
//! dropping its databases; and the psql/pgbench plumbing around PostgreSQL.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::Rng as _;
use tokio::process::{Child, Command};

pub const SERVICES: [&str; 6] = [
    "auth",
    "user",
    "product",
    "order",
    "payment",
    "notification",
];
pub const ADMIN_EMAIL: &str = "admin@bench.test";
pub const ADMIN_PASSWORD: &str = "bench-admin-password";

/// The PostgreSQL server every database of the run lives on.
#[derive(Debug, Clone)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl Postgres {
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, database
        )
    }

    fn psql(&self, database: &str) -> Command {
        let mut command = Command::new("psql");
        command
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-qAt"])
            .stdin(Stdio::null());
        command
    }

    /// Runs SQL text (several statements allowed) in `database`, with
    /// `search_path` set when given; returns psql's output.
    pub async fn exec(
        &self,
        database: &str,
        search_path: Option<&str>,
        vars: &[(&str, String)],
        sql: &str,
    ) -> anyhow::Result<String> {
        let mut command = self.psql(database);
        if let Some(path) = search_path {
            command.env("PGOPTIONS", format!("-c search_path={path}"));
        }
        for (name, value) in vars {
            command.args(["-v", &format!("{name}={value}")]);
        }
        let file =
            std::env::temp_dir().join(format!("gocommerce-bench-{}.sql", uuid::Uuid::new_v4()));
        tokio::fs::write(&file, sql).await?;
        let output = checked_output(command.arg("-f").arg(&file), "psql").await;
        let _ = tokio::fs::remove_file(&file).await;
        let output = output.with_context(|| format!("in database {database}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.exec(
            "postgres",
            None,
            &[],
            &format!("CREATE DATABASE \"{name}\""),
        )
        .await
        .map(|_| ())
    }

    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.exec(
            "postgres",
            None,
            &[],
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await
        .map(|_| ())
    }
}

/// Runs `command` to its end; an error if it cannot start or exits
/// unsuccessfully, carrying its standard error. `what` names it there.
pub async fn checked_output(
    command: &mut Command,
    what: &str,
) -> anyhow::Result<std::process::Output> {
    let output = command
        .output()
        .await
        .with_context(|| format!("{what} could not be started"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// A port nobody uses right now, from below the kernel's ephemeral range.
/// A port from `bind(0)` comes from that range, where until gocommerce binds
/// it the kernel may hand it to any outgoing connection (its services open
/// dozens while starting) or to one of its own port-0 listeners, and where
/// a readiness probe to a port nobody listens on yet can connect to itself;
/// any of these fails the start. Below the range none of them can happen.
pub fn free_port(taken: &[u16]) -> anyhow::Result<u16> {
    let low = ephemeral_start();
    let floor = (low / 2).max(1024);
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(floor..low.max(floor + 1));
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {floor} and {low}")
}

/// The first port of the kernel's ephemeral range (Linux's default if it
/// cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Memory of a process from /proc/<pid>/status, in MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Memory {
    pub rss_mib: f64,
    pub hwm_mib: f64,
}

/// Reads VmRSS and VmHWM (kB) out of a /proc/<pid>/status text.
pub fn parse_status(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    Memory {
        rss_mib: field("VmRSS:"),
        hwm_mib: field("VmHWM:"),
    }
}

pub fn memory(pid: u32) -> Memory {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| parse_status(&s))
        .unwrap_or_default()
}

/// Waits (up to `limit`) until the process uses under a tenth of a core, so
/// work left over from one measurement (requests the client gave up on,
/// outbox relays) does not run into the next.
pub async fn quiesce(pid: u32, limit: Duration) {
    let ticks = || crate::cpu::Stat::read(&format!("/proc/{pid}/stat")).map(|s| s.own());
    let deadline = tokio::time::Instant::now() + limit;
    let window = Duration::from_millis(250);
    while tokio::time::Instant::now() < deadline {
        let Some(before) = ticks() else { return };
        tokio::time::sleep(window).await;
        let Some(after) = ticks() else { return };
        // 100 ticks a second (USER_HZ on Linux): 0.1 core over 250 ms is 2.5.
        if after.saturating_sub(before) <= 2 {
            return;
        }
    }
}

/// What `gocommerce all` is started with; kept so it can be restarted with
/// the same databases and ports.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub postgres: Postgres,
    pub run_id: String,
    pub smtp_url: String,
    pub gateway_port: u16,
    pub admin_port: u16,
    /// A program and its arguments that run the binary (valgrind, for the
    /// instruction count); empty to run it directly.
    pub wrapper: Vec<String>,
    /// How long starting may take until the gateway is ready.
    pub ready_within: Duration,
}

impl Launch {
    pub fn new(
        binary: &Path,
        postgres: &Postgres,
        run_id: &str,
        smtp_url: &str,
    ) -> anyhow::Result<Self> {
        let gateway_port = free_port(&[])?;
        Ok(Self {
            binary: binary.to_owned(),
            postgres: postgres.clone(),
            run_id: run_id.to_owned(),
            smtp_url: smtp_url.to_owned(),
            gateway_port,
            admin_port: free_port(&[gateway_port])?,
            wrapper: Vec::new(),
            ready_within: Duration::from_secs(60),
        })
    }
}

/// Whether the product service keeps product views in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductCache {
    /// `PRODUCT_CACHE_TTL_MS=0`: every view reads PostgreSQL.
    Off,
    /// The default configuration.
    On,
}

/// A running `gocommerce all` and the databases it was given.
#[derive(Debug)]
pub struct Gocommerce {
    child: Child,
    pub pid: u32,
    pub base: String,
    pub databases: Vec<(String, String)>,
    pub log: PathBuf,
    pub cache: ProductCache,
    launch: Launch,
}

impl Gocommerce {
    /// Starts the binary with `gct_<svc>_bench<id>` databases (created by its
    /// migrations on the first start; the test clean-up drops leftovers), a
    /// bootstrap admin, long-lived access tokens, no auth rate limit and
    /// emails sent to the launch's SMTP URL, and waits until the gateway is
    /// ready.
    pub async fn start(launch: &Launch, cache: ProductCache) -> anyhow::Result<Self> {
        let run_id = &launch.run_id;
        let postgres = &launch.postgres;
        let log = std::env::temp_dir().join(format!("gocommerce-bench-{run_id}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command = match launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&launch.binary);
                command
            }
            None => Command::new(&launch.binary),
        };
        command
            .arg("all")
            .env("GATEWAY_ADDR", format!("127.0.0.1:{}", launch.gateway_port))
            .env("ADMIN_ADDR", format!("127.0.0.1:{}", launch.admin_port))
            .env("GOCOMMERCE_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("GOCOMMERCE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("GATEWAY_AUTH_RATE_PER_MINUTE", "100000000")
            .env("ACCESS_TOKEN_TTL_SECONDS", "86400")
            .env("SHUTDOWN_GRACE_SECONDS", "2")
            .env("SMTP_URL", &launch.smtp_url)
            .env("AMQP_NAMESPACE", format!("bench_{run_id}."))
            .env("AMQP_QUEUE_EXPIRES_SECONDS", "600")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        if cache == ProductCache::Off {
            command.env("PRODUCT_CACHE_TTL_MS", "0");
        }
        let mut databases = Vec::new();
        for svc in SERVICES {
            let upper = svc.to_ascii_uppercase();
            let name = format!("gct_{svc}_bench{run_id}");
            command.env(format!("{upper}_GRPC_ADDR"), "127.0.0.1:0");
            command.env(format!("{upper}_DATABASE_URL"), postgres.url(&name));
            databases.push((svc.to_owned(), name));
        }
        let program = command.as_std().get_program().to_owned();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id().context("gocommerce exited at once")?;
        let mut server = Self {
            child,
            pid,
            base: format!("http://127.0.0.1:{}", launch.gateway_port),
            databases,
            log,
            cache,
            launch: launch.clone(),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Stops this process (its databases stay) and starts it again on the
    /// same ports and databases with the product cache as asked.
    pub async fn restart(&mut self, cache: ProductCache) -> anyhow::Result<()> {
        self.terminate().await;
        *self = Self::start(&self.launch, cache).await?;
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        let deadline = tokio::time::Instant::now() + self.launch.ready_within;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "gocommerce exited with {status} before it was ready; log: {}",
                    self.log.display()
                );
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!(
            "gocommerce was not ready within {} s; log: {}",
            self.launch.ready_within.as_secs(),
            self.log.display()
        )
    }

    pub fn postgres(&self) -> &Postgres {
        &self.launch.postgres
    }

    pub fn database(&self, svc: &str) -> Option<&str> {
        self.databases
            .iter()
            .find(|(s, _)| s == svc)
            .map(|(_, name)| name.as_str())
    }

    pub fn memory(&self) -> Memory {
        memory(self.pid)
    }

    /// SIGTERM, a grace period, then SIGKILL.
    async fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Stops the process, then drops the databases.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.terminate().await;
        for (_, name) in &self.databases {
            self.launch.postgres.drop_database(name).await?;
        }
        // Kept only when starting failed (the error names it).
        let _ = std::fs::remove_file(&self.log);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_ports_are_free_distinct_and_below_the_ephemeral_range() {
        let low = ephemeral_start();

        let gateway = free_port(&[]).expect("a port");
        let admin = free_port(&[gateway]).expect("another port");

        assert!(gateway < low && admin < low, "{gateway} {admin} {low}");
        assert_ne!(gateway, admin);
        TcpListener::bind(("127.0.0.1", gateway)).expect("gateway port free");
        TcpListener::bind(("127.0.0.1", admin)).expect("admin port free");
    }

    #[test]
    fn resident_and_peak_memory_are_read_in_mebibytes() {
        let status =
            "Name:\tgocommerce\nVmPeak:\t  999 kB\nVmHWM:\t   204800 kB\nVmRSS:\t   102400 kB\n";
        let memory = parse_status(status);
        assert_eq!(memory.rss_mib, 100.0);
        assert_eq!(memory.hwm_mib, 200.0);
    }

    #[test]
    fn a_status_without_memory_lines_reads_as_zero() {
        assert_eq!(parse_status("Name:\tkthreadd\n"), Memory::default());
    }
}
