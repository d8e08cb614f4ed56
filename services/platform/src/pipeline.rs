//! Read connections that many requests share at once, for single-statement
//! lookups on a request's hot path.
//!
//! A pooled connection carries one query at a time: sixteen concurrent
//! lookups keep sixteen PostgreSQL backends busy and wake one of them per
//! lookup, to answer it and sleep again. On a machine with few cores those
//! wake-ups and the round trip's system calls cost about as much as the
//! lookup itself. A [`Pipeline`] keeps a few connections and sends each
//! query onto one of them at once, without waiting for the queries before it
//! to be answered (the extended protocol allows it; tokio-postgres does it
//! for queries issued concurrently). Lookups that arrive together leave in
//! one write and come back in one read, answered by a backend that stays
//! awake while there is work. Measured with pgbench on the 2-vCPU VM of
//! 2026-12-06: a product lookup ran at 40.7k a second over sixteen
//! connections, and at 94k over two connections with eight lookups in
//! flight on each.
//!
//! Each statement runs on its own, outside any transaction, so it sees
//! every commit before it started, as a pooled connection would; what needs
//! a transaction keeps using [`crate::db::Db`]. Connections open on first
//! use and are replaced when they break: a query that finds its connection
//! closed (a server restart, a terminated backend) is retried once on a new
//! one, which a read can afford.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use foldhash::fast::RandomState;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls, Row, Statement};

/// How long a query waits for its answer. A lookup on the hot path takes
/// milliseconds; one unanswered this long is on a connection that stopped
/// answering (a failover or a partition, which the kernel reports only after
/// minutes) or stuck behind a query that did, and every query pipelined
/// behind it waits as well, so the connection is given up. Under the
/// readiness check's 2 s, so that the check gives up on it, not on the
/// check.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid database URL: {}", describe(.0))]
    Url(#[source] tokio_postgres::Error),
    #[error("a pipeline needs at least one connection")]
    NoConnections,
    #[error("cannot connect to the database: {}", describe(.0))]
    Connect(#[source] tokio_postgres::Error),
    #[error("database error: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("no answer from the database within {0:?}")]
    NoAnswer(Duration),
    #[error("column {expected} not found: the query's column {index} is {found}")]
    Column {
        expected: String,
        index: usize,
        found: String,
    },
}

impl PipelineError {
    /// Whether the database cannot be reached or refuses work for now, as
    /// [`crate::db::is_outage`] says for the pool's errors.
    pub fn is_outage(&self) -> bool {
        match self {
            // Refused, timed out or cut off, unless the server answered why
            // (a missing database or a wrong password is not an outage).
            Self::Connect(error) => error.code().is_none_or(is_outage_code),
            Self::Query(error) => {
                let io = std::error::Error::source(error)
                    .is_some_and(|cause| cause.is::<std::io::Error>());
                io || error.is_closed() || error.code().is_some_and(is_outage_code)
            }
            Self::NoAnswer(_) => true,
            Self::Url(_) | Self::NoConnections | Self::Column { .. } => false,
        }
    }
}

fn is_outage_code(code: &SqlState) -> bool {
    crate::db::is_outage_code(code.code())
}

/// The error with its cause: tokio-postgres's own message is only its kind
/// ("db error", "invalid connection string"), what went wrong is the cause.
fn describe(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// A few connections shared by every caller; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Pipeline {
    config: tokio_postgres::Config,
    slots: Box<[Slot]>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Slot {
    /// The slot's connection. A std mutex: it is held only to clone the
    /// `Arc`, never across an await.
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while the slot connects, so that the queries that find it
    /// without a connection open one between them, not one each.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Connection {
    client: Client,
    /// Statements prepared on this connection, by their SQL (the few
    /// callers' own constants: foldhash, since no client chooses the keys).
    statements: Mutex<HashMap<&'static str, Statement, RandomState>>,
}

impl Pipeline {
    /// A pipeline of `connections` connections to `url`, opened on first
    /// use; `application_name` names them in `pg_stat_activity`.
    pub fn new(
        url: &str,
        connections: usize,
        application_name: &str,
    ) -> Result<Self, PipelineError> {
        if connections == 0 {
            return Err(PipelineError::NoConnections);
        }
        let mut config = tokio_postgres::Config::from_str(url).map_err(PipelineError::Url)?;
        config.application_name(application_name);
        config.connect_timeout(crate::db::ACQUIRE_TIMEOUT);
        // A server that vanished without closing the connection (a failover,
        // a partition) is noticed by the kernel in about 20 s rather than
        // the default's minutes to hours, idle or not.
        config
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(2)
            .tcp_user_timeout(Duration::from_secs(20));
        // The server gives up too on a query its client gave up on, rather
        // than running it for nobody; a second later, so that the client
        // always gives up first and discards the connection (a statement
        // the server cancelled first would fail as a plain query error, and
        // the connection stay in use). After the URL's own options, if any.
        let timeout = format!(
            "-c statement_timeout={}",
            (ANSWER_TIMEOUT + Duration::from_secs(1)).as_millis()
        );
        let options = match config.get_options() {
            Some(given) => format!("{given} {timeout}"),
            None => timeout,
        };
        config.options(options);
        Ok(Self {
            config,
            slots: (0..connections).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `sql` (prepared once per connection) with `params` and returns
    /// its row, if any; more than one row is an error.
    // A debug span, as for a pooled connection's checkout; the caller's
    // span records the query and its error.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PipelineError> {
        // Round robin: under load every connection gets a share of the
        // queries that arrive together, so each core has a backend to run.
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        self.on(slot, |connection| async move {
            connection.query_opt(sql, params).await
        })
        .await
    }

    /// Whether every connection answers, opening those not open yet. For
    /// readiness: the pipeline connects on its own, so it can fail where the
    /// pool does not (the server's connection limit reached, say), and reads
    /// would then fail while a check of the pool alone still passed.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn check(&self) -> Result<(), PipelineError> {
        for slot in &self.slots {
            self.on(slot, |connection| async move {
                Ok(connection.client.simple_query("SELECT 1").await.map(drop)?)
            })
            .await?;
        }
        Ok(())
    }

    /// Runs `operation` on the slot's connection, and once more on a new one
    /// if it finds that connection gone; gives up on a connection that does
    /// not answer within [`ANSWER_TIMEOUT`].
    // A closure taking the connection by `Arc` rather than an `AsyncFn` over
    // `&Connection`: the latter's future is not `Send` for every lifetime of
    // the borrowed parameters, which tonic's handlers require.
    async fn on<T, F, O>(&self, slot: &Slot, operation: O) -> Result<T, PipelineError>
    where
        O: Fn(Arc<Connection>) -> F,
        F: Future<Output = Result<T, PipelineError>>,
    {
        let connection = self.connection(slot).await?;
        match answered(slot, &connection, operation(Arc::clone(&connection))).await {
            Err(error) if connection.broken(&error) => {
                tracing::warn!(%error, "retrying on a new database connection");
                slot.discard(&connection);
                let connection = self.connection(slot).await?;
                answered(slot, &connection, operation(Arc::clone(&connection))).await
            }
            result => result,
        }
    }

    /// The slot's open connection, or a new one.
    async fn connection(&self, slot: &Slot) -> Result<Arc<Connection>, PipelineError> {
        if let Some(connection) = slot.open() {
            return Ok(connection);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(connection) = slot.open() {
            return Ok(connection);
        }
        let (client, io) = self
            .config
            .connect(NoTls)
            .await
            .map_err(PipelineError::Connect)?;
        // The connection's I/O runs as its own task, which ends when the
        // client is dropped or the server closes the connection.
        tokio::spawn(async move {
            if let Err(error) = io.await {
                tracing::warn!(%error, "a pipelined database connection failed");
            }
        });
        let connection = Arc::new(Connection {
            client,
            statements: Mutex::default(),
        });
        *slot.lock() = Some(Arc::clone(&connection));
        Ok(connection)
    }
}

/// `answer`, or a [`PipelineError::NoAnswer`] after [`ANSWER_TIMEOUT`], when
/// `connection` is discarded from `slot`.
async fn answered<T>(
    slot: &Slot,
    connection: &Arc<Connection>,
    answer: impl Future<Output = Result<T, PipelineError>>,
) -> Result<T, PipelineError> {
    if let Ok(answer) = tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        return answer;
    }
    tracing::warn!(timeout = ?ANSWER_TIMEOUT, "a pipelined database connection did not answer, giving it up");
    slot.discard(connection);
    Err(PipelineError::NoAnswer(ANSWER_TIMEOUT))
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<Connection>>> {
        // Assigning an `Option` cannot be left half-done by a panic.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> Option<Arc<Connection>> {
        self.lock()
            .as_ref()
            .filter(|connection| !connection.client.is_closed())
            .cloned()
    }

    /// Forgets `broken`, unless another query has replaced it already.
    fn discard(&self, broken: &Arc<Connection>) {
        let mut current = self.lock();
        if current
            .as_ref()
            .is_some_and(|connection| Arc::ptr_eq(connection, broken))
        {
            *current = None;
        }
    }
}

impl Connection {
    async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PipelineError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        let known = self.lock().get(sql).cloned();
        if let Some(statement) = known {
            return Ok(statement);
        }
        // Two queries that both find the statement missing prepare it twice;
        // the second one's replaces the first's, and both work.
        let statement = self.client.prepare(sql).await?;
        self.lock().insert(sql, statement.clone());
        Ok(statement)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<&'static str, Statement, RandomState>> {
        // An insert cannot be left half-done by a panic.
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `error` means this connection is gone, rather than the query
    /// failing on a working one.
    fn broken(&self, error: &PipelineError) -> bool {
        let PipelineError::Query(error) = error else {
            return false;
        };
        // A terminated backend sends its reason before closing, and the
        // client may not have seen the close yet.
        let shutdown = error.code().is_some_and(|code| {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code)
        });
        shutdown || error.is_closed() || self.client.is_closed()
    }
}

/// The columns of one row from a [`Pipeline`], taken in order, each checked
/// against the name its reader expects (as [`crate::row::Columns`] does for
/// sqlx's rows).
#[derive(Debug)]
pub struct Columns<'r> {
    row: &'r Row,
    next: usize,
}

impl<'r> Columns<'r> {
    pub fn new(row: &'r Row) -> Self {
        Self { row, next: 0 }
    }

    /// The next column, which must be called `name`.
    pub fn next<T: FromSql<'r>>(&mut self, name: &str) -> Result<T, PipelineError> {
        let index = self.next;
        self.next += 1;
        let found = self
            .row
            .columns()
            .get(index)
            .map_or("nothing", |column| column.name());
        if found != name {
            return Err(PipelineError::Column {
                expected: name.to_owned(),
                index,
                found: found.to_owned(),
            });
        }
        Ok(self.row.try_get(index)?)
    }
}
