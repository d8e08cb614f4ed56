//! The `OrderService` gRPC handlers.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gocommerce_platform::db::Db;
use gocommerce_platform::grpc::{self, Traced};
use gocommerce_platform::{Caller, Shutdown, page, validate};
use gocommerce_proto::order::v1 as pb;
use gocommerce_proto::payment::v1 as payment_pb;
use gocommerce_proto::product::v1 as product_pb;
use gocommerce_proto::user::v1 as user_pb;
use gocommerce_proto::user::v1::user_service_client::UserServiceClient;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status as GrpcStatus};
use uuid::Uuid;

use crate::convert;
use crate::db::{self, Changes, ItemRow, NewOrder, OrderRow};
use crate::domain::{PAYMENT_METHODS, Status};
use crate::error::OrderError;
use crate::saga::Saga;
use crate::watch::Watchers;

const MAX_ITEMS: usize = 50;
const MAX_QUANTITY: i32 = 1000;
const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;
/// How long PlaceOrder waits for the saga when the caller sent no deadline.
const DEFAULT_BUDGET: Duration = Duration::from_secs(4);
/// Answer this much before the caller's deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct OrderService {
    pub saga: Saga,
    pub user: UserServiceClient<Traced>,
    pub watchers: Watchers,
    pub shutdown: Shutdown,
}

fn invalid(message: impl Into<String>) -> OrderError {
    OrderError::InvalidArgument(message.into())
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, OrderError> {
    Uuid::parse_str(raw).map_err(|_| invalid(format!("{field}: must be a UUID")))
}

fn actor(caller: &Caller) -> String {
    format!("{}:{}", caller.role, caller.user_id)
}

/// A validated PlaceOrder request.
struct Placement {
    items: Vec<(Uuid, i32)>,
    address_id: Uuid,
    method: String,
    key: Option<String>,
    hash: Vec<u8>,
}

fn validate_placement(request: &pb::PlaceOrderRequest) -> Result<Placement, OrderError> {
    if request.items.is_empty() {
        return Err(invalid("items: must contain at least one item"));
    }
    if request.items.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "items: at most {MAX_ITEMS} items per order"
        )));
    }
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(request.items.len());
    for (index, item) in request.items.iter().enumerate() {
        let product_id = parse_uuid(&format!("items[{index}].product_id"), &item.product_id)?;
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(invalid(format!(
                "items[{index}].quantity: must be 1 to {MAX_QUANTITY}"
            )));
        }
        if !seen.insert(product_id) {
            return Err(invalid(format!(
                "items[{index}].product_id: listed twice; add up the quantities"
            )));
        }
        items.push((product_id, item.quantity));
    }
    let address_id = parse_uuid("shipping_address_id", &request.shipping_address_id)?;
    if !PAYMENT_METHODS.contains(&request.payment_method.as_str()) {
        return Err(invalid(format!(
            "payment_method: unknown method {:?}; use one of {}",
            request.payment_method,
            PAYMENT_METHODS.join(", ")
        )));
    }
    let key = idempotency_key(&request.idempotency_key)?.map(str::to_owned);
    // The body's fingerprint: a key reused with another body is refused.
    let mut hasher = Sha256::new();
    for (product_id, quantity) in &items {
        hasher.update(product_id.as_bytes());
        hasher.update(quantity.to_be_bytes());
    }
    hasher.update(address_id.as_bytes());
    hasher.update(request.payment_method.as_bytes());
    Ok(Placement {
        items,
        address_id,
        method: request.payment_method.clone(),
        key,
        hash: hasher.finalize().to_vec(),
    })
}

fn page_token(order: &OrderRow) -> String {
    page::token(order.created_at, order.id)
}

fn parse_page_token(token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, OrderError> {
    if token.is_empty() {
        return Ok(None);
    }
    page::parse(token).map(Some).ok_or_else(|| {
        invalid("page_token: malformed; pass back the next_page_token of a previous page")
    })
}

impl OrderService {
    fn db(&self) -> &Db {
        &self.saga.db
    }

    fn request<T>(&self, message: T, caller: Option<&Caller>) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.saga.step_timeout);
        if let Some(caller) = caller {
            caller.write_to(request.metadata_mut());
        }
        request
    }

    /// Runs the saga in a task of its own (it must finish even if our caller
    /// gives up) and waits for it at most `budget`.
    /// `placed` is the order and items its caller has just written, which
    /// the saga then need not read again.
    async fn drive_for(
        &self,
        id: Uuid,
        budget: Duration,
        placed: Option<(OrderRow, Vec<ItemRow>)>,
    ) -> Result<OrderRow, OrderError> {
        let saga = self.saga.clone();
        // In the caller's span, so the saga's calls and events join its trace.
        let run = tokio::spawn(tracing::Instrument::in_current_span(async move {
            match placed {
                Some((order, items)) => saga.drive_placed(order, items).await,
                None => saga.drive(id).await,
            }
        }));
        match tokio::time::timeout(budget, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(OrderError::Backend(GrpcStatus::internal(join.to_string()))),
            Err(_) => self.load(id).await,
        }
    }

    async fn load(&self, id: Uuid) -> Result<OrderRow, OrderError> {
        let mut conn = self.db().acquire().await?;
        let order = db::load(&mut conn, id).await?;
        conn.keep();
        order.ok_or(OrderError::NotFound)
    }

    /// The order if the caller may see it; someone else's is "not found".
    async fn visible(&self, caller: &Caller, id: Uuid) -> Result<OrderRow, OrderError> {
        let order = self.load(id).await?;
        if caller.may_access(order.user_id) {
            Ok(order)
        } else {
            Err(OrderError::NotFound)
        }
    }

    async fn view(&self, order: &OrderRow, with_history: bool) -> Result<pb::Order, OrderError> {
        self.view_with(order, None, with_history).await
    }

    /// The view of `order`; `items` are its items if the caller holds them
    /// (they never change), so only the history is read.
    async fn view_with(
        &self,
        order: &OrderRow,
        items: Option<Vec<ItemRow>>,
        with_history: bool,
    ) -> Result<pb::Order, OrderError> {
        let mut conn = self.db().acquire().await?;
        let items = match items {
            Some(items) => items,
            None => db::items(&mut conn, order.id).await?,
        };
        let history = if with_history {
            db::history(&mut conn, order.id, 0).await?
        } else {
            Vec::new()
        };
        conn.keep();
        Ok(convert::order_to_proto(order, &items, &history))
    }

    async fn place(&self, request: Request<pb::PlaceOrderRequest>) -> Result<Placed, OrderError> {
        let caller = Caller::from_metadata(request.metadata()).map_err(OrderError::Backend)?;
        let budget = grpc::timeout(request.metadata())
            .map_or(DEFAULT_BUDGET, |d| d.saturating_sub(DEADLINE_MARGIN));
        let placement = validate_placement(request.get_ref())?;
        if let Some(key) = &placement.key {
            let mut conn = self.db().acquire().await?;
            let existing = db::find_key(&mut conn, caller.user_id, key).await?;
            conn.keep();
            if let Some(existing) = existing {
                return self
                    .replay(&caller, key, &placement.hash, existing, budget)
                    .await;
            }
        }

        let items = self.snapshot(&placement.items).await?;
        let currency = items_currency(&items)?;
        let address = self.address(&caller, placement.address_id).await?;
        let order_id = Uuid::now_v7();
        let item_rows: Vec<ItemRow> = items.into_iter().map(|(row, _)| row).collect();
        let total = item_rows
            .iter()
            .try_fold(0_i64, |sum, i| sum.checked_add(i.line_total))
            .ok_or_else(|| invalid("items: the total is too large"))?;
        // A charge needs an amount: free products are given with others.
        if total == 0 {
            return Err(OrderError::FailedPrecondition(
                "items: the order's total is 0; free products can only be ordered with others"
                    .to_owned(),
            ));
        }

        let new = NewOrder {
            id: order_id,
            user_id: caller.user_id,
            currency: &currency,
            total,
            shipping_address: convert::address_to_stored(&address),
            shipping_address_id: placement.address_id,
            payment_method: &placement.method,
            items: &item_rows,
            lease_secs: self.saga.lease.as_secs_f64(),
        };
        let event = convert::created_event(&new);
        // The order, its items, history and event are one statement; only an
        // idempotency key, claimed beside them, needs a transaction.
        let order = match &placement.key {
            None => {
                let mut conn = self.db().acquire().await?;
                let order = db::insert_order(&mut conn, &new, &actor(&caller), &event).await?;
                conn.keep();
                order
            }
            Some(key) => {
                let mut tx = self.db().begin().await?;
                if !db::claim_key(&mut tx, caller.user_id, key, &placement.hash, order_id).await? {
                    // A concurrent request with this key won; answer as it does.
                    tx.rollback().await?;
                    let mut conn = self.db().acquire().await?;
                    let existing = db::find_key(&mut conn, caller.user_id, key).await?;
                    conn.keep();
                    let existing = existing.ok_or_else(|| {
                        OrderError::Backend(GrpcStatus::aborted("idempotency key vanished, retry"))
                    })?;
                    return self
                        .replay(&caller, key, &placement.hash, existing, budget)
                        .await;
                }
                let order = db::insert_order(&mut tx, &new, &actor(&caller), &event).await?;
                tx.commit().await?;
                order
            }
        };
        tracing::info!(order_id = %order_id, user_id = %caller.user_id, total, "order placed");

        let order = self
            .drive_for(order_id, budget, Some((order, item_rows.clone())))
            .await?;
        let outcome = placement_outcome(&order);
        if let Some(key) = &placement.key {
            let (code, message) = match &outcome {
                Ok(()) => ("OK", String::new()),
                Err(message) => ("FAILED_PRECONDITION", message.clone()),
            };
            let mut conn = self.db().acquire().await?;
            db::record_key_response(&mut conn, caller.user_id, key, code, &message).await?;
            conn.keep();
        }
        outcome.map_err(OrderError::FailedPrecondition)?;
        Ok(Placed::New {
            order,
            items: item_rows,
        })
    }

    /// Answers a repeated key with the first request's answer.
    async fn replay(
        &self,
        caller: &Caller,
        key: &str,
        hash: &[u8],
        mut existing: db::KeyRow,
        budget: Duration,
    ) -> Result<Placed, OrderError> {
        if existing.request_hash != hash {
            return Err(OrderError::FailedPrecondition(
                "Idempotency-Key: already used with a different request".to_owned(),
            ));
        }
        // The first request may still be running: wait for its answer.
        let waited = tokio::time::Instant::now();
        while existing.response_code.is_none() && waited.elapsed() < budget {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let mut conn = self.db().acquire().await?;
            if let Some(row) = db::find_key(&mut conn, caller.user_id, key).await? {
                existing = row;
            }
            conn.keep();
        }
        if existing.response_code.as_deref() == Some("FAILED_PRECONDITION") {
            return Err(OrderError::FailedPrecondition(
                existing.response_message.unwrap_or_default(),
            ));
        }
        let order = self.load(existing.order_id).await?;
        Ok(Placed::Replayed(order))
    }

    /// Each product's current name and price, checked purchasable.
    async fn snapshot(&self, wanted: &[(Uuid, i32)]) -> Result<Vec<(ItemRow, String)>, OrderError> {
        let request = self.request(
            product_pb::GetProductsRequest {
                product_ids: wanted.iter().map(|(id, _)| id.to_string()).collect(),
            },
            None,
        );
        let products: HashMap<String, product_pb::Product> = self
            .saga
            .product
            .clone()
            .get_products(request)
            .await
            .map_err(OrderError::Backend)?
            .into_inner()
            .products
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        wanted
            .iter()
            .enumerate()
            .map(|(index, (id, quantity))| {
                let product = products.get(&id.to_string()).ok_or_else(|| {
                    invalid(format!("items[{index}].product_id: no such product"))
                })?;
                if !product.active {
                    return Err(OrderError::FailedPrecondition(format!(
                        "items[{index}]: {} is no longer sold",
                        product.name
                    )));
                }
                let price = product.price.clone().unwrap_or_default();
                let line_total =
                    price
                        .amount
                        .checked_mul(i64::from(*quantity))
                        .ok_or_else(|| {
                            invalid(format!(
                                "items[{index}].quantity: the line total is too large"
                            ))
                        })?;
                Ok((
                    ItemRow {
                        product_id: *id,
                        sku: product.sku.clone(),
                        name: product.name.clone(),
                        unit_price: price.amount,
                        quantity: *quantity,
                        line_total,
                    },
                    price.currency,
                ))
            })
            .collect()
    }

    async fn address(
        &self,
        caller: &Caller,
        address_id: Uuid,
    ) -> Result<gocommerce_proto::common::v1::PostalAddress, OrderError> {
        let request = self.request(
            user_pb::GetAddressRequest {
                user_id: caller.user_id.to_string(),
                address_id: address_id.to_string(),
            },
            Some(caller),
        );
        match self.user.clone().get_address(request).await {
            Ok(response) => Ok(response
                .into_inner()
                .address
                .and_then(|a| a.postal_address)
                .unwrap_or_default()),
            Err(status) if status.code() == Code::NotFound => Err(invalid(
                "shipping_address_id: no such address in your address book",
            )),
            Err(status) => Err(OrderError::Backend(status)),
        }
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<OrderRow, OrderError> {
        let caller = Caller::from_metadata(request.metadata()).map_err(OrderError::Backend)?;
        let budget = grpc::timeout(request.metadata())
            .map_or(DEFAULT_BUDGET, |d| d.saturating_sub(DEADLINE_MARGIN));
        let request = request.into_inner();
        let id = parse_uuid("order_id", &request.order_id)?;
        validate::text(&request.reason, 500, false, false)
            .map_err(|message| invalid(format!("reason: {message}")))?;
        let reason = match request.reason.trim() {
            "" => format!("cancelled by the {}", caller.role),
            reason => reason.to_owned(),
        };
        let order = self.visible(&caller, id).await?;
        if !matches!(
            order.status(),
            Status::Pending | Status::Reserved | Status::Paid
        ) || order.cancel_requested
        {
            return Err(OrderError::FailedPrecondition(format!(
                "an order in status {} cannot be cancelled",
                order.status().as_str()
            )));
        }
        // The check above read the order unlocked: the request is written only
        // if the order still allows it, since an admin may have shipped it
        // meanwhile.
        let requested = {
            let mut conn = self.db().acquire().await?;
            let requested = db::request_cancel(&mut conn, id, &reason).await?;
            conn.keep();
            requested
        };
        if !requested {
            let order = self.visible(&caller, id).await?;
            return Err(OrderError::FailedPrecondition(format!(
                "an order in status {} cannot be cancelled",
                order.status().as_str()
            )));
        }
        tracing::info!(order_id = %id, by = %actor(&caller), "cancellation requested");
        self.drive_for(id, budget, None).await
    }

    async fn ship(&self, request: Request<pb::ShipOrderRequest>) -> Result<OrderRow, OrderError> {
        let caller = Caller::from_metadata(request.metadata()).map_err(OrderError::Backend)?;
        caller.require_admin().map_err(OrderError::Backend)?;
        let request = request.into_inner();
        let id = parse_uuid("order_id", &request.order_id)?;
        for (field, value) in [
            ("carrier", &request.carrier),
            ("tracking_number", &request.tracking_number),
        ] {
            validate::text(value, 100, true, false)
                .map_err(|message| invalid(format!("{field}: {message}")))?;
        }
        self.change_status(
            &caller,
            id,
            &[Status::Paid, Status::PartiallyRefunded],
            Status::Shipped,
            "shipped",
            Changes {
                carrier: Some(request.carrier.trim().to_owned()),
                tracking_number: Some(request.tracking_number.trim().to_owned()),
                shipped: true,
                ..Changes::default()
            },
        )
        .await
    }

    /// An admin's status change, with its event; refused (409) when the
    /// order is not in a status it can be made from.
    async fn change_status(
        &self,
        caller: &Caller,
        id: Uuid,
        from: &[Status],
        to: Status,
        reason: &str,
        changes: Changes,
    ) -> Result<OrderRow, OrderError> {
        // Locked first, so a refusal names the status the order really had.
        let mut tx = self.db().begin().await?;
        let current = db::lock(&mut tx, id).await?.ok_or(OrderError::NotFound)?;
        refuse_while_cancelling(&current)?;
        let fulfilled = (current.shipped_at.is_some(), current.delivered_at.is_some());
        if !Status::fulfilment_allows(fulfilled.0, fulfilled.1, to) {
            return Err(OrderError::FailedPrecondition(format!(
                "an order in status {} that was {} cannot become {}",
                current.status().as_str(),
                if fulfilled.0 {
                    "shipped"
                } else {
                    "not shipped"
                },
                to.as_str()
            )));
        }
        let items = db::items(&mut tx, id).await?;
        let event =
            convert::transition_event(&current, to, &changes, &items, &caller.role.to_string());
        let Some(order) = db::transition(
            &mut tx,
            id,
            from,
            to,
            &actor(caller),
            reason,
            changes,
            event,
        )
        .await?
        else {
            return Err(OrderError::FailedPrecondition(format!(
                "an order in status {} cannot become {}",
                current.status().as_str(),
                to.as_str()
            )));
        };
        tx.commit().await?;
        tracing::info!(order_id = %id, to = to.as_str(), by = %actor(caller), "order status changed");
        Ok(order)
    }

    async fn refund(
        &self,
        request: Request<pb::RequestRefundRequest>,
    ) -> Result<(payment_pb::Refund, OrderRow), OrderError> {
        let caller = Caller::from_metadata(request.metadata()).map_err(OrderError::Backend)?;
        caller.require_admin().map_err(OrderError::Backend)?;
        let request = request.into_inner();
        let id = parse_uuid("order_id", &request.order_id)?;
        let amount = request
            .amount
            .clone()
            .ok_or_else(|| invalid("amount: is required"))?;
        if amount.amount <= 0 {
            return Err(invalid("amount: must be a positive number of minor units"));
        }
        validate::text(&request.reason, 500, true, false)
            .map_err(|message| invalid(format!("reason: {message}")))?;
        let reason = request.reason.trim();
        // With a key the refund's id is the same each time it is asked for,
        // so the payment service makes it once however often it is asked.
        let refund_id = idempotency_key(&request.idempotency_key)?
            .map_or_else(Uuid::now_v7, |key| {
                Uuid::new_v5(&id, format!("refund:{key}").as_bytes())
            });
        let asked = db::RefundRequest {
            order_id: id,
            amount: amount.amount,
            reason: reason.to_owned(),
        };
        // The lock serialises refunds of one order: each sees the last one's total.
        let mut tx = self.db().begin().await?;
        let order = db::lock(&mut tx, id).await?.ok_or(OrderError::NotFound)?;
        if !amount.currency.is_empty() && amount.currency != order.currency {
            return Err(invalid(format!(
                "amount.currency: the order is in {}",
                order.currency
            )));
        }
        let repeated = match db::find_refund_request(&mut tx, refund_id).await? {
            Some(earlier) if earlier == asked => true,
            Some(_) => {
                return Err(OrderError::FailedPrecondition(
                    "idempotency_key: already used for another refund of this order".to_owned(),
                ));
            }
            None => false,
        };
        // A repeat was checked and counted the first time; it is only asked
        // of the payment service again, for the refund's current state.
        if !repeated {
            if !order.status().refundable() {
                return Err(OrderError::FailedPrecondition(format!(
                    "an order in status {} cannot be refunded",
                    order.status().as_str()
                )));
            }
            refuse_while_cancelling(&order)?;
            let remaining = order.total - order.refunded_amount;
            if amount.amount > remaining {
                return Err(OrderError::FailedPrecondition(format!(
                    "amount: {} exceeds the {remaining} that remains refundable",
                    amount.amount
                )));
            }
        }
        // Asked while the order is locked and recorded after: if the answer or
        // the commit is lost, the payment service has the refund and the order
        // does not, and asking again with the same key records it.
        let refund = self
            .saga
            .payment
            .clone()
            .refund_payment(self.request(
                payment_pb::RefundPaymentRequest {
                    order_id: id.to_string(),
                    amount: Some(gocommerce_proto::common::v1::Money {
                        amount: amount.amount,
                        currency: order.currency.clone(),
                    }),
                    reason: reason.to_owned(),
                    refund_id: refund_id.to_string(),
                },
                None,
            ))
            .await
            .map_err(OrderError::Backend)?
            .into_inner()
            .refund
            .unwrap_or_default();
        if repeated {
            return Ok((refund, order));
        }
        db::insert_refund_request(&mut tx, refund_id, &asked).await?;
        let refunded = order.refunded_amount + amount.amount;
        let to = if refunded == order.total {
            Status::Refunded
        } else {
            Status::PartiallyRefunded
        };
        let order = db::transition(
            &mut tx,
            id,
            &[order.status()],
            to,
            &actor(&caller),
            reason,
            Changes {
                refunded_amount: Some(refunded),
                ..Changes::default()
            },
            None,
        )
        .await?
        .ok_or_else(|| {
            OrderError::Backend(GrpcStatus::aborted("the order changed meanwhile, retry"))
        })?;
        tx.commit().await?;
        tracing::info!(order_id = %id, amount = amount.amount, "refund requested");
        Ok((refund, order))
    }
}

/// An idempotency key as the gateway passes it: empty for none, else 1 to
/// 255 printable ASCII characters.
fn idempotency_key(raw: &str) -> Result<Option<&str>, OrderError> {
    match raw {
        "" => Ok(None),
        key if key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) => Err(invalid(
            "idempotency_key: 1 to 255 printable ASCII characters",
        )),
        key => Ok(Some(key)),
    }
}

/// A cancellation the saga has not finished yet (a paid order's refund may
/// be under way) owns the order: shipping it or refunding it besides would
/// leave it shipped with its money returned, or refunded twice.
fn refuse_while_cancelling(order: &OrderRow) -> Result<(), OrderError> {
    let cancellable = matches!(
        order.status(),
        Status::Pending | Status::Reserved | Status::Paid
    );
    if order.cancel_requested && cancellable {
        return Err(OrderError::FailedPrecondition(
            "the order is being cancelled".to_owned(),
        ));
    }
    Ok(())
}

fn items_currency(items: &[(ItemRow, String)]) -> Result<String, OrderError> {
    let mut currencies: Vec<&str> = items.iter().map(|(_, c)| c.as_str()).collect();
    currencies.dedup();
    match currencies.as_slice() {
        [one] => Ok((*one).to_owned()),
        _ => Err(invalid(
            "items: all products of an order must share one currency",
        )),
    }
}

/// What a placement answers with.
enum Placed {
    /// This request placed the order and wrote these items.
    New {
        order: OrderRow,
        items: Vec<ItemRow>,
    },
    /// An earlier request with the same idempotency key placed the order.
    Replayed(OrderRow),
}

/// A placement that ran out of stock is refused (409); every other outcome,
/// including a declined card, is an order in some status.
fn placement_outcome(order: &OrderRow) -> Result<(), String> {
    if order.status() == Status::Cancelled && order.out_of_stock {
        Err(order
            .cancel_reason
            .clone()
            .unwrap_or_else(|| "not enough stock".to_owned()))
    } else {
        Ok(())
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOrderResponse, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderService {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, GrpcStatus> {
        let (order, replayed) = match self.place(request).await? {
            Placed::New { order, items } => {
                (self.view_with(&order, Some(items), true).await?, false)
            }
            Placed::Replayed(order) => (self.view(&order, true).await?, true),
        };
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(order),
            replayed,
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, GrpcStatus> {
        let caller = Caller::from_metadata(request.metadata())?;
        let id = parse_uuid("order_id", &request.get_ref().order_id)?;
        let order = self.visible(&caller, id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(self.view(&order, true).await?),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, GrpcStatus> {
        let caller = Caller::from_metadata(request.metadata())?;
        let request = request.into_inner();
        let user_id = match request.user_id.as_str() {
            "" if caller.is_admin() => None,
            "" => Some(caller.user_id),
            raw => {
                let id = parse_uuid("user_id", raw)?;
                if !caller.may_access(id) {
                    return Err(OrderError::PermissionDenied(
                        "customers may list only their own orders".to_owned(),
                    )
                    .into());
                }
                Some(id)
            }
        };
        let status = match pb::OrderStatus::try_from(request.status) {
            Ok(pb::OrderStatus::Unspecified) => None,
            Ok(status) => Status::from_proto(status),
            Err(_) => return Err(invalid("status: unknown status").into()),
        };
        let page = request.page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(invalid(format!("page_size: at most {MAX_PAGE_SIZE}")).into());
            }
            size => size,
        };
        let after = parse_page_token(&page.page_token)?;
        let mut conn = self.db().acquire().await.map_err(OrderError::from)?;
        let mut rows = db::list(&mut conn, user_id, status, after, i64::from(size) + 1).await?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(page_token).unwrap_or_default()
        } else {
            String::new()
        };
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut lines = db::items_of(&mut conn, &ids).await?;
        conn.keep();
        let items = rows
            .iter()
            .map(|row| {
                let lines = lines.remove(&row.id).unwrap_or_default();
                convert::order_to_proto(row, &lines, &[])
            })
            .collect();
        Ok(Response::new(pb::ListOrdersResponse {
            items,
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, GrpcStatus> {
        let order = self.cancel(request).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(self.view(&order, true).await?),
        }))
    }

    async fn ship_order(
        &self,
        request: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::ShipOrderResponse>, GrpcStatus> {
        let order = self.ship(request).await?;
        Ok(Response::new(pb::ShipOrderResponse {
            order: Some(self.view(&order, true).await?),
        }))
    }

    async fn deliver_order(
        &self,
        request: Request<pb::DeliverOrderRequest>,
    ) -> Result<Response<pb::DeliverOrderResponse>, GrpcStatus> {
        let caller = Caller::from_metadata(request.metadata())?;
        caller.require_admin()?;
        let id = parse_uuid("order_id", &request.get_ref().order_id)?;
        let order = self
            .change_status(
                &caller,
                id,
                &[Status::Shipped, Status::PartiallyRefunded],
                Status::Delivered,
                "delivered",
                Changes {
                    delivered: true,
                    settle: true,
                    ..Changes::default()
                },
            )
            .await?;
        Ok(Response::new(pb::DeliverOrderResponse {
            order: Some(self.view(&order, true).await?),
        }))
    }

    async fn request_refund(
        &self,
        request: Request<pb::RequestRefundRequest>,
    ) -> Result<Response<pb::RequestRefundResponse>, GrpcStatus> {
        let (refund, order) = self.refund(request).await?;
        Ok(Response::new(pb::RequestRefundResponse {
            refund: Some(refund),
            order: Some(self.view(&order, true).await?),
        }))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, GrpcStatus> {
        let caller = Caller::from_metadata(request.metadata())?;
        let id = parse_uuid("order_id", &request.get_ref().order_id)?;
        self.visible(&caller, id).await?;
        let receiver = self
            .watchers
            .watch(self.db().clone(), id, self.shutdown.clone());
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(items: Vec<(String, i32)>) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            items: items
                .into_iter()
                .map(|(product_id, quantity)| pb::PlaceOrderItem {
                    product_id,
                    quantity,
                })
                .collect(),
            shipping_address_id: Uuid::new_v4().to_string(),
            payment_method: "pm_card_ok".to_owned(),
            idempotency_key: String::new(),
        }
    }

    #[test]
    fn bad_placements_say_which_field_is_wrong() {
        let product = Uuid::new_v4().to_string();
        let cases = [
            (request(vec![]), "items"),
            (request(vec![(product.clone(), 0)]), "items[0].quantity"),
            (request(vec![(product.clone(), -3)]), "items[0].quantity"),
            (request(vec![("nope".to_owned(), 1)]), "items[0].product_id"),
            (
                request(vec![(product.clone(), 1), (product.clone(), 2)]),
                "items[1].product_id",
            ),
            (
                pb::PlaceOrderRequest {
                    payment_method: "pm_card_gold".to_owned(),
                    ..request(vec![(product.clone(), 1)])
                },
                "payment_method",
            ),
            (
                pb::PlaceOrderRequest {
                    shipping_address_id: "home".to_owned(),
                    ..request(vec![(product.clone(), 1)])
                },
                "shipping_address_id",
            ),
        ];
        for (request, field) in cases {
            let Err(OrderError::InvalidArgument(message)) = validate_placement(&request) else {
                panic!("{field} should be refused");
            };
            assert!(message.starts_with(field), "{message}");
        }
    }

    #[test]
    fn the_same_body_has_the_same_fingerprint_and_another_body_another() {
        let product = Uuid::new_v4().to_string();
        let mut a = request(vec![(product.clone(), 1)]);
        let b = a.clone();
        let first = validate_placement(&a).expect("valid").hash;
        assert_eq!(first, validate_placement(&b).expect("valid").hash);
        a.items[0].quantity = 2;
        assert_ne!(first, validate_placement(&a).expect("valid").hash);
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        let token = page::token(at, id);
        assert_eq!(parse_page_token(&token).expect("valid"), Some((at, id)));
        assert_eq!(parse_page_token("").expect("first page"), None);
        assert!(parse_page_token("!!!").is_err());
    }
}
