-- The gateway reads the sessions that ended lately, page by page in
-- (revoked_at, id) order, to refuse their access tokens before they expire.
-- This index serves that read and, as the one it replaces did, the
-- retention sweep's `revoked_at < ...`.
CREATE INDEX refresh_families_revoked_id_idx ON refresh_families (revoked_at, id)
    WHERE revoked_at IS NOT NULL;
DROP INDEX refresh_families_revoked_idx;
