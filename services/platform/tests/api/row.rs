//! Reading rows by position against the real PostgreSQL: columns come in
//! the order the query selects them, and a reader that expects another
//! order fails naming the column instead of decoding the wrong one.

use gocommerce_platform::row::Columns;
use gocommerce_platform::testing::ADMIN_URL;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection};

async fn row(sql: &str) -> PgRow {
    let mut conn = PgConnection::connect(ADMIN_URL).await.expect("connection");
    sqlx::query(sql).fetch_one(&mut conn).await.expect("row")
}

#[tokio::test]
async fn columns_are_read_in_the_order_the_query_selects_them() {
    let row = row("SELECT 42::int8 AS total, 'EUR' AS currency, NULL::text AS reason").await;
    let mut columns = Columns::new(&row);

    let total: i64 = columns.next("total").expect("total");
    let currency: String = columns.next("currency").expect("currency");
    let reason: Option<String> = columns.next("reason").expect("reason");

    assert_eq!((total, currency.as_str(), reason), (42, "EUR", None));
}

#[tokio::test]
async fn a_reader_expecting_another_column_order_fails_naming_the_column() {
    let row = row("SELECT 'EUR' AS currency, 'GBP' AS country").await;
    let mut columns = Columns::new(&row);

    let error = columns
        .next::<String>("country")
        .expect_err("column 0 is the currency");

    let message = error.to_string();
    assert!(
        message.contains("country (the query's column 0 is currency)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_reader_expecting_more_columns_than_the_query_selects_fails() {
    let row = row("SELECT 'EUR' AS currency").await;
    let mut columns = Columns::new(&row);
    let _: String = columns.next("currency").expect("currency");

    let error = columns.next::<String>("country");

    assert!(error.is_err(), "{error:?}");
}
