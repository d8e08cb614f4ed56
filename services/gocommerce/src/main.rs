//! `gocommerce <component>`: runs one GoCommerce service, or all of them.

use clap::Parser;
use gocommerce::{Component, start};
use gocommerce_platform::config::{CommonConfig, ProcessEnv};
use gocommerce_platform::{Readiness, Shutdown, telemetry};

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
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = ProcessEnv;
    let _telemetry = telemetry::init(&env, cli.component.service_name())?;
    let common = CommonConfig::from_env(&env)?;
    let grace = common.shutdown_grace;

    let shutdown = Shutdown::with_drain(common.shutdown_drain);
    shutdown.listen_for_signals();
    let running = start(cli.component, &env, Readiness::new(shutdown)).await?;
    tracing::info!(component = ?cli.component, admin_port = running.admin_port, "started");
    running.wait(grace).await?;
    tracing::info!("stopped");
    Ok(())
}
