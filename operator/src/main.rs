//! `gocommerce-operator run | crd | render -f FILE`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gocommerce_operator::{render, run, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "gocommerce-operator",
    version,
    about = "Runs GoCommerce on Kubernetes from GoCommerce resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch GoCommerce resources and reconcile them.
    Run {
        /// Only watch this namespace (all namespaces when unset).
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Listener of /metrics, /healthz and /readyz.
        #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8080")]
        admin_addr: SocketAddr,
        /// Hold a Lease so that only one replica reconciles.
        #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
        leader_election: bool,
        #[arg(long, env = "LEASE_NAME", default_value = "gocommerce-operator")]
        lease_name: String,
        /// Namespace of the Lease: the operator's own.
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
        lease_duration_seconds: u64,
        /// This replica's identity in the Lease and in events.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
    },
    /// Print the CustomResourceDefinition.
    Crd,
    /// Print every object the operator would apply for the resources in a file.
    Render {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

fn print(text: &str) -> anyhow::Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print(&render::crd_yaml()?),
        Command::Render { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            print(&render::render(&file.display().to_string(), &text)?)
        }
        Command::Run {
            namespace,
            admin_addr,
            leader_election,
            lease_name,
            lease_namespace,
            lease_duration_seconds,
            identity,
        } => {
            let _telemetry = telemetry::init()?;
            let identity =
                identity.unwrap_or_else(|| format!("gocommerce-operator-{}", std::process::id()));
            run::run(run::Options {
                namespace,
                admin_addr,
                leader_election,
                lease_name,
                lease_namespace,
                lease_duration: Duration::from_secs(lease_duration_seconds.max(5)),
                identity,
            })
            .await?;
            Ok(())
        }
    }
}
