//! Every query of the order service. Status changes are conditional updates
//! (`WHERE status = ANY(from)`), so two actors racing on one order cannot
//! both win, and each change writes its history row and wakes status
//! watchers in the same transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Status;
use crate::error::OrderError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub currency: String,
    pub total: i64,
    pub shipping_address: serde_json::Value,
    pub shipping_address_id: Uuid,
    pub payment_method: String,
    pub cancel_reason: Option<String>,
    pub cancel_requested: bool,
    pub charge_started: bool,
    pub payment_captured: bool,
    /// The captured payment; set together with `payment_captured`.
    pub payment_id: Option<Uuid>,
    pub compensating: bool,
    pub out_of_stock: bool,
    pub refunded_amount: i64,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub saga_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    pub fn status(&self) -> Status {
        // The CHECK constraint admits only names `Status` parses.
        Status::parse(&self.status).unwrap_or(Status::Pending)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemRow {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub unit_price: i64,
    pub quantity: i32,
    pub line_total: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    pub id: i64,
    pub from_status: Option<String>,
    pub to_status: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
}

const ORDER: &str = "id, user_id, status, currency, total, shipping_address, shipping_address_id, \
     payment_method, cancel_reason, cancel_requested, charge_started, payment_captured, payment_id, compensating, \
     out_of_stock, refunded_amount, carrier, tracking_number, shipped_at, delivered_at, saga_attempts, \
     next_attempt_at, created_at, updated_at";

/// The channel status watchers listen on; the payload is the order id.
pub const STATUS_CHANNEL: &str = "gocommerce_order_status";

pub struct NewOrder<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: &'a str,
    pub total: i64,
    pub shipping_address: serde_json::Value,
    pub shipping_address_id: Uuid,
    pub payment_method: &'a str,
    pub items: &'a [ItemRow],
    /// How long the placing request owns the saga before recovery may take over.
    pub lease_secs: f64,
}

/// Writes a new order with its items and first history entry (watchers
/// hear of it at commit) in one statement.
#[tracing::instrument(skip_all, fields(order_id = %new.id), err)]
pub async fn insert_order(
    conn: &mut PgConnection,
    new: &NewOrder<'_>,
    actor: &str,
) -> Result<OrderRow, OrderError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        // Foreign keys are checked at the end of the statement, so the items
        // may name the order inserted beside them.
        format!(
            "WITH inserted AS ( \
               INSERT INTO orders (id, user_id, status, currency, total, shipping_address, \
                 shipping_address_id, payment_method, next_attempt_at) \
               VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $7, now() + make_interval(secs => $8)) \
               RETURNING {ORDER}), \
             lines AS ( \
               INSERT INTO order_items (order_id, position, product_id, sku, name, unit_price, quantity, line_total) \
               SELECT $1, (ordinality - 1)::int, product_id, sku, name, unit_price, quantity, line_total \
               FROM UNNEST($9::uuid[], $10::text[], $11::text[], $12::bigint[], $13::int[], $14::bigint[]) \
                 WITH ORDINALITY AS i(product_id, sku, name, unit_price, quantity, line_total, ordinality)), \
             recorded AS ( \
               INSERT INTO order_history (order_id, from_status, to_status, actor, reason) \
               SELECT id, NULL, 'PENDING', $15, 'order placed' FROM inserted RETURNING order_id) \
             SELECT inserted.*, (SELECT pg_notify($16, order_id::text) FROM recorded) IS NULL AS notified \
             FROM inserted"
        )
    });
    let items = new.items;
    Ok(sqlx::query_as(&SQL)
        .bind(new.id)
        .bind(new.user_id)
        .bind(new.currency)
        .bind(new.total)
        .bind(&new.shipping_address)
        .bind(new.shipping_address_id)
        .bind(new.payment_method)
        .bind(new.lease_secs)
        .bind(items.iter().map(|i| i.product_id).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.unit_price).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.quantity).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.line_total).collect::<Vec<_>>())
        .bind(actor)
        .bind(STATUS_CHANNEL)
        .fetch_one(&mut *conn)
        .await?)
}

#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn load(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, OrderError> {
    Ok(
        sqlx::query_as(&format!("SELECT {ORDER} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, OrderError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ORDER} FROM orders WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn items(conn: &mut PgConnection, id: Uuid) -> Result<Vec<ItemRow>, OrderError> {
    Ok(sqlx::query_as(
        "SELECT product_id, sku, name, unit_price, quantity, line_total FROM order_items \
         WHERE order_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(conn)
    .await?)
}

/// The items of several orders in one query, by order id.
#[tracing::instrument(skip_all, fields(orders = ids.len()), err)]
pub async fn items_of(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<ItemRow>>, OrderError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        order_id: Uuid,
        #[sqlx(flatten)]
        item: ItemRow,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT order_id, product_id, sku, name, unit_price, quantity, line_total \
         FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, position",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut items: std::collections::HashMap<Uuid, Vec<ItemRow>> =
        std::collections::HashMap::with_capacity(ids.len());
    for row in rows {
        items.entry(row.order_id).or_default().push(row.item);
    }
    Ok(items)
}

/// History entries after `after_id` (0 for all), oldest first.
#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn history(
    conn: &mut PgConnection,
    id: Uuid,
    after_id: i64,
) -> Result<Vec<HistoryRow>, OrderError> {
    Ok(sqlx::query_as(
        "SELECT id, from_status, to_status, at, actor, reason FROM order_history \
         WHERE order_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(id)
    .bind(after_id)
    .fetch_all(conn)
    .await?)
}

/// Column changes that travel with a status change.
#[derive(Debug, Default)]
pub struct Changes {
    pub cancel_reason: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub shipped: bool,
    pub delivered: bool,
    pub refunded_amount: Option<i64>,
    /// The saga has nothing left to do.
    pub settle: bool,
    /// The saga is about to charge: recorded with the reservation, unless a
    /// cancellation or compensation got there first.
    pub start_charge: bool,
    /// The payment was captured; `payment_id` names it.
    pub captured: bool,
    pub payment_id: Option<Uuid>,
}

/// Every column of the order under `o.`, for the transition's RETURNING.
fn order_columns_of(alias: &str) -> String {
    ORDER
        .split(", ")
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Moves the order to `to` if it is in one of `from` (each allowed by the
/// state machine), with its history row and the watchers' notification, in
/// one statement. None when the order was not in `from`: someone else
/// changed it first.
#[tracing::instrument(skip_all, fields(order_id = %id, to = to.as_str()), err)]
pub async fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    from: &[Status],
    to: Status,
    actor: &str,
    reason: &str,
    changes: Changes,
) -> Result<Option<OrderRow>, OrderError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        // `previous` locks the row and keeps the status it had (RETURNING
        // sees only the new one); the history insert reads the update's
        // output, so it happens exactly when the update does. The NOTIFY
        // sits in the final SELECT because a plain SELECT in a CTE runs only
        // if something reads it; `IS NULL` only turns its void into a value.
        format!(
            "WITH previous AS ( \
               SELECT id, status FROM orders WHERE id = $1 AND status = ANY($2) FOR UPDATE), \
             changed AS ( \
               UPDATE orders o SET status = $3, cancel_reason = COALESCE($4, o.cancel_reason), \
                 carrier = COALESCE($5, o.carrier), tracking_number = COALESCE($6, o.tracking_number), \
                 shipped_at = CASE WHEN $7 THEN now() ELSE o.shipped_at END, \
                 delivered_at = CASE WHEN $8 THEN now() ELSE o.delivered_at END, \
                 refunded_amount = COALESCE($9, o.refunded_amount), \
                 next_attempt_at = CASE WHEN $10 THEN NULL ELSE o.next_attempt_at END, \
                 charge_started = o.charge_started OR ($11 AND NOT o.compensating AND NOT o.cancel_requested), \
                 payment_captured = o.payment_captured OR $12, \
                 payment_id = COALESCE($13, o.payment_id), \
                 updated_at = now() \
               FROM previous p WHERE o.id = p.id \
               RETURNING {}, p.status AS previous_status), \
             recorded AS ( \
               INSERT INTO order_history (order_id, from_status, to_status, actor, reason) \
               SELECT id, previous_status, $3, $14, $15 FROM changed RETURNING order_id) \
             SELECT changed.*, (SELECT pg_notify($16, order_id::text) FROM recorded) IS NULL AS notified \
             FROM changed",
            order_columns_of("o")
        )
    });
    let from: Vec<&str> = from
        .iter()
        .filter(|f| f.can_become(to))
        .map(|f| f.as_str())
        .collect();
    sqlx::query_as(&SQL)
        .bind(id)
        .bind(&from)
        .bind(to.as_str())
        .bind(&changes.cancel_reason)
        .bind(&changes.carrier)
        .bind(&changes.tracking_number)
        .bind(changes.shipped)
        .bind(changes.delivered)
        .bind(changes.refunded_amount)
        .bind(changes.settle)
        .bind(changes.start_charge)
        .bind(changes.captured)
        .bind(changes.payment_id)
        .bind(actor)
        .bind(reason)
        .bind(STATUS_CHANNEL)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| {
            if gocommerce_platform::db::constraint(&e) == Some("orders_refunds_within_total") {
                OrderError::FailedPrecondition(
                    "the refunds would exceed the order total".to_owned(),
                )
            } else {
                OrderError::Database(e)
            }
        })
}

/// Saga flags. Each update is conditional so that a late or duplicate step
/// cannot undo a decision: the row it returns is the truth.
#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn start_charge(conn: &mut PgConnection, id: Uuid) -> Result<bool, OrderError> {
    let updated = sqlx::query(
        "UPDATE orders SET charge_started = true, updated_at = now() \
         WHERE id = $1 AND status = 'RESERVED' AND NOT compensating AND NOT cancel_requested",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Decides to cancel a not-yet-paid order; refused once money was taken.
#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn start_compensation(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
    out_of_stock: bool,
) -> Result<bool, OrderError> {
    let updated = sqlx::query(
        "UPDATE orders SET compensating = true, cancel_reason = COALESCE(cancel_reason, $2), \
           out_of_stock = out_of_stock OR $3, next_attempt_at = now(), updated_at = now() \
         WHERE id = $1 AND status IN ('PENDING', 'RESERVED') AND NOT payment_captured",
    )
    .bind(id)
    .bind(reason)
    .bind(out_of_stock)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Records a cancellation request the saga honours at its next step.
#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
) -> Result<(), OrderError> {
    sqlx::query(
        "UPDATE orders SET cancel_requested = true, cancel_reason = COALESCE(cancel_reason, $2), \
           next_attempt_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Asks the saga to look again after `delay`.
#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn schedule(
    conn: &mut PgConnection,
    id: Uuid,
    delay_secs: f64,
) -> Result<(), OrderError> {
    sqlx::query(
        "UPDATE orders SET next_attempt_at = now() + make_interval(secs => $2), \
           saga_attempts = saga_attempts + 1 WHERE id = $1",
    )
    .bind(id)
    .bind(delay_secs)
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn settle(conn: &mut PgConnection, id: Uuid) -> Result<(), OrderError> {
    sqlx::query("UPDATE orders SET next_attempt_at = NULL, saga_attempts = 0 WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes a lease on up to `limit` orders whose saga is due.
#[tracing::instrument(skip_all, err)]
pub async fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    lease_secs: f64,
) -> Result<Vec<Uuid>, OrderError> {
    Ok(sqlx::query_scalar(
        "UPDATE orders SET next_attempt_at = now() + make_interval(secs => $2) WHERE id IN ( \
           SELECT id FROM orders WHERE next_attempt_at <= now() ORDER BY next_attempt_at \
           LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id",
    )
    .bind(limit)
    .bind(lease_secs)
    .fetch_all(conn)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub request_hash: Vec<u8>,
    pub order_id: Uuid,
    pub response_code: Option<String>,
    pub response_message: Option<String>,
}

/// Claims an idempotency key for a new order. None when the key exists (the
/// insert waits for a concurrent holder to commit, so the winner is known).
#[tracing::instrument(skip_all, err)]
pub async fn claim_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    hash: &[u8],
    order_id: Uuid,
) -> Result<bool, OrderError> {
    // Keys live 24 hours: an expired one is forgotten before it is reused.
    sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND created_at < now() - interval '24 hours'")
        .bind(user_id)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, key) DO NOTHING",
    )
    .bind(user_id)
    .bind(key)
    .bind(hash)
    .bind(order_id)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

#[tracing::instrument(skip_all, err)]
pub async fn find_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
) -> Result<Option<KeyRow>, OrderError> {
    Ok(sqlx::query_as(
        "SELECT request_hash, order_id, response_code, response_message FROM idempotency_keys \
         WHERE user_id = $1 AND key = $2 AND created_at >= now() - interval '24 hours'",
    )
    .bind(user_id)
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, err)]
pub async fn record_key_response(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    code: &str,
    message: &str,
) -> Result<(), OrderError> {
    sqlx::query(
        "UPDATE idempotency_keys SET response_code = $3, response_message = $4 \
         WHERE user_id = $1 AND key = $2 AND response_code IS NULL",
    )
    .bind(user_id)
    .bind(key)
    .bind(code)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes keys older than a day.
#[tracing::instrument(skip_all, err)]
pub async fn expire_keys(conn: &mut PgConnection) -> Result<u64, OrderError> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// A page of orders, newest first, after the keyset position `after`.
#[tracing::instrument(skip_all, err)]
pub async fn list(
    conn: &mut PgConnection,
    user_id: Option<Uuid>,
    status: Option<Status>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<OrderRow>, OrderError> {
    // Only the filters given, so each combination gets a plan that uses its
    // index (`$1 IS NULL OR user_id = $1` in one statement made PostgreSQL's
    // generic plan scan and sort every order).
    let mut query = sqlx::QueryBuilder::new(format!("SELECT {ORDER} FROM orders WHERE true"));
    if let Some(user_id) = user_id {
        query.push(" AND user_id = ").push_bind(user_id);
    }
    if let Some(status) = status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some((at, id)) = after {
        query
            .push(" AND (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    Ok(query.build_query_as().fetch_all(conn).await?)
}
