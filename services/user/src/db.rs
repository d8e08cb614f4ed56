//! Every query of the user service; Postgres error codes become domain errors
//! here and nowhere else.

use chrono::{DateTime, Utc};
use gocommerce_platform::Role;
use gocommerce_platform::db::constraint;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::PostalFields;
use crate::error::UserError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The copy of when an admin disabled the account.
    pub disabled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PreferencesRow {
    pub email_enabled: bool,
    pub sms_enabled: bool,
    pub push_enabled: bool,
    pub locale: String,
    pub marketing_opt_in: bool,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AddressRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AddressRow {
    pub fn fields(&self) -> PostalFields {
        PostalFields {
            name: self.name.clone(),
            line1: self.line1.clone(),
            line2: self.line2.clone(),
            city: self.city.clone(),
            region: self.region.clone(),
            postal_code: self.postal_code.clone(),
            country: self.country.clone(),
        }
    }
}

const PROFILE: &str = "id, email, name, phone, role, created_at, updated_at, disabled_at";
const PREFERENCES: &str =
    "email_enabled, sms_enabled, push_enabled, locale, marketing_opt_in, updated_at";
const ADDRESS: &str = "id, user_id, name, line1, line2, city, region, postal_code, country, \
     is_default, created_at, updated_at";

/// The default address moved under us; only possible if the per-user lock
/// were bypassed, but a clear answer beats an internal error.
fn default_conflict(error: sqlx::Error) -> UserError {
    if constraint(&error) == Some("addresses_one_default_idx") {
        UserError::Aborted("the default address changed concurrently; retry".to_owned())
    } else {
        UserError::Database(error)
    }
}

#[derive(Debug)]
pub struct NewProfile<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
}

/// Inserts a profile with default preferences, or returns None when one with
/// this id exists: concurrent repeats of a registration meet on one row.
#[tracing::instrument(skip_all, fields(user_id = %new.id), err)]
pub async fn insert_profile(
    conn: &mut PgConnection,
    new: &NewProfile<'_>,
) -> Result<Option<ProfileRow>, UserError> {
    let inserted: Option<ProfileRow> = sqlx::query_as(&format!(
        "INSERT INTO profiles (id, email, name, role) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO NOTHING RETURNING {PROFILE}"
    ))
    .bind(new.id)
    .bind(new.email)
    .bind(new.name)
    .bind(new.role.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        sqlx::query("INSERT INTO preferences (user_id) VALUES ($1)")
            .bind(new.id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(inserted)
}

#[tracing::instrument(skip_all, fields(user_id = %id), err)]
pub async fn find_profile(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ProfileRow>, UserError> {
    Ok(
        sqlx::query_as(&format!("SELECT {PROFILE} FROM profiles WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Locks a profile: every change to a user's address book holds this lock,
/// which serialises the address count and the default's moves.
#[tracing::instrument(skip_all, fields(user_id = %id), err)]
pub async fn lock_profile(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ProfileRow>, UserError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PROFILE} FROM profiles WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Sets the name when given and the phone when given (`Some(None)` removes
/// it).
#[tracing::instrument(skip_all, fields(user_id = %id), err)]
pub async fn update_profile(
    conn: &mut PgConnection,
    id: Uuid,
    name: Option<&str>,
    phone: Option<Option<&str>>,
) -> Result<Option<ProfileRow>, UserError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE profiles SET name = COALESCE($2, name), \
           phone = CASE WHEN $3 THEN $4 ELSE phone END, updated_at = now() \
         WHERE id = $1 RETURNING {PROFILE}"
    ))
    .bind(id)
    .bind(name)
    .bind(phone.is_some())
    .bind(phone.flatten())
    .fetch_optional(conn)
    .await?)
}

/// One account's state as auth sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCopy {
    pub id: Uuid,
    pub role: Role,
    pub disabled_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// Copies each account's state onto its profile where the copy is newer
/// than the profile's; returns how many profiles changed. `updated_at` moves
/// only when the role or the status did. The ids must be distinct.
#[tracing::instrument(skip_all, fields(accounts = copies.len()), err)]
pub async fn sync_accounts(
    conn: &mut PgConnection,
    copies: &[AccountCopy],
) -> Result<u64, UserError> {
    let ids: Vec<Uuid> = copies.iter().map(|c| c.id).collect();
    let roles: Vec<&str> = copies.iter().map(|c| c.role.as_str()).collect();
    let disabled: Vec<Option<DateTime<Utc>>> = copies.iter().map(|c| c.disabled_at).collect();
    let versions: Vec<i64> = copies.iter().map(|c| c.version).collect();
    let result = sqlx::query(
        "UPDATE profiles p SET role = s.role, disabled_at = s.disabled_at, \
           account_version = s.version, \
           updated_at = CASE WHEN p.role = s.role \
             AND p.disabled_at IS NOT DISTINCT FROM s.disabled_at \
             THEN p.updated_at ELSE now() END \
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int8[]) \
           AS s(id, role, disabled_at, version) \
         WHERE p.id = s.id AND p.account_version < s.version",
    )
    .bind(ids)
    .bind(roles)
    .bind(disabled)
    .bind(versions)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Which profiles `ListUsers` wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfileFilter<'a> {
    pub role: Option<Role>,
    /// Some(true): only disabled accounts; Some(false): only enabled ones.
    pub disabled: Option<bool>,
    /// Lower case; somewhere in the email.
    pub email: Option<&'a str>,
}

/// Profiles oldest first, after the keyset `after`, that pass the filter.
#[tracing::instrument(skip_all, err)]
pub async fn list_profiles(
    conn: &mut PgConnection,
    filter: ProfileFilter<'_>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ProfileRow>, UserError> {
    // Spelled out rather than a parameter, so the disabled few are read
    // through their partial index.
    let status = match filter.disabled {
        None => "",
        Some(true) => "AND disabled_at IS NOT NULL ",
        Some(false) => "AND disabled_at IS NULL ",
    };
    // strpos, not LIKE: the filter's % and _ are plain characters.
    Ok(sqlx::query_as(&format!(
        "SELECT {PROFILE} FROM profiles \
         WHERE ($1::text IS NULL OR role = $1) {status}\
           AND ($2::text IS NULL OR strpos(lower(email), $2) > 0) \
           AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4)) \
         ORDER BY created_at, id LIMIT $5"
    ))
    .bind(filter.role.map(Role::as_str))
    .bind(filter.email)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
pub async fn find_preferences(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<PreferencesRow>, UserError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PREFERENCES} FROM preferences WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(conn)
    .await?)
}

/// What the notification service needs to reach a user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContactRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    #[sqlx(flatten)]
    pub preferences: PreferencesRow,
}

/// A profile with its preferences, in one statement; None when either is
/// missing.
#[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
pub async fn find_contact(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<ContactRow>, UserError> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.email, p.name, p.phone, f.email_enabled, f.sms_enabled, f.push_enabled, \
           f.locale, f.marketing_opt_in, f.updated_at \
         FROM profiles p JOIN preferences f ON f.user_id = p.id WHERE p.id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?)
}

#[derive(Debug)]
pub struct NewPreferences<'a> {
    pub email: bool,
    pub sms: bool,
    pub push: bool,
    pub locale: &'a str,
    pub marketing_opt_in: bool,
}

#[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
pub async fn replace_preferences(
    conn: &mut PgConnection,
    user_id: Uuid,
    new: &NewPreferences<'_>,
) -> Result<Option<PreferencesRow>, UserError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE preferences SET email_enabled = $2, sms_enabled = $3, push_enabled = $4, \
           locale = $5, marketing_opt_in = $6, updated_at = now() \
         WHERE user_id = $1 RETURNING {PREFERENCES}"
    ))
    .bind(user_id)
    .bind(new.email)
    .bind(new.sms)
    .bind(new.push)
    .bind(new.locale)
    .bind(new.marketing_opt_in)
    .fetch_optional(conn)
    .await?)
}

/// A user's addresses, the default first, then newest first.
#[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
pub async fn list_addresses(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<AddressRow>, UserError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ADDRESS} FROM addresses WHERE user_id = $1 \
         ORDER BY is_default DESC, created_at DESC, id DESC"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
pub async fn count_addresses(conn: &mut PgConnection, user_id: Uuid) -> Result<i64, UserError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM addresses WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Takes the default flag off whichever address of the user has it.
#[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
pub async fn clear_default(conn: &mut PgConnection, user_id: Uuid) -> Result<(), UserError> {
    sqlx::query(
        "UPDATE addresses SET is_default = false, updated_at = now() \
         WHERE user_id = $1 AND is_default",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
pub async fn insert_address(
    conn: &mut PgConnection,
    user_id: Uuid,
    fields: &PostalFields,
    is_default: bool,
) -> Result<AddressRow, UserError> {
    sqlx::query_as(&format!(
        "INSERT INTO addresses (id, user_id, name, line1, line2, city, region, postal_code, \
           country, is_default) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         RETURNING {ADDRESS}"
    ))
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(&fields.name)
    .bind(&fields.line1)
    .bind(&fields.line2)
    .bind(&fields.city)
    .bind(&fields.region)
    .bind(&fields.postal_code)
    .bind(&fields.country)
    .bind(is_default)
    .fetch_one(conn)
    .await
    .map_err(default_conflict)
}

/// One address, only if it is this user's.
#[tracing::instrument(skip_all, fields(user_id = %user_id, address_id = %id), err)]
pub async fn find_address(
    conn: &mut PgConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<AddressRow>, UserError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ADDRESS} FROM addresses WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(address_id = %id), err)]
pub async fn update_address(
    conn: &mut PgConnection,
    id: Uuid,
    fields: &PostalFields,
    is_default: bool,
) -> Result<Option<AddressRow>, UserError> {
    sqlx::query_as(&format!(
        "UPDATE addresses SET name = $2, line1 = $3, line2 = $4, city = $5, region = $6, \
           postal_code = $7, country = $8, is_default = $9, updated_at = now() \
         WHERE id = $1 RETURNING {ADDRESS}"
    ))
    .bind(id)
    .bind(&fields.name)
    .bind(&fields.line1)
    .bind(&fields.line2)
    .bind(&fields.city)
    .bind(&fields.region)
    .bind(&fields.postal_code)
    .bind(&fields.country)
    .bind(is_default)
    .fetch_optional(conn)
    .await
    .map_err(default_conflict)
}

/// Deletes one address of this user; false when there was none.
#[tracing::instrument(skip_all, fields(user_id = %user_id, address_id = %id), err)]
pub async fn delete_address(
    conn: &mut PgConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<bool, UserError> {
    let deleted = sqlx::query("DELETE FROM addresses WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() > 0)
}
