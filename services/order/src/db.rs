//! Every query of the order service. Status changes are conditional updates
//! (`WHERE status = ANY(from)`), so two actors racing on one order cannot
//! both win, and each change writes its history row and wakes status
//! watchers in the same transaction.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use gocommerce_platform::outbox::{self, OutboxMessage};
use gocommerce_platform::row::Columns;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::domain::Status;
use crate::error::OrderError;

/// An order as `{ORDER}` selects it.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub currency: String,
    pub total: i64,
    pub shipping_address: Json<ShippingAddress>,
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

/// The shipping address as the order keeps it (a jsonb copy, so that later
/// edits to the address book leave placed orders alone). A struct rather
/// than a `serde_json::Value`: reading a page of orders parsed every copy
/// into a map of its own, two fifths of what decoding the rows cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
}

impl<'r> FromRow<'r, PgRow> for OrderRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let mut columns = Columns::new(row);
        Ok(Self {
            id: columns.next("id")?,
            user_id: columns.next("user_id")?,
            status: columns.next("status")?,
            currency: columns.next("currency")?,
            total: columns.next("total")?,
            shipping_address: columns.next("shipping_address")?,
            shipping_address_id: columns.next("shipping_address_id")?,
            payment_method: columns.next("payment_method")?,
            cancel_reason: columns.next("cancel_reason")?,
            cancel_requested: columns.next("cancel_requested")?,
            charge_started: columns.next("charge_started")?,
            payment_captured: columns.next("payment_captured")?,
            payment_id: columns.next("payment_id")?,
            compensating: columns.next("compensating")?,
            out_of_stock: columns.next("out_of_stock")?,
            refunded_amount: columns.next("refunded_amount")?,
            carrier: columns.next("carrier")?,
            tracking_number: columns.next("tracking_number")?,
            shipped_at: columns.next("shipped_at")?,
            delivered_at: columns.next("delivered_at")?,
            saga_attempts: columns.next("saga_attempts")?,
            next_attempt_at: columns.next("next_attempt_at")?,
            created_at: columns.next("created_at")?,
            updated_at: columns.next("updated_at")?,
        })
    }
}

impl OrderRow {
    pub fn status(&self) -> Status {
        // The CHECK constraint admits only names `Status` parses.
        Status::parse(&self.status).unwrap_or(Status::Pending)
    }
}

/// An order's line as `{ITEM}` selects it.
#[derive(Debug, Clone)]
pub struct ItemRow {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub unit_price: i64,
    pub quantity: i32,
    pub line_total: i64,
}

impl ItemRow {
    fn read(columns: &mut Columns<'_>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            product_id: columns.next("product_id")?,
            sku: columns.next("sku")?,
            name: columns.next("name")?,
            unit_price: columns.next("unit_price")?,
            quantity: columns.next("quantity")?,
            line_total: columns.next("line_total")?,
        })
    }
}

impl<'r> FromRow<'r, PgRow> for ItemRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Self::read(&mut Columns::new(row))
    }
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

const ITEM: &str = "product_id, sku, name, unit_price, quantity, line_total";

/// The channel status watchers listen on; the payload is the order id.
pub const STATUS_CHANNEL: &str = "gocommerce_order_status";

pub struct NewOrder<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: &'a str,
    pub total: i64,
    pub shipping_address: ShippingAddress,
    pub shipping_address_id: Uuid,
    pub payment_method: &'a str,
    pub items: &'a [ItemRow],
    /// How long the placing request owns the saga before recovery may take over.
    pub lease_secs: f64,
}

/// Writes a new order with its items, first history entry (watchers hear
/// of it at commit) and `event` (`convert::created_event`) in one statement.
#[tracing::instrument(skip_all, fields(order_id = %new.id), err)]
pub async fn insert_order(
    conn: &mut PgConnection,
    new: &NewOrder<'_>,
    actor: &str,
    event: &OutboxMessage,
) -> Result<OrderRow, OrderError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
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
               SELECT id, NULL, 'PENDING', $15, 'order placed' FROM inserted RETURNING order_id), \
             {} \
             SELECT inserted.*, (SELECT pg_notify($16, order_id::text) FROM recorded) IS NULL AS notified, \
               {} \
             FROM inserted",
            outbox::queued(Some("inserted"), 17),
            outbox::QUEUED
        )
    });
    let items = new.items;
    let query = sqlx::query_as(&SQL)
        .bind(new.id)
        .bind(new.user_id)
        .bind(new.currency)
        .bind(new.total)
        .bind(Json(&new.shipping_address))
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
        .bind(STATUS_CHANNEL);
    Ok(outbox::bind(query, event).fetch_one(&mut *conn).await?)
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
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {ITEM} FROM order_items WHERE order_id = $1 ORDER BY position")
    });
    Ok(sqlx::query_as(&SQL).bind(id).fetch_all(conn).await?)
}

/// The items of several orders in one query, by order id.
#[tracing::instrument(skip_all, fields(orders = ids.len()), err)]
pub async fn items_of(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<ItemRow>>, OrderError> {
    struct Row {
        order_id: Uuid,
        item: ItemRow,
    }
    impl<'r> FromRow<'r, PgRow> for Row {
        fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
            let mut columns = Columns::new(row);
            Ok(Self {
                order_id: columns.next("order_id")?,
                item: ItemRow::read(&mut columns)?,
            })
        }
    }
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT order_id, {ITEM} FROM order_items WHERE order_id = ANY($1) \
             ORDER BY order_id, position"
        )
    });
    let rows: Vec<Row> = sqlx::query_as(&SQL).bind(ids).fetch_all(conn).await?;
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

impl Changes {
    /// `held` as a transition to `to` with these changes leaves it, in the
    /// fields an event reads (the rest are as in `held`).
    pub fn applied_to(&self, held: &OrderRow, to: Status) -> OrderRow {
        let mut order = held.clone();
        order.status = to.as_str().to_owned();
        if let Some(reason) = &self.cancel_reason {
            order.cancel_reason = Some(reason.clone());
        }
        if let Some(carrier) = &self.carrier {
            order.carrier = Some(carrier.clone());
        }
        if let Some(number) = &self.tracking_number {
            order.tracking_number = Some(number.clone());
        }
        if let Some(refunded) = self.refunded_amount {
            order.refunded_amount = refunded;
        }
        if let Some(payment_id) = self.payment_id {
            order.payment_id = Some(payment_id);
        }
        order
    }
}

/// An event that `transition` writes exactly when the transition happens.
/// It is built beforehand from `held`, the order as the caller last read it,
/// as the transition leaves it (`Changes::applied_to`). The transition then
/// happens only while the fields an event reads and a transition may keep
/// (cancel reason, carrier, tracking number, refunded amount, payment) are
/// still as in `held`; otherwise it returns None, as when the status moved
/// first, and the caller reads the order again. So the event always says
/// what was written, and it needs no transaction of its own.
pub struct Event<'a> {
    pub held: &'a OrderRow,
    pub message: OutboxMessage,
}

/// Moves the order to `to` if it is in one of `from` (each allowed by the
/// state machine), with its history row, the watchers' notification and
/// `event`, in one statement. None when the order was not in `from`, or no
/// longer as `event` was built from: someone else changed it first.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(skip_all, fields(order_id = %id, to = to.as_str()), err)]
pub async fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    from: &[Status],
    to: Status,
    actor: &str,
    reason: &str,
    changes: Changes,
    event: Option<Event<'_>>,
) -> Result<Option<OrderRow>, OrderError> {
    // `previous` locks the row and keeps the status it had (RETURNING sees
    // only the new one); the history insert reads the update's output, so it
    // happens exactly when the update does, and so does the event's. The
    // NOTIFY sits in the final SELECT because a plain SELECT in a CTE runs
    // only if something reads it; `IS NULL` only turns its void into a value.
    fn sql(event: bool) -> String {
        let (guard, queued, notify) = if event {
            (
                " AND cancel_reason IS NOT DISTINCT FROM $17 \
                  AND carrier IS NOT DISTINCT FROM $18 \
                  AND tracking_number IS NOT DISTINCT FROM $19 \
                  AND refunded_amount = $20 AND payment_id IS NOT DISTINCT FROM $21",
                format!(", {}", outbox::queued(Some("changed"), 22)),
                format!(", {}", outbox::QUEUED),
            )
        } else {
            ("", String::new(), String::new())
        };
        format!(
            "WITH previous AS ( \
               SELECT id, status FROM orders WHERE id = $1 AND status = ANY($2){guard} FOR UPDATE), \
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
               SELECT id, previous_status, $3, $14, $15 FROM changed RETURNING order_id){queued} \
             SELECT changed.*, (SELECT pg_notify($16, order_id::text) FROM recorded) IS NULL AS notified{notify} \
             FROM changed",
            order_columns_of("o")
        )
    }
    static PLAIN: LazyLock<String> = LazyLock::new(|| sql(false));
    static WITH_EVENT: LazyLock<String> = LazyLock::new(|| sql(true));
    let from: Vec<&str> = from
        .iter()
        .filter(|f| f.can_become(to))
        .map(|f| f.as_str())
        .collect();
    let query = sqlx::query_as(if event.is_some() { &WITH_EVENT } else { &PLAIN })
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
        .bind(STATUS_CHANNEL);
    let query = match &event {
        Some(Event { held, message }) => outbox::bind(
            query
                .bind(held.cancel_reason.as_deref())
                .bind(held.carrier.as_deref())
                .bind(held.tracking_number.as_deref())
                .bind(held.refunded_amount)
                .bind(held.payment_id),
            message,
        ),
        None => query,
    };
    query.fetch_optional(&mut *conn).await.map_err(|e| {
        if gocommerce_platform::db::constraint(&e) == Some("orders_refunds_within_total") {
            OrderError::FailedPrecondition("the refunds would exceed the order total".to_owned())
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

/// Records a cancellation request the saga honours at its next step, if the
/// order may still be cancelled and none was requested; false otherwise.
#[tracing::instrument(skip_all, fields(order_id = %id), err)]
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
) -> Result<bool, OrderError> {
    let updated = sqlx::query(
        "UPDATE orders SET cancel_requested = true, cancel_reason = COALESCE(cancel_reason, $2), \
           next_attempt_at = now(), updated_at = now() \
         WHERE id = $1 AND status IN ('PENDING', 'RESERVED', 'PAID') AND NOT cancel_requested",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
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

/// A refund an admin asked for, as `order_refunds` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundRequest {
    pub order_id: Uuid,
    pub amount: i64,
    pub reason: String,
}

#[tracing::instrument(skip_all, fields(refund_id = %id), err)]
pub async fn find_refund_request(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<RefundRequest>, OrderError> {
    Ok(
        sqlx::query_as("SELECT order_id, amount, reason FROM order_refunds WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Records a refund the payment service accepted, in the transaction that
/// counts it in the order's `refunded_amount`.
#[tracing::instrument(skip_all, fields(refund_id = %id), err)]
pub async fn insert_refund_request(
    conn: &mut PgConnection,
    id: Uuid,
    request: &RefundRequest,
) -> Result<(), OrderError> {
    sqlx::query("INSERT INTO order_refunds (id, order_id, amount, reason) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(request.order_id)
        .bind(request.amount)
        .bind(&request.reason)
        .execute(conn)
        .await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use gocommerce_platform::testing::{DropDatabase, migrated_database};
    use gocommerce_proto::events::v1::EventEnvelope;
    use gocommerce_proto::events::v1::event_envelope::Payload;
    use prost::Message as _;
    use sqlx::PgPool;

    use super::*;
    use crate::convert;

    /// A migrated order database of this test's own, and an order placed in
    /// it and reserved.
    async fn reserved_order() -> (PgPool, DropDatabase, OrderRow, Vec<ItemRow>) {
        let (pool, guard) = migrated_database("gct_order_db", &crate::startup::MIGRATOR).await;
        let items = vec![ItemRow {
            product_id: Uuid::new_v4(),
            sku: "SKU-1".to_owned(),
            name: "Mug".to_owned(),
            unit_price: 1250,
            quantity: 2,
            line_total: 2500,
        }];
        let new = NewOrder {
            id: Uuid::now_v7(),
            user_id: Uuid::new_v4(),
            currency: "EUR",
            total: 2500,
            shipping_address: ShippingAddress {
                name: "A".to_owned(),
                line1: "1 Road".to_owned(),
                city: "Lyon".to_owned(),
                postal_code: "69001".to_owned(),
                country: "FR".to_owned(),
                ..ShippingAddress::default()
            },
            shipping_address_id: Uuid::new_v4(),
            payment_method: "pm_card_ok",
            items: &items,
            lease_secs: 30.0,
        };
        let mut conn = pool.acquire().await.expect("connection");
        insert_order(&mut conn, &new, "customer", &convert::created_event(&new))
            .await
            .expect("insert");
        let reserved = transition(
            &mut conn,
            new.id,
            &[Status::Pending],
            Status::Reserved,
            "system",
            "stock reserved",
            Changes::default(),
            None,
        )
        .await
        .expect("reserve")
        .expect("reserved");
        (pool, guard, reserved, items)
    }

    async fn events(pool: &PgPool) -> Vec<(String, Vec<u8>)> {
        sqlx::query_as("SELECT routing_key, payload FROM outbox ORDER BY created_at, id")
            .fetch_all(pool)
            .await
            .expect("outbox")
    }

    async fn pay(
        pool: &PgPool,
        held: &OrderRow,
        items: &[ItemRow],
        payment_id: Uuid,
    ) -> Option<OrderRow> {
        let changes = Changes {
            captured: true,
            payment_id: Some(payment_id),
            ..Changes::default()
        };
        let message =
            convert::status_event(&changes.applied_to(held, Status::Paid), items, "system")
                .expect("paid has an event");
        let mut conn = pool.acquire().await.expect("connection");
        transition(
            &mut conn,
            held.id,
            &[Status::Reserved],
            Status::Paid,
            "system",
            "payment captured",
            changes,
            Some(Event { held, message }),
        )
        .await
        .expect("transition")
    }

    #[tokio::test]
    async fn a_transition_writes_its_event_in_the_same_statement_built_as_it_left_the_order() {
        // Arrange
        let (pool, _drop, reserved, items) = reserved_order().await;
        let payment_id = Uuid::new_v4();

        // Act
        let paid = pay(&pool, &reserved, &items, payment_id).await;

        // Assert
        let paid = paid.expect("the order was as held, so it is paid");
        assert_eq!(paid.status(), Status::Paid);
        assert_eq!(paid.payment_id, Some(payment_id));
        let events = events(&pool).await;
        let keys: Vec<&str> = events.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["order.created", "order.paid"]);
        let envelope = EventEnvelope::decode(events[1].1.as_slice()).expect("envelope");
        let Some(Payload::OrderPaid(event)) = envelope.payload else {
            panic!("order.paid carries {:?}", envelope.payload);
        };
        assert_eq!(event.order_id, paid.id.to_string());
        assert_eq!(event.payment_id, payment_id.to_string());
        assert_eq!(event.items.len(), 1);
        assert_eq!(event.total.map(|m| m.amount), Some(2500));
    }

    #[tokio::test]
    async fn a_transition_whose_event_was_built_from_a_stale_order_changes_nothing() {
        // Arrange: another payment was recorded since the order was read,
        // so an event built from the read would name the wrong one.
        let (pool, _drop, reserved, items) = reserved_order().await;
        sqlx::query("UPDATE orders SET payment_id = $2 WHERE id = $1")
            .bind(reserved.id)
            .bind(Uuid::new_v4())
            .execute(&pool)
            .await
            .expect("concurrent change");

        // Act
        let paid = pay(&pool, &reserved, &items, Uuid::new_v4()).await;

        // Assert
        assert!(paid.is_none(), "a stale order is not transitioned");
        let mut conn = pool.acquire().await.expect("connection");
        let order = load(&mut conn, reserved.id)
            .await
            .expect("load")
            .expect("order");
        assert_eq!(order.status(), Status::Reserved);
        let keys: Vec<String> = events(&pool)
            .await
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, ["order.created"]);
    }
}
