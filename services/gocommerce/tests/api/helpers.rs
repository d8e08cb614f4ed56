//! Starts the whole platform in-process for a test: every component on a free
//! port, each service on a fresh database of its own, and a client for the
//! REST API. Spans are recorded in memory so tests can follow a trace.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use gocommerce::{Component, Running, start};
use gocommerce_platform::{Readiness, Shutdown};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use uuid::Uuid;

pub const ADMIN_EMAIL: &str = "admin@gocommerce.test";
pub const ADMIN_PASSWORD: &str = "admin-password-123";
pub const PASSWORD: &str = "correct horse battery";

static SPANS: LazyLock<InMemorySpanExporter> = LazyLock::new(|| {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("tests");
    opentelemetry::global::set_tracer_provider(provider);
    // Logs only when asked for: TEST_LOG=1 cargo test.
    let fmt = std::env::var("TEST_LOG")
        .is_ok()
        .then(|| tracing_subscriber::fmt::layer().with_test_writer());
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        ))
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    exporter
});

/// Spans finished so far, in every test of this binary.
pub fn finished_spans() -> Vec<SpanData> {
    SPANS.get_finished_spans().unwrap_or_default()
}

/// The environment of a fresh platform: free ports, fresh databases.
pub fn test_env() -> HashMap<String, String> {
    let id = Uuid::new_v4().simple().to_string();
    let mut env = HashMap::new();
    for service in [
        "AUTH",
        "USER",
        "PRODUCT",
        "ORDER",
        "PAYMENT",
        "NOTIFICATION",
    ] {
        env.insert(format!("{service}_GRPC_ADDR"), "127.0.0.1:0".to_owned());
        env.insert(
            format!("{service}_DATABASE_URL"),
            format!(
                "postgres://postgres@127.0.0.1:5432/gct_{}_{id}",
                service.to_lowercase()
            ),
        );
    }
    for (key, value) in [
        ("ADMIN_ADDR", "127.0.0.1:0".to_owned()),
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("GOCOMMERCE_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("GOCOMMERCE_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
        // Tests log in far more often than people do.
        ("GATEWAY_AUTH_RATE_PER_MINUTE", "100000".to_owned()),
        // Exchanges and queues of this test only; RabbitMQ drops them after use.
        ("AMQP_NAMESPACE", format!("test-{id}")),
        ("AMQP_QUEUE_EXPIRES_SECONDS", "60".to_owned()),
    ] {
        env.insert(key.to_owned(), value);
    }
    env
}

pub struct TestApp {
    pub address: String,
    pub admin_address: String,
    pub auth_port: Option<u16>,
    pub env: HashMap<String, String>,
    pub http: Client,
    pub shutdown: Shutdown,
    pub running: Option<Running>,
    /// Set by `stop`, so a restart on the same databases finds them.
    keep_databases: bool,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if !self.keep_databases {
            drop_databases(&self.env);
        }
    }
}

/// Drops the test's databases, so runs leave nothing behind. FORCE ends the
/// connections of the pools that are still closing.
pub fn drop_databases(env: &HashMap<String, String>) {
    let names: Vec<String> = env
        .iter()
        .filter(|(key, _)| key.ends_with("_DATABASE_URL"))
        .filter_map(|(_, url)| url.rsplit('/').next().map(str::to_owned))
        .filter(|name| name.starts_with("gct_"))
        .collect();
    gocommerce_platform::testing::drop_databases(names);
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Component::All, test_env()).await
}

pub async fn spawn_with(component: Component, env: HashMap<String, String>) -> TestApp {
    LazyLock::force(&SPANS);
    // As in production: internal servers outlive the gateway's in-flight requests.
    let shutdown = Shutdown::with_drain(std::time::Duration::from_secs(2));
    let running = start(component, &env, Readiness::new(shutdown.clone()))
        .await
        .expect("the platform starts");
    let address = running
        .gateway_port
        .map(|port| format!("http://127.0.0.1:{port}"))
        .unwrap_or_default();
    TestApp {
        address,
        admin_address: format!("http://127.0.0.1:{}", running.admin_port),
        auth_port: running.auth_port,
        env,
        http: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        shutdown,
        running: Some(running),
        keep_databases: false,
    }
}

impl TestApp {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.address))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path)
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Response {
        self.post_json(
            "/v1/auth/register",
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers a fresh customer and logs in: (email, token pair).
    pub async fn customer(&self) -> (String, Value) {
        let email = format!("{}@example.com", Uuid::new_v4().simple());
        let response = self.register(&email, PASSWORD, "Test Customer").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let tokens = self.login(&email, PASSWORD).await;
        assert_eq!(tokens.status(), StatusCode::OK);
        (email, tokens.json().await.expect("token json"))
    }

    /// The bootstrap admin's access token.
    pub async fn admin_token(&self) -> String {
        let response = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// A connection to the auth service's database.
    pub async fn auth_db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.env["AUTH_DATABASE_URL"])
            .await
            .expect("auth database")
    }

    /// A connection to the user service's database.
    pub async fn user_db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.env["USER_DATABASE_URL"])
            .await
            .expect("user database")
    }

    /// A connection to the notification service's database.
    pub async fn notification_db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.env["NOTIFICATION_DATABASE_URL"])
            .await
            .expect("notification database")
    }

    /// A connection to the order service's database.
    pub async fn order_db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.env["ORDER_DATABASE_URL"])
            .await
            .expect("order database")
    }

    /// A connection to the payment service's database.
    pub async fn payment_db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.env["PAYMENT_DATABASE_URL"])
            .await
            .expect("payment database")
    }

    /// The id of the account with `email`, read off the auth database.
    pub async fn account_id(&self, email: &str) -> String {
        sqlx::query_scalar("SELECT id::text FROM accounts WHERE email = $1")
            .bind(email)
            .fetch_one(&self.auth_db().await)
            .await
            .expect("the account")
    }

    /// A gRPC client of the auth service itself, past the gateway, as a peer
    /// inside the cluster would call it.
    pub async fn auth_service(
        &self,
    ) -> gocommerce_proto::auth::v1::auth_service_client::AuthServiceClient<tonic::transport::Channel>
    {
        let ports = &self.running.as_ref().expect("running").ports;
        gocommerce_proto::auth::v1::auth_service_client::AuthServiceClient::connect(format!(
            "http://127.0.0.1:{}",
            ports[&gocommerce_platform::config::ServiceName::Auth]
        ))
        .await
        .expect("auth service")
    }

    /// Stops the platform and waits until everything has shut down; the
    /// databases stay for a restart with the same environment.
    pub async fn stop(mut self) {
        self.keep_databases = true;
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            running
                .wait(std::time::Duration::from_secs(5))
                .await
                .expect("clean shutdown");
        }
    }
}

/// Asserts a problem+json answer with `status` and returns its body.
/// A gRPC request carrying `message` as the account `user_id` with `role`,
/// as a gateway (or one that has not yet read the ended sessions) names
/// its caller to a service.
pub fn as_caller<T>(
    message: T,
    user_id: &str,
    role: gocommerce_platform::Role,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    gocommerce_platform::Caller {
        user_id: Uuid::parse_str(user_id).expect("a user id"),
        role,
    }
    .write_to(request.metadata_mut());
    request
}

/// Rolls `blocker` back once `waiters` connections to `db`'s database wait
/// on a lock (or after 10 s): requests made at once all reach what the
/// blocker holds before any of them gets past it.
pub async fn release_when_waiting(
    db: &sqlx::PgPool,
    blocker: sqlx::Transaction<'_, sqlx::Postgres>,
    waiters: i64,
) {
    wait_for_lock_waiters(db, waiters).await;
    blocker.rollback().await.expect("rollback");
}

pub use gocommerce_platform::testing::wait_for_lock_waiters;

pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    body
}

/// The response's Retry-After header, if it has one.
pub fn retry_after(response: &Response) -> Option<&str> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
}

/// Sends a request with an optional bearer token and JSON body.
pub async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut request = app.request(method, path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request sent")
}

/// Asserts `status` and returns the JSON body.
pub async fn json_ok(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    response.json().await.expect("json")
}

/// The `field` of each entry of a validation problem's `errors`.
pub fn problem_fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect()
}

/// Percent-encodes a value (e.g. a page token) for a query string.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The whole platform with `service`'s database (`PRODUCT`, say) reached
/// through a [`DbProxy`], which the test can cut.
pub async fn spawn_behind_proxy(service: &str) -> (TestApp, DbProxy) {
    let proxy = DbProxy::start().await;
    let mut env = test_env();
    let key = format!("{service}_DATABASE_URL");
    let url = proxy.url(&env[&key]);
    env.insert(key, url);
    (spawn_with(Component::All, env).await, proxy)
}

/// A TCP proxy to the test PostgreSQL that a test can cut, as an outage
/// would: its port then refuses connections, and every connection through
/// it is closed. [`DbProxy::restore`] listens on the same port again.
pub struct DbProxy {
    port: u16,
    /// The accept loop. Aborting it drops its `JoinSet`, which aborts every
    /// connection it carries.
    serving: Option<tokio::task::AbortHandle>,
}

impl DbProxy {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        Self {
            port,
            serving: Some(Self::serve(listener)),
        }
    }

    /// `url` with the proxy in place of the server.
    pub fn url(&self, url: &str) -> String {
        url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port))
    }

    pub fn cut(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }

    pub async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the same port again");
        self.serving = Some(Self::serve(listener));
    }

    fn serve(listener: tokio::net::TcpListener) -> tokio::task::AbortHandle {
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let mut server = tokio::net::TcpStream::connect("127.0.0.1:5432")
                        .await
                        .expect("PostgreSQL");
                    // Ends when either side closes; an outage is the abort.
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut server).await;
                });
            }
        })
        .abort_handle()
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A loopback port nothing listens on, for now, below the kernel's ephemeral
/// range, for a child process to listen on. A port from `bind(0)` is in that
/// range, so another test's listener, bound to port 0 meanwhile, could be
/// given it before the child binds it: the child then fails to start and the
/// test talks to the other listener instead. Each call in this process gives
/// a different port, and other test binaries start elsewhere in the range.
pub fn unused_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("the ephemeral port range");
    let low: u32 = range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .expect("a port number");
    let (first, span) = (low / 2, low - low / 2);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no unused port below the ephemeral range");
        let port = u16::try_from(first + start.wrapping_add(n) % span).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
