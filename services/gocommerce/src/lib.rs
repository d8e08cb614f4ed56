//! Starts GoCommerce components in this process: one service, or all of them,
//! each on its own port (and, in `all`, its own runtime) and talking to the
//! others over real gRPC, plus the admin listener. Shared by the `gocommerce`
//! binary and the tests.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use gocommerce_platform::config::{self, CommonConfig, Env, ServiceName};
use gocommerce_platform::{Readiness, admin, listener};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub mod report;

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
    /// The components' own runtimes (`all` only), held until this is
    /// dropped.
    _runtimes: Runtimes,
}

/// The components' own runtimes, shut down in the background when dropped:
/// dropping a runtime blocks until its workers stop, which the caller's
/// (async) context must not do. Held by the launcher while `start` builds,
/// so a start that fails part way puts down those already made, and then by
/// `Running`.
#[derive(Debug, Default)]
struct Runtimes(Vec<ComponentRuntime>);

#[derive(Debug)]
enum ComponentRuntime {
    /// More than one worker.
    MultiThread(Runtime),
    /// One worker: a current-thread runtime driven by a thread of its own
    /// until the sender is dropped; the thread then drops the runtime and
    /// its tasks.
    CurrentThread(oneshot::Sender<()>),
}

impl ComponentRuntime {
    /// A runtime with `threads` workers named `gc-` and the first word of
    /// the component's name (`gc-product`: Linux keeps 15 bytes of a
    /// thread's name, which `top -H` and the bench's CPU profile show), and
    /// the handle to spawn on it.
    fn start(name: &str, threads: usize) -> std::io::Result<(Self, Handle)> {
        let short = name.split_whitespace().next().unwrap_or(name);
        let thread_name = format!("gc-{short}");
        if threads > 1 {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(thread_name)
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            return Ok((Self::MultiThread(runtime), handle));
        }
        // With one worker the multi-thread scheduler only costs: a task that
        // wakes another hands it the worker at once (its LIFO slot), so an
        // HTTP/2 connection task writes each response as its stream's task
        // finishes it, one system call per response, where a current-thread
        // runtime runs the woken connection task after the others and writes
        // the batch at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name(&thread_name)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                // Ends when the sender is dropped.
                let _ = runtime.block_on(stopped);
            })?;
        Ok((Self::CurrentThread(stop), handle))
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        for runtime in self.0.drain(..) {
            match runtime {
                ComponentRuntime::MultiThread(runtime) => runtime.shutdown_background(),
                ComponentRuntime::CurrentThread(stop) => drop(stop),
            }
        }
    }
}

/// Where components run. One component per process, as deployed, runs on
/// the caller's runtime. In `all` each component gets a runtime of its own
/// with `COMPONENT_THREADS` workers (1 by default), as if it were a process
/// of its own: a request crosses the gateway, an HTTP/2 connection and a
/// service, half a dozen tasks that a shared work-stealing runtime keeps
/// handing between its workers. On two cores that cost a third of the CPU of
/// a cached product view, and the allocator's locks contended on the frees.
struct Launcher {
    own_runtime_threads: Option<usize>,
    tasks: JoinSet<anyhow::Result<()>>,
    runtimes: Runtimes,
}

impl Launcher {
    /// Builds a component with `build(config, readiness)`, which binds its
    /// port, and spawns it; returns the port.
    async fn launch<C, A, E, F, B>(
        &mut self,
        name: &'static str,
        build: B,
        config: C,
        readiness: &Readiness,
    ) -> anyhow::Result<u16>
    where
        B: FnOnce(C, Readiness) -> F,
        F: Future<Output = Result<A, E>> + Send + 'static,
        A: Launchable + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let build = build(config, readiness.clone());
        let shutdown = readiness.shutdown().clone();
        let build = async move {
            tokio::select! {
                built = build => built.with_context(|| format!("{name} failed to start")),
                // A component can wait a while for what it needs (its
                // database, the user service for the bootstrap admin): told
                // to stop meanwhile, it stops now, not when the wait is over.
                () = shutdown.wait() => Err(anyhow::anyhow!("{name} was told to stop while starting")),
            }
        };
        let Some(threads) = self.own_runtime_threads else {
            let app = build.await?;
            let port = app.port();
            self.tasks.spawn(app.run(name));
            return Ok(port);
        };
        let (runtime, handle) = ComponentRuntime::start(name, threads)
            .with_context(|| format!("cannot start the runtime of the {name}"))?;
        // Kept before the build is awaited, so a failed build's runtime is
        // put down with the others.
        self.runtimes.0.push(runtime);
        // Built on its own runtime, so its sockets and timers belong to it.
        let app = handle
            .spawn(build)
            .await
            .with_context(|| format!("the {name} panicked while starting"))??;
        let port = app.port();
        let running = handle.spawn(app.run(name));
        self.tasks.spawn(async move {
            running
                .await
                .with_context(|| format!("the {name} panicked"))?
        });
        Ok(port)
    }
}

/// What `start` needs of a component's `Application`.
trait Launchable {
    fn port(&self) -> u16;
    fn run(self, name: &'static str) -> BoxFuture<'static, anyhow::Result<()>>;
}

macro_rules! component {
    ($($app:ty),* $(,)?) => {$(
        impl Launchable for $app {
            fn port(&self) -> u16 {
                <$app>::port(self)
            }

            fn run(self, name: &'static str) -> BoxFuture<'static, anyhow::Result<()>> {
                Box::pin(async move {
                    self.run_until_stopped()
                        .await
                        .with_context(|| format!("{name} failed"))
                })
            }
        }
    )*};
}

component!(
    gocommerce_auth::Application,
    gocommerce_user::Application,
    gocommerce_product::Application,
    gocommerce_payment::Application,
    gocommerce_order::Application,
    gocommerce_notification::Application,
    gocommerce_gateway::Application,
);

/// Builds and binds the chosen components, then spawns them.
pub async fn start(
    component: Component,
    env: &dyn Env,
    readiness: Readiness,
) -> anyhow::Result<Running> {
    let common = CommonConfig::from_env(env)?;
    let own_runtime_threads = match component {
        Component::All => Some(config::at_least(env, "COMPONENT_THREADS", 1usize, 1)?),
        _ => None,
    };
    let mut tasks = JoinSet::new();

    // Not ready until every component has started: the admin listener
    // answers first, and a component can wait a while for its database.
    readiness.starting();
    let (admin_listener, admin_port) = listener::bind("admin", common.admin_addr).await?;
    tasks.spawn(admin::serve(admin_listener, readiness.clone()).map_err_anyhow("admin listener"));
    let mut launcher = Launcher {
        own_runtime_threads,
        tasks,
        runtimes: Runtimes::default(),
    };

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
        let port = launcher
            .launch(
                "user service",
                gocommerce_user::Application::build,
                config,
                &readiness,
            )
            .await?;
        ports.insert(ServiceName::User, port);
    }

    if component.runs(Component::Product) {
        let config = gocommerce_product::ProductConfig::from_env(env)?;
        let port = launcher
            .launch(
                "product service",
                gocommerce_product::Application::build,
                config,
                &readiness,
            )
            .await?;
        ports.insert(ServiceName::Product, port);
    }

    if component.runs(Component::Auth) {
        let mut config = gocommerce_auth::AuthConfig::from_env(env)?;
        if let Some(url) = local(&ports, ServiceName::User) {
            config.user_url = url;
        }
        let port = launcher
            .launch(
                "auth service",
                gocommerce_auth::Application::build,
                config,
                &readiness,
            )
            .await?;
        ports.insert(ServiceName::Auth, port);
    }

    if component.runs(Component::Payment) {
        let config = gocommerce_payment::PaymentConfig::from_env(env)?;
        let port = launcher
            .launch(
                "payment service",
                gocommerce_payment::Application::build,
                config,
                &readiness,
            )
            .await?;
        ports.insert(ServiceName::Payment, port);
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
        let port = launcher
            .launch(
                "order service",
                gocommerce_order::Application::build,
                config,
                &readiness,
            )
            .await?;
        ports.insert(ServiceName::Order, port);
    }

    if component.runs(Component::Notification) {
        let mut config = gocommerce_notification::NotificationConfig::from_env(env)?;
        if let Some(url) = local(&ports, ServiceName::User) {
            config.user_url = url;
        }
        let port = launcher
            .launch(
                "notification service",
                gocommerce_notification::Application::build,
                config,
                &readiness,
            )
            .await?;
        ports.insert(ServiceName::Notification, port);
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
        let port = launcher
            .launch(
                "gateway",
                gocommerce_gateway::Application::build,
                config,
                &readiness,
            )
            .await?;
        gateway_port = Some(port);
    }

    readiness.started();
    Ok(Running {
        admin_port,
        auth_port: ports.get(&ServiceName::Auth).copied(),
        gateway_port,
        ports,
        readiness,
        tasks: launcher.tasks,
        _runtimes: launcher.runtimes,
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
                            tracing::error!(error = %report::chain(&error), "component failed, shutting down");
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
