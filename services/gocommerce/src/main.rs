//! `gocommerce <component>`: runs one GoCommerce service, or all of them.

use clap::Parser;
use gocommerce::report::{self, Report};
use gocommerce::{Component, start};
use gocommerce_platform::config::{CommonConfig, ProcessEnv};
use gocommerce_platform::{Readiness, Shutdown, telemetry};

// jemalloc rather than glibc's malloc: a buffer freed on another thread than
// the one that allocated it (a request's bytes cross several tasks) does not
// take the arena's lock, which was half the futex calls of a loaded
// `gocommerce all`; and its background thread hands freed pages back to the
// kernel after a while, so a process that was busy shrinks when idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "gocommerce",
    version,
    about = "The GoCommerce e-commerce backend"
)]
struct Cli {
    /// The component to run.
    #[arg(value_enum)]
    component: Component,
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    let cli = Cli::parse();
    tikv_jemalloc_ctl::background_thread::write(true)
        .map_err(|e| anyhow::anyhow!("cannot start the allocator's background thread: {e}"))?;
    let env = ProcessEnv;
    let _telemetry = telemetry::init(&env, cli.component.service_name())?;
    let common = CommonConfig::from_env(&env)?;
    let grace = common.shutdown_grace;

    let shutdown = Shutdown::with_drain(common.shutdown_drain);
    shutdown.listen_for_signals();
    let running = match start(cli.component, &env, Readiness::new(shutdown.clone())).await {
        Ok(running) => running,
        // Stopped on purpose before everything had started: not a failure.
        Err(error) if shutdown.is_triggered() => {
            tracing::info!(error = %report::chain(&error), "stopped while starting");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(component = ?cli.component, admin_port = running.admin_port, "started");
    running.wait(grace).await?;
    tracing::info!("stopped");
    Ok(())
}
