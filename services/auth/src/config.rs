//! The auth service's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use gocommerce_platform::config::{self, ConfigError, Env, ServiceName};

#[derive(Clone)]
pub struct AuthConfig {
    pub grpc_addr: SocketAddr,
    pub database_url: String,
    pub common: config::CommonConfig,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Ed25519 private key (PKCS#8 PEM); generated and stored when absent.
    pub signing_key_pem: Option<String>,
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// `USER_URL`: the user service, which keeps a profile per account.
    pub user_url: String,
}

#[derive(Clone)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

// Keys and passwords must never reach a log line.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("grpc_addr", &self.grpc_addr)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field(
                "signing_key_pem",
                &self.signing_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("bootstrap_admin", &self.bootstrap_admin)
            .field("user_url", &self.user_url)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let access_token_ttl = Duration::from_secs(config::at_least(
            env,
            "ACCESS_TOKEN_TTL_SECONDS",
            900u64,
            10,
        )?);
        let refresh_token_ttl = config::seconds(env, "REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600)?;
        if refresh_token_ttl <= access_token_ttl {
            return Err(ConfigError::new(
                "REFRESH_TOKEN_TTL_SECONDS",
                "must be longer than ACCESS_TOKEN_TTL_SECONDS",
            ));
        }
        let bootstrap_admin = match (
            env.var("GOCOMMERCE_ADMIN_EMAIL"),
            env.var("GOCOMMERCE_ADMIN_PASSWORD"),
        ) {
            (Some(email), Some(password)) => Some(BootstrapAdmin { email, password }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "GOCOMMERCE_ADMIN_PASSWORD",
                    "must be set when GOCOMMERCE_ADMIN_EMAIL is",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "GOCOMMERCE_ADMIN_EMAIL",
                    "must be set when GOCOMMERCE_ADMIN_PASSWORD is",
                ));
            }
        };
        let common = config::CommonConfig::from_env(env)?;
        Ok(Self {
            grpc_addr: ServiceName::Auth.grpc_addr(env)?,
            database_url: ServiceName::Auth.database_url(env)?,
            common: common.clone(),
            issuer: config::string(env, "JWT_ISSUER", "gocommerce"),
            audience: config::string(env, "JWT_AUDIENCE", "gocommerce-api"),
            access_token_ttl,
            refresh_token_ttl,
            signing_key_pem: env.var("JWT_SIGNING_KEY"),
            bootstrap_admin,
            user_url: ServiceName::User.url(env)?,
        })
    }
}
