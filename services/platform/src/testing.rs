//! For the integration tests of the crates built on the platform (feature
//! `testing`, enabled only in their dev-dependencies): every test makes
//! databases of its own, and these drop them when it ends, so runs leave
//! nothing behind. Races are staged by holding a lock until the code under
//! test waits on it ([`wait_for_lock_waiters`]).

/// The local PostgreSQL's maintenance database, which the tests' admin
/// connections use.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Drops the named databases, ending the connections of pools still open
/// (FORCE). Blocks until done; safe to call from `Drop` inside a test's
/// runtime, which cannot block on itself, because the work runs on a thread
/// and runtime of its own. Failures are ignored: what is left is dropped by
/// the next `make test`.
pub fn drop_databases(names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let dropper = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(admin) = sqlx::PgPool::connect(ADMIN_URL).await else {
                return;
            };
            for name in names {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&admin)
                    .await;
            }
            admin.close().await;
        });
    });
    let _ = dropper.join();
}

/// Drops its database when it goes out of scope.
#[derive(Debug)]
pub struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        drop_databases(vec![std::mem::take(&mut self.0)]);
    }
}

/// A fresh database named `<prefix>_<random>` on the local PostgreSQL,
/// created and migrated by `migrator`, and the guard that drops it.
pub async fn migrated_database(
    prefix: &str,
    migrator: &sqlx::migrate::Migrator,
) -> (sqlx::PgPool, DropDatabase) {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let guard = DropDatabase(name.clone());
    let pool = crate::db::connect_and_migrate(
        &format!("postgres://postgres@127.0.0.1:5432/{name}"),
        crate::db::DbSettings::new(4),
        migrator,
    )
    .await
    .unwrap_or_else(|e| panic!("database {name}: {e}"));
    (pool, guard)
}

/// Returns once `waiters` connections to `db`'s database wait on a lock, or
/// after 10 s: a test holding a lock knows the code under test reached it.
pub async fn wait_for_lock_waiters(db: &sqlx::PgPool, waiters: i64) {
    for _ in 0..400 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db)
        .await
        .expect("pg_stat_activity");
        if waiting >= waiters {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
