//! Builds the order service: database, clients of its peers, the bound gRPC
//! listener, and the loops beside the server (saga recovery, outbox relay,
//! status listener).

use gocommerce_platform::broker::{Broker, Publisher};
use gocommerce_platform::db::{Db, DbError};
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_platform::listener::{self, BindError};
use gocommerce_platform::{Readiness, outbox};
use gocommerce_proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};
use gocommerce_proto::payment::v1::payment_service_client::PaymentServiceClient;
use gocommerce_proto::product::v1::product_service_client::ProductServiceClient;
use gocommerce_proto::user::v1::user_service_client::UserServiceClient;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::config::OrderConfig;
use crate::saga::{self, Saga};
use crate::service::OrderService;
use crate::watch::Watchers;

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    service: OrderService,
    broker: Broker,
    readiness: Readiness,
    recovery_interval: std::time::Duration,
}

impl Application {
    pub async fn build(config: OrderConfig, readiness: Readiness) -> Result<Self, StartupError> {
        let db = Db::connect(&config.database_url, config.common.database, &MIGRATOR).await?;
        readiness.add_postgres("order-database", db.background().clone());
        let broker = Broker::from_config(&config.common);
        broker.register_readiness(&readiness);
        let traced = grpc::traced;
        let saga = Saga {
            db: db.clone(),
            product: ProductServiceClient::new(traced(&config.product_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            payment: PaymentServiceClient::new(traced(&config.payment_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            step_timeout: config.step_timeout,
            lease: config.lease,
        };
        let shutdown = readiness.shutdown().clone();
        let service = OrderService {
            saga,
            user: UserServiceClient::new(traced(&config.user_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            watchers: Watchers::spawn(db.background().clone(), shutdown.clone()),
            shutdown,
        };
        let (listener, port) = listener::bind("gRPC", config.grpc_addr).await?;
        tracing::info!(port, "order service listening");
        Ok(Self {
            listener,
            port,
            service,
            broker,
            readiness,
            recovery_interval: config.recovery_interval,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves, recovers unfinished sagas and relays the outbox until shutdown.
    pub async fn run_until_stopped(self) -> Result<(), GrpcError> {
        let shutdown = self.readiness.shutdown().clone();
        let db = self.service.saga.db.clone();
        let relay = tokio::spawn(outbox::run_relay(
            db.background().clone(),
            Publisher::new(self.broker.clone()),
            shutdown.clone(),
        ));
        let recovery = tokio::spawn(saga::run_recovery(
            self.service.saga.clone(),
            self.recovery_interval,
            shutdown.clone(),
        ));
        let routes = tonic::service::Routes::new(OrderServiceServer::new(self.service));
        let result = grpc::serve(routes, &[SERVICE_NAME], self.listener, self.readiness).await;
        let _ = tokio::join!(relay, recovery);
        self.broker.close().await;
        db.close().await;
        result
    }
}
