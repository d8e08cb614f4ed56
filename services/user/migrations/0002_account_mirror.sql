-- The profile's copy of its account's state, which auth owns: the role was
-- copied from the start; the disabled status is copied too, so the admin's
-- list can filter by it. account_version is auth's version of the copy: a
-- copy older than the one held is ignored, whatever order copies arrive in.
ALTER TABLE profiles
    ADD COLUMN disabled_at     timestamptz,
    ADD COLUMN account_version bigint NOT NULL DEFAULT 0;
-- ListUsers with disabled = true: few rows, oldest first.
CREATE INDEX profiles_disabled_created_idx ON profiles (created_at, id)
    WHERE disabled_at IS NOT NULL;
