-- The catalog (category tree, products with full-text search) and the
-- inventory (stock per product, the ledger of movements, order reservations).

CREATE TABLE categories (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    slug       text NOT NULL CHECK (slug ~ '^[a-z0-9-]{1,100}$'),
    -- RESTRICT: a category with subcategories cannot be deleted.
    parent_id  uuid REFERENCES categories (id) ON DELETE RESTRICT,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT categories_slug_key UNIQUE (slug),
    CONSTRAINT categories_not_own_parent CHECK (parent_id <> id)
);
CREATE INDEX categories_parent_idx ON categories (parent_id);

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    sku         text NOT NULL CHECK (char_length(sku) BETWEEN 1 AND 64),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
    price       bigint NOT NULL CHECK (price >= 0),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- RESTRICT: a category with products (archived ones too) cannot be deleted.
    category_id uuid NOT NULL REFERENCES categories (id) ON DELETE RESTRICT,
    attributes  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    images      text[] NOT NULL DEFAULT '{}' CHECK (cardinality(images) <= 20),
    active      boolean NOT NULL DEFAULT true,
    -- The name weighs more than the description in the ranking.
    search      tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name), 'A')
        || setweight(to_tsvector('english', description), 'B')
    ) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_sku_key UNIQUE (sku)
);
CREATE INDEX products_search_idx ON products USING gin (search);
CREATE INDEX products_category_idx ON products (category_id);
-- One index per keyset sort, each with the id tie-breaker.
CREATE INDEX products_price_idx ON products (price, id);
CREATE INDEX products_newest_idx ON products (created_at, id);
-- Names sort A to Z whatever their case, under any database collation.
CREATE INDEX products_name_idx ON products (lower(name), id);

-- Kept apart from products so that reservations never rewrite a product row
-- (and its search vector) and catalog edits never wait for stock locks.
CREATE TABLE stock (
    product_id uuid PRIMARY KEY REFERENCES products (id),
    on_hand    bigint NOT NULL DEFAULT 0,
    reserved   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0),
    -- The guarantee against overselling, whatever the races above it.
    CONSTRAINT stock_available_not_negative CHECK (on_hand - reserved >= 0)
);

CREATE TABLE stock_movements (
    id             uuid PRIMARY KEY,
    product_id     uuid NOT NULL REFERENCES products (id),
    kind           text NOT NULL CHECK (kind IN (
        'initial', 'adjustment', 'reservation', 'release', 'commit')),
    on_hand_delta  bigint NOT NULL,
    reserved_delta bigint NOT NULL,
    reason         text NOT NULL DEFAULT '',
    order_id       uuid,
    actor          text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_movements_product_idx ON stock_movements (product_id, created_at DESC, id DESC);

-- One per order: the idempotency key of ReserveStock. A release without a
-- reservation leaves a 'released' tombstone with no items.
CREATE TABLE reservations (
    order_id   uuid PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('reserved', 'released', 'committed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservation_items (
    order_id   uuid NOT NULL REFERENCES reservations (order_id),
    position   integer NOT NULL,
    product_id uuid NOT NULL REFERENCES products (id),
    quantity   integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, position),
    CONSTRAINT reservation_items_product_once UNIQUE (order_id, product_id)
);
