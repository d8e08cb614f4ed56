//! The service pool and its spare connections against the real PostgreSQL:
//! connections the server dropped while they sat idle are never handed to a
//! caller, a kept connection is reused without the pool, a dropped one goes
//! back through it, transactions end the way they were left, and a server
//! that cannot be reached is told apart from a statement that failed.

use std::time::Duration;

use gocommerce_platform::db::{self, Db, Lease, TRUSTED_IDLE, Tx};
use gocommerce_platform::testing::{ADMIN_URL, DropDatabase};
use sqlx::PgConnection;
use sqlx::migrate::Migrator;
use uuid::Uuid;

/// A `Db` on a fresh database whose request pool holds at most
/// `max_connections`, all of them open and idle, with a table `t (n int)`.
/// The pool hands out its idle connections oldest first, so with two of
/// them a connection that went back to the pool is not the next one out,
/// and one that was kept is.
async fn database(max_connections: u32) -> (Db, DropDatabase) {
    let name = format!("gct_pool_{}", Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let guard = DropDatabase(name);
    let db = Db::connect(
        &url,
        db::DbSettings::new(max_connections),
        &Migrator::DEFAULT,
    )
    .await
    .expect("db");
    sqlx::query("CREATE TABLE t (n int)")
        .execute(db.pool())
        .await
        .expect("table");
    let mut all = Vec::new();
    for _ in 0..max_connections {
        all.push(db.pool().acquire().await.expect("connection"));
    }
    drop(all);
    // They go back on tasks of sqlx's.
    until_idle(&db, max_connections as usize).await;
    (db, guard)
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pg_backend_pid")
}

async fn count(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(conn)
        .await
        .expect("count")
}

/// A transaction that has inserted a row into `t`, and its backend's pid.
async fn transaction_with_a_row(db: &Db) -> (Tx, i32) {
    let mut tx = db.begin().await.expect("begin");
    let pid = backend_pid(&mut tx).await;
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut *tx)
        .await
        .expect("insert");
    (tx, pid)
}

/// Polls until the pool holds `idle` idle connections, or panics after
/// five seconds: a dropped connection goes back on a task of sqlx's.
async fn until_idle(db: &Db, idle: usize) {
    for _ in 0..500 {
        if db.pool().num_idle() == idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the pool has {} idle connections, not {idle}",
        db.pool().num_idle()
    );
}

#[tokio::test]
async fn a_kept_connection_serves_the_next_acquire_without_going_back_to_the_pool() {
    // Arrange
    let (db, _database) = database(2).await;
    let mut lease = db.acquire().await.expect("acquire");
    let first = backend_pid(&mut lease).await;

    // Act
    lease.keep();

    // Assert: the pool did not get it back, and the next acquire has it.
    assert_eq!(
        db.pool().num_idle(),
        1,
        "the kept connection is not in the pool"
    );
    let mut again = db.acquire().await.expect("acquire again");
    assert_eq!(backend_pid(&mut again).await, first);
    again.keep();
    db.close().await;
}

#[tokio::test]
async fn a_lease_dropped_without_keep_goes_back_to_the_pool() {
    // Arrange
    let (db, _database) = database(2).await;
    let mut lease = db.acquire().await.expect("acquire");
    backend_pid(&mut lease).await;

    // Act
    drop(lease);

    // Assert
    until_idle(&db, 2).await;
    db.close().await;
}

#[tokio::test]
async fn a_committed_transaction_is_visible_and_its_connection_is_kept() {
    // Arrange
    let (db, _database) = database(2).await;
    let (tx, pid) = transaction_with_a_row(&db).await;

    // Act
    tx.commit().await.expect("commit");

    // Assert
    let mut next = db.acquire().await.expect("acquire");
    assert_eq!(backend_pid(&mut next).await, pid, "the connection was kept");
    assert_eq!(count(&mut next).await, 1);
    next.keep();
    db.close().await;
}

#[tokio::test]
async fn a_transaction_dropped_while_open_is_rolled_back_before_its_connection_is_reused() {
    // Arrange: a pool of one connection, so the next acquire gets the same.
    let (db, _database) = database(1).await;
    let (tx, pid) = transaction_with_a_row(&db).await;

    // Act
    drop(tx);

    // Assert: on the same connection the insert is gone, which it would not
    // be inside the transaction that made it.
    let mut next = db.acquire().await.expect("acquire");
    assert_eq!(backend_pid(&mut next).await, pid);
    assert_eq!(count(&mut next).await, 0);
    next.keep();
    db.close().await;
}

#[tokio::test]
async fn a_rolled_back_transaction_writes_nothing_and_keeps_its_connection() {
    // Arrange
    let (db, _database) = database(2).await;
    let (tx, pid) = transaction_with_a_row(&db).await;

    // Act
    tx.rollback().await.expect("rollback");

    // Assert
    let mut next = db.acquire().await.expect("acquire");
    assert_eq!(backend_pid(&mut next).await, pid, "the connection was kept");
    assert_eq!(count(&mut next).await, 0);
    next.keep();
    db.close().await;
}

#[tokio::test]
async fn an_acquire_waiting_on_a_full_pool_gets_the_connection_a_lease_keeps() {
    // Arrange: the only connection is leased, and a second acquire waits.
    let (db, _database) = database(1).await;
    let lease = db.acquire().await.expect("acquire");
    let waiter = tokio::spawn({
        let db = db.clone();
        async move { db.acquire().await.map(Lease::keep) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Act
    lease.keep();

    // Assert: without the hand-over it would sit on the spare stack, where
    // the waiter does not look, until the trimmer returned it a second or
    // two later; handed over, it arrives well within half a second.
    tokio::time::timeout(TRUSTED_IDLE / 2, waiter)
        .await
        .expect("the waiter got the connection at once")
        .expect("task")
        .expect("the waiter got the connection");
    db.close().await;
}

#[tokio::test]
async fn a_spare_connection_left_idle_goes_back_to_the_pool_without_further_requests() {
    // Arrange
    let (db, _database) = database(2).await;
    let mut lease = db.acquire().await.expect("acquire");
    backend_pid(&mut lease).await;
    lease.keep();
    assert_eq!(
        db.pool().num_idle(),
        1,
        "the kept connection is not in the pool"
    );

    // Act: no request comes for a while.
    tokio::time::sleep(TRUSTED_IDLE * 2).await;

    // Assert: the pool has it back, to close after its idle timeout.
    until_idle(&db, 2).await;
    db.close().await;
}

#[tokio::test]
async fn a_spare_connection_the_server_closed_while_idle_is_not_handed_out() {
    // Arrange: a kept connection whose backend is then terminated.
    let (db, _database) = database(1).await;
    let mut lease = db.acquire().await.expect("acquire");
    let first = backend_pid(&mut lease).await;
    lease.keep();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(db.background())
        .await
        .expect("terminate");
    assert!(terminated, "the backend existed");
    tokio::time::sleep(TRUSTED_IDLE * 2).await;

    // Act
    let mut next = db.acquire().await.expect("acquire");

    // Assert
    assert_ne!(backend_pid(&mut next).await, first);
    next.keep();
    db.close().await;
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_before_use() {
    // Arrange: a pool of one connection, whose backend is then terminated.
    let name = format!("gct_pool_{}", Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let _database = DropDatabase(name.clone());
    let pool = db::connect_and_migrate(&url, db::DbSettings::new(1), &Migrator::DEFAULT)
        .await
        .expect("pool");
    let first: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("first query");
    let admin = sqlx::PgPool::connect(ADMIN_URL)
        .await
        .expect("admin connection");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&admin)
        .await
        .expect("terminate");
    assert!(terminated, "the backend existed");
    tokio::time::sleep(TRUSTED_IDLE * 2).await;

    // Act
    let second: Result<i32, _> = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await;

    // Assert
    let second = second.expect("the query runs on a fresh connection");
    assert_ne!(second, first);
    pool.close().await;
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_is_an_outage_and_a_failing_statement_is_not() {
    // Port 1 on loopback refuses connections.
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .expect("lazy pool");
    let reachable = sqlx::PgPool::connect(ADMIN_URL).await.expect("pool");

    let refused = sqlx::query("SELECT 1")
        .execute(&unreachable)
        .await
        .expect_err("nothing listens");
    let missing = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/gct_no_such_database")
        .await
        .expect_err("no such database");
    let failed = sqlx::query("SELECT 1 / 0")
        .execute(&reachable)
        .await
        .expect_err("division by zero");

    assert!(db::is_outage(&refused), "{refused}");
    assert!(!db::is_outage(&missing), "{missing}");
    assert!(!db::is_outage(&failed), "{failed}");
}
