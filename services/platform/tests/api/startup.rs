//! A service's first connection to its database: a database that comes up
//! while the service starts is waited for, and so is one that ends a
//! migration's connection; one still down (or silent) when the wait is over
//! fails the start, and a refusal that waiting cannot mend fails it at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gocommerce_platform::db;
use gocommerce_platform::error::DatabaseFailure as _;
use gocommerce_platform::testing::{ADMIN_URL, DropDatabase};
use sqlx::migrate::Migrator;
use tokio::net::{TcpListener, TcpSocket};
use uuid::Uuid;

/// A loopback port held without listening, so connecting to it is refused
/// and no other socket can take it meanwhile.
fn held_port() -> (TcpSocket, u16) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, port)
}

/// Starts listening on `socket` and forwards every connection to the real
/// PostgreSQL, from now on.
fn open_postgres_on(socket: TcpSocket) {
    let listener = socket.listen(64).expect("listen");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
}

fn database_name() -> String {
    format!("gct_startup_{}", Uuid::new_v4().simple())
}

/// One connection, waiting up to `seconds` for the database.
fn waiting(seconds: u64) -> db::DbSettings {
    db::DbSettings {
        max_connections: 1,
        startup_wait: Duration::from_secs(seconds),
    }
}

#[tokio::test]
async fn a_database_that_comes_up_while_the_service_starts_is_waited_for() {
    // Arrange
    let (socket, port) = held_port();
    let name = database_name();
    let _database = DropDatabase(name.clone());
    let url = format!("postgres://postgres@127.0.0.1:{port}/{name}");
    let started = Instant::now();
    let connecting = tokio::spawn(async move {
        db::connect_and_migrate(&url, waiting(30), &Migrator::DEFAULT).await
    });

    // Act
    tokio::time::sleep(Duration::from_millis(1500)).await;
    open_postgres_on(socket);
    let pool = connecting.await.expect("no panic");

    // Assert
    let pool = pool.expect("connected once the database was up");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("the pool works");
    assert_eq!(one, 1);
    pool.close().await;
}

#[tokio::test]
async fn a_database_still_down_when_the_wait_is_over_fails_the_start_as_an_outage() {
    // Arrange
    let (_held, port) = held_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{}", database_name());
    let started = Instant::now();

    // Act
    let result = db::connect_and_migrate(&url, waiting(1), &Migrator::DEFAULT).await;

    // Assert
    let error = result.expect_err("nothing listens");
    assert!(error.is_outage(), "{error}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
}

#[tokio::test]
async fn a_database_that_accepts_and_never_answers_is_given_up_on_when_the_wait_is_over() {
    // Arrange: a listener that takes connections and says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "postgres://postgres@{}/{}",
        silent.local_addr().expect("addr"),
        database_name()
    );
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let started = Instant::now();

    // Act
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        db::connect_and_migrate(&url, waiting(1), &Migrator::DEFAULT),
    )
    .await
    .expect("the start ends, not hangs");

    // Assert
    let error = result.expect_err("nothing answers");
    assert!(error.is_outage(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_refused_login_fails_the_start_at_once() {
    // Arrange
    let url = format!(
        "postgres://gct_no_such_role@127.0.0.1:5432/{}",
        database_name()
    );
    let started = Instant::now();

    // Act
    let result = db::connect_and_migrate(&url, waiting(30), &Migrator::DEFAULT).await;

    // Assert
    let error = result.expect_err("no such role");
    assert!(!error.is_outage(), "{error}");
    assert!(error.to_string().contains("gct_no_such_role"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_migration_whose_connection_the_server_ends_is_run_again_once_it_can_be() {
    // Arrange: a migration that takes two seconds, and an administrator
    // who terminates the backend running it, once.
    let dir = std::env::temp_dir().join(format!("gct_migrations_{}", Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).expect("directory");
    std::fs::write(
        dir.join("0001_slow.sql"),
        "CREATE TABLE slow (n integer);\nSELECT pg_sleep(2);\n",
    )
    .expect("migration");
    let migrator = Migrator::new(dir.as_path()).await.expect("migrator");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
    let name = database_name();
    let _database = DropDatabase(name.clone());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let terminator = tokio::spawn({
        let name = name.clone();
        async move {
            let admin = sqlx::PgPool::connect(ADMIN_URL).await.expect("admin");
            for _ in 0..400 {
                let ended: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND query LIKE '%pg_sleep(2)%' \
                     AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .fetch_all(&admin)
                .await
                .expect("terminate");
                if !ended.is_empty() {
                    return ended.len();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            0
        }
    });

    // Act
    let pool = db::connect_and_migrate(&url, waiting(30), &migrator).await;

    // Assert
    assert_eq!(
        terminator.await.expect("no panic"),
        1,
        "one migration cut short"
    );
    let pool = pool.expect("migrated on the second try");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .expect("the migrations table");
    assert_eq!(applied, 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM slow")
        .fetch_one(&pool)
        .await
        .expect("the migration's table");
    assert_eq!(rows, 0);
    pool.close().await;
}
