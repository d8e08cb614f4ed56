//! The PostgreSQL pool of a service: creates the service's database when it is
//! missing, then runs its migrations. Both are safe when several replicas
//! start at once: a lost `CREATE DATABASE` race is treated as success, and
//! sqlx serialises migrations with an advisory lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("the database URL names no database")]
    NoDatabase,
    #[error("database name {0:?} must be lower-case letters, digits and underscores")]
    BadName(String),
    #[error("cannot create database {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How long a pooled connection may sit idle and still be used unchecked.
pub const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// Connects to `url`, creating its database if needed, and migrates it.
#[tracing::instrument(skip_all, fields(db.name), err)]
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DbError::Url)?
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    let name = options
        .get_database()
        .ok_or(DbError::NoDatabase)?
        .to_owned();
    tracing::Span::current().record("db.name", name.as_str());
    ensure_database(&options, &name).await?;

    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out by default: one more
        // round trip to the server per acquire, as many as the query itself
        // for a lookup by key. A connection that answered within the last
        // second is handed out as it is; one idle for longer is pinged first
        // and replaced if the server has gone away meanwhile (a restart, an
        // idle-session timeout, a terminated backend).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > TRUSTED_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    migrator.run(&pool).await?;
    Ok(pool)
}

async fn ensure_database(options: &PgConnectOptions, name: &str) -> Result<(), DbError> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(DbError::BadName(name.to_owned()));
    }
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(DbError::Connect)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .map_err(DbError::Connect)?;
    if !exists {
        // The name was checked above, so quoting it is enough.
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await;
        match created {
            Ok(_) => tracing::info!(db.name = name, "created database"),
            // Another replica won the race: 42P04 duplicate_database, or
            // 23505 when both inserted into pg_database at the same moment.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(source) => {
                return Err(DbError::Create {
                    name: name.to_owned(),
                    source,
                });
            }
        }
    }
    admin.close().await.map_err(DbError::Connect)?;
    Ok(())
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The constraint a database error names, if any.
pub fn constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(e) => e.constraint(),
        _ => None,
    }
}

/// SQLSTATEs the services map to domain errors.
pub mod codes {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const CHECK_VIOLATION: &str = "23514";
    pub const SERIALIZATION_FAILURE: &str = "40001";
}
