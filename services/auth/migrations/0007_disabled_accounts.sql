-- An admin can disable an account (fraud, abuse): while disabled_at is set
-- it cannot log in, refresh, or change or reset its password.
ALTER TABLE accounts ADD COLUMN disabled_at timestamptz;
