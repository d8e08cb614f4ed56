-- Profiles (one per auth account), their notification preferences and
-- address books.

CREATE TABLE profiles (
    -- The auth account's id.
    id         uuid PRIMARY KEY,
    -- Not unique: auth owns uniqueness, and a profile left behind by a
    -- registration that failed afterwards must not block the next attempt.
    email      text NOT NULL,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    phone      text CHECK (phone ~ '^\+[1-9][0-9]{7,14}$'),
    role       text NOT NULL CHECK (role IN ('customer', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_email_idx ON profiles (email);
-- ListUsers pages oldest first, optionally by role.
CREATE INDEX profiles_created_idx ON profiles (created_at, id);
CREATE INDEX profiles_role_created_idx ON profiles (role, created_at, id);

CREATE TABLE preferences (
    user_id          uuid PRIMARY KEY REFERENCES profiles (id) ON DELETE CASCADE,
    email_enabled    boolean NOT NULL DEFAULT true,
    sms_enabled      boolean NOT NULL DEFAULT false,
    push_enabled     boolean NOT NULL DEFAULT false,
    locale           text NOT NULL DEFAULT 'en' CHECK (char_length(locale) BETWEEN 2 AND 35),
    marketing_opt_in boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE addresses (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    name        text NOT NULL DEFAULT '',
    line1       text NOT NULL CHECK (char_length(line1) BETWEEN 1 AND 200),
    line2       text NOT NULL DEFAULT '' CHECK (char_length(line2) <= 200),
    city        text NOT NULL CHECK (char_length(city) BETWEEN 1 AND 100),
    region      text NOT NULL DEFAULT '' CHECK (char_length(region) <= 100),
    postal_code text NOT NULL CHECK (postal_code ~ '^[A-Za-z0-9]([A-Za-z0-9 -]{0,18}[A-Za-z0-9])?$'),
    country     text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- At most one default shipping address per user, whatever the races.
CREATE UNIQUE INDEX addresses_one_default_idx ON addresses (user_id) WHERE is_default;
CREATE INDEX addresses_user_idx ON addresses (user_id, created_at DESC, id DESC);
