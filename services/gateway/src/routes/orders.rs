//! `/v1/orders` and `/v1/admin/orders`: placing, reading, cancelling,
//! shipping, delivering and refunding orders, the order's payment, and its
//! live status as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use crate::json::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt as _};
use gocommerce_platform::validate;
use gocommerce_proto::common::v1::PageRequest;
use gocommerce_proto::order::v1 as pb;
use gocommerce_proto::payment::v1 as payment_pb;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::authn::{Admin, Authenticated, InSession};
use crate::extract::{OptionalJson, Path, Query, ValidJson, Validate};
use crate::problem::{FieldError, Problem};
use crate::routes::{Money, rfc3339};
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", post(place_order).get(list_orders))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/orders/{id}/cancel", post(cancel_order))
        .route("/v1/orders/{id}/payment", get(get_payment))
        .route("/v1/orders/{id}/events", get(order_events))
        .route("/v1/orders/{id}/ship", post(ship_order))
        .route("/v1/orders/{id}/deliver", post(deliver_order))
        .route("/v1/orders/{id}/refunds", post(refund_order))
        .route("/v1/admin/orders", get(admin_list_orders))
}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        place_order, list_orders, get_order, cancel_order, get_payment, order_events,
        ship_order, deliver_order, refund_order, admin_list_orders
    ),
    components(schemas(
        PlaceOrderBody, PlaceItemBody, OrderView, OrderItemView, OrderStatusView, HistoryView,
        AddressView, ShipmentView, OrderList, ShipBody, RefundBody, RefundView, PaymentView,
        PaymentRefundView, StatusEventView, StatusEvent, CancelBody, Money
    )),
    tags((name = "orders", description = "Placing and following orders"))
)]
pub struct Api;

fn backend_error(status: tonic::Status) -> Problem {
    Problem::from_status(&status, "order")
}

/// An order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatusView {
    Pending,
    Reserved,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
    PartiallyRefunded,
}

impl OrderStatusView {
    fn from_proto(raw: i32) -> Option<Self> {
        Some(match pb::OrderStatus::try_from(raw).ok()? {
            pb::OrderStatus::Unspecified => return None,
            pb::OrderStatus::Pending => Self::Pending,
            pb::OrderStatus::Reserved => Self::Reserved,
            pb::OrderStatus::Paid => Self::Paid,
            pb::OrderStatus::Shipped => Self::Shipped,
            pb::OrderStatus::Delivered => Self::Delivered,
            pb::OrderStatus::Cancelled => Self::Cancelled,
            pb::OrderStatus::Refunded => Self::Refunded,
            pb::OrderStatus::PartiallyRefunded => Self::PartiallyRefunded,
        })
    }

    fn to_proto(self) -> pb::OrderStatus {
        match self {
            Self::Pending => pb::OrderStatus::Pending,
            Self::Reserved => pb::OrderStatus::Reserved,
            Self::Paid => pb::OrderStatus::Paid,
            Self::Shipped => pb::OrderStatus::Shipped,
            Self::Delivered => pb::OrderStatus::Delivered,
            Self::Cancelled => pb::OrderStatus::Cancelled,
            Self::Refunded => pb::OrderStatus::Refunded,
            Self::PartiallyRefunded => pb::OrderStatus::PartiallyRefunded,
        }
    }
}

/// One line of an order as placed: the name and price when it was placed.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemView {
    #[schema(format = Uuid)]
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub unit_price: Money,
    pub quantity: i32,
    pub line_total: Money,
}

/// A status change.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// Null for the order's creation.
    pub from: Option<OrderStatusView>,
    pub to: OrderStatusView,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub at: String,
    /// `system`, or `customer:<id>` / `admin:<id>`.
    pub actor: String,
    pub reason: String,
}

impl From<pb::OrderHistoryEntry> for HistoryView {
    fn from(entry: pb::OrderHistoryEntry) -> Self {
        Self {
            from: OrderStatusView::from_proto(entry.from_status),
            to: OrderStatusView::from_proto(entry.to_status).unwrap_or(OrderStatusView::Pending),
            at: entry.at.map(rfc3339).unwrap_or_default(),
            actor: entry.actor,
            reason: entry.reason,
        }
    }
}

/// The shipping address as it was when the order was placed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressView {
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShipmentView {
    pub carrier: String,
    pub tracking_number: String,
    #[schema(format = DateTime)]
    pub shipped_at: Option<String>,
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub user_id: String,
    pub status: OrderStatusView,
    pub items: Vec<OrderItemView>,
    pub total: Money,
    pub shipping_address: AddressView,
    #[schema(format = Uuid)]
    pub shipping_address_id: String,
    pub payment_method: String,
    /// Why the order was cancelled, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipment: Option<ShipmentView>,
    pub refunded_amount: Money,
    /// Every status change, oldest first (single orders only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryView>>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl OrderView {
    fn new(order: pb::Order, with_history: bool) -> Self {
        let address = order.shipping_address.unwrap_or_default();
        Self {
            id: order.id,
            user_id: order.user_id,
            status: OrderStatusView::from_proto(order.status).unwrap_or(OrderStatusView::Pending),
            items: order
                .items
                .into_iter()
                .map(|item| OrderItemView {
                    product_id: item.product_id,
                    sku: item.sku,
                    name: item.name,
                    unit_price: item.unit_price.into(),
                    quantity: item.quantity,
                    line_total: item.line_total.into(),
                })
                .collect(),
            total: order.total.into(),
            shipping_address: AddressView {
                name: address.name,
                line1: address.line1,
                line2: address.line2,
                city: address.city,
                region: address.region,
                postal_code: address.postal_code,
                country: address.country,
            },
            shipping_address_id: order.shipping_address_id,
            payment_method: order.payment_method,
            cancel_reason: Some(order.cancel_reason).filter(|r| !r.is_empty()),
            shipment: order.shipment.map(|s| ShipmentView {
                carrier: s.carrier,
                tracking_number: s.tracking_number,
                shipped_at: s.shipped_at.map(rfc3339),
                delivered_at: s.delivered_at.map(rfc3339),
            }),
            refunded_amount: order.refunded_amount.into(),
            history: with_history
                .then(|| order.history.into_iter().map(HistoryView::from).collect()),
            created_at: order.created_at.map(rfc3339).unwrap_or_default(),
            updated_at: order.updated_at.map(rfc3339).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceItemBody {
    #[schema(format = Uuid)]
    pub product_id: Uuid,
    #[serde(deserialize_with = "crate::extract::whole::deserialize")]
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderBody {
    /// 1 to 50 lines, each product at most once.
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<PlaceItemBody>,
    /// One of the caller's addresses.
    #[schema(format = Uuid)]
    pub shipping_address_id: Uuid,
    /// A test token: `pm_card_ok`, `pm_card_declined`, `pm_card_error` or `pm_card_slow`.
    #[schema(example = "pm_card_ok", pattern = "^pm_card_(ok|declined|error|slow)$")]
    pub payment_method: String,
}

impl Validate for PlaceOrderBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.items.is_empty() || self.items.len() > 50 {
            errors.push(FieldError {
                field: "items".to_owned(),
                message: "must hold 1 to 50 items".to_owned(),
            });
        }
        for (index, item) in self.items.iter().enumerate() {
            if !(1..=1000).contains(&item.quantity) {
                errors.push(FieldError {
                    field: format!("items[{index}].quantity"),
                    message: "must be 1 to 1000".to_owned(),
                });
            }
            if self.items[..index]
                .iter()
                .any(|other| other.product_id == item.product_id)
            {
                errors.push(FieldError {
                    field: format!("items[{index}].product_id"),
                    message: "listed twice; add up the quantities".to_owned(),
                });
            }
        }
        if ![
            "pm_card_ok",
            "pm_card_declined",
            "pm_card_error",
            "pm_card_slow",
        ]
        .contains(&self.payment_method.as_str())
        {
            errors.push(FieldError {
                field: "payment_method".to_owned(),
                message: "must be pm_card_ok, pm_card_declined, pm_card_error or pm_card_slow"
                    .to_owned(),
            });
        }
        errors
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request's `Idempotency-Key`, empty when it has none.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(String::new());
    };
    value
        .to_str()
        .ok()
        .filter(|v| (1..=255).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| {
            Problem::validation(vec![FieldError {
                field: "Idempotency-Key".to_owned(),
                message: "must be 1 to 255 printable ASCII characters".to_owned(),
            }])
        })
}

/// Place an order. The response may carry a non-terminal status (PENDING,
/// RESERVED); poll the order or follow its events until PAID or CANCELLED.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a request safely: the same key with the same body returns the first answer; with another body it is refused (409). Keys last 24 hours.", max_length = 255, pattern = "^[!-~]{1,255}$")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The order", body = OrderView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock, an archived product, or the Idempotency-Key was used with another body", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn place_order(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    ValidJson(body): ValidJson<PlaceOrderBody>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let mut request = state.backends.request(
        pb::PlaceOrderRequest {
            items: body
                .items
                .iter()
                .map(|i| pb::PlaceOrderItem {
                    product_id: i.product_id.to_string(),
                    quantity: i.quantity,
                })
                .collect(),
            shipping_address_id: body.shipping_address_id.to_string(),
            payment_method: body.payment_method,
            idempotency_key: key,
        },
        Some(&caller),
    );
    // Placing runs the saga: give it the time it needs to settle most orders.
    request.set_timeout(state.backends.timeout().max(Duration::from_secs(5)));
    let response = state
        .backends
        .order
        .clone()
        .place_order(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    let order = response.order.unwrap_or_default();
    let mut reply = (StatusCode::CREATED, Json(OrderView::new(order, true))).into_response();
    if response.replayed {
        reply.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(reply)
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub items: Vec<OrderView>,
    /// Pass as `page_token` for the next page; null on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page.
    #[param(max_length = 200)]
    pub page_token: Option<String>,
    /// Only orders in this status.
    pub status: Option<OrderStatusView>,
}

impl Validate for ListQuery {
    fn validate(&self) -> Vec<FieldError> {
        match self.page_size {
            Some(size) if !(1..=100).contains(&size) => vec![FieldError {
                field: "page_size".to_owned(),
                message: "must be 1 to 100".to_owned(),
            }],
            _ => Vec::new(),
        }
    }
}

async fn list(
    state: &AppState,
    caller: &gocommerce_platform::Caller,
    query: ListQuery,
) -> Result<Json<OrderList>, Problem> {
    let request = state.backends.request(
        pb::ListOrdersRequest {
            user_id: String::new(),
            status: query
                .status
                .map_or(pb::OrderStatus::Unspecified, OrderStatusView::to_proto)
                as i32,
            page: Some(PageRequest {
                page_size: query.page_size.unwrap_or(0),
                page_token: query.page_token.unwrap_or_default(),
            }),
        },
        Some(caller),
    );
    let response = state
        .backends
        .order
        .clone()
        .list_orders(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    Ok(Json(OrderList {
        items: response
            .items
            .into_iter()
            .map(|o| OrderView::new(o, false))
            .collect(),
        next_page_token: Some(response.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// The caller's orders, newest first.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the caller's orders", body = OrderList),
        (status = 400, description = "A bad page size or page token", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<OrderList>, Problem> {
    // An admin's own list is everyone's; this route is "mine" for everyone.
    let me = gocommerce_platform::Caller {
        role: gocommerce_platform::Role::Customer,
        ..caller
    };
    list(&state, &me, query).await
}

/// Admin: every order, newest first, optionally by status.
#[utoipa::path(
    get, path = "/v1/admin/orders", tag = "orders",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders", body = OrderList),
        (status = 400, description = "A bad page size, page token or status", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn admin_list_orders(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<OrderList>, Problem> {
    list(&state, &caller, query).await
}

/// One of the caller's orders (an admin: any), with its history.
#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderView>, Problem> {
    let request = state.backends.request(
        pb::GetOrderRequest {
            order_id: id.to_string(),
        },
        Some(&caller),
    );
    let order = state
        .backends
        .order
        .clone()
        .get_order(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .order
        .unwrap_or_default();
    Ok(Json(OrderView::new(order, true)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why; one line of at most 500 characters.
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub reason: Option<String>,
}

impl Validate for CancelBody {
    fn validate(&self) -> Vec<FieldError> {
        self.reason
            .as_deref()
            .and_then(|reason| validate::text(reason, 500, false, false).err())
            .map(|message| FieldError {
                field: "reason".to_owned(),
                message,
            })
            .into_iter()
            .collect()
    }
}

/// Cancel an order before it ships. A paid order is refunded in full.
#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    request_body(content = Option<CancelBody>, description = "Optional: why"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order, CANCELLED or on its way there", body = OrderView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order has shipped or is already cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
    OptionalJson(body): OptionalJson<CancelBody>,
) -> Result<Json<OrderView>, Problem> {
    let reason = body.reason.unwrap_or_default();
    let mut request = state.backends.request(
        pb::CancelOrderRequest {
            order_id: id.to_string(),
            reason,
        },
        Some(&caller),
    );
    request.set_timeout(state.backends.timeout().max(Duration::from_secs(5)));
    let order = state
        .backends
        .order
        .clone()
        .cancel_order(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .order
        .unwrap_or_default();
    Ok(Json(OrderView::new(order, true)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipBody {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "UPS"
    )]
    pub carrier: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "1Z999AA10123456784"
    )]
    pub tracking_number: String,
}

impl Validate for ShipBody {
    fn validate(&self) -> Vec<FieldError> {
        [
            ("carrier", &self.carrier),
            ("tracking_number", &self.tracking_number),
        ]
        .into_iter()
        .filter_map(|(field, value)| {
            validate::text(value, 100, true, false)
                .err()
                .map(|message| FieldError {
                    field: field.to_owned(),
                    message,
                })
        })
        .collect()
    }
}

/// Admin: mark a paid order shipped (also one partly refunded before it was).
#[utoipa::path(
    post, path = "/v1/orders/{id}/ship", tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    request_body = ShipBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order, SHIPPED", body = OrderView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not PAID (or PARTIALLY_REFUNDED and never shipped), or is being cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ship_order(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<ShipBody>,
) -> Result<Json<OrderView>, Problem> {
    let request = state.backends.request(
        pb::ShipOrderRequest {
            order_id: id.to_string(),
            carrier: body.carrier,
            tracking_number: body.tracking_number,
        },
        Some(&caller),
    );
    let order = state
        .backends
        .order
        .clone()
        .ship_order(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .order
        .unwrap_or_default();
    Ok(Json(OrderView::new(order, true)))
}

/// Admin: mark a shipped order delivered.
#[utoipa::path(
    post, path = "/v1/orders/{id}/deliver", tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order, DELIVERED", body = OrderView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not SHIPPED (or PARTIALLY_REFUNDED after shipping, not yet delivered)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn deliver_order(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderView>, Problem> {
    let request = state.backends.request(
        pb::DeliverOrderRequest {
            order_id: id.to_string(),
        },
        Some(&caller),
    );
    let order = state
        .backends
        .order
        .clone()
        .deliver_order(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .order
        .unwrap_or_default();
    Ok(Json(OrderView::new(order, true)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units of the order's currency.
    #[serde(deserialize_with = "crate::extract::whole::deserialize")]
    #[schema(minimum = 1, example = 500)]
    pub amount: i64,
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "damaged in transit"
    )]
    pub reason: String,
}

impl Validate for RefundBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.amount <= 0 {
            errors.push(FieldError {
                field: "amount".to_owned(),
                message: "must be a positive number of minor units".to_owned(),
            });
        }
        if let Err(message) = validate::text(&self.reason, 500, true, false) {
            errors.push(FieldError {
                field: "reason".to_owned(),
                message,
            });
        }
        errors
    }
}

/// A refund; processed asynchronously.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    #[schema(format = Uuid)]
    pub id: String,
    pub amount: Money,
    /// `pending`, `succeeded` or `failed`.
    #[schema(example = "pending")]
    pub status: String,
}

fn refund_status(raw: i32) -> String {
    match payment_pb::RefundStatus::try_from(raw) {
        Ok(payment_pb::RefundStatus::Succeeded) => "succeeded",
        Ok(payment_pb::RefundStatus::Failed) => "failed",
        _ => "pending",
    }
    .to_owned()
}

/// Admin: refund part or all of an order.
#[utoipa::path(
    post, path = "/v1/orders/{id}/refunds", tag = "orders",
    params(
        ("id" = Uuid, Path, description = "The order"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat a refund safely, also after a lost answer: the same key with the same amount and reason returns the same refund, made and counted once; with another amount or reason it is refused (409). Keys are kept per order.", max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    request_body = RefundBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The refund, accepted and processed asynchronously", body = RefundView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order cannot be refunded or is being cancelled, the amount exceeds what remains, or the Idempotency-Key was used for another refund", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refund_order(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<RefundBody>,
) -> Result<(StatusCode, Json<RefundView>), Problem> {
    let request = state.backends.request(
        pb::RequestRefundRequest {
            order_id: id.to_string(),
            amount: Some(gocommerce_proto::common::v1::Money {
                amount: body.amount,
                currency: String::new(),
            }),
            reason: body.reason,
            idempotency_key: idempotency_key(&headers)?,
        },
        Some(&caller),
    );
    let refund = state
        .backends
        .order
        .clone()
        .request_refund(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .refund
        .unwrap_or_default();
    Ok((
        StatusCode::ACCEPTED,
        Json(RefundView {
            id: refund.id,
            amount: refund.amount.into(),
            status: refund_status(refund.status),
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentRefundView {
    #[schema(format = Uuid)]
    pub id: String,
    pub amount: Money,
    #[schema(example = "succeeded")]
    pub status: String,
    pub reason: String,
}

/// The payment of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub order_id: String,
    pub amount: Money,
    /// `pending`, `succeeded`, `declined`, `failed`, `refund_pending`, `partially_refunded` or `refunded`.
    #[schema(example = "succeeded")]
    pub status: String,
    pub method: String,
    pub refunded_amount: Money,
    pub refunds: Vec<PaymentRefundView>,
}

fn payment_status(raw: i32) -> String {
    use payment_pb::PaymentStatus as S;
    match S::try_from(raw) {
        Ok(S::Succeeded) => "succeeded",
        Ok(S::Declined) => "declined",
        Ok(S::Failed) => "failed",
        Ok(S::RefundPending) => "refund_pending",
        Ok(S::PartiallyRefunded) => "partially_refunded",
        Ok(S::Refunded) => "refunded",
        _ => "pending",
    }
    .to_owned()
}

/// The payment of one of the caller's orders.
#[utoipa::path(
    get, path = "/v1/orders/{id}/payment", tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment with its refunds", body = PaymentView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's, or it has no payment yet", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_payment(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<PaymentView>, Problem> {
    let request = state.backends.request(
        payment_pb::GetPaymentRequest {
            order_id: id.to_string(),
        },
        Some(&caller),
    );
    let payment = state
        .backends
        .payment
        .clone()
        .get_payment(request)
        .await
        .map_err(|s| Problem::from_status(&s, "payment"))?
        .into_inner()
        .payment
        .unwrap_or_default();
    Ok(Json(PaymentView {
        id: payment.id,
        order_id: payment.order_id,
        amount: payment.amount.into(),
        status: payment_status(payment.status),
        method: payment.method,
        refunded_amount: payment.refunded_amount.into(),
        refunds: payment
            .refunds
            .into_iter()
            .map(|r| PaymentRefundView {
                id: r.id,
                amount: r.amount.into(),
                status: refund_status(r.status),
                reason: r.reason,
            })
            .collect(),
    }))
}

/// One `status` event of the stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusEventView {
    #[schema(format = Uuid)]
    pub order_id: String,
    pub status: OrderStatusView,
    pub change: Option<HistoryView>,
    /// The last event: the order reached DELIVERED, CANCELLED or REFUNDED.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// One event of the status stream, described the way OpenAPI 3.2 and
/// schemathesis read a `text/event-stream` item: the event's fields, with a
/// `status` event's `data` holding a [`StatusEventView`] as JSON. An `error`
/// event (the backend failed mid-stream) carries the problem's detail as text.
#[derive(Debug)]
pub struct StatusEvent;

impl utoipa::PartialSchema for StatusEvent {
    fn schema() -> RefOr<Schema> {
        let event = |name: &str, data: Object| {
            ObjectBuilder::new()
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([name])),
                )
                .property("data", data)
                .required("event")
                .required("data")
                .build()
        };
        let mut view = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .build();
        // contentSchema is JSON Schema's keyword for what the string holds;
        // utoipa has no builder for it.
        view.extensions = Some(Extensions::from_iter([(
            "contentSchema",
            serde_json::json!({
                "$ref": format!("#/components/schemas/{}", StatusEventView::name())
            }),
        )]));
        let detail = ObjectBuilder::new().schema_type(Type::String).build();
        OneOfBuilder::new()
            .item(event("status", view))
            .item(event("error", detail))
            .into()
    }
}

impl ToSchema for StatusEvent {}

/// Live status of an order as Server-Sent Events: first the current status,
/// then every change, each as a `status` event, until a final status. The
/// server closes a stream after `GATEWAY_EVENT_STREAM_MAX_SECONDS` (five
/// minutes by default), so no watcher holds a connection forever; an
/// EventSource reconnects by itself and is sent the current status first.
/// A stream also ends when the session of its access token does (a logout,
/// say), within about a second; reconnecting then needs a new token.
#[utoipa::path(
    get, path = "/v1/orders/{id}/events", tag = "orders",
    params(("id" = Uuid, Path, description = "The order")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A text/event-stream of `status` events", content_type = "text/event-stream", body = StatusEvent),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn order_events(
    State(state): State<AppState>,
    InSession { caller, session }: InSession,
    Path(id): Path<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    // No deadline: the stream lives as long as the client listens.
    let mut request = tonic::Request::new(pb::WatchOrderRequest {
        order_id: id.to_string(),
    });
    caller.write_to(request.metadata_mut());
    let stream = state
        .backends
        .order
        .clone()
        .watch_order(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    let events = stream.map(|message| {
        let event = match message {
            Ok(change) => {
                let view = StatusEventView {
                    order_id: change.order_id,
                    status: OrderStatusView::from_proto(change.status)
                        .unwrap_or(OrderStatusView::Pending),
                    change: change.change.map(HistoryView::from),
                    is_final: change.is_final,
                };
                Event::default()
                    .event("status")
                    .json_data(view)
                    .unwrap_or_else(|_| {
                        Event::default()
                            .event("error")
                            .data("cannot encode the event")
                    })
            }
            Err(status) => {
                let problem = Problem::from_status(&status, "order");
                Event::default().event("error").data(problem.detail)
            }
        };
        Ok(event)
    });
    let sessions = state.verifier.sessions().clone();
    let longest = state.event_stream_max;
    let events = events.take_until(async move {
        tokio::select! {
            () = tokio::time::sleep(longest) => {}
            () = sessions.wait_until_ended(session) => {}
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
