//! Builds the user service: the database with its migrations and the bound
//! gRPC listener.

use gocommerce_platform::Readiness;
use gocommerce_platform::db::{Db, DbError};
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_platform::listener::{self, BindError};
use gocommerce_proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::config::UserConfig;
use crate::service::UserService;

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
    service: UserService,
    readiness: Readiness,
}

impl Application {
    pub async fn build(config: UserConfig, readiness: Readiness) -> Result<Self, StartupError> {
        let db = Db::connect(&config.database_url, config.common.database, &MIGRATOR).await?;
        readiness.add_postgres("user-database", db.background().clone());
        let (listener, port) = listener::bind("gRPC", config.grpc_addr).await?;
        tracing::info!(port, "user service listening");
        Ok(Self {
            listener,
            port,
            service: UserService { db },
            readiness,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until shutdown.
    pub async fn run_until_stopped(self) -> Result<(), GrpcError> {
        let db = self.service.db.clone();
        let routes = tonic::service::Routes::new(UserServiceServer::new(self.service));
        let result = grpc::serve(routes, &[SERVICE_NAME], self.listener, self.readiness).await;
        db.close().await;
        result
    }
}
