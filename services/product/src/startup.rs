//! Builds the product service: its database, the product cache and the
//! bound gRPC listener.

use std::sync::Arc;

use gocommerce_platform::Readiness;
use gocommerce_platform::db::{Db, DbError};
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_platform::listener::{self, BindError};
use gocommerce_platform::pipeline::{Pipeline, PipelineError};
use gocommerce_proto::product::v1::product_service_server::{ProductServiceServer, SERVICE_NAME};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::cache::{ChangeListener, ProductCache};
use crate::config::ProductConfig;
use crate::service::ProductService;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    service: ProductService,
    changes: ChangeListener,
    readiness: Readiness,
}

impl Application {
    pub async fn build(config: ProductConfig, readiness: Readiness) -> Result<Self, StartupError> {
        let db = Db::connect(&config.database_url, config.common.database, &MIGRATOR).await?;
        readiness.add_postgres("product-database", db.background().clone());
        let reads = match config.read_connections {
            0 => None,
            connections => Some(Arc::new(Pipeline::new(
                &config.database_url,
                connections,
                "gocommerce-product-reads",
            )?)),
        };
        if let Some(reads) = &reads {
            let reads = Arc::clone(reads);
            readiness.add_check("product-reads", move || {
                let reads = Arc::clone(&reads);
                Box::pin(async move { reads.check().await.map_err(|e| e.to_string()) })
            });
        }
        let cache = Arc::new(ProductCache::new(config.cache_ttl, config.cache_capacity));
        // Holds one background connection for LISTEN while the service runs.
        let changes = ChangeListener::connect(cache.clone(), db.background().clone())
            .await
            .map_err(DbError::Connect)?;
        let (listener, port) = listener::bind("gRPC", config.grpc_addr).await?;
        tracing::info!(port, "product service listening");
        Ok(Self {
            listener,
            port,
            service: ProductService { db, reads, cache },
            changes,
            readiness,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves, and listens for other replicas' product changes, until shutdown.
    pub async fn run_until_stopped(self) -> Result<(), GrpcError> {
        let db = self.service.db.clone();
        let listener = tokio::spawn(self.changes.run(self.readiness.shutdown().clone()));
        let routes = tonic::service::Routes::new(ProductServiceServer::new(self.service));
        let result = grpc::serve(routes, &[SERVICE_NAME], self.listener, self.readiness).await;
        let _ = listener.await;
        db.close().await;
        result
    }
}
