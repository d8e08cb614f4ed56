//! Builds the notification service: database, broker, transports, the bound
//! gRPC listener, and the event consumer that runs beside the server.

use gocommerce_platform::Readiness;
use gocommerce_platform::broker::{self, Broker};
use gocommerce_platform::db::{Db, DbError};
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_platform::listener::{self, BindError};
use gocommerce_proto::notification::v1::notification_service_server::{
    NotificationServiceServer, SERVICE_NAME,
};
use gocommerce_proto::user::v1::user_service_client::UserServiceClient;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::channels::{ChannelError, Channels};
use crate::config::NotificationConfig;
use crate::consumer::{self, Handler};
use crate::service::NotificationService;
use crate::templates;

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    service: NotificationService,
    handler: Handler,
    readiness: Readiness,
}

impl Application {
    pub async fn build(
        config: NotificationConfig,
        readiness: Readiness,
    ) -> Result<Self, StartupError> {
        let db = Db::connect(&config.database_url, config.common.database, &MIGRATOR).await?;
        readiness.add_postgres("notification-database", db.background().clone());
        let broker = Broker::from_config(&config.common);
        broker.register_readiness(&readiness);
        let channels = Channels::from_config(&config)?;
        tracing::info!(?channels, "notification channels");
        let handler = Handler {
            db: db.clone(),
            user: UserServiceClient::new(grpc::traced(&config.user_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            channels,
            max_attempts: config.max_attempts,
            links: templates::Links {
                password_reset: config.password_reset_url.clone(),
            },
        };
        let service = NotificationService {
            db,
            broker,
            queue: consumer::queue(config.max_attempts, config.retry_delays.clone()),
        };
        let (listener, port) = listener::bind("gRPC", config.grpc_addr).await?;
        tracing::info!(port, "notification service listening");
        Ok(Self {
            listener,
            port,
            service,
            handler,
            readiness,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves and consumes events until shutdown.
    pub async fn run_until_stopped(self) -> Result<(), GrpcError> {
        let shutdown = self.readiness.shutdown().clone();
        let broker = self.service.broker.clone();
        let db = self.service.db.clone();
        let handler = self.handler;
        let consumer = tokio::spawn(broker::consume(
            broker.clone(),
            self.service.queue.clone(),
            move |message| {
                let handler = handler.clone();
                async move { handler.handle(message).await }
            },
            shutdown,
        ));
        let routes = tonic::service::Routes::new(NotificationServiceServer::new(self.service));
        let result = grpc::serve(routes, &[SERVICE_NAME], self.listener, self.readiness).await;
        let _ = consumer.await;
        broker.close().await;
        db.close().await;
        result
    }
}
