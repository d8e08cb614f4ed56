//! Builds the payment service: database, broker, the bound gRPC listener,
//! and the loops it runs beside the server (outbox relay, refund worker,
//! refund sweeper).

use std::time::Duration;

use gocommerce_platform::broker::{self, Broker, Publisher};
use gocommerce_platform::db::{Db, DbError};
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_platform::listener::{self, BindError};
use gocommerce_platform::{Readiness, outbox};
use gocommerce_proto::payment::v1::payment_service_server::{PaymentServiceServer, SERVICE_NAME};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::config::PaymentConfig;
use crate::processor::Processor;
use crate::refunds;
use crate::service::PaymentService;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    service: PaymentService,
    broker: Broker,
    readiness: Readiness,
    refund_requeue_after: Duration,
}

impl Application {
    pub async fn build(config: PaymentConfig, readiness: Readiness) -> Result<Self, StartupError> {
        let db = Db::connect(&config.database_url, config.common.database, &MIGRATOR).await?;
        readiness.add_postgres("payment-database", db.background().clone());
        let broker = Broker::from_config(&config.common);
        broker.register_readiness(&readiness);
        let service = PaymentService {
            db,
            processor: Processor {
                attempts: config.processor_attempts,
                backoff: config.processor_backoff,
            },
            stale_after: config.stale_after,
        };
        let (listener, port) = listener::bind("gRPC", config.grpc_addr).await?;
        tracing::info!(port, "payment service listening");
        Ok(Self {
            listener,
            port,
            service,
            broker,
            readiness,
            refund_requeue_after: config.refund_requeue_after,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves, relays the outbox, processes refunds and queues again the
    /// tasks of refunds left pending, until shutdown.
    pub async fn run_until_stopped(self) -> Result<(), GrpcError> {
        let shutdown = self.readiness.shutdown().clone();
        let db = self.service.db.clone();
        let relay = tokio::spawn(outbox::run_relay(
            db.background().clone(),
            Publisher::new(self.broker.clone()),
            shutdown.clone(),
        ));
        let worker = {
            let db = db.clone();
            let processor = self.service.processor.clone();
            tokio::spawn(broker::consume(
                self.broker.clone(),
                refunds::queue(),
                move |message| refunds::handle(db.clone(), processor.clone(), message),
                shutdown.clone(),
            ))
        };
        let sweeper = tokio::spawn(refunds::run_sweeper(
            db.clone(),
            self.refund_requeue_after,
            shutdown.clone(),
        ));
        let routes = tonic::service::Routes::new(PaymentServiceServer::new(self.service));
        let result = grpc::serve(routes, &[SERVICE_NAME], self.listener, self.readiness).await;
        let _ = tokio::join!(relay, worker, sweeper);
        self.broker.close().await;
        db.close().await;
        result
    }
}
