//! `/v1/notifications` and `/v1/admin/notifications`: what was sent to whom,
//! and replaying the dead letters once their cause is fixed.

use crate::json::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use gocommerce_proto::common::v1::PageRequest;
use gocommerce_proto::notification::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::authn::{Admin, Authenticated};
use crate::extract::{Query, ValidJson, Validate};
use crate::problem::{FieldError, Problem};
use crate::routes::rfc3339;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/notifications", get(list_mine))
        .route("/v1/admin/notifications", get(list_all))
        .route("/v1/admin/notifications/dead-letters/replay", post(replay))
}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(list_mine, list_all, replay),
    components(schemas(NotificationView, NotificationList, ChannelView, StatusView, ReplayBody, ReplayView)),
    tags((name = "notifications", description = "Email, SMS and push sent on order events"))
)]
pub struct Api;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelView {
    Email,
    Sms,
    Push,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusView {
    Pending,
    Sent,
    Failed,
    DeadLettered,
    Skipped,
    Refused,
}

impl StatusView {
    fn to_proto(self) -> pb::NotificationStatus {
        match self {
            Self::Pending => pb::NotificationStatus::Pending,
            Self::Sent => pb::NotificationStatus::Sent,
            Self::Failed => pb::NotificationStatus::Failed,
            Self::DeadLettered => pb::NotificationStatus::DeadLettered,
            Self::Skipped => pb::NotificationStatus::Skipped,
            Self::Refused => pb::NotificationStatus::Refused,
        }
    }

    fn from_proto(raw: i32) -> Self {
        match pb::NotificationStatus::try_from(raw) {
            Ok(pb::NotificationStatus::Sent) => Self::Sent,
            Ok(pb::NotificationStatus::Failed) => Self::Failed,
            Ok(pb::NotificationStatus::DeadLettered) => Self::DeadLettered,
            Ok(pb::NotificationStatus::Skipped) => Self::Skipped,
            Ok(pb::NotificationStatus::Refused) => Self::Refused,
            _ => Self::Pending,
        }
    }
}

/// A notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    #[schema(format = Uuid)]
    pub id: String,
    pub channel: ChannelView,
    #[schema(example = "order.paid")]
    pub event_type: String,
    pub status: StatusView,
    /// An email address, a phone number, or the user id for push.
    pub recipient: String,
    /// The email subject or push title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub attempts: u32,
    /// Why the last attempt failed, or why the channel was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
}

impl From<pb::Notification> for NotificationView {
    fn from(n: pb::Notification) -> Self {
        let channel = match pb::NotificationChannel::try_from(n.channel) {
            Ok(pb::NotificationChannel::Sms) => ChannelView::Sms,
            Ok(pb::NotificationChannel::Push) => ChannelView::Push,
            _ => ChannelView::Email,
        };
        Self {
            id: n.id,
            channel,
            event_type: n.event_type,
            status: StatusView::from_proto(n.status),
            recipient: n.recipient,
            subject: Some(n.subject).filter(|s| !s.is_empty()),
            attempts: n.attempts,
            last_error: Some(n.last_error).filter(|e| !e.is_empty()),
            created_at: n.created_at.map(rfc3339).unwrap_or_default(),
            sent_at: n.sent_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<NotificationView>,
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
    #[param(max_length = 200)]
    pub page_token: Option<String>,
    /// Only notifications in this status (admin).
    pub status: Option<StatusView>,
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
    user_id: String,
    query: ListQuery,
) -> Result<Json<NotificationList>, Problem> {
    let request = state.backends.request(
        pb::ListNotificationsRequest {
            user_id,
            status: query
                .status
                .map_or(pb::NotificationStatus::Unspecified, StatusView::to_proto)
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
        .notification
        .clone()
        .list_notifications(request)
        .await
        .map_err(|s| Problem::from_status(&s, "notification"))?
        .into_inner();
    Ok(Json(NotificationList {
        items: response
            .items
            .into_iter()
            .map(NotificationView::from)
            .collect(),
        next_page_token: Some(response.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// The caller's notifications, newest first.
#[utoipa::path(
    get, path = "/v1/notifications", tag = "notifications",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the caller's notifications", body = NotificationList),
        (status = 400, description = "A bad page size or page token", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_mine(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<NotificationList>, Problem> {
    list(&state, &caller, caller.user_id.to_string(), query).await
}

/// Admin: every notification, newest first, optionally by status.
#[utoipa::path(
    get, path = "/v1/admin/notifications", tag = "notifications",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of notifications", body = NotificationList),
        (status = 400, description = "A bad page size, page token or status", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_all(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<NotificationList>, Problem> {
    list(&state, &caller, String::new(), query).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// At most this many messages; all (up to 10,000) when absent.
    #[serde(default, deserialize_with = "crate::extract::whole::option")]
    #[schema(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

impl Validate for ReplayBody {
    fn validate(&self) -> Vec<FieldError> {
        match self.limit {
            Some(limit) if !(1..=10_000).contains(&limit) => vec![FieldError {
                field: "limit".to_owned(),
                message: "must be 1 to 10000".to_owned(),
            }],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    /// How many dead-lettered messages went back to the work queue.
    pub replayed: u32,
}

/// Admin: re-queue the dead-lettered messages once their cause is fixed.
#[utoipa::path(
    post, path = "/v1/admin/notifications/dead-letters/replay", tag = "notifications",
    request_body = ReplayBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were re-queued", body = ReplayView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ValidJson(body): ValidJson<ReplayBody>,
) -> Result<Json<ReplayView>, Problem> {
    let request = state.backends.request(
        pb::ReplayDeadLettersRequest {
            limit: body.limit.unwrap_or(0),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .notification
        .clone()
        .replay_dead_letters(request)
        .await
        .map_err(|s| Problem::from_status(&s, "notification"))?
        .into_inner();
    Ok(Json(ReplayView {
        replayed: response.replayed,
    }))
}
