-- Orders with their item snapshots and history, idempotency keys, and the
-- outbox of this service.

CREATE TABLE orders (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL,
    status              text NOT NULL CHECK (status IN (
        'PENDING', 'RESERVED', 'PAID', 'SHIPPED', 'DELIVERED',
        'CANCELLED', 'REFUNDED', 'PARTIALLY_REFUNDED')),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total               bigint NOT NULL CHECK (total > 0),
    shipping_address    jsonb NOT NULL,
    shipping_address_id uuid NOT NULL,
    payment_method      text NOT NULL,
    cancel_reason       text,
    -- Saga bookkeeping: each flag only ever goes from false to true.
    cancel_requested    boolean NOT NULL DEFAULT false,
    charge_started      boolean NOT NULL DEFAULT false,
    payment_captured    boolean NOT NULL DEFAULT false,
    compensating        boolean NOT NULL DEFAULT false,
    out_of_stock        boolean NOT NULL DEFAULT false,
    refunded_amount     bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    carrier             text,
    tracking_number     text,
    shipped_at          timestamptz,
    delivered_at        timestamptz,
    saga_attempts       integer NOT NULL DEFAULT 0,
    -- When the saga should next look at this order; NULL once it is settled.
    -- Also a lease: a runner pushes it forward while it works on the order.
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_refunds_within_total CHECK (refunded_amount <= total)
);
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_status_idx ON orders (status, created_at DESC, id DESC);
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_saga_idx ON orders (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

CREATE TABLE order_items (
    order_id   uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    product_id uuid NOT NULL,
    sku        text NOT NULL,
    name       text NOT NULL,
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    quantity   integer NOT NULL CHECK (quantity > 0),
    line_total bigint NOT NULL CHECK (line_total = unit_price * quantity),
    PRIMARY KEY (order_id, position)
);

CREATE TABLE order_history (
    id          bigserial PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    from_status text,
    to_status   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    reason      text NOT NULL
);
CREATE INDEX order_history_order_idx ON order_history (order_id, id);

-- Stripe's semantics: a key maps to the first request's body hash, its order
-- and its answer, for 24 hours.
CREATE TABLE idempotency_keys (
    user_id          uuid NOT NULL,
    key              text NOT NULL,
    request_hash     bytea NOT NULL,
    order_id         uuid NOT NULL,
    response_code    text,
    response_message text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE outbox (
    id              uuid PRIMARY KEY,
    routing_key     text NOT NULL,
    content_type    text NOT NULL,
    payload         bytea NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE published_at IS NULL;
