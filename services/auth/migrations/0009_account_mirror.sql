-- The user service keeps a copy of each account's role and disabled status.
-- Every change to either bumps mirror_version; mirrored_version is the
-- newest version the user service confirmed. A copy that failed leaves the
-- two apart until a loop sends it again.
ALTER TABLE accounts
    ADD COLUMN mirror_version   bigint NOT NULL DEFAULT 1,
    -- Existing accounts are copied once: their disabled status never was,
    -- and a role copy may have failed.
    ADD COLUMN mirrored_version bigint NOT NULL DEFAULT 0;
-- A new account's profile is made with its state before the account commits.
ALTER TABLE accounts ALTER COLUMN mirrored_version SET DEFAULT 1;
CREATE INDEX accounts_unmirrored_idx ON accounts (id)
    WHERE mirrored_version < mirror_version;
