-- Whether a queue must take the message (AMQP mandatory). Events published
-- only for the record are not: the broker drops them while nobody listens,
-- instead of the relay retrying them (gocommerce_platform::events::mandatory).
-- Rows written before this stay mandatory, as they were published then.
ALTER TABLE outbox ADD COLUMN mandatory boolean NOT NULL DEFAULT true;
-- Except the record-only events still waiting to go out: the notification
-- queue no longer binds them, so as mandatory they would wait forever.
UPDATE outbox SET mandatory = false
WHERE published_at IS NULL AND routing_key = 'order.created';
