//! Upgrades of an existing database, migration by migration.

use std::borrow::Cow;
use std::path::Path;

use gocommerce_platform::db;
use gocommerce_platform::testing::DropDatabase;
use sqlx::migrate::Migrator;
use uuid::Uuid;

#[tokio::test]
async fn record_only_events_waiting_in_the_outbox_go_out_as_not_mandatory_after_the_upgrade() {
    // Arrange: a database as the version before the mandatory column left
    // it, with events waiting to go out and one already published.
    let name = format!("gct_payment_{}", Uuid::new_v4().simple());
    let _drop = DropDatabase(name.clone());
    let all = Migrator::new(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations"
    )))
    .await
    .expect("migrations");
    let before = Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < 3)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    let pool = db::connect_and_migrate(
        &format!("postgres://postgres@127.0.0.1:5432/{name}"),
        db::DbSettings::new(2),
        &before,
    )
    .await
    .expect("a database at the earlier migrations");
    for (key, published) in [
        ("payment.succeeded", false),
        ("payment.failed", false),
        ("payment.refunded", false),
        ("payment.refund.requested", false),
        ("payment.succeeded", true),
    ] {
        sqlx::query(
            "INSERT INTO outbox (id, routing_key, content_type, payload, published_at) \
             VALUES ($1, $2, 'application/x-protobuf', '', CASE WHEN $3 THEN now() END)",
        )
        .bind(Uuid::new_v4())
        .bind(key)
        .bind(published)
        .execute(&pool)
        .await
        .expect("an outbox row");
    }

    // Act
    all.run(&pool).await.expect("the upgrade");

    // Assert
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT routing_key, published_at IS NOT NULL, mandatory FROM outbox \
         ORDER BY routing_key, published_at NULLS FIRST",
    )
    .fetch_all(&pool)
    .await
    .expect("outbox");
    let row = |key: &str, published, mandatory| (key.to_owned(), published, mandatory);
    assert_eq!(
        rows,
        [
            row("payment.failed", false, false),
            row("payment.refund.requested", false, true),
            row("payment.refunded", false, true),
            row("payment.succeeded", false, false),
            row("payment.succeeded", true, true),
        ]
    );
}
