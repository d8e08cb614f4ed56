-- Payments (one per order), their refunds, and the outbox of this service.

CREATE TABLE payments (
    id                    uuid PRIMARY KEY,
    order_id              uuid NOT NULL,
    user_id               uuid NOT NULL,
    amount                bigint NOT NULL CHECK (amount > 0),
    currency              text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    method                text NOT NULL,
    status                text NOT NULL CHECK (status IN (
        'pending', 'succeeded', 'declined', 'failed',
        'refund_pending', 'partially_refunded', 'refunded')),
    processor_reference   text,
    failure_reason        text,
    attempts              integer NOT NULL DEFAULT 0,
    refunded_amount       bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    pending_refund_amount bigint NOT NULL DEFAULT 0 CHECK (pending_refund_amount >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- One charge per order, whatever the retries: the idempotency guarantee.
    CONSTRAINT payments_order_id_key UNIQUE (order_id),
    -- Refunds never exceed the capture, counted or in flight.
    CONSTRAINT payments_refunds_within_capture
        CHECK (refunded_amount + pending_refund_amount <= amount)
);

CREATE TABLE refunds (
    id                  uuid PRIMARY KEY,
    payment_id          uuid NOT NULL REFERENCES payments (id),
    amount              bigint NOT NULL CHECK (amount > 0),
    status              text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason              text NOT NULL,
    processor_reference text,
    failure_reason      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_payment_idx ON refunds (payment_id, created_at);

CREATE TABLE outbox (
    id           uuid PRIMARY KEY,
    routing_key  text NOT NULL,
    content_type text NOT NULL,
    payload      bytea NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    next_attempt_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE published_at IS NULL;
