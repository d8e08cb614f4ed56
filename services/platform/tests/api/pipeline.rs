//! Pipelined reads against the real PostgreSQL: many concurrent queries
//! share a few connections and each gets its own answer, a connection the
//! server ended is replaced under the query that found it so, a query
//! that fails on a working connection fails as it is, the readiness check
//! opens every connection or says why it cannot, and a server that cannot be
//! reached is an outage where a missing database or a failed query is not.

use futures::future::join_all;
use gocommerce_platform::db;
use gocommerce_platform::pipeline::{Columns, Pipeline, PipelineError};
use gocommerce_platform::testing::DropDatabase;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

const WORD: &str = "SELECT word FROM t WHERE n = $1";
const PID: &str = "SELECT pg_backend_pid()";

/// A fresh database with `t (n, word)` holding 1 to 500 and their
/// spellings as text, a pipeline of `connections` to it under a name of its
/// own, and that name.
async fn database(connections: usize) -> (Pipeline, PgPool, String, DropDatabase) {
    let name = format!("gct_pipeline_{}", Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let guard = DropDatabase(name.clone());
    let pool = db::connect_and_migrate(&url, db::DbSettings::new(2), &Migrator::DEFAULT)
        .await
        .expect("database");
    sqlx::query(
        "CREATE TABLE t AS SELECT n, 'word ' || n AS word FROM generate_series(1, 500) AS n",
    )
    .execute(&pool)
    .await
    .expect("table");
    let application = format!("test-{}", Uuid::new_v4().simple());
    let pipeline = Pipeline::new(&url, connections, &application).expect("pipeline");
    (pipeline, pool, application, guard)
}

async fn word(pipeline: &Pipeline, n: i32) -> Result<Option<String>, PipelineError> {
    let row = pipeline.query_opt(WORD, &[&n]).await?;
    row.map(|row| Columns::new(&row).next("word")).transpose()
}

async fn backend_pid(pipeline: &Pipeline) -> i32 {
    let row = pipeline
        .query_opt(PID, &[])
        .await
        .expect("pid")
        .expect("a row");
    row.get(0)
}

/// The backends connected under `application`.
async fn backends(pool: &PgPool, application: &str) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid")
        .bind(application)
        .fetch_all(pool)
        .await
        .expect("pg_stat_activity")
}

/// Ends the backend `pid` from the server's side, as a restart would.
async fn terminate(pool: &PgPool, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(pool)
        .await
        .expect("terminate");
}

#[tokio::test]
async fn concurrent_queries_share_the_pipelines_connections_and_each_gets_its_own_answer() {
    let (pipeline, pool, application, _guard) = database(2).await;

    let answers = join_all((1..=500).map(|n| word(&pipeline, n))).await;

    for (n, answer) in (1..=500).zip(answers) {
        assert_eq!(answer.expect("answer"), Some(format!("word {n}")));
    }
    assert_eq!(backends(&pool, &application).await.len(), 2);
}

#[tokio::test]
async fn a_query_for_no_row_answers_none() {
    let (pipeline, _pool, _application, _guard) = database(1).await;

    let answer = word(&pipeline, 501).await.expect("answer");

    assert_eq!(answer, None);
}

#[tokio::test]
async fn a_query_after_the_server_ended_its_connection_is_answered_on_a_new_one() {
    let (pipeline, pool, application, _guard) = database(1).await;
    let before = backend_pid(&pipeline).await;
    terminate(&pool, before).await;

    let answer = word(&pipeline, 7).await;

    assert_eq!(answer.expect("answered"), Some("word 7".to_owned()));
    let after = backends(&pool, &application).await;
    assert_eq!(after.len(), 1);
    assert_ne!(after[0], before);
}

#[tokio::test]
async fn a_connection_that_does_not_answer_is_given_up_and_the_next_query_gets_a_new_one() {
    // Arrange: the table is locked, so the pipeline's one connection waits.
    let (pipeline, pool, _application, _guard) = database(1).await;
    let before = backend_pid(&pipeline).await;
    let mut blocker = pool.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("locked");

    // Act
    let waited = tokio::time::Instant::now();
    let stuck = tokio::time::timeout(std::time::Duration::from_secs(5), word(&pipeline, 7))
        .await
        .expect("given up on within 5 s");
    let waited = waited.elapsed();
    let next = backend_pid(&pipeline).await;
    blocker.rollback().await.expect("rollback");

    // Assert
    let error = stuck.expect_err("no answer");
    assert!(matches!(error, PipelineError::NoAnswer(_)), "{error}");
    assert!(error.is_outage());
    assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");
    assert_ne!(next, before, "answered on a new connection");
    assert_eq!(
        word(&pipeline, 7).await.expect("answered"),
        Some("word 7".to_owned())
    );
}

#[tokio::test]
async fn a_query_that_fails_on_a_working_connection_fails_and_keeps_the_connection() {
    let (pipeline, _pool, _application, _guard) = database(1).await;
    let before = backend_pid(&pipeline).await;

    let error = pipeline
        .query_opt("SELECT 1 / $1::int4", &[&0i32])
        .await
        .expect_err("division by zero");

    assert!(error.to_string().contains("division by zero"), "{error}");
    assert!(!error.is_outage());
    assert_eq!(backend_pid(&pipeline).await, before);
}

#[tokio::test]
async fn a_reader_expecting_another_column_fails_naming_it() {
    let (pipeline, _pool, _application, _guard) = database(1).await;
    let row = pipeline
        .query_opt("SELECT n, word FROM t WHERE n = $1", &[&3i32])
        .await
        .expect("query")
        .expect("a row");

    let error = Columns::new(&row)
        .next::<String>("word")
        .expect_err("column 0 is n");

    assert_eq!(
        error.to_string(),
        "column word not found: the query's column 0 is n"
    );
}

#[tokio::test]
async fn a_check_opens_every_connection_and_passes() {
    let (pipeline, pool, application, _guard) = database(2).await;

    pipeline.check().await.expect("ready");

    assert_eq!(backends(&pool, &application).await.len(), 2);
}

#[tokio::test]
async fn a_check_after_the_server_ended_a_connection_passes_on_a_new_one() {
    let (pipeline, pool, application, _guard) = database(1).await;
    let before = backend_pid(&pipeline).await;
    terminate(&pool, before).await;

    pipeline.check().await.expect("ready");

    let after = backends(&pool, &application).await;
    assert_eq!(after.len(), 1);
    assert_ne!(after[0], before);
}

#[tokio::test]
async fn a_check_of_a_pipeline_that_cannot_connect_fails_saying_why() {
    let name = format!("gct_missing_{}", Uuid::new_v4().simple());
    let pipeline = Pipeline::new(
        &format!("postgres://postgres@127.0.0.1:5432/{name}"),
        2,
        "test",
    )
    .expect("pipeline");

    let error = pipeline.check().await.expect_err("no such database");

    assert!(error.to_string().contains("does not exist"), "{error}");
    assert!(!error.is_outage(), "a missing database is not an outage");
}

#[tokio::test]
async fn a_pipeline_whose_server_cannot_be_reached_fails_as_an_outage() {
    // Port 1 on loopback refuses connections.
    let pipeline =
        Pipeline::new("postgres://postgres@127.0.0.1:1/postgres", 1, "test").expect("pipeline");

    let error = pipeline.query_opt(PID, &[]).await.expect_err("refused");

    assert!(error.is_outage(), "{error}");
}

#[test]
fn a_pipeline_without_connections_is_refused() {
    let error = Pipeline::new("postgres://postgres@127.0.0.1:5432/postgres", 0, "test")
        .expect_err("no connections");

    assert!(matches!(error, PipelineError::NoConnections), "{error}");
}

#[test]
fn a_url_with_an_option_of_sqlx_alone_is_refused_naming_it() {
    let error = Pipeline::new(
        "postgres://postgres@127.0.0.1:5432/postgres?statement-cache-capacity=10",
        1,
        "test",
    )
    .expect_err("tokio-postgres does not know the option");

    assert!(matches!(error, PipelineError::Url(_)), "{error}");
    assert!(
        error.to_string().contains("statement-cache-capacity"),
        "{error}"
    );
}
