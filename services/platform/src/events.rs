//! Domain events as outbox messages: the protobuf `EventEnvelope` of
//! `gocommerce.events.v1`, its routing key derived from the payload, so the
//! two can never disagree.

use chrono::Utc;
use gocommerce_proto::events::v1::EventEnvelope;
use gocommerce_proto::events::v1::event_envelope::Payload;
use prost::Message as _;
use uuid::Uuid;

use crate::outbox::{OutboxMessage, PROTOBUF};

/// The schema version of `gocommerce.events.v1`.
pub const SCHEMA_VERSION: u32 = 1;

/// The routing key (event type) of a payload.
pub fn event_type(payload: &Payload) -> &'static str {
    match payload {
        Payload::UserRegistered(_) => "user.registered",
        Payload::OrderCreated(_) => "order.created",
        Payload::OrderPaid(_) => "order.paid",
        Payload::OrderCancelled(_) => "order.cancelled",
        Payload::OrderShipped(_) => "order.shipped",
        Payload::OrderDelivered(_) => "order.delivered",
        Payload::PaymentSucceeded(_) => "payment.succeeded",
        Payload::PaymentFailed(_) => "payment.failed",
        Payload::PaymentRefunded(_) => "payment.refunded",
        Payload::UserPasswordChanged(_) => "user.password_changed",
        Payload::UserPasswordResetRequested(_) => "user.password_reset_requested",
    }
}

/// Whether some queue must take the event (see `outbox`): true for the
/// events a service acts on (today the notification service's templates), so
/// one published before its consumer's queue exists waits instead of being
/// dropped. The rest are published for the record, for whoever binds a
/// queue to them later; while nobody does, the broker drops them, and no
/// queue has to hold and acknowledge them meanwhile. A service that starts
/// to act on one of those makes it mandatory here.
pub fn mandatory(payload: &Payload) -> bool {
    match payload {
        Payload::UserRegistered(_)
        | Payload::UserPasswordChanged(_)
        | Payload::UserPasswordResetRequested(_)
        | Payload::OrderPaid(_)
        | Payload::OrderCancelled(_)
        | Payload::OrderShipped(_)
        | Payload::OrderDelivered(_)
        | Payload::PaymentRefunded(_) => true,
        Payload::OrderCreated(_) | Payload::PaymentSucceeded(_) | Payload::PaymentFailed(_) => {
            false
        }
    }
}

/// Whether the event carries a secret (a password-reset token, which takes
/// over the account until it runs out): the outbox keeps no copy of it
/// once it is published.
pub fn secret(payload: &Payload) -> bool {
    matches!(payload, Payload::UserPasswordResetRequested(_))
}

/// Wraps a payload in an envelope, ready for `outbox::enqueue`.
pub fn message(source: &str, aggregate_id: Uuid, payload: Payload) -> OutboxMessage {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let event_type = event_type(&payload);
    let mandatory = mandatory(&payload);
    let secret = secret(&payload);
    let envelope = EventEnvelope {
        id: id.to_string(),
        event_type: event_type.to_owned(),
        occurred_at: Some(crate::time::timestamp(now)),
        aggregate_id: aggregate_id.to_string(),
        schema_version: SCHEMA_VERSION,
        source: source.to_owned(),
        payload: Some(payload),
    };
    OutboxMessage {
        id,
        routing_key: event_type.to_owned(),
        content_type: PROTOBUF.to_owned(),
        payload: envelope.encode_to_vec(),
        mandatory,
        secret,
    }
}

/// Decodes a delivered envelope.
pub fn decode(bytes: &[u8]) -> Result<EventEnvelope, prost::DecodeError> {
    EventEnvelope::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gocommerce_proto::events::v1::UserRegistered;

    #[test]
    fn an_envelope_round_trips_and_its_routing_key_matches_its_payload() {
        let user = Uuid::new_v4();
        let message = message(
            "gocommerce-auth",
            user,
            Payload::UserRegistered(UserRegistered {
                user_id: user.to_string(),
                email: "ada@example.com".to_owned(),
                name: "Ada".to_owned(),
                role: "customer".to_owned(),
            }),
        );
        let envelope = decode(&message.payload).expect("decodes");
        assert_eq!(message.routing_key, "user.registered");
        assert_eq!(envelope.event_type, "user.registered");
        assert_eq!(envelope.id, message.id.to_string());
        assert_eq!(envelope.aggregate_id, user.to_string());
        assert_eq!(envelope.schema_version, 1);
        assert!(
            message.mandatory,
            "a registration must reach its welcome email"
        );
    }

    #[test]
    fn events_published_only_for_the_record_need_no_queue() {
        use gocommerce_proto::events::v1::{OrderCreated, PaymentFailed, PaymentSucceeded};
        for payload in [
            Payload::OrderCreated(OrderCreated::default()),
            Payload::PaymentSucceeded(PaymentSucceeded::default()),
            Payload::PaymentFailed(PaymentFailed::default()),
        ] {
            let message = message("gocommerce-test", Uuid::new_v4(), payload);
            assert!(!message.mandatory, "{}", message.routing_key);
        }
    }
}
