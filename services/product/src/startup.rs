//! Builds the product service: its database and the bound gRPC listener.

use gocommerce_platform::Readiness;
use gocommerce_platform::db::{DbError, connect_and_migrate};
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_proto::product::v1::product_service_server::{ProductServiceServer, SERVICE_NAME};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::config::ProductConfig;
use crate::service::ProductService;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot bind the gRPC listener: {0}")]
    Bind(#[source] std::io::Error),
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    service: ProductService,
    readiness: Readiness,
}

impl Application {
    pub async fn build(config: ProductConfig, readiness: Readiness) -> Result<Self, StartupError> {
        let pool = connect_and_migrate(
            &config.database_url,
            config.database_max_connections,
            &MIGRATOR,
        )
        .await?;
        readiness.add_postgres("product-database", pool.clone());
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(StartupError::Bind)?;
        let port = listener.local_addr().map_err(StartupError::Bind)?.port();
        tracing::info!(port, "product service listening");
        Ok(Self {
            listener,
            port,
            service: ProductService { pool },
            readiness,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until shutdown.
    pub async fn run_until_stopped(self) -> Result<(), GrpcError> {
        let pool = self.service.pool.clone();
        let routes = tonic::service::Routes::new(ProductServiceServer::new(self.service));
        let result = grpc::serve(routes, &[SERVICE_NAME], self.listener, self.readiness).await;
        pool.close().await;
        result
    }
}
