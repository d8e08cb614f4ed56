//! `gocommerce-operator run | crd | render -f FILE`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use gocommerce_operator::{render, run, telemetry, uninstall};

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
    Run(RunArgs),
    /// Delete a GoCommerce resource and wait until the operator has let it
    /// go (the chart's pre-delete hook).
    Delete {
        #[arg(long)]
        name: String,
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: String,
        #[arg(long, default_value_t = 240)]
        timeout_seconds: u64,
    },
    /// Print the CustomResourceDefinition.
    Crd,
    /// Print every object the operator would apply for the resources in a file.
    Render {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Only watch this namespace (all namespaces when unset or empty).
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
}

impl RunArgs {
    fn into_options(self) -> run::Options {
        run::Options {
            // The chart always sets WATCH_NAMESPACE, to "" for every
            // namespace; clap reads that as a namespace named "".
            namespace: self.namespace.filter(|ns| !ns.is_empty()),
            admin_addr: self.admin_addr,
            leader_election: self.leader_election,
            lease_name: self.lease_name,
            lease_namespace: self.lease_namespace,
            lease_duration: Duration::from_secs(self.lease_duration_seconds.max(5)),
            identity: self
                .identity
                .unwrap_or_else(|| format!("gocommerce-operator-{}", std::process::id())),
        }
    }
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
        Command::Delete {
            name,
            namespace,
            timeout_seconds,
        } => {
            let _telemetry = telemetry::init()?;
            let client = kube::Client::try_default()
                .await
                .context("cannot connect to the API server")?;
            let timeout = Duration::from_secs(timeout_seconds);
            uninstall::delete_and_wait(client, &namespace, &name, timeout).await?;
            Ok(())
        }
        Command::Run(args) => {
            let _telemetry = telemetry::init()?;
            run::run(args.into_options()).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(args: &[&str]) -> Option<String> {
        let argv = ["gocommerce-operator", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(run) => run.into_options().namespace,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn an_empty_namespace_watches_every_namespace() {
        // Arrange
        let empty = ["--namespace", ""];

        // Act
        let namespace = watched(&empty);

        // Assert
        assert_eq!(namespace, None);
    }

    #[test]
    fn a_named_namespace_is_the_only_one_watched() {
        // Arrange
        let shop = ["--namespace", "shop"];

        // Act
        let namespace = watched(&shop);

        // Assert
        assert_eq!(namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn the_arguments_of_the_charts_uninstall_hook_parse() {
        // Arrange: as templates/uninstall-hook.yaml passes them.
        let argv = [
            "gocommerce-operator",
            "delete",
            "--name=gocommerce",
            "--namespace=gocommerce-system",
            "--timeout-seconds=240",
        ];

        // Act
        let command = Cli::try_parse_from(argv).expect("parses").command;

        // Assert
        assert!(
            matches!(
                &command,
                Command::Delete { name, namespace, timeout_seconds: 240 }
                    if name == "gocommerce" && namespace == "gocommerce-system"
            ),
            "{command:?}"
        );
    }
}
