//! Handling one event: ignore it if no template renders it, or if it came
//! back (a redelivery or a retry) and the inbox has it; otherwise find the
//! recipient, record one notification per channel (skipped where the
//! channel is off or not configured) and claim the unsent ones, send them,
//! and mark the event handled once nothing is left to send. A send that
//! fails, or a channel another delivery is sending, makes the whole event
//! retry later; what was sent is never sent again.

use std::time::Duration;

use gocommerce_platform::broker::{HandlerError, Incoming, QueueSpec};
use gocommerce_platform::db::Db;
use gocommerce_platform::events;
use gocommerce_proto::user::v1::user_service_client::UserServiceClient;
use gocommerce_proto::user::v1::{GetContactRequest, GetContactResponse};
use tonic::Code;
use uuid::Uuid;

use crate::channels::{ChannelError, Channels};
use crate::db::{self, Claims, Event, NewNotification, NotificationRow};
use crate::templates::{self, Rendered};

pub type UserClient = UserServiceClient<gocommerce_platform::grpc::Traced>;

/// The events some template renders: the queue's bindings. They are the
/// mandatory ones (`events::mandatory`), so the outbox keeps one that is
/// published before this queue exists until it does.
pub const EVENTS: [&str; 8] = [
    "user.registered",
    "user.password_changed",
    "user.password_reset_requested",
    "order.paid",
    "order.cancelled",
    "order.shipped",
    "order.delivered",
    "payment.refunded",
];

/// How many events are handled at once.
pub const PREFETCH: u16 = 16;

/// How long a delivery holds the notifications it claimed. It sends them
/// one after another (email, SMS, push), each within the channels' timeout,
/// so with one timeout to spare a claim runs out only when its delivery
/// died.
const CLAIM: Duration = Duration::from_secs(4 * crate::channels::TIMEOUT.as_secs());

/// Events an earlier version bound only so that the outbox, which then
/// published every event as mandatory, saw them routed. They are published
/// for the record now, and an upgraded queue is unbound from them.
pub const RETIRED: [&str; 3] = ["order.created", "payment.succeeded", "payment.failed"];

pub fn queue(max_attempts: u32, retry_delays: Vec<Duration>) -> QueueSpec {
    QueueSpec {
        name: "notification.events".to_owned(),
        bindings: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        unbind: RETIRED.iter().map(|e| (*e).to_owned()).collect(),
        retry_delays,
        max_attempts,
        prefetch: PREFETCH,
    }
}

#[derive(Debug, Clone)]
pub struct Handler {
    pub db: Db,
    pub user: UserClient,
    pub channels: Channels,
    pub max_attempts: u32,
    pub links: templates::Links,
}

impl Handler {
    pub async fn handle(&self, message: Incoming) -> Result<(), HandlerError> {
        let envelope = events::decode(&message.payload)
            .map_err(|e| HandlerError::Reject(format!("not an event envelope: {e}")))?;
        let event_id = Uuid::parse_str(&envelope.id)
            .map_err(|_| HandlerError::Reject("the event id is not a UUID".to_owned()))?;
        // Nothing to send is nothing to remember either.
        let Some(rendered) = templates::render(&envelope, &self.links) else {
            return Ok(());
        };
        let retry = |e: sqlx::Error| HandlerError::Retry(format!("database: {e}"));
        // Only a message that came back may have been handled; asking the
        // inbox first spares it the contact lookup. Any other duplicate (the
        // outbox publishes at least once) is still sent once: its
        // notifications are already recorded, and sent ones are never resent.
        if message.redelivered || message.attempt > 1 {
            let mut conn = self.db.acquire().await.map_err(retry)?;
            let processed = db::is_processed(&mut conn, event_id).await.map_err(retry)?;
            conn.keep();
            if processed {
                tracing::info!(event_id = %event_id, "event already handled, ignoring the redelivery");
                return Ok(());
            }
        }
        let contact = self.contact(rendered.user_id).await?;
        let claims = self
            .record(event_id, &envelope.event_type, &rendered, contact.as_ref())
            .await
            .map_err(retry)?;
        let last_attempt = message.attempt >= self.max_attempts;
        let failures = self
            .send_claimed(
                claims,
                &rendered,
                event_id,
                &envelope.event_type,
                last_attempt,
            )
            .await?;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(HandlerError::Retry(failures.join("; ")))
        }
    }

    /// The recipient's contact, or None when the user no longer exists.
    async fn contact(&self, user_id: Uuid) -> Result<Option<GetContactResponse>, HandlerError> {
        let mut request = tonic::Request::new(GetContactRequest {
            user_id: user_id.to_string(),
        });
        request.set_timeout(Duration::from_secs(5));
        match self.user.clone().get_contact(request).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(HandlerError::Retry(format!(
                "user service: {}",
                status.message()
            ))),
        }
    }

    /// Records the event's notifications once and claims those still to
    /// send.
    async fn record(
        &self,
        event_id: Uuid,
        event_type: &str,
        rendered: &Rendered,
        contact: Option<&GetContactResponse>,
    ) -> Result<Claims, sqlx::Error> {
        let channels = contact
            .and_then(|c| c.preferences.as_ref())
            .and_then(|p| p.channels)
            .unwrap_or_default();
        let email = contact.map(|c| c.email.as_str()).unwrap_or_default();
        let phone = contact.map(|c| c.phone.as_str()).unwrap_or_default();
        let user = rendered.user_id.to_string();
        let exists = contact.is_some();
        let email_body = rendered
            .email
            .as_ref()
            .map(|m| rendered.for_record(&m.body));
        let sms_body = rendered.sms.as_deref().map(|t| rendered.for_record(t));
        let push_body = rendered.push.as_ref().map(|p| rendered.for_record(&p.body));
        let mut news = Vec::with_capacity(3);
        if let (Some(message), Some(body)) = (&rendered.email, &email_body) {
            news.push(NewNotification {
                channel: "email",
                recipient: email,
                subject: Some(&message.subject),
                body,
                skipped: skip_reason(
                    exists,
                    rendered.security || channels.email,
                    self.channels.has_email(),
                    email,
                    "email",
                    "SMTP_URL",
                ),
            });
        }
        if let Some(body) = &sms_body {
            news.push(NewNotification {
                channel: "sms",
                recipient: phone,
                subject: None,
                body,
                skipped: skip_reason(
                    exists,
                    rendered.security || channels.sms,
                    self.channels.has_sms(),
                    phone,
                    "phone number",
                    "SMS_WEBHOOK_URL",
                ),
            });
        }
        if let (Some(push), Some(body)) = (&rendered.push, &push_body) {
            news.push(NewNotification {
                channel: "push",
                recipient: &user,
                subject: Some(&push.title),
                body,
                skipped: skip_reason(
                    exists,
                    rendered.security || channels.push,
                    self.channels.has_push(),
                    &user,
                    "user",
                    "PUSH_WEBHOOK_URL",
                ),
            });
        }
        let event = Event {
            id: event_id,
            event_type,
            user_id: rendered.user_id,
        };
        let mut conn = self.db.acquire().await?;
        let claims = db::claim_all(&mut conn, &event, &news, CLAIM).await?;
        conn.keep();
        Ok(claims)
    }

    /// Sends what this delivery claimed; returns the failures, which include
    /// the channels another delivery is sending. When nothing is left, the
    /// event is marked handled, with the last send when it can be.
    async fn send_claimed(
        &self,
        claims: Claims,
        rendered: &Rendered,
        event_id: Uuid,
        event_type: &str,
        last_attempt: bool,
    ) -> Result<Vec<String>, HandlerError> {
        let retry = |e: sqlx::Error| HandlerError::Retry(format!("database: {e}"));
        let mut failures: Vec<String> = claims
            .busy
            .iter()
            .map(|channel| format!("{channel}: being sent by another delivery"))
            .collect();
        let mut handled = false;
        let count = claims.claimed.len();
        for (index, notification) in claims.claimed.into_iter().enumerate() {
            let sent = self.send(&notification, rendered).await;
            // Not held across the send: a pooled connection per statement.
            let mut conn = self.db.acquire().await.map_err(retry)?;
            match sent {
                Ok(()) => {
                    let last = index + 1 == count && failures.is_empty();
                    db::mark_sent(&mut conn, notification.id, last.then_some(event_type))
                        .await
                        .map_err(retry)?;
                    conn.keep();
                    handled |= last;
                    tracing::info!(notification_id = %notification.id, channel = notification.channel, "notification sent");
                }
                Err(error) if error.is_permanent() => {
                    let error = error.to_string();
                    db::mark_refused(&mut conn, notification.id, &error)
                        .await
                        .map_err(retry)?;
                    conn.keep();
                    tracing::warn!(notification_id = %notification.id, channel = notification.channel, %error, "notification refused for good, not retried");
                }
                Err(error) => {
                    let error = error.to_string();
                    db::mark_failed(&mut conn, notification.id, &error, last_attempt)
                        .await
                        .map_err(retry)?;
                    conn.keep();
                    tracing::warn!(notification_id = %notification.id, channel = notification.channel, %error, last_attempt, "notification not sent");
                    failures.push(format!("{}: {error}", notification.channel));
                }
            }
        }
        // Nothing was left to send: all skipped, or sent by an earlier
        // delivery that did not get to mark the event.
        if failures.is_empty() && !handled {
            let mut conn = self.db.acquire().await.map_err(retry)?;
            db::mark_processed(&mut conn, event_id, event_type)
                .await
                .map_err(retry)?;
            conn.keep();
        }
        Ok(failures)
    }

    /// Sends the claimed notification with the body just rendered: the
    /// record's may lack the secret the message must carry.
    async fn send(
        &self,
        notification: &NotificationRow,
        rendered: &Rendered,
    ) -> Result<(), ChannelError> {
        let body = rendered
            .body(&notification.channel)
            .unwrap_or(notification.body.as_str());
        match notification.channel.as_str() {
            "email" => {
                self.channels
                    .send_email(
                        &notification.recipient,
                        notification.subject.as_deref().unwrap_or_default(),
                        body,
                    )
                    .await
            }
            "sms" => self.channels.send_sms(&notification.recipient, body).await,
            _ => {
                self.channels
                    .send_push(
                        notification.user_id,
                        notification.subject.as_deref().unwrap_or_default(),
                        body,
                    )
                    .await
            }
        }
    }
}

/// Why a channel is skipped, if it is.
fn skip_reason(
    user_exists: bool,
    wanted: bool,
    configured: bool,
    recipient: &str,
    what: &str,
    variable: &str,
) -> Option<String> {
    if !user_exists {
        Some("the user no longer exists".to_owned())
    } else if !wanted {
        Some("turned off in the user's preferences".to_owned())
    } else if !configured {
        Some(format!("channel not configured ({variable} is unset)"))
    } else if recipient.is_empty() {
        Some(format!("the user has no {what}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_skipped_for_the_first_reason_that_applies() {
        assert_eq!(
            skip_reason(false, true, true, "a@b.c", "email", "SMTP_URL").as_deref(),
            Some("the user no longer exists")
        );
        assert_eq!(
            skip_reason(true, false, false, "", "email", "SMTP_URL").as_deref(),
            Some("turned off in the user's preferences")
        );
        assert_eq!(
            skip_reason(true, true, false, "a@b.c", "email", "SMTP_URL").as_deref(),
            Some("channel not configured (SMTP_URL is unset)")
        );
        assert_eq!(
            skip_reason(true, true, true, "", "phone number", "SMS_WEBHOOK_URL").as_deref(),
            Some("the user has no phone number")
        );
        assert_eq!(
            skip_reason(true, true, true, "a@b.c", "email", "SMTP_URL"),
            None
        );
    }

    #[test]
    fn the_queue_binds_exactly_the_events_a_template_renders_and_those_are_mandatory() {
        use gocommerce_proto::events::v1 as ev;
        use gocommerce_proto::events::v1::event_envelope::Payload;
        let user_id = Uuid::new_v4().to_string();
        macro_rules! for_the_user {
            ($($event:ident),*) => {
                [$(Payload::$event(ev::$event {
                    user_id: user_id.clone(),
                    ..Default::default()
                })),*]
            };
        }
        let payloads = for_the_user!(
            UserRegistered,
            UserPasswordChanged,
            UserPasswordResetRequested,
            OrderCreated,
            OrderPaid,
            OrderCancelled,
            OrderShipped,
            OrderDelivered,
            PaymentSucceeded,
            PaymentFailed,
            PaymentRefunded
        );
        for payload in payloads {
            let key = events::event_type(&payload);
            let envelope = ev::EventEnvelope {
                payload: Some(payload),
                ..Default::default()
            };
            let mandatory = events::mandatory(envelope.payload.as_ref().expect("payload"));
            let rendered = templates::render(&envelope, &templates::Links::default()).is_some();
            assert_eq!(EVENTS.contains(&key), rendered, "{key}: bound iff rendered");
            assert_eq!(mandatory, rendered, "{key}: mandatory iff rendered");
            assert_eq!(
                RETIRED.contains(&key),
                !rendered,
                "{key}: unbound iff silent"
            );
        }
    }

    #[test]
    fn the_queue_is_bound_to_every_event_that_may_notify_with_bounded_prefetch() {
        let spec = queue(3, vec![Duration::from_millis(100)]);
        assert_eq!(spec.name, "notification.events");
        assert_eq!(spec.bindings.len(), EVENTS.len());
        for key in ["user.registered", "order.paid", "payment.refunded"] {
            assert!(spec.bindings.iter().any(|b| b == key), "{key}");
        }
        for key in ["order.created", "payment.succeeded"] {
            assert!(spec.unbind.iter().any(|b| b == key), "{key}");
            assert!(!spec.bindings.iter().any(|b| b == key), "{key}");
        }
        assert_eq!(spec.max_attempts, 3);
        assert!(spec.prefetch > 0 && spec.prefetch <= 64);
    }
}
