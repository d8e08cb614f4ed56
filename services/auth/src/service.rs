//! The `AuthService` gRPC handlers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use gocommerce_platform::db::Db;
use gocommerce_platform::time::{self, timestamp};
use gocommerce_platform::token::{ACCESS_TOKEN_TYPE, AccessClaims};
use gocommerce_platform::{Caller, Role, events, outbox};
use gocommerce_proto::auth::v1 as pb;
use gocommerce_proto::events::v1::event_envelope::Payload;
use gocommerce_proto::events::v1::{
    UserPasswordChanged, UserPasswordResetRequested, UserRegistered,
};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, AccountRow};
use crate::domain::{Email, Name, Password};
use crate::error::AuthError;
use crate::keys::KeyStore;
use crate::lifetimes;
use crate::mirror;
use crate::password::Hasher;
use crate::profiles::Profiles;
use crate::throttle::{self, Policy};

/// The `source` of this service's events.
const SOURCE: &str = "gocommerce-auth";

/// Refresh tokens carry this prefix so leaked ones are easy to spot in scans.
const REFRESH_TOKEN_PREFIX: &str = "gcr_";
/// Password reset tokens carry this one.
const RESET_TOKEN_PREFIX: &str = "gcp_";
/// How long a reset token works.
const RESET_TTL: Duration = Duration::from_secs(30 * 60);
/// At most one reset token is sent to an account in this time: asking again
/// sooner sends nothing, so nobody floods an inbox.
const RESET_INTERVAL: Duration = Duration::from_secs(60);
/// And at most this many in [`RESET_WINDOW`], used or not: an inbox gets a
/// handful of reset emails an hour, however many addresses ask.
const RESETS_PER_WINDOW: i64 = 5;
const RESET_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Most accounts one `GetAccounts` reads: a page of profiles.
const MAX_ACCOUNTS_READ: usize = 100;
/// Most ended sessions in one answer to `ListEndedSessions`.
const ENDED_SESSIONS_PAGE: usize = 1000;

#[derive(Debug, Clone)]
pub struct AuthService {
    pub db: Db,
    pub keys: Arc<KeyStore>,
    pub hasher: Hasher,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub throttle: Policy,
    pub profiles: Profiles,
    /// How long registration keeps retrying the user service.
    pub profile_budget: Duration,
}

impl AuthService {
    pub async fn create_account(
        &self,
        email: &Email,
        password: &Password,
        name: &Name,
        role: Role,
    ) -> Result<AccountRow, AuthError> {
        // A taken email fails fast, before any hashing or profile is made.
        {
            let mut conn = self.db.acquire().await?;
            let taken = db::find_account_by_email(&mut conn, email.as_str())
                .await?
                .is_some();
            conn.keep();
            if taken {
                return Err(AuthError::EmailTaken);
            }
        }
        let hash = self.hasher.hash(password.expose().to_owned()).await?;
        // The profile first: an account never exists without one. Should the
        // insert below lose a race for the email, the profile stays behind
        // unused, which is harmless (its id belongs to no account).
        let id = Uuid::now_v7();
        self.profiles
            .create(id, email.as_str(), name.as_str(), role, self.profile_budget)
            .await?;
        // The account and its user.registered event commit together.
        let mut tx = self.db.begin().await?;
        let account =
            db::insert_account(&mut tx, id, email.as_str(), name.as_str(), &hash, role).await?;
        let event = events::message(
            SOURCE,
            account.id,
            Payload::UserRegistered(UserRegistered {
                user_id: account.id.to_string(),
                email: account.email.clone(),
                name: account.name.clone(),
                role: account.role().as_str().to_owned(),
            }),
        );
        outbox::enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(account)
    }

    /// Starts a session for an account whose password was checked against
    /// `verified`'s hash, if the account is still so. The check took a while
    /// and read the account unlocked: a password change, reset or disabling
    /// that committed meanwhile refuses the login, and one that commits later
    /// waits for this session (the row is shared-locked) and then ends it
    /// with the account's others. The right password lifts the account's
    /// count of failures in the same transaction: one commit, not two.
    async fn issue_tokens(
        &self,
        verified: &AccountRow,
        keys: &throttle::Keys,
        attempt: throttle::Attempt,
    ) -> Result<pb::TokenPair, AuthError> {
        let mut tx = self.db.begin().await?;
        let account = db::share_account(&mut tx, verified.id)
            .await?
            .filter(|a| a.password_hash == verified.password_hash)
            .ok_or(AuthError::InvalidCredentials)?;
        self.throttle.succeeded(&mut tx, keys).await?;
        if account.disabled_at.is_some() {
            tx.commit().await?;
            attempt.settle();
            tracing::info!(account_id = %account.id, "login refused: account disabled");
            return Err(AuthError::AccountDisabled);
        }
        let pair = self.start_session(&mut tx, &account).await?;
        tx.commit().await?;
        attempt.settle();
        tracing::info!(account_id = %account.id, "login succeeded");
        Ok(pair)
    }

    /// Writes a new refresh family for the account in `conn`'s transaction
    /// and signs an access token for it.
    async fn start_session(
        &self,
        conn: &mut PgConnection,
        account: &AccountRow,
    ) -> Result<pb::TokenPair, AuthError> {
        let family_id = Uuid::now_v7();
        let (refresh_token, refresh_hash) = new_token(REFRESH_TOKEN_PREFIX);
        let expires_at = Utc::now() + self.refresh_ttl;
        db::create_refresh_family(conn, family_id, account.id, expires_at).await?;
        db::insert_refresh_token(conn, family_id, &refresh_hash).await?;
        let access_token = self.sign_access_token(account, family_id)?;
        Ok(self.token_pair(access_token, refresh_token))
    }

    /// Signs an access token of `account` for the session `session_id`.
    fn sign_access_token(
        &self,
        account: &AccountRow,
        session_id: Uuid,
    ) -> Result<String, AuthError> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX);
        self.keys.sign(&AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: account.id.to_string(),
            exp: now.saturating_add(ttl),
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            sid: Some(session_id.to_string()),
            role: account.role().as_str().to_owned(),
            token_type: ACCESS_TOKEN_TYPE.to_owned(),
        })
    }

    fn token_pair(&self, access_token: String, refresh_token: String) -> pb::TokenPair {
        pb::TokenPair {
            access_token,
            refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in: i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Whether `password` is the one `hash` was made from; false without a
    /// hash, after the same work. A password longer than any we accept is
    /// refused unhashed: it cannot match, and hashing it would cost its length.
    async fn verify_password(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, AuthError> {
        if password.chars().count() > gocommerce_platform::validate::PASSWORD_MAX_CHARS {
            return Ok(false);
        }
        self.hasher.verify(password, hash).await
    }

    async fn login(&self, request: pb::LoginRequest) -> Result<pb::TokenPair, AuthError> {
        let email = Email::parse(&request.email).map_err(|_| AuthError::InvalidCredentials)?;
        let keys = throttle::Keys::new(email.as_str(), &request.client_ip);

        let mut conn = self.db.acquire().await?;
        let attempt = self
            .throttle
            .admit(self.db.background(), &mut conn, &keys)
            .await?;
        let account = db::find_account_by_email(&mut conn, email.as_str()).await?;
        // Release the connection while hashing: it takes tens of milliseconds.
        conn.keep();

        let password_ok = self
            .verify_password(
                request.password,
                account.as_ref().map(|a| a.password_hash.clone()),
            )
            .await?;
        match account {
            Some(account) if password_ok => self.issue_tokens(&account, &keys, attempt).await,
            _ => {
                let mut conn = self.db.acquire().await?;
                self.throttle.failed(&mut conn, &keys, attempt).await?;
                conn.keep();
                tracing::info!("login failed");
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    async fn refresh(&self, refresh_token: &str) -> Result<pb::TokenPair, AuthError> {
        let hash = hash_token(refresh_token, REFRESH_TOKEN_PREFIX)
            .ok_or(AuthError::InvalidRefreshToken)?;
        let mut tx = self.db.begin().await?;
        let Some(row) = db::lock_refresh_token(&mut tx, &hash).await? else {
            return Err(AuthError::InvalidRefreshToken);
        };
        if row.used_at.is_some() {
            // Someone holds a copy of a rotated token: end the whole session.
            db::revoke_family(&mut tx, row.family_id, "refresh token reused").await?;
            tx.commit().await?;
            tracing::warn!(family_id = %row.family_id, account_id = %row.account_id, "refresh token reuse detected, family revoked");
            return Err(AuthError::InvalidRefreshToken);
        }
        if row.revoked_at.is_some() || row.expires_at <= Utc::now() {
            return Err(AuthError::InvalidRefreshToken);
        }
        // Disabling revokes every session; this also catches one started
        // by a login that checked the account just before.
        let account = db::find_account(&mut tx, row.account_id)
            .await?
            .filter(|a| a.disabled_at.is_none())
            .ok_or(AuthError::InvalidRefreshToken)?;
        db::mark_refresh_token_used(&mut tx, row.token_id).await?;
        let (next_token, next_hash) = new_token(REFRESH_TOKEN_PREFIX);
        db::insert_refresh_token(&mut tx, row.family_id, &next_hash).await?;
        let access_token = self.sign_access_token(&account, row.family_id)?;
        tx.commit().await?;
        Ok(self.token_pair(access_token, next_token))
    }

    /// Changes the caller's password: the current one is checked (a wrong
    /// one counts as a failed login, so this is no way around the lockout),
    /// then the new hash, the end of every session and of every reset token,
    /// a new session for the caller and the `user.password_changed` event
    /// commit together.
    async fn change_password(
        &self,
        caller: &Caller,
        request: pb::ChangePasswordRequest,
    ) -> Result<pb::TokenPair, AuthError> {
        let user_id = parse_user_id(&request.user_id)?;
        // Nobody changes another account's password, admins included; as
        // elsewhere, someone else's account is "not found".
        if caller.user_id != user_id {
            return Err(AuthError::NotFound);
        }
        // The same password again is allowed: it ends every other session.
        let new_password = Password::parse_field(&request.new_password, "new_password")?;

        let mut conn = self.db.acquire().await?;
        let Some(account) = db::find_account(&mut conn, user_id).await? else {
            conn.keep();
            return Err(AuthError::NotFound);
        };
        if account.disabled_at.is_some() {
            conn.keep();
            return Err(AuthError::AccountDisabled);
        }
        let keys = throttle::Keys::new(&account.email, &request.client_ip);
        let attempt = self
            .throttle
            .admit(self.db.background(), &mut conn, &keys)
            .await?;
        // Release the connection while hashing, as a login does.
        conn.keep();

        let current_ok = self
            .verify_password(
                request.current_password,
                Some(account.password_hash.clone()),
            )
            .await?;
        if !current_ok {
            let mut conn = self.db.acquire().await?;
            self.throttle.failed(&mut conn, &keys, attempt).await?;
            conn.keep();
            tracing::info!(account_id = %account.id, "password change refused: wrong current password");
            return Err(AuthError::WrongCurrentPassword);
        }
        let new_hash = self.hasher.hash(new_password.expose().to_owned()).await?;

        let mut tx = self.db.begin().await?;
        // Compared with the hash the current password was checked against:
        // of two changes made at once with the same current password, one wins.
        if !db::replace_password_hash(&mut tx, account.id, &account.password_hash, &new_hash)
            .await?
        {
            return Err(AuthError::PasswordChangedMeanwhile);
        }
        let ended = db::revoke_account_families(&mut tx, account.id, "password changed").await?;
        // A reset asked for before is answered by this change.
        db::spend_password_resets(&mut tx, account.id).await?;
        self.throttle.succeeded(&mut tx, &keys).await?;
        outbox::enqueue(&mut tx, &password_changed(&account)).await?;
        let tokens = self.start_session(&mut tx, &account).await?;
        tx.commit().await?;
        attempt.settle();
        tracing::info!(account_id = %account.id, sessions_ended = ended, "password changed");
        Ok(tokens)
    }

    /// Sends a reset token to the account with `email`, if there is one, no
    /// unused token went out within [`RESET_INTERVAL`] and fewer than
    /// [`RESETS_PER_WINDOW`] within [`RESET_WINDOW`]. The answer is the same
    /// in every case.
    async fn request_password_reset(&self, email: &str) -> Result<(), AuthError> {
        let email = Email::parse(email)?;
        // The account's row stays locked until the token and its event
        // commit, so requests made at once send one token, not one each.
        let mut tx = self.db.begin().await?;
        let Some(account) = db::lock_account_for_reset(&mut tx, email.as_str()).await? else {
            tx.rollback().await?;
            tracing::info!("password reset asked for an email without an account");
            return Ok(());
        };
        if account.disabled_at.is_some() {
            tx.rollback().await?;
            tracing::info!(account_id = %account.id, "password reset asked for a disabled account, none sent");
            return Ok(());
        }
        let recent =
            db::recent_password_resets(&mut tx, account.id, RESET_INTERVAL, RESET_WINDOW).await?;
        if recent.unused_in_interval {
            tx.rollback().await?;
            tracing::info!(account_id = %account.id, "password reset asked again too soon, none sent");
            return Ok(());
        }
        if recent.in_window >= RESETS_PER_WINDOW {
            tx.rollback().await?;
            tracing::info!(
                account_id = %account.id,
                sent = recent.in_window,
                "password reset asked too often this hour, none sent"
            );
            return Ok(());
        }
        let (token, hash) = new_token(RESET_TOKEN_PREFIX);
        let expires_at = Utc::now() + RESET_TTL;
        // The token and the event that emails it commit together.
        db::insert_password_reset(&mut tx, &hash, account.id, expires_at).await?;
        let event = events::message(
            SOURCE,
            account.id,
            Payload::UserPasswordResetRequested(UserPasswordResetRequested {
                user_id: account.id.to_string(),
                email: account.email.clone(),
                name: account.name.clone(),
                token,
                expires_at: Some(timestamp(expires_at)),
            }),
        );
        // A secret (`events::secret`): the outbox empties it once published.
        outbox::enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        tracing::info!(account_id = %account.id, "password reset token sent");
        Ok(())
    }

    /// Sets a new password with a reset token: the token and every other one
    /// of the account are spent, every session ends, the account's lockout
    /// is lifted, and its owner is told as after a change.
    async fn reset_password(&self, request: pb::ResetPasswordRequest) -> Result<(), AuthError> {
        let new_password = Password::parse_field(&request.new_password, "new_password")?;
        let hash =
            hash_token(&request.token, RESET_TOKEN_PREFIX).ok_or(AuthError::InvalidResetToken)?;
        // Looked at before hashing, so a made-up token costs no Argon2 work.
        let mut conn = self.db.acquire().await?;
        let live = db::lock_password_reset(&mut conn, &hash)
            .await?
            .is_some_and(|r| r.is_live());
        conn.keep();
        if !live {
            return Err(AuthError::InvalidResetToken);
        }
        let new_hash = self.hasher.hash(new_password.expose().to_owned()).await?;

        let mut tx = self.db.begin().await?;
        // Again under the lock: the same token used twice at once wins once.
        let reset = db::lock_password_reset(&mut tx, &hash).await?;
        let Some(reset) = reset.filter(db::PasswordResetRow::is_live) else {
            return Err(AuthError::InvalidResetToken);
        };
        let account = db::find_account(&mut tx, reset.account_id)
            .await?
            .filter(|a| a.disabled_at.is_none())
            .ok_or(AuthError::InvalidResetToken)?;
        db::set_password_hash(&mut tx, account.id, &new_hash).await?;
        db::spend_password_resets(&mut tx, account.id).await?;
        let ended = db::revoke_account_families(&mut tx, account.id, "password reset").await?;
        db::clear_login_failures(&mut tx, &throttle::account_key(&account.email)).await?;
        outbox::enqueue(&mut tx, &password_changed(&account)).await?;
        tx.commit().await?;
        tracing::info!(account_id = %account.id, sessions_ended = ended, "password reset");
        Ok(())
    }

    /// Disables an account, ending its sessions and spending its reset
    /// tokens in the same transaction, or enables it again. Idempotent.
    async fn set_account_disabled(
        &self,
        caller: &Caller,
        request: &pb::SetAccountDisabledRequest,
    ) -> Result<AccountRow, AuthError> {
        let user_id = parse_user_id(&request.user_id)?;
        // An admin who could lock themselves out could lock out the last admin.
        if request.disabled && user_id == caller.user_id {
            return Err(AuthError::FailedPrecondition(
                "an admin cannot disable their own account".to_owned(),
            ));
        }
        let mut tx = self.db.begin().await?;
        lock_admin_and_account(&mut tx, caller, user_id).await?;
        let account = db::set_disabled(&mut tx, user_id, request.disabled)
            .await?
            .ok_or(AuthError::NotFound)?;
        let mut ended = 0;
        if request.disabled {
            ended = db::revoke_account_families(&mut tx, account.id, "account disabled").await?;
            db::spend_password_resets(&mut tx, account.id).await?;
        }
        tx.commit().await?;
        tracing::info!(
            account_id = %account.id,
            admin_id = %caller.user_id,
            disabled = request.disabled,
            sessions_ended = ended,
            "account status set"
        );
        Ok(account)
    }

    /// Changes an account's role. A demoted admin's sessions end with it:
    /// their access tokens say "admin" until they expire, and the gateway
    /// refuses the tokens of ended sessions. A promoted customer keeps them
    /// and is an admin from the next token on. An admin cannot demote
    /// themselves, so nobody demotes the last admin.
    async fn set_user_role(
        &self,
        caller: &Caller,
        user_id: Uuid,
        role: Role,
    ) -> Result<AccountRow, AuthError> {
        if user_id == caller.user_id && role != Role::Admin {
            return Err(AuthError::FailedPrecondition(
                "an admin cannot demote themselves".to_owned(),
            ));
        }
        let mut tx = self.db.begin().await?;
        let locked = lock_admin_and_account(&mut tx, caller, user_id).await?;
        let before = locked
            .into_iter()
            .find(|a| a.id == user_id)
            .ok_or(AuthError::NotFound)?;
        let account = db::set_role(&mut tx, user_id, role)
            .await?
            .ok_or(AuthError::NotFound)?;
        let mut ended = 0;
        if before.role() == Role::Admin && role != Role::Admin {
            ended = db::revoke_account_families(&mut tx, user_id, "demoted").await?;
        }
        tx.commit().await?;
        tracing::info!(account_id = %account.id, role = %role, sessions_ended = ended, "role changed");
        Ok(account)
    }

    /// A page of the sessions that ended after the request's position and
    /// whose access tokens may not all have expired yet.
    async fn list_ended_sessions(
        &self,
        request: &pb::ListEndedSessionsRequest,
    ) -> Result<pb::ListEndedSessionsResponse, AuthError> {
        let mut conn = self.db.acquire().await?;
        // How long after a session ends one of its access tokens can still
        // pass a verifier: the longest lifetime it may have been signed with
        // (by this process, another or an earlier configuration), signed
        // just before, plus the margin past `exp`.
        let margin = lifetimes::margin();
        // Before the sessions: see `EndedSessionsBounds::horizon`.
        let bounds = db::ended_sessions_bounds(&mut conn, margin).await?;
        let seconds = i64::try_from(self.access_ttl.as_secs())
            .unwrap_or(i64::MAX)
            .max(bounds.longest_lifetime.unwrap_or(0))
            .saturating_add(margin);
        let lifetime = chrono::Duration::try_seconds(seconds).unwrap_or(chrono::Duration::MAX);
        let as_of = Utc::now();
        let oldest_live = as_of
            .checked_sub_signed(lifetime)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let after = request
            .after
            .as_ref()
            .map(|ts| {
                time::from_timestamp(ts)
                    .ok_or_else(|| AuthError::InvalidArgument("after: not a valid time".to_owned()))
            })
            .transpose()?;
        let after_id = if request.after_id.is_empty() {
            Uuid::nil()
        } else {
            Uuid::parse_str(&request.after_id)
                .map_err(|_| AuthError::InvalidArgument("after_id: must be a UUID".to_owned()))?
        };
        // Sessions that ended before `oldest_live` have no live token left.
        let (after, after_id) = match after {
            Some(after) if after >= oldest_live => (after, after_id),
            _ => (oldest_live, Uuid::nil()),
        };
        // One more than a page says whether more follow.
        let limit = i64::try_from(ENDED_SESSIONS_PAGE + 1).unwrap_or(i64::MAX);
        let mut rows = db::ended_sessions(&mut conn, after, after_id, limit).await?;
        conn.keep();
        let more = rows.len() > ENDED_SESSIONS_PAGE;
        rows.truncate(ENDED_SESSIONS_PAGE);
        let sessions = rows
            .into_iter()
            .map(|row| pb::EndedSession {
                id: row.id.to_string(),
                ended_at: Some(timestamp(row.revoked_at)),
                tokens_expired_at: Some(timestamp(
                    row.revoked_at
                        .checked_add_signed(lifetime)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                )),
            })
            .collect();
        Ok(pb::ListEndedSessionsResponse {
            sessions,
            more,
            as_of: Some(timestamp(bounds.horizon)),
        })
    }

    async fn logout(&self, refresh_token: &str) -> Result<(), AuthError> {
        // Unknown tokens are fine: logout is idempotent and says nothing (RFC 7009).
        let Some(hash) = hash_token(refresh_token, REFRESH_TOKEN_PREFIX) else {
            return Ok(());
        };
        let mut tx = self.db.begin().await?;
        if let Some(row) = db::lock_refresh_token(&mut tx, &hash).await? {
            db::revoke_family(&mut tx, row.family_id, "logout").await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Locks the calling admin's account and the one they act on, in id order,
/// and checks the caller is still an enabled admin. The rows stay locked
/// until the transaction ends, so two admins disabling or demoting each
/// other at once cannot both succeed (and leave the shop without an admin);
/// and an admin disabled or demoted a moment ago, whose access token a
/// gateway that has not yet read the ended sessions would still pass,
/// changes nothing. Returns the locked accounts (one if they are the same).
async fn lock_admin_and_account(
    conn: &mut PgConnection,
    caller: &Caller,
    user_id: Uuid,
) -> Result<Vec<AccountRow>, AuthError> {
    let locked = db::lock_accounts(conn, &[caller.user_id, user_id]).await?;
    let Some(me) = locked.iter().find(|a| a.id == caller.user_id) else {
        return Err(AuthError::PermissionDenied(
            "the caller's account no longer exists".to_owned(),
        ));
    };
    if me.disabled_at.is_some() {
        return Err(AuthError::AccountDisabled);
    }
    if me.role() != Role::Admin {
        return Err(AuthError::PermissionDenied(
            "the caller is no longer an admin".to_owned(),
        ));
    }
    Ok(locked)
}

/// The `user.password_changed` event that tells the account's owner.
fn password_changed(account: &AccountRow) -> outbox::OutboxMessage {
    events::message(
        SOURCE,
        account.id,
        Payload::UserPasswordChanged(UserPasswordChanged {
            user_id: account.id.to_string(),
            email: account.email.clone(),
            name: account.name.clone(),
        }),
    )
}

/// A new opaque token (`prefix` and 256 random bits) and its stored form.
fn new_token(prefix: &str) -> (String, Vec<u8>) {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    (token, hash)
}

/// The stored form of a token made by [`new_token`] with `prefix`, or `None`
/// when it cannot be one.
fn hash_token(token: &str, prefix: &str) -> Option<Vec<u8>> {
    let body = token.strip_prefix(prefix)?;
    (body.len() == 43).then(|| Sha256::digest(token.as_bytes()).to_vec())
}

pub fn account_to_proto(account: &AccountRow) -> pb::Account {
    pb::Account {
        id: account.id.to_string(),
        email: account.email.clone(),
        name: account.name.clone(),
        role: role_to_proto(account.role()) as i32,
        created_at: Some(timestamp(account.created_at)),
        disabled_at: account.disabled_at.map(timestamp),
    }
}

fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
    }
}

fn parse_user_id(raw: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(raw)
        .map_err(|_| AuthError::InvalidArgument("user_id: must be a UUID".to_owned()))
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let email = Email::parse(&request.email)?;
        let password = Password::parse(&request.password)?;
        let name = Name::parse(&request.name)?;
        let account = self
            .create_account(&email, &password, &name, Role::Customer)
            .await?;
        tracing::info!(account_id = %account.id, "account registered");
        Ok(Response::new(pb::RegisterResponse {
            account: Some(account_to_proto(&account)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let tokens = AuthService::login(self, request.into_inner()).await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(tokens),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let tokens = AuthService::refresh(self, &request.into_inner().refresh_token).await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(tokens),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        AuthService::logout(self, &request.into_inner().refresh_token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn logout_everywhere(
        &self,
        request: Request<pb::LogoutEverywhereRequest>,
    ) -> Result<Response<pb::LogoutEverywhereResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let user_id = parse_user_id(&request.get_ref().user_id)?;
        // Only one's own sessions: an admin disables an account instead.
        if caller.user_id != user_id {
            return Err(AuthError::NotFound.into());
        }
        let mut conn = self.db.acquire().await.map_err(AuthError::from)?;
        let ended =
            db::revoke_account_families(&mut conn, user_id, "logged out everywhere").await?;
        conn.keep();
        tracing::info!(account_id = %user_id, sessions_ended = ended, "logged out everywhere");
        Ok(Response::new(pb::LogoutEverywhereResponse {
            sessions_ended: ended,
        }))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            keys: self.keys.jwks().to_vec(),
        }))
    }

    async fn list_ended_sessions(
        &self,
        request: Request<pb::ListEndedSessionsRequest>,
    ) -> Result<Response<pb::ListEndedSessionsResponse>, Status> {
        let page = AuthService::list_ended_sessions(self, request.get_ref()).await?;
        Ok(Response::new(page))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        caller.require_admin()?;
        let request = request.into_inner();
        let user_id = parse_user_id(&request.user_id)?;
        let role = match pb::Role::try_from(request.role) {
            Ok(pb::Role::Customer) => Role::Customer,
            Ok(pb::Role::Admin) => Role::Admin,
            _ => {
                return Err(AuthError::InvalidArgument(
                    "role: must be customer or admin".to_owned(),
                )
                .into());
            }
        };
        let account = AuthService::set_user_role(self, &caller, user_id, role).await?;
        // A failed copy is the mirror loop's to send again.
        let _ = mirror::push(
            self.db.pool(),
            &self.profiles,
            std::slice::from_ref(&account),
        )
        .await;
        Ok(Response::new(pb::SetUserRoleResponse {
            account: Some(account_to_proto(&account)),
        }))
    }

    async fn set_account_disabled(
        &self,
        request: Request<pb::SetAccountDisabledRequest>,
    ) -> Result<Response<pb::SetAccountDisabledResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        caller.require_admin()?;
        let account = AuthService::set_account_disabled(self, &caller, request.get_ref()).await?;
        // A failed copy is the mirror loop's to send again.
        let _ = mirror::push(
            self.db.pool(),
            &self.profiles,
            std::slice::from_ref(&account),
        )
        .await;
        Ok(Response::new(pb::SetAccountDisabledResponse {
            account: Some(account_to_proto(&account)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let tokens = AuthService::change_password(self, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            tokens: Some(tokens),
        }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        AuthService::request_password_reset(self, &request.into_inner().email).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        AuthService::reset_password(self, request.into_inner()).await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn get_accounts(
        &self,
        request: Request<pb::GetAccountsRequest>,
    ) -> Result<Response<pb::GetAccountsResponse>, Status> {
        Caller::from_metadata(request.metadata())?.require_admin()?;
        let raw = &request.get_ref().user_ids;
        if raw.len() > MAX_ACCOUNTS_READ {
            return Err(AuthError::InvalidArgument(format!(
                "user_ids: at most {MAX_ACCOUNTS_READ}"
            ))
            .into());
        }
        let ids = raw
            .iter()
            .map(|id| Uuid::parse_str(id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| AuthError::InvalidArgument("user_ids: must be UUIDs".to_owned()))?;
        let mut conn = self.db.acquire().await.map_err(AuthError::from)?;
        let accounts = db::find_accounts(&mut conn, &ids).await?;
        conn.keep();
        Ok(Response::new(pb::GetAccountsResponse {
            accounts: accounts.iter().map(account_to_proto).collect(),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let user_id = parse_user_id(&request.get_ref().user_id)?;
        // Someone else's account is "not found", not "forbidden": ids do not leak.
        if !caller.may_access(user_id) {
            return Err(AuthError::NotFound.into());
        }
        let mut conn = self.db.acquire().await.map_err(AuthError::from)?;
        let account = db::find_account(&mut conn, user_id).await?;
        conn.keep();
        let account = account.ok_or(AuthError::NotFound)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_to_proto(&account)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_and_hash_to_their_stored_form() {
        let (a, hash_a) = new_token(REFRESH_TOKEN_PREFIX);
        let (b, _) = new_token(REFRESH_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a, REFRESH_TOKEN_PREFIX), Some(hash_a));
        assert_eq!(
            hash_token(&a, RESET_TOKEN_PREFIX),
            None,
            "a refresh token is no reset token"
        );
    }

    #[test]
    fn strings_that_cannot_be_refresh_tokens_are_refused_before_any_query() {
        assert_eq!(hash_token("", REFRESH_TOKEN_PREFIX), None);
        assert_eq!(hash_token("gcr_short", REFRESH_TOKEN_PREFIX), None);
        assert_eq!(
            hash_token("eyJhbGciOiJFZERTQSJ9.e30.sig", REFRESH_TOKEN_PREFIX),
            None
        );
    }
}
