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
    }
}

/// Wraps a payload in an envelope, ready for `outbox::enqueue`.
pub fn message(source: &str, aggregate_id: Uuid, payload: Payload) -> OutboxMessage {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let event_type = event_type(&payload);
    let envelope = EventEnvelope {
        id: id.to_string(),
        event_type: event_type.to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
        }),
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
    }
}
