//! Starts the payment service on a free port with a fresh database.

use std::collections::HashMap;
use std::time::Duration;

use gocommerce_payment::{Application, PaymentConfig};
use gocommerce_platform::{Readiness, Shutdown};
use gocommerce_proto::common::v1::Money;
use gocommerce_proto::payment::v1::payment_service_client::PaymentServiceClient;
use gocommerce_proto::payment::v1::{ChargeRequest, GetPaymentRequest, Payment, PaymentStatus};
use tonic::transport::Channel;
use uuid::Uuid;

pub struct TestApp {
    pub client: PaymentServiceClient<Channel>,
    pub pool: sqlx::PgPool,
    pub database: String,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        gocommerce_platform::testing::drop_databases(vec![self.database.clone()]);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(&[]).await
}

/// The service with `settings` added to (or replacing) the test defaults.
pub async fn spawn_with(settings: &[(&str, &str)]) -> TestApp {
    let database = format!("gct_payment_{}", Uuid::new_v4().simple());
    let mut env: HashMap<String, String> = [
        ("PAYMENT_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        (
            "PAYMENT_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        ),
        ("PAYMENT_PROCESSOR_BACKOFF_MS", "5".to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
        // A namespace of its own: other tests' refund workers never see its tasks.
        ("AMQP_NAMESPACE", format!("test-{database}")),
        ("AMQP_QUEUE_EXPIRES_SECONDS", "60".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let shutdown = Shutdown::new();
    let app = Application::build(
        PaymentConfig::from_env(&env).expect("config"),
        Readiness::new(shutdown.clone()),
    )
    .await
    .expect("payment service starts");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let client = PaymentServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connects");
    let pool = sqlx::PgPool::connect(&env["PAYMENT_DATABASE_URL"])
        .await
        .expect("database");
    TestApp {
        client,
        pool,
        database,
        shutdown,
    }
}

pub fn usd(amount: i64) -> Option<Money> {
    Some(Money {
        amount,
        currency: "USD".to_owned(),
    })
}

pub fn charge_request(order_id: Uuid, amount: i64, method: &str) -> ChargeRequest {
    ChargeRequest {
        order_id: order_id.to_string(),
        user_id: Uuid::new_v4().to_string(),
        amount: usd(amount),
        payment_method: method.to_owned(),
    }
}

impl TestApp {
    pub async fn charge(&self, request: ChargeRequest) -> Result<Payment, tonic::Status> {
        self.client
            .clone()
            .charge(request)
            .await
            .map(|r| r.into_inner().payment.expect("payment"))
    }

    pub async fn payment(&self, order_id: Uuid) -> Payment {
        self.client
            .clone()
            .get_payment(GetPaymentRequest {
                order_id: order_id.to_string(),
            })
            .await
            .expect("payment exists")
            .into_inner()
            .payment
            .expect("payment")
    }

    /// Polls until the payment reaches `status` (refunds are asynchronous).
    pub async fn wait_for(&self, order_id: Uuid, status: PaymentStatus) -> Payment {
        for _ in 0..200 {
            let payment = self.payment(order_id).await;
            if payment.status == status as i32 {
                return payment;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("payment of {order_id} never reached {status:?}");
    }

    /// Routing keys of the events written to the outbox, oldest first.
    pub async fn events(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT routing_key FROM outbox ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .expect("outbox")
    }
}

/// A request carrying a customer's identity, as the gateway sends it.
pub fn as_customer<T>(user: Uuid, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "x-gocommerce-user-id",
        user.to_string().parse().expect("ascii"),
    );
    request
        .metadata_mut()
        .insert("x-gocommerce-role", "customer".parse().expect("ascii"));
    request
}
