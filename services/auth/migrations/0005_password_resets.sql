-- Password resets: a single-use token emailed to the account's owner, stored
-- only as its SHA-256 (as refresh tokens are), valid until expires_at.
CREATE TABLE password_resets (
    token_hash bytea PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_resets_account_idx ON password_resets (account_id, created_at);
