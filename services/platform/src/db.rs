//! The PostgreSQL connections of a service. [`connect_and_migrate`] waits for
//! a database that cannot be reached yet, creates the service's database
//! when it is missing, then runs its migrations. Creating and migrating are
//! safe when several replicas start at once: a lost `CREATE DATABASE`
//! race is treated as success, and sqlx serialises migrations with an
//! advisory lock.
//!
//! [`Db`] is what request handlers use: sqlx's pool with a stack of spare
//! connections in front of it. sqlx pings every connection it takes back
//! (a `Sync` and a wait for the answer), so each use of a pooled connection
//! costs the server a second round trip, as much as a lookup by key itself.
//! A handler that finished cleanly hands its connection back with
//! [`Lease::keep`] (or [`Tx::commit`]), and the next request takes it as it
//! is. Anything else (an error, a cancelled future, a panic) drops the lease,
//! and the connection takes sqlx's way back, which drains or closes it.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgTransactionManager};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, TransactionManager};

use crate::error::DatabaseFailure;

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

/// The database could not be reached, rather than refused what was asked
/// of it: see [`is_outage`].
impl DatabaseFailure for DbError {
    fn is_outage(&self) -> bool {
        match self {
            Self::Connect(source)
            | Self::Create { source, .. }
            | Self::Migrate(
                sqlx::migrate::MigrateError::Execute(source)
                | sqlx::migrate::MigrateError::ExecuteMigration(source, _),
            ) => is_outage(source),
            Self::Url(_) | Self::NoDatabase | Self::BadName(_) | Self::Migrate(_) => false,
        }
    }
}

/// How long a pooled connection may sit idle and still be used unchecked.
pub const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// How long a request may wait for a database connection, pooled or newly
/// opened (the pipelined reads' connect timeout too), before it fails. Well
/// under the gateway's 5 s deadline for a backend call: while the database
/// is out, sqlx keeps retrying a refused connect until this runs out, and
/// the client should then hear 503 (retry later) from the service, not 504
/// from the gateway.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a starting service waits, by default, for its database to
/// accept connections before it gives up (`DATABASE_STARTUP_WAIT_SECONDS`).
/// The operator creates a service's Deployment and its PostgreSQL at the
/// same time: a service that exited at once would be restarted under the
/// kubelet's growing back-off (10 s, 20 s, 40 s, ...), and come up long
/// after the database did.
pub const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// The longest pause between two attempts while waiting for the database.
const STARTUP_RETRY_MAX: Duration = Duration::from_secs(5);

/// How a service uses its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbSettings {
    /// Connections of the request pool, spare ones included.
    pub max_connections: u32,
    /// How long the start waits for a database it cannot reach yet; zero
    /// gives up at the first refusal.
    pub startup_wait: Duration,
}

impl DbSettings {
    /// `max_connections`, waiting the default [`STARTUP_WAIT`] at the start.
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            startup_wait: STARTUP_WAIT,
        }
    }
}

/// Connects to `url`, creating its database if needed, and migrates it.
/// An outage (a refused connection, a server still starting, a backend
/// terminated during a migration) is waited out for up to
/// `settings.startup_wait`, trying again from the connect: a migration runs
/// in a transaction, so one cut short left nothing behind. Any other
/// failure, such as a refused login, ends it at once: waiting would not
/// mend it.
#[tracing::instrument(skip_all, fields(db.name), err)]
pub async fn connect_and_migrate(
    url: &str,
    settings: DbSettings,
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
    let deadline = Instant::now() + settings.startup_wait;
    let mut pause = Duration::from_millis(250);
    loop {
        match connect(&options, &name, settings.max_connections, migrator).await {
            Ok(pool) => return Ok(pool),
            Err(error) if error.is_outage() && Instant::now() + pause < deadline => {
                tracing::warn!(
                    %error,
                    retry_in_ms = pause.as_millis() as u64,
                    "the database cannot be reached yet, waiting for it"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(STARTUP_RETRY_MAX);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Creates the database if needed, opens the request pool and migrates.
async fn connect(
    options: &PgConnectOptions,
    name: &str,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    ensure_database(options, name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
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
        .connect_with(options.clone())
        .await
        .map_err(DbError::Connect)?;
    if let Err(error) = migrator.run(&pool).await {
        pool.close().await;
        return Err(error.into());
    }
    Ok(pool)
}

async fn ensure_database(options: &PgConnectOptions, name: &str) -> Result<(), DbError> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(DbError::BadName(name.to_owned()));
    }
    // Bounded like the pool's connects below: a server that accepts the
    // connection and never answers would otherwise hold the start forever.
    let admin = options.clone().database("postgres");
    let mut admin = tokio::time::timeout(ACQUIRE_TIMEOUT, admin.connect())
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())))
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

/// Connections for LISTEN and for background loops (the outbox relay, the
/// readiness check): they are kept apart from the request pool, so that a
/// pool held busy by requests and their spare connections never makes them
/// wait.
const BACKGROUND_CONNECTIONS: u32 = 4;

/// A service's connections: the request pool behind a stack of spare
/// connections, and a small pool for background work. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    cache: Arc<Cache>,
    background: PgPool,
}

#[derive(Debug)]
struct Cache {
    pool: PgPool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Kept connections, the most recently used on top.
    spare: Vec<Spare>,
    /// Acquires waiting on the pool: while there are any, a kept connection
    /// goes to the pool, which hands it to the first of them, rather than
    /// onto the stack where none of them would look.
    waiting: usize,
}

#[derive(Debug)]
struct Spare {
    conn: PoolConnection<Postgres>,
    since: Instant,
}

impl State {
    /// Takes the spare connections idle for longer than [`TRUSTED_IDLE`]
    /// off the bottom of the stack, to go back to the pool, which pings them
    /// and closes them after its idle timeout.
    fn take_stale(&mut self) -> Vec<Spare> {
        let stale = self
            .spare
            .partition_point(|spare| spare.since.elapsed() > TRUSTED_IDLE);
        self.spare.drain(..stale).collect()
    }
}

impl Db {
    /// Connects to `url` (see [`connect_and_migrate`]); the request pool
    /// holds at most `settings.max_connections`, spare ones included.
    pub async fn connect(
        url: &str,
        settings: DbSettings,
        migrator: &Migrator,
    ) -> Result<Self, DbError> {
        let pool = connect_and_migrate(url, settings, migrator).await?;
        let background = PgPoolOptions::new()
            .max_connections(BACKGROUND_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        Ok(Self::new(pool, background))
    }

    fn new(pool: PgPool, background: PgPool) -> Self {
        let cache = Arc::new(Cache {
            pool,
            state: Mutex::default(),
        });
        tokio::spawn(trim_spares(Arc::downgrade(&cache)));
        Self { cache, background }
    }

    /// The request pool, for what is not a request handler's work: tests'
    /// own queries, one-off statements at startup.
    pub fn pool(&self) -> &PgPool {
        &self.cache.pool
    }

    /// The pool for LISTEN connections and background loops.
    pub fn background(&self) -> &PgPool {
        &self.background
    }

    /// A connection: the most recently kept spare, or one from the pool.
    /// A spare idle for longer than [`TRUSTED_IDLE`] is pinged first, as
    /// the pool does with its own.
    // A debug span: one per checkout is noise in a request's trace.
    #[tracing::instrument(level = "debug", skip_all, err)]
    pub async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        loop {
            let spare = {
                let mut state = self.cache.lock();
                let spare = state.spare.pop();
                if spare.is_none() {
                    state.waiting += 1;
                }
                spare
            };
            let Some(Spare { mut conn, since }) = spare else {
                break;
            };
            if since.elapsed() <= TRUSTED_IDLE {
                return Ok(self.lease(conn));
            }
            match conn.ping().await {
                Ok(()) => return Ok(self.lease(conn)),
                Err(error) => {
                    tracing::warn!(%error, "dropping a spare database connection that failed its ping");
                    conn.close_on_drop();
                }
            }
        }
        let _waiting = Waiting(&self.cache);
        let conn = self.cache.pool.acquire().await?;
        Ok(self.lease(conn))
    }

    /// Begins a transaction on a connection from [`Db::acquire`].
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let mut lease = self.acquire().await?;
        PgTransactionManager::begin(&mut lease, None).await?;
        Ok(Tx { lease })
    }

    /// Closes both pools, the spare connections first: the request pool's
    /// `close` waits for every connection it handed out.
    pub async fn close(&self) {
        let spare = std::mem::take(&mut self.cache.lock().spare);
        drop(spare);
        self.cache.pool.close().await;
        self.background.close().await;
    }

    fn lease(&self, conn: PoolConnection<Postgres>) -> Lease {
        Lease {
            conn: Some(conn),
            cache: Arc::clone(&self.cache),
        }
    }
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a stack and a counter, consistent after every
        // statement, so a panic while it was held left nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Onto the stack, unless acquires are waiting on the pool (they look
    /// there, not here) or it is closed: then `conn` drops back into the
    /// pool, after the lock, since parameters outlive the body's locals.
    fn keep(&self, conn: PoolConnection<Postgres>) {
        let mut state = self.lock();
        if state.waiting == 0 && !self.pool.is_closed() {
            state.spare.push(Spare {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Every [`TRUSTED_IDLE`], hands the spare connections idle for longer back
/// to the pool, so that a service whose requests stopped keeps no more open
/// than the pool's own idle timeout allows. Like sqlx's reaper, it ends
/// with what it tends: when the `Db` is gone or its pool closed.
async fn trim_spares(cache: Weak<Cache>) {
    let mut tick = tokio::time::interval(TRUSTED_IDLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        if cache.pool.is_closed() {
            return;
        }
        let stale = cache.lock().take_stale();
        drop(stale);
    }
}

/// Counts an acquire waiting on the pool, until it has its connection or
/// gives up.
struct Waiting<'a>(&'a Cache);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// A connection from [`Db::acquire`]. Dropped, it goes back through sqlx's
/// pool; [`Lease::keep`] hands it to the next request directly.
#[derive(Debug)]
pub struct Lease {
    conn: Option<PoolConnection<Postgres>>,
    cache: Arc<Cache>,
}

impl Lease {
    /// Hands the connection to the next request without a round trip. Call
    /// it once the work on the connection has finished without an error:
    /// the connection is then idle, outside any transaction, with nothing
    /// left to read.
    pub fn keep(mut self) {
        self.keep_in_place();
    }

    fn keep_in_place(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.cache.keep(conn);
        }
    }
}

const TAKEN: &str = "a lease holds its connection until it is kept or dropped";

impl Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect(TAKEN)
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect(TAKEN)
    }
}

/// A transaction on a leased connection. [`Tx::commit`] and [`Tx::rollback`]
/// keep the connection when they succeed; dropped while it still holds the
/// connection (never ended, or its end failed), it queues a `ROLLBACK`, and
/// the connection goes back through sqlx's pool, whose ping sends it, as
/// with [`sqlx::Transaction`].
///
/// sqlx's own `Transaction` would borrow the lease, and its commit could not
/// hand the connection on, so this drives sqlx's transaction manager itself,
/// the way `Transaction` does.
#[derive(Debug)]
pub struct Tx {
    lease: Lease,
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        PgTransactionManager::commit(&mut self.lease).await?;
        self.lease.keep_in_place();
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        PgTransactionManager::rollback(&mut self.lease).await?;
        self.lease.keep_in_place();
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        // sqlx tracks the depth: outside a transaction this queues nothing.
        if let Some(conn) = self.lease.conn.as_mut() {
            PgTransactionManager::start_rollback(conn);
        }
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.lease
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.lease
    }
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

/// Whether `error` means the database cannot be reached or refuses work for
/// now (an outage, a restart, its connection limit), rather than that the
/// statement failed: clients should be told to retry, not that we failed.
pub fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| is_outage_code(&code)),
        _ => false,
    }
}

/// SQLSTATEs of a server that is unreachable or refusing work for now: class
/// 08 (connection exception), 57P01 to 57P03 (shut down by an administrator,
/// crashed, still starting) and 53300 (too many connections).
pub fn is_outage_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// SQLSTATEs the services map to domain errors.
pub mod codes {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const CHECK_VIOLATION: &str = "23514";
    pub const SERIALIZATION_FAILURE: &str = "40001";
}
