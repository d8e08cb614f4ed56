//! Every query of the auth service. Functions take a connection or a
//! transaction; PostgreSQL error codes become domain errors here and nowhere
//! else.

use std::time::Duration;

use chrono::{DateTime, Utc};
use gocommerce_platform::Role;
use gocommerce_platform::db::{codes, constraint, sqlstate};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::AuthError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    /// Set while an admin has the account disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Bumped by every change to the role or the disabled status, the state
    /// the user service keeps a copy of.
    pub mirror_version: i64,
}

impl AccountRow {
    pub fn role(&self) -> Role {
        // The CHECK constraint admits only the two names `Role` parses.
        self.role.parse().unwrap_or(Role::Customer)
    }
}

const ACCOUNT_COLUMNS: &str =
    "id, email, name, password_hash, role, created_at, disabled_at, mirror_version";

// A taken email is the client's mistake: INFO, not ERROR (what is internal
// is logged at ERROR where the gRPC answer is made).
#[tracing::instrument(skip_all, fields(account_id = %id), err(level = "info"))]
pub async fn insert_account(
    conn: &mut PgConnection,
    id: Uuid,
    email: &str,
    name: &str,
    password_hash: &str,
    role: Role,
) -> Result<AccountRow, AuthError> {
    sqlx::query_as(&format!(
        "INSERT INTO accounts (id, email, name, password_hash, role) VALUES ($1, $2, $3, $4, $5) \
         RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(id)
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .bind(role.as_str())
    .fetch_one(conn)
    .await
    .map_err(|e| {
        if sqlstate(&e).as_deref() == Some(codes::UNIQUE_VIOLATION)
            && constraint(&e) == Some("accounts_email_key")
        {
            AuthError::EmailTaken
        } else {
            AuthError::Database(e)
        }
    })
}

#[tracing::instrument(skip_all, err)]
pub async fn find_account_by_email(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<AccountRow>, AuthError> {
    account_by_email(conn, email, "").await
}

/// The account with `email`, its row locked as `locking` says (or not).
async fn account_by_email(
    conn: &mut PgConnection,
    email: &str,
    locking: &str,
) -> Result<Option<AccountRow>, AuthError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1{locking}"
    ))
    .bind(email)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(account_id = %id), err)]
pub async fn find_account(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<AccountRow>, AuthError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The account, locked against changes (its password, role or disabled
/// status) until the transaction ends.
#[tracing::instrument(skip_all, fields(account_id = %id), err)]
pub async fn share_account(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<AccountRow>, AuthError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 FOR SHARE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The accounts with these ids; unknown ids are left out.
#[tracing::instrument(skip_all, fields(ids = ids.len()), err)]
pub async fn find_accounts(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<AccountRow>, AuthError> {
    accounts_by_ids(conn, ids, "").await
}

/// The accounts with these ids, with `tail` (an order, a lock) after the
/// condition.
async fn accounts_by_ids(
    conn: &mut PgConnection,
    ids: &[Uuid],
    tail: &str,
) -> Result<Vec<AccountRow>, AuthError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1){tail}"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(account_id = %id, role = %role), err)]
pub async fn set_role(
    conn: &mut PgConnection,
    id: Uuid,
    role: Role,
) -> Result<Option<AccountRow>, AuthError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE accounts SET role = $2, updated_at = now(), \
           mirror_version = mirror_version + (role <> $2)::int \
         WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(id)
    .bind(role.as_str())
    .fetch_optional(conn)
    .await?)
}

/// Accounts whose newest state the user service has not confirmed, by id.
#[tracing::instrument(skip_all, err)]
pub async fn unmirrored_accounts(
    conn: &mut PgConnection,
    limit: usize,
) -> Result<Vec<AccountRow>, AuthError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE mirrored_version < mirror_version \
         ORDER BY id LIMIT $1"
    ))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?)
}

/// Records that the user service holds these versions of these accounts; a
/// newer one recorded meanwhile stays.
#[tracing::instrument(skip_all, fields(accounts = versions.len()), err)]
pub async fn mark_mirrored(
    conn: &mut PgConnection,
    versions: &[(Uuid, i64)],
) -> Result<(), AuthError> {
    let (ids, versions): (Vec<Uuid>, Vec<i64>) = versions.iter().copied().unzip();
    sqlx::query(
        "UPDATE accounts a SET mirrored_version = m.version \
         FROM unnest($1::uuid[], $2::int8[]) AS m(id, version) \
         WHERE a.id = m.id AND a.mirrored_version < m.version",
    )
    .bind(ids)
    .bind(versions)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the accounts with these ids, in id order so two transactions
/// locking the same pair cannot deadlock, and returns them.
#[tracing::instrument(skip_all, err)]
pub async fn lock_accounts(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<AccountRow>, AuthError> {
    accounts_by_ids(conn, ids, " ORDER BY id FOR NO KEY UPDATE").await
}

/// Disables the account (keeping the time it was first disabled) or enables
/// it; None when there is no such account.
#[tracing::instrument(skip_all, fields(account_id = %id, disabled), err)]
pub async fn set_disabled(
    conn: &mut PgConnection,
    id: Uuid,
    disabled: bool,
) -> Result<Option<AccountRow>, AuthError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE accounts SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END, \
           mirror_version = mirror_version + ((disabled_at IS NOT NULL) <> $2)::int, \
           updated_at = now() \
         WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(id)
    .bind(disabled)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(account_id = %account_id, family_id = %family_id), err)]
pub async fn create_refresh_family(
    conn: &mut PgConnection,
    family_id: Uuid,
    account_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), AuthError> {
    sqlx::query("INSERT INTO refresh_families (id, account_id, expires_at) VALUES ($1, $2, $3)")
        .bind(family_id)
        .bind(account_id)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(family_id = %family_id), err)]
pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    family_id: Uuid,
    token_hash: &[u8],
) -> Result<(), AuthError> {
    sqlx::query("INSERT INTO refresh_tokens (id, family_id, token_hash) VALUES ($1, $2, $3)")
        .bind(Uuid::now_v7())
        .bind(family_id)
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// A refresh token with the state of its family, locked for the transaction.
#[derive(Debug, sqlx::FromRow)]
pub struct RefreshTokenRow {
    pub token_id: Uuid,
    pub family_id: Uuid,
    pub account_id: Uuid,
    pub used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Finds and locks a token and its family, so two refreshes with the same
/// token serialise: the second sees the first's use and counts as reuse.
#[tracing::instrument(skip_all, err)]
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshTokenRow>, AuthError> {
    Ok(sqlx::query_as(
        "SELECT t.id AS token_id, t.family_id, f.account_id, t.used_at, f.expires_at, f.revoked_at \
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
         WHERE t.token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(token_id = %token_id), err)]
pub async fn mark_refresh_token_used(
    conn: &mut PgConnection,
    token_id: Uuid,
) -> Result<(), AuthError> {
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(token_id)
        .execute(conn)
        .await?;
    Ok(())
}

// Sessions end at `clock_timestamp()`, not at the transaction's start
// (`now()`): the gateway reads them by that time, and the closer it is to
// the commit, the less a reader must look back for ones committed late.
#[tracing::instrument(skip_all, fields(family_id = %family_id, reason), err)]
pub async fn revoke_family(
    conn: &mut PgConnection,
    family_id: Uuid,
    reason: &str,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = clock_timestamp(), revoke_reason = $2 \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// A session that ended: its id and when.
#[derive(Debug, sqlx::FromRow)]
pub struct EndedSessionRow {
    pub id: Uuid,
    pub revoked_at: DateTime<Utc>,
}

/// Records that tokens may be signed with a lifetime of `seconds` until
/// `until` (a later record stays), and forgets the lifetimes whose tokens
/// have all expired, `margin` seconds past their `exp` included.
#[tracing::instrument(skip_all, fields(seconds), err)]
pub async fn record_access_lifetime(
    conn: &mut PgConnection,
    seconds: i64,
    until: DateTime<Utc>,
    margin: i64,
) -> Result<(), AuthError> {
    sqlx::query(
        "WITH gone AS ( \
           DELETE FROM access_token_lifetimes \
           WHERE signed_until + make_interval(secs => seconds + $3) < now() AND seconds <> $1) \
         INSERT INTO access_token_lifetimes (seconds, signed_until) VALUES ($1, $2) \
         ON CONFLICT (seconds) DO UPDATE \
           SET signed_until = GREATEST(access_token_lifetimes.signed_until, excluded.signed_until)",
    )
    .bind(seconds)
    .bind(until)
    .bind(margin)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a read of the ended sessions stands, read before the sessions.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct EndedSessionsBounds {
    /// A time before which no session can end any more: the start of the
    /// oldest transaction open in this database, or now. A session's end is
    /// stamped inside the transaction that ends it, so after that
    /// transaction started; one still to commit cannot carry an earlier
    /// time, however late it commits.
    ///
    /// Only clients' transactions count (autovacuum's can run for minutes
    /// and end no session). Other roles' transactions show no start here
    /// (without `pg_read_all_stats`), so only the service's own role may end
    /// sessions, as it alone does; `track_activities` (on by default) must
    /// stay on. A transaction left open holds the time back, which costs the
    /// readers re-reads of what ended since, never a session.
    pub horizon: DateTime<Utc>,
    /// The longest recorded token lifetime, in seconds, of which a token may
    /// still be live, with the margin past `exp`; None when there is none.
    pub longest_lifetime: Option<i64>,
}

/// The bounds of a read of the ended sessions, in one round trip.
#[tracing::instrument(skip_all, err)]
pub async fn ended_sessions_bounds(
    conn: &mut PgConnection,
    margin: i64,
) -> Result<EndedSessionsBounds, AuthError> {
    Ok(sqlx::query_as(
        "SELECT \
           (SELECT LEAST(clock_timestamp(), min(xact_start)) FROM pg_stat_activity \
            WHERE datname = current_database() AND backend_type = 'client backend') AS horizon, \
           (SELECT max(seconds) FROM access_token_lifetimes \
            WHERE signed_until + make_interval(secs => seconds + $1) > now()) AS longest_lifetime",
    )
    .bind(margin)
    .fetch_one(conn)
    .await?)
}

/// Up to `limit` sessions that ended after `(after, after_id)`, in
/// `(revoked_at, id)` order.
#[tracing::instrument(skip_all, err)]
pub async fn ended_sessions(
    conn: &mut PgConnection,
    after: DateTime<Utc>,
    after_id: Uuid,
    limit: i64,
) -> Result<Vec<EndedSessionRow>, AuthError> {
    Ok(sqlx::query_as(
        "SELECT id, revoked_at FROM refresh_families \
         WHERE revoked_at IS NOT NULL AND (revoked_at, id) > ($1, $2) \
         ORDER BY revoked_at, id LIMIT $3",
    )
    .bind(after)
    .bind(after_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Replaces the account's password hash if it is still `old_hash`: false
/// when another change came first.
#[tracing::instrument(skip_all, fields(account_id = %id), err)]
pub async fn replace_password_hash(
    conn: &mut PgConnection,
    id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, AuthError> {
    let updated = sqlx::query(
        "UPDATE accounts SET password_hash = $3, updated_at = now() \
         WHERE id = $1 AND password_hash = $2",
    )
    .bind(id)
    .bind(old_hash)
    .bind(new_hash)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Ends every session of the account; returns how many were live.
#[tracing::instrument(skip_all, fields(account_id = %account_id, reason), err)]
pub async fn revoke_account_families(
    conn: &mut PgConnection,
    account_id: Uuid,
    reason: &str,
) -> Result<u64, AuthError> {
    let revoked = sqlx::query(
        "UPDATE refresh_families SET revoked_at = clock_timestamp(), revoke_reason = $2 \
         WHERE account_id = $1 AND revoked_at IS NULL",
    )
    .bind(account_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(revoked.rows_affected())
}

/// Sets the account's password hash.
#[tracing::instrument(skip_all, fields(account_id = %id), err)]
pub async fn set_password_hash(
    conn: &mut PgConnection,
    id: Uuid,
    hash: &str,
) -> Result<(), AuthError> {
    sqlx::query("UPDATE accounts SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// A password reset, by the hash of its token.
#[derive(Debug, sqlx::FromRow)]
pub struct PasswordResetRow {
    pub account_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

impl PasswordResetRow {
    /// Neither used nor expired.
    pub fn is_live(&self) -> bool {
        self.used_at.is_none() && self.expires_at > Utc::now()
    }
}

/// The reset tokens sent to an account lately: how many within `window`, and
/// whether one still unused went out within `interval`.
#[derive(Debug, sqlx::FromRow)]
pub struct RecentResets {
    pub in_window: i64,
    pub unused_in_interval: bool,
}

/// Counts the account's recent reset tokens; call it under
/// [`lock_account_for_reset`] so two requests cannot both pass.
#[tracing::instrument(skip_all, fields(account_id = %account_id), err)]
pub async fn recent_password_resets(
    conn: &mut PgConnection,
    account_id: Uuid,
    interval: Duration,
    window: Duration,
) -> Result<RecentResets, AuthError> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE created_at > now() - make_interval(secs => $3)) AS in_window, \
           coalesce(bool_or(used_at IS NULL AND created_at > now() - make_interval(secs => $2)), false) \
             AS unused_in_interval \
         FROM password_resets WHERE account_id = $1 AND created_at > now() - make_interval(secs => $3)",
    )
    .bind(account_id)
    .bind(interval.as_secs_f64())
    .bind(window.as_secs_f64())
    .fetch_one(conn)
    .await?)
}

/// Finds the account with this email and locks it against other reset
/// requests (and changes of it) until the transaction ends: the check of
/// its recent tokens and the insert of a new one are then one step.
#[tracing::instrument(skip_all, err)]
pub async fn lock_account_for_reset(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<AccountRow>, AuthError> {
    account_by_email(conn, email, " FOR NO KEY UPDATE").await
}

/// Records a reset token.
#[tracing::instrument(skip_all, fields(account_id = %account_id), err)]
pub async fn insert_password_reset(
    conn: &mut PgConnection,
    token_hash: &[u8],
    account_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO password_resets (token_hash, account_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(account_id)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Finds a reset by its token's hash and locks it for the transaction, so
/// two uses of one token serialise and the second finds it used.
#[tracing::instrument(skip_all, err)]
pub async fn lock_password_reset(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<PasswordResetRow>, AuthError> {
    Ok(sqlx::query_as(
        "SELECT account_id, expires_at, used_at FROM password_resets \
         WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?)
}

/// Marks every unused reset token of the account used: one reset spends them all.
#[tracing::instrument(skip_all, fields(account_id = %account_id), err)]
pub async fn spend_password_resets(
    conn: &mut PgConnection,
    account_id: Uuid,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE password_resets SET used_at = now() WHERE account_id = $1 AND used_at IS NULL",
    )
    .bind(account_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` sessions (refresh families, with their tokens)
/// that expired or were revoked more than `retention` ago.
pub async fn delete_ended_sessions(
    conn: &mut PgConnection,
    retention: Duration,
    limit: i64,
) -> Result<u64, AuthError> {
    delete_chunk(
        conn,
        "DELETE FROM refresh_families WHERE id IN ( \
           SELECT id FROM refresh_families \
           WHERE expires_at < now() - make_interval(secs => $1) \
              OR revoked_at < now() - make_interval(secs => $1) \
           LIMIT $2)",
        retention,
        limit,
    )
    .await
}

/// Deletes up to `limit` reset tokens sent more than `retention` ago.
pub async fn delete_old_password_resets(
    conn: &mut PgConnection,
    retention: Duration,
    limit: i64,
) -> Result<u64, AuthError> {
    delete_chunk(
        conn,
        "DELETE FROM password_resets WHERE token_hash IN ( \
           SELECT token_hash FROM password_resets \
           WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
        retention,
        limit,
    )
    .await
}

/// Deletes up to `limit` login-failure counts that no longer count: their
/// window (`window`) has passed and any lock has ended. The next failure of
/// such a key would start from one anyway.
pub async fn delete_stale_login_failures(
    conn: &mut PgConnection,
    window: Duration,
    limit: i64,
) -> Result<u64, AuthError> {
    delete_chunk(
        conn,
        "DELETE FROM login_failures WHERE key IN ( \
           SELECT key FROM login_failures \
           WHERE window_start < now() - make_interval(secs => $1) \
             AND (locked_until IS NULL OR locked_until <= now()) \
           LIMIT $2)",
        window,
        limit,
    )
    .await
}

/// Runs one of the retention deletes above: `$1` is an age in seconds, `$2`
/// the most rows to delete.
#[tracing::instrument(skip_all, err)]
async fn delete_chunk(
    conn: &mut PgConnection,
    sql: &'static str,
    age: Duration,
    limit: i64,
) -> Result<u64, AuthError> {
    Ok(sqlx::query(sql)
        .bind(age.as_secs_f64())
        .bind(limit)
        .execute(conn)
        .await?
        .rows_affected())
}

#[derive(Debug)]
pub struct StoredKeys {
    pub current_pem: String,
    pub older_public_keys: Vec<Vec<u8>>,
}

/// The newest stored signing key, created with `generate` when there is none.
/// An advisory lock makes concurrent first starts agree on one key.
#[tracing::instrument(skip_all, err)]
pub async fn load_or_create_signing_key(
    conn: &mut PgConnection,
    generate: impl FnOnce() -> Result<(String, String, Vec<u8>), AuthError>,
) -> Result<StoredKeys, AuthError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('gocommerce.auth.signing_keys'))")
        .execute(&mut *tx)
        .await?;
    let mut keys: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT private_key_pem, public_key FROM signing_keys ORDER BY created_at DESC",
    )
    .fetch_all(&mut *tx)
    .await?;
    if keys.is_empty() {
        let (kid, pem, public) = generate()?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key_pem, public_key) VALUES ($1, $2, $3)",
        )
        .bind(&kid)
        .bind(&pem)
        .bind(&public)
        .execute(&mut *tx)
        .await?;
        tracing::info!(kid = %kid, "generated a new signing key");
        keys.push((pem, public));
    }
    tx.commit().await?;
    let mut keys = keys.into_iter();
    let (current_pem, _) = keys
        .next()
        .ok_or_else(|| AuthError::Signing("no signing key".to_owned()))?;
    Ok(StoredKeys {
        current_pem,
        older_public_keys: keys.map(|(_, public)| public).collect(),
    })
}

/// When the latest lock on any of `keys` ends, if one is locked now.
#[tracing::instrument(skip_all, err)]
pub async fn locked_until(
    conn: &mut PgConnection,
    keys: &[String],
) -> Result<Option<DateTime<Utc>>, AuthError> {
    Ok(sqlx::query_scalar(
        "SELECT max(locked_until) FROM login_failures WHERE key = ANY($1) AND locked_until > now()",
    )
    .bind(keys)
    .fetch_one(conn)
    .await?)
}

/// Counts an attempt on `key` before its password is checked, in a window of
/// `window_secs`; an attempt beyond `limit` in one window locks the key for
/// `lock_secs`. A lock that has ended starts a new window. When the key is
/// locked (now, or by this attempt), when the lock ends.
#[tracing::instrument(skip_all, err)]
pub async fn take_login_attempt(
    conn: &mut PgConnection,
    key: &str,
    limit: i32,
    window_secs: f64,
    lock_secs: f64,
) -> Result<Option<DateTime<Utc>>, AuthError> {
    // `f` is the row before this attempt: a live lock keeps it as it is, an
    // ended lock or window starts counting again.
    Ok(sqlx::query_scalar(
        "INSERT INTO login_failures AS f (key, failures, window_start, locked_until) \
         VALUES ($1, 1, now(), CASE WHEN $2 < 1 THEN now() + make_interval(secs => $4) END) \
         ON CONFLICT (key) DO UPDATE SET \
           failures = CASE WHEN f.locked_until > now() THEN f.failures \
             WHEN f.locked_until IS NOT NULL OR f.window_start < now() - make_interval(secs => $3) THEN 1 \
             ELSE f.failures + 1 END, \
           window_start = CASE WHEN f.locked_until > now() THEN f.window_start \
             WHEN f.locked_until IS NOT NULL OR f.window_start < now() - make_interval(secs => $3) THEN now() \
             ELSE f.window_start END, \
           locked_until = CASE WHEN f.locked_until > now() THEN f.locked_until \
             WHEN f.locked_until IS NULL AND f.window_start >= now() - make_interval(secs => $3) \
               AND f.failures + 1 > $2 THEN now() + make_interval(secs => $4) \
             END \
         RETURNING locked_until",
    )
    .bind(key)
    .bind(limit)
    .bind(window_secs)
    .bind(lock_secs)
    .fetch_one(conn)
    .await?)
}

/// Takes back an attempt [`take_login_attempt`] counted that got no verdict,
/// unless the key was locked meanwhile.
#[tracing::instrument(skip_all, err)]
pub async fn uncount_login_attempt(conn: &mut PgConnection, key: &str) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE login_failures SET failures = GREATEST(failures - 1, 0) \
         WHERE key = $1 AND locked_until IS NULL",
    )
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// After an attempt that [`take_login_attempt`] counted failed: locks `key`
/// for `lock_secs` once `limit` attempts in its window have.
#[tracing::instrument(skip_all, err)]
pub async fn lock_if_at_limit(
    conn: &mut PgConnection,
    key: &str,
    limit: i32,
    lock_secs: f64,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE login_failures SET locked_until = now() + make_interval(secs => $3) \
         WHERE key = $1 AND failures >= $2 AND locked_until IS NULL",
    )
    .bind(key)
    .bind(limit)
    .bind(lock_secs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts a failure for `key` in a window of `window_secs`; locks the key for
/// `lock_secs` once `limit` failures fall in one window.
#[tracing::instrument(skip_all, err)]
pub async fn record_login_failure(
    conn: &mut PgConnection,
    key: &str,
    limit: i32,
    window_secs: f64,
    lock_secs: f64,
) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO login_failures AS f (key, failures, window_start, locked_until) \
         VALUES ($1, 1, now(), CASE WHEN $2 <= 1 THEN now() + make_interval(secs => $4) END) \
         ON CONFLICT (key) DO UPDATE SET \
           failures = CASE WHEN f.window_start < now() - make_interval(secs => $3) THEN 1 ELSE f.failures + 1 END, \
           window_start = CASE WHEN f.window_start < now() - make_interval(secs => $3) THEN now() ELSE f.window_start END, \
           locked_until = CASE \
             WHEN (CASE WHEN f.window_start < now() - make_interval(secs => $3) THEN 1 ELSE f.failures + 1 END) >= $2 \
             THEN now() + make_interval(secs => $4) ELSE f.locked_until END",
    )
    .bind(key)
    .bind(limit)
    .bind(window_secs)
    .bind(lock_secs)
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, err)]
pub async fn clear_login_failures(conn: &mut PgConnection, key: &str) -> Result<(), AuthError> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}
