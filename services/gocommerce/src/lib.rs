//! Starts GoCommerce components in this process: one service, or all of them,
//! each on its own port and talking to the others over real gRPC, plus the
//! admin listener. Shared by the `gocommerce` binary and the tests.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use gocommerce_platform::config::{CommonConfig, Env, ServiceName};
use gocommerce_platform::{Readiness, admin};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// Accounts and tokens (gRPC).
    Auth,
    /// Profiles, preferences and addresses (gRPC).
    User,
    /// Catalog, inventory and search (gRPC).
    Product,
    /// Charges and refunds (gRPC).
    Payment,
    /// Orders and the placement saga (gRPC).
    Order,
    /// Email, SMS and push from events (gRPC, RabbitMQ).
    Notification,
    /// The REST gateway.
    Gateway,
    /// Every service and the gateway in one process.
    All,
}

impl Component {
    pub fn service_name(self) -> &'static str {
        match self {
            Self::Auth => "gocommerce-auth",
            Self::User => "gocommerce-user",
            Self::Product => "gocommerce-product",
            Self::Payment => "gocommerce-payment",
            Self::Order => "gocommerce-order",
            Self::Notification => "gocommerce-notification",
            Self::Gateway => "gocommerce-gateway",
            Self::All => "gocommerce",
        }
    }

    fn runs(self, other: Component) -> bool {
        self == Self::All || self == other
    }
}

/// Components started in this process.
#[derive(Debug)]
pub struct Running {
    pub admin_port: u16,
    pub auth_port: Option<u16>,
    pub gateway_port: Option<u16>,
    /// The gRPC port of every service started here.
    pub ports: HashMap<ServiceName, u16>,
    readiness: Readiness,
    tasks: JoinSet<anyhow::Result<()>>,
}

/// Builds and binds the chosen components, then spawns them.
pub async fn start(
    component: Component,
    env: &dyn Env,
    readiness: Readiness,
) -> anyhow::Result<Running> {
    let common = CommonConfig::from_env(env)?;
    let mut tasks = JoinSet::new();

    let admin_listener = TcpListener::bind(common.admin_addr)
        .await
        .with_context(|| format!("cannot bind ADMIN_ADDR {}", common.admin_addr))?;
    let admin_port = admin_listener.local_addr()?.port();
    tasks.spawn(admin::serve(admin_listener, readiness.clone()).map_err_anyhow("admin listener"));

    // In one process the services' real ports are known: peers are pointed
    // at them, so port 0 works and no URL variable can point elsewhere.
    let mut ports: HashMap<ServiceName, u16> = HashMap::new();
    let local = |ports: &HashMap<ServiceName, u16>, service: ServiceName| {
        ports
            .get(&service)
            .map(|port| format!("http://127.0.0.1:{port}"))
    };

    // Services others call start first, so their real ports are known.
    if component.runs(Component::User) {
        let config = gocommerce_user::UserConfig::from_env(env)?;
        let app = gocommerce_user::Application::build(config, readiness.clone())
            .await
            .context("user service failed to start")?;
        ports.insert(ServiceName::User, app.port());
        tasks.spawn(app.run_until_stopped().map_err_anyhow("user service"));
    }

    if component.runs(Component::Product) {
        let config = gocommerce_product::ProductConfig::from_env(env)?;
        let app = gocommerce_product::Application::build(config, readiness.clone())
            .await
            .context("product service failed to start")?;
        ports.insert(ServiceName::Product, app.port());
        tasks.spawn(app.run_until_stopped().map_err_anyhow("product service"));
    }

    if component.runs(Component::Auth) {
        let mut config = gocommerce_auth::AuthConfig::from_env(env)?;
        if let Some(url) = local(&ports, ServiceName::User) {
            config.user_url = url;
        }
        let app = gocommerce_auth::Application::build(config, readiness.clone())
            .await
            .context("auth service failed to start")?;
        ports.insert(ServiceName::Auth, app.port());
        tasks.spawn(app.run_until_stopped().map_err_anyhow("auth service"));
    }

    if component.runs(Component::Payment) {
        let config = gocommerce_payment::PaymentConfig::from_env(env)?;
        let app = gocommerce_payment::Application::build(config, readiness.clone())
            .await
            .context("payment service failed to start")?;
        ports.insert(ServiceName::Payment, app.port());
        tasks.spawn(app.run_until_stopped().map_err_anyhow("payment service"));
    }

    if component.runs(Component::Order) {
        let mut config = gocommerce_order::OrderConfig::from_env(env)?;
        if let Some(url) = local(&ports, ServiceName::Product) {
            config.product_url = url;
        }
        if let Some(url) = local(&ports, ServiceName::Payment) {
            config.payment_url = url;
        }
        if let Some(url) = local(&ports, ServiceName::User) {
            config.user_url = url;
        }
        let app = gocommerce_order::Application::build(config, readiness.clone())
            .await
            .context("order service failed to start")?;
        ports.insert(ServiceName::Order, app.port());
        tasks.spawn(app.run_until_stopped().map_err_anyhow("order service"));
    }

    if component.runs(Component::Notification) {
        let mut config = gocommerce_notification::NotificationConfig::from_env(env)?;
        if let Some(url) = local(&ports, ServiceName::User) {
            config.user_url = url;
        }
        let app = gocommerce_notification::Application::build(config, readiness.clone())
            .await
            .context("notification service failed to start")?;
        ports.insert(ServiceName::Notification, app.port());
        tasks.spawn(
            app.run_until_stopped()
                .map_err_anyhow("notification service"),
        );
    }

    let mut gateway_port = None;
    if component.runs(Component::Gateway) {
        let mut config = gocommerce_gateway::GatewayConfig::from_env(env)?;
        for (service, url) in [
            (ServiceName::Auth, &mut config.auth_url),
            (ServiceName::User, &mut config.user_url),
            (ServiceName::Product, &mut config.product_url),
            (ServiceName::Order, &mut config.order_url),
            (ServiceName::Payment, &mut config.payment_url),
            (ServiceName::Notification, &mut config.notification_url),
        ] {
            if let Some(local) = local(&ports, service) {
                *url = local;
            }
        }
        let app = gocommerce_gateway::Application::build(config, readiness.clone())
            .await
            .context("gateway failed to start")?;
        gateway_port = Some(app.port());
        tasks.spawn(app.run_until_stopped().map_err_anyhow("gateway"));
    }

    Ok(Running {
        admin_port,
        auth_port: ports.get(&ServiceName::Auth).copied(),
        gateway_port,
        ports,
        readiness,
        tasks,
    })
}

impl Running {
    /// Runs until the shutdown signal (or the first component to fail), then
    /// gives in-flight requests `grace` to finish before stopping the rest.
    pub async fn wait(mut self, grace: Duration) -> anyhow::Result<()> {
        let shutdown = self.readiness.shutdown().clone();
        let mut first_error = None;
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    None => break,
                    Some(outcome) => {
                        let outcome = outcome.context("a component panicked").and_then(|r| r);
                        if let Err(error) = outcome {
                            tracing::error!(error = format!("{error:#}"), "component failed, shutting down");
                            first_error.get_or_insert(error);
                        }
                        // One component ending means the process is going down.
                        shutdown.trigger();
                    }
                },
                () = shutdown.grace_expired(grace) => {
                    tracing::warn!(grace_seconds = grace.as_secs(), "grace period over, aborting what is still running");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

trait MapErrAnyhow {
    type Output;
    fn map_err_anyhow(self, what: &'static str) -> Self::Output;
}

impl<F, E> MapErrAnyhow for F
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    type Output = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

    fn map_err_anyhow(self, what: &'static str) -> Self::Output {
        Box::pin(async move { self.await.with_context(|| format!("{what} failed")) })
    }
}
