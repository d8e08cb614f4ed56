//! The `NotificationService` gRPC handlers.

use chrono::{DateTime, Utc};
use gocommerce_platform::broker::{self, Broker, QueueSpec};
use gocommerce_platform::db::Db;
use gocommerce_platform::time::timestamp;
use gocommerce_platform::{Caller, page};
use gocommerce_proto::notification::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, NotificationRow};
use crate::error::NotificationError;

const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;
const MAX_REPLAY: u32 = 10_000;

#[derive(Debug, Clone)]
pub struct NotificationService {
    pub db: Db,
    pub broker: Broker,
    pub queue: QueueSpec,
}

fn invalid(message: impl Into<String>) -> NotificationError {
    NotificationError::InvalidArgument(message.into())
}

fn status_name(status: pb::NotificationStatus) -> Option<&'static str> {
    Some(match status {
        pb::NotificationStatus::Unspecified => return None,
        pb::NotificationStatus::Pending => "pending",
        pb::NotificationStatus::Sent => "sent",
        pb::NotificationStatus::Failed => "failed",
        pb::NotificationStatus::DeadLettered => "dead_lettered",
        pb::NotificationStatus::Skipped => "skipped",
        pb::NotificationStatus::Refused => "refused",
    })
}

fn to_proto(row: &NotificationRow) -> pb::Notification {
    let channel = match row.channel.as_str() {
        "email" => pb::NotificationChannel::Email,
        "sms" => pb::NotificationChannel::Sms,
        _ => pb::NotificationChannel::Push,
    };
    let status = match row.status.as_str() {
        "sent" => pb::NotificationStatus::Sent,
        "failed" => pb::NotificationStatus::Failed,
        "dead_lettered" => pb::NotificationStatus::DeadLettered,
        "skipped" => pb::NotificationStatus::Skipped,
        "refused" => pb::NotificationStatus::Refused,
        _ => pb::NotificationStatus::Pending,
    };
    pb::Notification {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        channel: channel as i32,
        event_type: row.event_type.clone(),
        event_id: row.event_id.to_string(),
        status: status as i32,
        recipient: row.recipient.clone(),
        subject: row.subject.clone().unwrap_or_default(),
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        last_error: row.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        sent_at: row.sent_at.map(timestamp),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn page_token(row: &NotificationRow) -> String {
    page::token(row.created_at, row.id)
}

fn parse_page_token(token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, NotificationError> {
    if token.is_empty() {
        return Ok(None);
    }
    page::parse(token).map(Some).ok_or_else(|| {
        invalid("page_token: malformed; pass back the next_page_token of a previous page")
    })
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationService {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let request = request.into_inner();
        let user_id = match request.user_id.as_str() {
            "" if caller.is_admin() => None,
            "" => Some(caller.user_id),
            raw => {
                let id = Uuid::parse_str(raw).map_err(|_| invalid("user_id: must be a UUID"))?;
                if !caller.may_access(id) {
                    return Err(NotificationError::PermissionDenied(
                        "customers may list only their own notifications".to_owned(),
                    )
                    .into());
                }
                Some(id)
            }
        };
        let status = pb::NotificationStatus::try_from(request.status)
            .map_err(|_| invalid("status: unknown status"))?;
        let page = request.page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(invalid(format!("page_size: at most {MAX_PAGE_SIZE}")).into());
            }
            size => size,
        };
        let after = parse_page_token(&page.page_token)?;
        let mut conn = self.db.acquire().await.map_err(NotificationError::from)?;
        let mut rows = db::list(
            &mut conn,
            user_id,
            status_name(status),
            after,
            i64::from(size) + 1,
        )
        .await
        .map_err(NotificationError::from)?;
        conn.keep();
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(page_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListNotificationsResponse {
            items: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        Caller::from_metadata(request.metadata())?.require_admin()?;
        let limit = match request.get_ref().limit {
            0 => MAX_REPLAY,
            limit => limit.min(MAX_REPLAY),
        };
        let replayed = broker::replay_dead_letters(&self.broker, &self.queue, limit)
            .await
            .map_err(NotificationError::from)?;
        tracing::info!(replayed, "dead letters replayed");
        Ok(Response::new(pb::ReplayDeadLettersResponse { replayed }))
    }
}
