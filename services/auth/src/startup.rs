//! Builds the auth service: database, signing key, bootstrap admin, and the
//! bound gRPC listener (port 0 allowed, the chosen port is exposed).

use std::sync::Arc;
use std::time::Duration;

use gocommerce_platform::broker::{Broker, Publisher};
use gocommerce_platform::db::{Db, DbError};
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_platform::listener::{self, BindError};
use gocommerce_platform::{Readiness, Role, outbox};
use gocommerce_proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::config::{AuthConfig, BootstrapAdmin};
use crate::db;
use crate::domain::{Email, Name, Password};
use crate::error::AuthError;
use crate::keys::KeyStore;
use crate::lifetimes;
use crate::mirror;
use crate::password::Hasher;
use crate::profiles::Profiles;
use crate::retention;
use crate::service::AuthService;
use crate::throttle::Policy;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a registration retries the user service: under the gateway's
/// 5 s deadline, so the client hears a clear 503 rather than a timeout.
const PROFILE_BUDGET: Duration = Duration::from_secs(3);
/// How long start-up waits for the user service to make the bootstrap admin's profile.
const BOOTSTRAP_PROFILE_BUDGET: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("auth setup failed: {0}")]
    Auth(#[from] AuthError),
    #[error("bootstrap admin: {0}")]
    BootstrapAdmin(String),
    #[error("user service client: {0}")]
    UserService(#[source] GrpcError),
}

/// The auth service, built and bound, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    service: AuthService,
    broker: Broker,
    readiness: Readiness,
}

impl Application {
    pub async fn build(config: AuthConfig, readiness: Readiness) -> Result<Self, StartupError> {
        let db = Db::connect(&config.database_url, config.common.database, &MIGRATOR).await?;
        readiness.add_postgres("auth-database", db.background().clone());
        let broker = Broker::from_config(&config.common);
        broker.register_readiness(&readiness);
        let keys = {
            let mut conn = db.pool().acquire().await.map_err(AuthError::from)?;
            KeyStore::load(&mut conn, config.signing_key_pem.as_deref()).await?
        };
        // Before any token is signed, so every token's lifetime is on record.
        lifetimes::record(db.pool(), config.access_token_ttl).await?;
        let service = AuthService {
            db,
            keys: Arc::new(keys),
            // Two hashes at once: this is what two cores can do without starving requests.
            hasher: Hasher::new(2),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: config.access_token_ttl,
            refresh_ttl: config.refresh_token_ttl,
            throttle: Policy::default(),
            profiles: Profiles::connect(&config.user_url).map_err(StartupError::UserService)?,
            profile_budget: PROFILE_BUDGET,
        };
        if let Some(admin) = &config.bootstrap_admin {
            // At start the user service may still be coming up (another pod,
            // or later in the same process): wait for it longer than a
            // registration would.
            let patient = AuthService {
                profile_budget: BOOTSTRAP_PROFILE_BUDGET,
                ..service.clone()
            };
            ensure_admin(&patient, admin).await?;
        }
        let (listener, port) = listener::bind("gRPC", config.grpc_addr).await?;
        tracing::info!(port, "auth service listening");
        Ok(Self {
            listener,
            port,
            service,
            broker,
            readiness,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &PgPool {
        self.service.db.pool()
    }

    /// Serves, relays the outbox, sends unconfirmed account copies to the
    /// user service, renews the record of its token lifetime and sweeps old
    /// records until the shutdown signal, then closes the pools.
    pub async fn run_until_stopped(self) -> Result<(), GrpcError> {
        let db = self.service.db.clone();
        let relay = tokio::spawn(outbox::run_relay(
            db.background().clone(),
            Publisher::new(self.broker.clone()),
            self.readiness.shutdown().clone(),
        ));
        let mirror = tokio::spawn(mirror::run(
            db.background().clone(),
            self.service.profiles.clone(),
            self.readiness.shutdown().clone(),
        ));
        let lifetimes = tokio::spawn(lifetimes::run(
            db.background().clone(),
            self.service.access_ttl,
            self.readiness.shutdown().clone(),
        ));
        let retention = tokio::spawn(retention::run(
            db.background().clone(),
            self.service.throttle.window,
            self.readiness.shutdown().clone(),
        ));
        let routes = tonic::service::Routes::new(AuthServiceServer::new(self.service));
        let result = grpc::serve(routes, &[SERVICE_NAME], self.listener, self.readiness).await;
        let _ = relay.await;
        let _ = retention.await;
        let _ = mirror.await;
        let _ = lifetimes.await;
        self.broker.close().await;
        db.close().await;
        result
    }
}

/// Creates the bootstrap admin, or makes the existing account an admin.
/// An existing account keeps its password: the variables seed, never reset.
async fn ensure_admin(service: &AuthService, admin: &BootstrapAdmin) -> Result<(), StartupError> {
    let email = Email::parse(&admin.email)
        .map_err(|e| StartupError::BootstrapAdmin(format!("GOCOMMERCE_ADMIN_EMAIL: {e}")))?;
    let password = Password::parse(&admin.password)
        .map_err(|e| StartupError::BootstrapAdmin(format!("GOCOMMERCE_ADMIN_PASSWORD: {e}")))?;
    #[allow(clippy::expect_used)]
    let name = Name::parse("Administrator").expect("constant name is valid");
    match service
        .create_account(&email, &password, &name, Role::Admin)
        .await
    {
        Ok(account) => tracing::info!(account_id = %account.id, "bootstrap admin created"),
        Err(AuthError::EmailTaken) => {
            let mut conn = service.db.pool().acquire().await.map_err(AuthError::from)?;
            let account = db::find_account_by_email(&mut conn, email.as_str())
                .await?
                .ok_or_else(|| StartupError::BootstrapAdmin("account vanished".to_owned()))?;
            if account.role() != Role::Admin {
                let promoted = db::set_role(&mut conn, account.id, Role::Admin)
                    .await?
                    .ok_or_else(|| StartupError::BootstrapAdmin("account vanished".to_owned()))?;
                // The user service may not be up yet; the mirror loop copies
                // the role once it is.
                let _ = mirror::push(service.db.pool(), &service.profiles, &[promoted]).await;
                tracing::info!(account_id = %account.id, "bootstrap admin promoted");
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
