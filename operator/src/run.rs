//! `gocommerce-operator run`: the admin server, leader election and the
//! controller that watches GoCommerce resources and what they own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service as KubeService;
use kube::runtime::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{error, info, warn};

use crate::controller::{self, Context, Settings};
use crate::crd::GoCommerce;
use crate::leader::{LeaderElector, LeaderError};
use crate::meta::{LABEL_MANAGED_BY, MANAGER};
use crate::metrics::{self, Health, Metrics, MetricsError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to the API server: {0}")]
    Connect(#[source] kube::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("leader election needs the operator's namespace (POD_NAMESPACE or --lease-namespace)")]
    NoLeaseNamespace,
}

/// How `run` is configured (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// Only watch this namespace; all namespaces when unset.
    pub namespace: Option<String>,
    pub admin_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub lease_duration: Duration,
    /// This replica's name in the lease and in events (the pod name).
    pub identity: String,
}

/// Runs until SIGTERM or SIGINT, or until the lease is lost.
pub async fn run(options: Options) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new()?);
    let health = Arc::new(Health::default());
    let admin = metrics::router(metrics.clone(), health.clone());
    let addr = options.admin_addr;
    let server = tokio::spawn(metrics::serve(addr, admin));
    info!(%addr, "admin server listening");

    let client = Client::try_default().await.map_err(RunError::Connect)?;
    let version = client
        .apiserver_version()
        .await
        .map_err(RunError::Connect)?;
    info!(version = %version.git_version, "connected to the API server");
    // Ready means able to work: a standby replica is ready too, or a rolling
    // update of the operator would wait for a lease the old pod holds.
    health.set_ready(true);

    let elector = if options.leader_election {
        let namespace = options
            .lease_namespace
            .clone()
            .ok_or(RunError::NoLeaseNamespace)?;
        let api: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        let elector = LeaderElector::new(
            api,
            &options.lease_name,
            &options.identity,
            options.lease_duration,
        );
        let renewed = tokio::select! {
            acquired = elector.acquire() => acquired?,
            () = shutdown_signal() => {
                info!("stopping before becoming leader");
                return Ok(());
            }
        };
        Some((elector, renewed))
    } else {
        None
    };
    metrics.set_leader(true);

    let context = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Some(options.identity.clone()),
        Settings::default(),
    ));
    let outcome = tokio::select! {
        () = controller(client, options.namespace.clone(), context) => Ok(()),
        lost = hold(elector.as_ref()) => Err(RunError::Leader(lost)),
        joined = server => match joined {
            Ok(Err(e)) => Err(RunError::Metrics(e)),
            _ => Ok(()),
        },
    };
    metrics.set_leader(false);
    if let Some((elector, _)) = &elector
        && let Err(error) = elector.release().await
    {
        warn!(%error, "cannot release the lease");
    }
    outcome
}

async fn hold(elector: Option<&(LeaderElector, tokio::time::Instant)>) -> LeaderError {
    match elector {
        Some((elector, renewed)) => elector.hold(*renewed).await,
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn controller(client: Client, namespace: Option<String>, context: Arc<Context>) {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    info!(namespace = ns.unwrap_or("*"), "starting the controller");
    Controller::new(api::<GoCommerce>(&client, ns), watcher::Config::default())
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<KubeService>(&client, ns), owned)
        .graceful_shutdown_on(shutdown_signal())
        .run(controller::reconcile, controller::error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(resource = %object, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(_, object)) => {
                    tracing::debug!(resource = %object, "reconcile failed")
                }
                Err(error) => error!(%error, "controller error"),
            }
        })
        .await;
}
