//! `/v1/users/me` and `/v1/admin/users`: the caller's profile, notification
//! preferences and address book, and the admins' user list, role changes and
//! disabling of accounts.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use gocommerce_platform::{Caller, validate};
use gocommerce_proto::auth::v1 as auth_pb;
use gocommerce_proto::common::v1::{PageRequest, PostalAddress};
use gocommerce_proto::user::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::authn::{Admin, Authenticated};
use crate::extract::{Path, Query, ValidJson, Validate, check};
use crate::json::Json;
use crate::problem::{FieldError, Problem};
use crate::routes::rfc3339;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/me", get(get_me).patch(update_me))
        .route(
            "/v1/users/me/preferences",
            get(get_preferences).put(put_preferences),
        )
        .route(
            "/v1/users/me/addresses",
            get(list_addresses).post(create_address),
        )
        .route(
            "/v1/users/me/addresses/{id}",
            get(get_address)
                .patch(update_address)
                .delete(delete_address),
        )
        .route("/v1/admin/users", get(list_users))
        .route("/v1/admin/users/{id}/role", put(set_role))
        .route(
            "/v1/admin/users/{id}/status",
            get(get_status).put(set_status),
        )
}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        get_me, update_me, get_preferences, put_preferences, list_addresses, create_address,
        get_address, update_address, delete_address, list_users, set_role, get_status,
        set_status
    ),
    components(schemas(
        ProfileView, ProfileList, UserRole, UpdateProfileBody, Channels, PreferencesView,
        PreferencesBody, SavedAddressView, AddressList, CreateAddressBody, UpdateAddressBody,
        SetRoleBody, AccountStatusView, SetStatusBody
    )),
    tags((name = "users", description = "Profiles, notification preferences and address books"))
)]
pub struct Api;

fn backend_error(status: tonic::Status) -> Problem {
    Problem::from_status(&status, "user")
}

/// A role: `customer` or `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    Customer,
    Admin,
}

impl UserRole {
    fn from_proto(raw: i32) -> Self {
        match auth_pb::Role::try_from(raw) {
            Ok(auth_pb::Role::Admin) => Self::Admin,
            _ => Self::Customer,
        }
    }

    fn to_proto(self) -> auth_pb::Role {
        match self {
            Self::Customer => auth_pb::Role::Customer,
            Self::Admin => auth_pb::Role::Admin,
        }
    }
}

/// A user's profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub name: String,
    /// E.164, e.g. `+4915112345678`; null when none was given.
    pub phone: Option<String>,
    pub role: UserRole,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// When an admin disabled the account; null while it is enabled. Read
    /// from the auth service for an admin's answers (the user list, a role
    /// change); a user's own profile always has null, since a disabled
    /// account's tokens are refused.
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
}

impl From<pb::Profile> for ProfileView {
    fn from(profile: pb::Profile) -> Self {
        Self {
            id: profile.id,
            email: profile.email,
            name: profile.name,
            phone: Some(profile.phone).filter(|p| !p.is_empty()),
            role: UserRole::from_proto(profile.role),
            created_at: profile.created_at.map(rfc3339).unwrap_or_default(),
            updated_at: profile.updated_at.map(rfc3339).unwrap_or_default(),
            disabled_at: profile.disabled_at.map(rfc3339),
        }
    }
}

fn profile_view(profile: Option<pb::Profile>) -> Result<ProfileView, Problem> {
    profile
        .map(ProfileView::from)
        .ok_or_else(|| backend_error(tonic::Status::internal("empty profile")))
}

/// The user's profile, as `caller` may read it.
async fn read_profile(
    state: &AppState,
    caller: &Caller,
    user_id: String,
) -> Result<ProfileView, Problem> {
    let request = state
        .backends
        .request(pb::GetProfileRequest { user_id }, Some(caller));
    let response = state
        .backends
        .user
        .clone()
        .get_profile(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    profile_view(response.profile)
}

/// The account of an auth answer, which always has one.
fn answered_account(account: Option<auth_pb::Account>) -> Result<auth_pb::Account, Problem> {
    account.ok_or_else(|| Problem::from_status(&tonic::Status::internal("empty account"), "auth"))
}

/// The caller's profile.
#[utoipa::path(
    get, path = "/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = ProfileView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<ProfileView>, Problem> {
    read_profile(&state, &caller, caller.user_id.to_string())
        .await
        .map(Json)
}

/// What `PATCH /v1/users/me` may change; absent (or null) fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileBody {
    /// Display name, 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "Ada Lovelace"
    )]
    pub name: Option<String>,
    /// E.164 (`+` and 8 to 15 digits); the empty string removes the number.
    #[schema(
        max_length = 16,
        pattern = r"^(?:\+[1-9][0-9]{7,14})?$",
        example = "+4915112345678"
    )]
    pub phone: Option<String>,
}

/// E.164: a plus, then 8 to 15 digits of which the first is not zero.
fn phone(raw: &str) -> Result<(), String> {
    let digits = raw.strip_prefix('+').unwrap_or_default();
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err("must be an E.164 number such as +4915112345678, or empty to remove it".to_owned())
    }
}

impl Validate for UpdateProfileBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(name) = &self.name {
            check(&mut errors, "name", validate::name(name));
        }
        if let Some(number) = self.phone.as_deref().filter(|p| !p.is_empty()) {
            check(&mut errors, "phone", phone(number));
        }
        errors
    }
}

/// Change the caller's name or phone number.
#[utoipa::path(
    patch, path = "/v1/users/me", tag = "users",
    request_body = UpdateProfileBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed profile", body = ProfileView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ValidJson(body): ValidJson<UpdateProfileBody>,
) -> Result<Json<ProfileView>, Problem> {
    let request = state.backends.request(
        pb::UpdateProfileRequest {
            user_id: caller.user_id.to_string(),
            name: body.name.map(|n| n.trim().to_owned()),
            phone: body.phone,
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .update_profile(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    profile_view(response.profile).map(Json)
}

/// On/off per notification channel.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub email: bool,
    pub sms: bool,
    pub push: bool,
}

/// How and in which language the user is notified.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreferencesView {
    pub channels: Channels,
    /// BCP 47 language tag, e.g. `en` or `de-DE`.
    #[schema(example = "en")]
    pub locale: String,
    pub marketing_opt_in: bool,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

impl From<pb::Preferences> for PreferencesView {
    fn from(preferences: pb::Preferences) -> Self {
        let channels = preferences.channels.unwrap_or_default();
        Self {
            channels: Channels {
                email: channels.email,
                sms: channels.sms,
                push: channels.push,
            },
            locale: preferences.locale,
            marketing_opt_in: preferences.marketing_opt_in,
            updated_at: preferences.updated_at.map(rfc3339),
        }
    }
}

fn preferences_view(preferences: Option<pb::Preferences>) -> Result<PreferencesView, Problem> {
    preferences
        .map(PreferencesView::from)
        .ok_or_else(|| backend_error(tonic::Status::internal("empty preferences")))
}

/// The whole set of preferences (PUT replaces them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    pub channels: Channels,
    /// BCP 47 language tag: a language, optionally a script and a region,
    /// e.g. `en`, `de-DE`, `zh-Hant-TW`, `es-419`.
    #[schema(
        max_length = 16,
        pattern = r"^[a-zA-Z]{2,3}(?:-[a-zA-Z]{4})?(?:-(?:[a-zA-Z]{2}|[0-9]{3}))?$",
        example = "de-DE"
    )]
    pub locale: String,
    pub marketing_opt_in: bool,
}

/// A BCP 47 tag of the common shape language[-Script][-REGION].
fn locale(raw: &str) -> Result<(), String> {
    let mut parts = raw.split('-').peekable();
    let alpha = |s: &str| s.bytes().all(|b| b.is_ascii_alphabetic());
    let language = parts.next().unwrap_or_default();
    let mut ok = (2..=3).contains(&language.len()) && alpha(language);
    if parts.peek().is_some_and(|p| p.len() == 4) {
        ok &= parts.next().is_some_and(alpha);
    }
    if let Some(region) = parts.next() {
        ok &= (region.len() == 2 && alpha(region))
            || (region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit()));
    }
    ok &= parts.next().is_none();
    if ok {
        Ok(())
    } else {
        Err("must be a BCP 47 language tag such as \"en\" or \"de-DE\"".to_owned())
    }
}

impl Validate for PreferencesBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(&mut errors, "locale", locale(&self.locale));
        errors
    }
}

/// The caller's notification preferences.
#[utoipa::path(
    get, path = "/v1/users/me/preferences", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's preferences", body = PreferencesView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_preferences(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<PreferencesView>, Problem> {
    let request = state.backends.request(
        pb::GetPreferencesRequest {
            user_id: caller.user_id.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .get_preferences(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    preferences_view(response.preferences).map(Json)
}

/// Replace the caller's notification preferences.
#[utoipa::path(
    put, path = "/v1/users/me/preferences", tag = "users",
    request_body = PreferencesBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stored preferences", body = PreferencesView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_preferences(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ValidJson(body): ValidJson<PreferencesBody>,
) -> Result<Json<PreferencesView>, Problem> {
    let request = state.backends.request(
        pb::UpdatePreferencesRequest {
            user_id: caller.user_id.to_string(),
            preferences: Some(pb::Preferences {
                channels: Some(pb::NotificationChannels {
                    email: body.channels.email,
                    sms: body.channels.sms,
                    push: body.channels.push,
                }),
                locale: body.locale,
                marketing_opt_in: body.marketing_opt_in,
                updated_at: None,
            }),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .update_preferences(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    preferences_view(response.preferences).map(Json)
}

/// One entry of the caller's address book.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedAddressView {
    #[schema(format = Uuid)]
    pub id: String,
    /// Recipient; empty: the profile's name.
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: String,
    /// The default shipping address (at most one).
    pub is_default: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<pb::Address> for SavedAddressView {
    fn from(address: pb::Address) -> Self {
        let postal = address.postal_address.unwrap_or_default();
        Self {
            id: address.id,
            name: postal.name,
            line1: postal.line1,
            line2: postal.line2,
            city: postal.city,
            region: postal.region,
            postal_code: postal.postal_code,
            country: postal.country,
            is_default: address.is_default,
            created_at: address.created_at.map(rfc3339).unwrap_or_default(),
            updated_at: address.updated_at.map(rfc3339).unwrap_or_default(),
        }
    }
}

fn address_view(address: Option<pb::Address>) -> Result<SavedAddressView, Problem> {
    address
        .map(SavedAddressView::from)
        .ok_or_else(|| backend_error(tonic::Status::internal("empty address")))
}

/// The caller's addresses, the default first, then newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressList {
    pub items: Vec<SavedAddressView>,
    /// Always null: the address book fits on one page.
    pub next_page_token: Option<String>,
}

/// ISO 3166-1 alpha-2 codes currently assigned, sorted.
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// The OpenAPI pattern of [`COUNTRIES`]; a unit test keeps the two equal.
#[cfg(test)]
const COUNTRY_PATTERN: &str = "^(?:AD|AE|AF|AG|AI|AL|AM|AO|AQ|AR|AS|AT|AU|AW|AX|AZ|BA|BB|BD|BE|BF|BG|BH|BI|BJ|BL|BM|BN|BO|BQ|BR|BS|BT|BV|BW|BY|BZ|CA|CC|CD|CF|CG|CH|CI|CK|CL|CM|CN|CO|CR|CU|CV|CW|CX|CY|CZ|DE|DJ|DK|DM|DO|DZ|EC|EE|EG|EH|ER|ES|ET|FI|FJ|FK|FM|FO|FR|GA|GB|GD|GE|GF|GG|GH|GI|GL|GM|GN|GP|GQ|GR|GS|GT|GU|GW|GY|HK|HM|HN|HR|HT|HU|ID|IE|IL|IM|IN|IO|IQ|IR|IS|IT|JE|JM|JO|JP|KE|KG|KH|KI|KM|KN|KP|KR|KW|KY|KZ|LA|LB|LC|LI|LK|LR|LS|LT|LU|LV|LY|MA|MC|MD|ME|MF|MG|MH|MK|ML|MM|MN|MO|MP|MQ|MR|MS|MT|MU|MV|MW|MX|MY|MZ|NA|NC|NE|NF|NG|NI|NL|NO|NP|NR|NU|NZ|OM|PA|PE|PF|PG|PH|PK|PL|PM|PN|PR|PS|PT|PW|PY|QA|RE|RO|RS|RU|RW|SA|SB|SC|SD|SE|SG|SH|SI|SJ|SK|SL|SM|SN|SO|SR|SS|ST|SV|SX|SY|SZ|TC|TD|TF|TG|TH|TJ|TK|TL|TM|TN|TO|TR|TT|TV|TW|TZ|UA|UG|UM|US|UY|UZ|VA|VC|VE|VG|VI|VN|VU|WF|WS|YE|YT|ZA|ZM|ZW)$";

fn country(raw: &str) -> Result<(), String> {
    if COUNTRIES.binary_search(&raw).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{raw:?} is not an ISO 3166-1 alpha-2 country code such as \"DE\""
        ))
    }
}

/// Letters and digits at both ends, spaces and hyphens between, at most 20.
fn postal_code(raw: &str) -> Result<(), String> {
    let bytes = raw.as_bytes();
    let ok = (1..=20).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b' ' || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 20 letters, digits, spaces and hyphens, starting and ending with a letter or digit".to_owned())
    }
}

/// Free text of at most `max` characters without control characters; when
/// `required`, not blank either.
fn text(raw: &str, max: usize, required: bool) -> Result<(), String> {
    if raw.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if required && raw.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    Ok(())
}

/// A new address for the caller's address book.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAddressBody {
    /// Recipient, at most 100 characters; absent: the profile's name.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$",
        example = "Ada Lovelace"
    )]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "12 St James's Square"
    )]
    pub line1: String,
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub line2: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "London"
    )]
    pub city: String,
    /// State, province or county.
    #[schema(max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub region: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 20,
        pattern = r"^[A-Za-z0-9](?:[A-Za-z0-9 -]{0,18}[A-Za-z0-9])?$",
        example = "SW1Y 4LG"
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(
        min_length = 2,
        max_length = 2,
        pattern = "^(?:AD|AE|AF|AG|AI|AL|AM|AO|AQ|AR|AS|AT|AU|AW|AX|AZ|BA|BB|BD|BE|BF|BG|BH|BI|BJ|BL|BM|BN|BO|BQ|BR|BS|BT|BV|BW|BY|BZ|CA|CC|CD|CF|CG|CH|CI|CK|CL|CM|CN|CO|CR|CU|CV|CW|CX|CY|CZ|DE|DJ|DK|DM|DO|DZ|EC|EE|EG|EH|ER|ES|ET|FI|FJ|FK|FM|FO|FR|GA|GB|GD|GE|GF|GG|GH|GI|GL|GM|GN|GP|GQ|GR|GS|GT|GU|GW|GY|HK|HM|HN|HR|HT|HU|ID|IE|IL|IM|IN|IO|IQ|IR|IS|IT|JE|JM|JO|JP|KE|KG|KH|KI|KM|KN|KP|KR|KW|KY|KZ|LA|LB|LC|LI|LK|LR|LS|LT|LU|LV|LY|MA|MC|MD|ME|MF|MG|MH|MK|ML|MM|MN|MO|MP|MQ|MR|MS|MT|MU|MV|MW|MX|MY|MZ|NA|NC|NE|NF|NG|NI|NL|NO|NP|NR|NU|NZ|OM|PA|PE|PF|PG|PH|PK|PL|PM|PN|PR|PS|PT|PW|PY|QA|RE|RO|RS|RU|RW|SA|SB|SC|SD|SE|SG|SH|SI|SJ|SK|SL|SM|SN|SO|SR|SS|ST|SV|SX|SY|SZ|TC|TD|TF|TG|TH|TJ|TK|TL|TM|TN|TO|TR|TT|TV|TW|TZ|UA|UG|UM|US|UY|UZ|VA|VC|VE|VG|VI|VN|VU|WF|WS|YE|YT|ZA|ZM|ZW)$",
        example = "GB"
    )]
    pub country: String,
    /// Make this the default shipping address (the first address always is).
    pub is_default: Option<bool>,
}

/// Changes to an address; absent (or null) fields stay as they are, an empty
/// `name`, `line2` or `region` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAddressBody {
    #[schema(max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub line1: Option<String>,
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub line2: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub city: Option<String>,
    #[schema(max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub region: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 20,
        pattern = r"^[A-Za-z0-9](?:[A-Za-z0-9 -]{0,18}[A-Za-z0-9])?$"
    )]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(
        min_length = 2,
        max_length = 2,
        pattern = "^(?:AD|AE|AF|AG|AI|AL|AM|AO|AQ|AR|AS|AT|AU|AW|AX|AZ|BA|BB|BD|BE|BF|BG|BH|BI|BJ|BL|BM|BN|BO|BQ|BR|BS|BT|BV|BW|BY|BZ|CA|CC|CD|CF|CG|CH|CI|CK|CL|CM|CN|CO|CR|CU|CV|CW|CX|CY|CZ|DE|DJ|DK|DM|DO|DZ|EC|EE|EG|EH|ER|ES|ET|FI|FJ|FK|FM|FO|FR|GA|GB|GD|GE|GF|GG|GH|GI|GL|GM|GN|GP|GQ|GR|GS|GT|GU|GW|GY|HK|HM|HN|HR|HT|HU|ID|IE|IL|IM|IN|IO|IQ|IR|IS|IT|JE|JM|JO|JP|KE|KG|KH|KI|KM|KN|KP|KR|KW|KY|KZ|LA|LB|LC|LI|LK|LR|LS|LT|LU|LV|LY|MA|MC|MD|ME|MF|MG|MH|MK|ML|MM|MN|MO|MP|MQ|MR|MS|MT|MU|MV|MW|MX|MY|MZ|NA|NC|NE|NF|NG|NI|NL|NO|NP|NR|NU|NZ|OM|PA|PE|PF|PG|PH|PK|PL|PM|PN|PR|PS|PT|PW|PY|QA|RE|RO|RS|RU|RW|SA|SB|SC|SD|SE|SG|SH|SI|SJ|SK|SL|SM|SN|SO|SR|SS|ST|SV|SX|SY|SZ|TC|TD|TF|TG|TH|TJ|TK|TL|TM|TN|TO|TR|TT|TV|TW|TZ|UA|UG|UM|US|UY|UZ|VA|VC|VE|VG|VI|VN|VU|WF|WS|YE|YT|ZA|ZM|ZW)$"
    )]
    pub country: Option<String>,
    /// True moves the default here; false on the default leaves none.
    pub is_default: Option<bool>,
}

/// The address fields of a create (`Some` for each) or update body, checked alike.
struct AddressFields<'a> {
    name: Option<&'a str>,
    line1: Option<&'a str>,
    line2: Option<&'a str>,
    city: Option<&'a str>,
    region: Option<&'a str>,
    postal_code: Option<&'a str>,
    country: Option<&'a str>,
}

impl AddressFields<'_> {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut field =
            |name: &str, value: Option<&str>, rule: &dyn Fn(&str) -> Result<(), String>| {
                if let Some(value) = value {
                    check(&mut errors, name, rule(value));
                }
            };
        field("name", self.name, &|v| text(v, 100, false));
        field("line1", self.line1, &|v| text(v, 200, true));
        field("line2", self.line2, &|v| text(v, 200, false));
        field("city", self.city, &|v| text(v, 100, true));
        field("region", self.region, &|v| text(v, 100, false));
        field("postal_code", self.postal_code, &postal_code);
        field("country", self.country, &country);
        errors
    }
}

impl Validate for CreateAddressBody {
    fn validate(&self) -> Vec<FieldError> {
        AddressFields {
            name: self.name.as_deref(),
            line1: Some(&self.line1),
            line2: self.line2.as_deref(),
            city: Some(&self.city),
            region: self.region.as_deref(),
            postal_code: Some(&self.postal_code),
            country: Some(&self.country),
        }
        .validate()
    }
}

impl Validate for UpdateAddressBody {
    fn validate(&self) -> Vec<FieldError> {
        AddressFields {
            name: self.name.as_deref(),
            line1: self.line1.as_deref(),
            line2: self.line2.as_deref(),
            city: self.city.as_deref(),
            region: self.region.as_deref(),
            postal_code: self.postal_code.as_deref(),
            country: self.country.as_deref(),
        }
        .validate()
    }
}

/// The caller's address book.
#[utoipa::path(
    get, path = "/v1/users/me/addresses", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every address of the caller's, the default first", body = AddressList),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_addresses(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<AddressList>, Problem> {
    let request = state.backends.request(
        pb::ListAddressesRequest {
            user_id: caller.user_id.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .list_addresses(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    Ok(Json(AddressList {
        items: response
            .items
            .into_iter()
            .map(SavedAddressView::from)
            .collect(),
        next_page_token: None,
    }))
}

/// Add an address to the caller's address book.
#[utoipa::path(
    post, path = "/v1/users/me/addresses", tag = "users",
    request_body = CreateAddressBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new address", body = SavedAddressView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile (yet)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The address book is full", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_address(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ValidJson(body): ValidJson<CreateAddressBody>,
) -> Result<(StatusCode, Json<SavedAddressView>), Problem> {
    let request = state.backends.request(
        pb::CreateAddressRequest {
            user_id: caller.user_id.to_string(),
            postal_address: Some(PostalAddress {
                name: body.name.unwrap_or_default(),
                line1: body.line1,
                line2: body.line2.unwrap_or_default(),
                city: body.city,
                region: body.region.unwrap_or_default(),
                postal_code: body.postal_code,
                country: body.country,
            }),
            is_default: body.is_default.unwrap_or(false),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .create_address(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    Ok((StatusCode::CREATED, Json(address_view(response.address)?)))
}

/// One of the caller's addresses.
#[utoipa::path(
    get, path = "/v1/users/me/addresses/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The address")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The address", body = SavedAddressView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such address of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_address(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<SavedAddressView>, Problem> {
    let request = state.backends.request(
        pb::GetAddressRequest {
            user_id: caller.user_id.to_string(),
            address_id: id.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .get_address(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    address_view(response.address).map(Json)
}

/// Change one of the caller's addresses.
#[utoipa::path(
    patch, path = "/v1/users/me/addresses/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The address")),
    request_body = UpdateAddressBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed address", body = SavedAddressView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such address of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_address(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<UpdateAddressBody>,
) -> Result<Json<SavedAddressView>, Problem> {
    let request = state.backends.request(
        pb::UpdateAddressRequest {
            user_id: caller.user_id.to_string(),
            address_id: id.to_string(),
            name: body.name,
            line1: body.line1,
            line2: body.line2,
            city: body.city,
            region: body.region,
            postal_code: body.postal_code,
            country: body.country,
            is_default: body.is_default,
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .update_address(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    address_view(response.address).map(Json)
}

/// Delete one of the caller's addresses. Orders keep their own copy.
#[utoipa::path(
    delete, path = "/v1/users/me/addresses/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The address")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The address is deleted"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such address of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_address(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    let request = state.backends.request(
        pb::DeleteAddressRequest {
            user_id: caller.user_id.to_string(),
            address_id: id.to_string(),
        },
        Some(&caller),
    );
    state
        .backends
        .user
        .clone()
        .delete_address(request)
        .await
        .map_err(backend_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of profiles, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileList {
    pub items: Vec<ProfileView>,
    /// Pass as `page_token` for the next page; null on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Only users with this role.
    pub role: Option<UserRole>,
    /// true: only disabled accounts; false: only enabled ones. The filter
    /// reads the user service's copy of the status, which follows a change
    /// at once, or within seconds of the user service being back from an
    /// outage; `disabled_at` in the answer is read from auth itself.
    pub disabled: Option<bool>,
    /// Case-insensitive part of the email address.
    #[param(max_length = 254, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub email: Option<String>,
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page.
    #[param(max_length = 200)]
    pub page_token: Option<String>,
}

impl Validate for UserListQuery {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(email) = &self.email {
            check(&mut errors, "email", text(email, 254, false));
        }
        if self
            .page_size
            .is_some_and(|size| !(1..=100).contains(&size))
        {
            errors.push(FieldError::new("page_size", "must be 1 to 100"));
        }
        if self
            .page_token
            .as_ref()
            .is_some_and(|token| token.len() > 200)
        {
            errors.push(FieldError::new(
                "page_token",
                "must be at most 200 characters",
            ));
        }
        errors
    }
}

/// Admin: every user's profile, oldest first, optionally by role, status or
/// email, each with when an admin disabled the account, if one has.
#[utoipa::path(
    get, path = "/v1/admin/users", tag = "users",
    params(UserListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of profiles", body = ProfileList),
        (status = 400, description = "A bad filter, page size or page token", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Query(query): Query<UserListQuery>,
) -> Result<Json<ProfileList>, Problem> {
    let request = state.backends.request(
        pb::ListUsersRequest {
            page: Some(PageRequest {
                page_size: query.page_size.unwrap_or(0),
                page_token: query.page_token.unwrap_or_default(),
            }),
            role: query
                .role
                .map_or(auth_pb::Role::Unspecified, UserRole::to_proto) as i32,
            email: query.email.unwrap_or_default(),
            disabled: query.disabled,
        },
        Some(&caller),
    );
    let response = state
        .backends
        .user
        .clone()
        .list_users(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    let mut disabled = disabled_accounts(&state, &caller, &response.items).await?;
    Ok(Json(ProfileList {
        items: response
            .items
            .into_iter()
            .map(|profile| {
                let mut view = ProfileView::from(profile);
                view.disabled_at = disabled.remove(&view.id).map(rfc3339);
                view
            })
            .collect(),
        next_page_token: Some(response.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// When each of the profiles' accounts that is disabled was disabled, by
/// id. Auth owns the status, so it is read there, one call for the page.
async fn disabled_accounts(
    state: &AppState,
    caller: &Caller,
    profiles: &[pb::Profile],
) -> Result<HashMap<String, prost_types::Timestamp>, Problem> {
    if profiles.is_empty() {
        return Ok(HashMap::new());
    }
    let request = state.backends.request(
        auth_pb::GetAccountsRequest {
            user_ids: profiles.iter().map(|p| p.id.clone()).collect(),
        },
        Some(caller),
    );
    let accounts = state
        .backends
        .auth
        .clone()
        .get_accounts(request)
        .await
        .map_err(|s| Problem::from_status(&s, "auth"))?
        .into_inner()
        .accounts;
    Ok(accounts
        .into_iter()
        .filter_map(|account| Some((account.id, account.disabled_at?)))
        .collect())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleBody {
    pub role: UserRole,
}

impl Validate for SetRoleBody {
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Admin: change a user's role. A promoted customer is an admin from their
/// next access token on (a refresh gives one). A demoted admin's sessions
/// end at once, access tokens with them: they log in again as a customer.
/// Admins cannot demote themselves (409), so the last admin stays one.
#[utoipa::path(
    put, path = "/v1/admin/users/{id}/role", tag = "users",
    params(("id" = Uuid, Path, description = "The user")),
    request_body = SetRoleBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's profile with the new role", body = ProfileView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin, or an admin demoted or disabled meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot demote themselves", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_role(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<SetRoleBody>,
) -> Result<Json<ProfileView>, Problem> {
    let role = body.role.to_proto() as i32;
    // Auth owns roles: it changes first, so a failure here changes nothing.
    let request = state.backends.request(
        auth_pb::SetUserRoleRequest {
            user_id: id.to_string(),
            role,
        },
        Some(&caller),
    );
    let account = state
        .backends
        .auth
        .clone()
        .set_user_role(request)
        .await
        .map_err(|s| Problem::from_status(&s, "auth"))?
        .into_inner()
        .account;
    // A demoted admin's sessions have ended.
    state.verifier.sessions().catch_up(&state.backends).await;
    let account = answered_account(account)?;
    let mut view = read_profile(&state, &caller, id.to_string()).await?;
    // Auth's answer, not the profile's copy: the copy may not have arrived.
    view.role = UserRole::from_proto(account.role);
    view.disabled_at = account.disabled_at.map(rfc3339);
    Ok(Json(view))
}

/// Whether an account may sign in.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountStatusView {
    /// True while an admin has the account disabled: it cannot log in,
    /// refresh, or change or reset its password.
    pub disabled: bool,
    /// When it was disabled (RFC 3339); null while it is enabled.
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
}

impl AccountStatusView {
    fn from_account(account: Option<auth_pb::Account>) -> Result<Self, Problem> {
        let account = answered_account(account)?;
        let disabled_at = account.disabled_at.map(rfc3339);
        Ok(Self {
            disabled: disabled_at.is_some(),
            disabled_at,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatusBody {
    /// True disables the account, false enables it again.
    pub disabled: bool,
}

impl Validate for SetStatusBody {
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Admin: whether a user's account is disabled.
#[utoipa::path(
    get, path = "/v1/admin/users/{id}/status", tag = "users",
    params(("id" = Uuid, Path, description = "The user")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account's status", body = AccountStatusView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_status(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountStatusView>, Problem> {
    let request = state.backends.request(
        auth_pb::GetAccountRequest {
            user_id: id.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .auth
        .clone()
        .get_account(request)
        .await
        .map_err(|s| Problem::from_status(&s, "auth"))?;
    AccountStatusView::from_account(response.into_inner().account).map(Json)
}

/// Admin: disable a user's account (fraud, abuse), or enable it again.
/// Disabling ends every session of the account at once, its access tokens
/// refused with them, and spends its reset tokens. A disabled account's
/// login with the right password is a 403 saying so.
/// Admins cannot disable their own account (409).
#[utoipa::path(
    put, path = "/v1/admin/users/{id}/status", tag = "users",
    params(("id" = Uuid, Path, description = "The user")),
    request_body = SetStatusBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account's new status", body = AccountStatusView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin, or an admin demoted or disabled meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller's own account cannot be disabled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_status(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<SetStatusBody>,
) -> Result<Json<AccountStatusView>, Problem> {
    let request = state.backends.request(
        auth_pb::SetAccountDisabledRequest {
            user_id: id.to_string(),
            disabled: body.disabled,
        },
        Some(&caller),
    );
    let response = state
        .backends
        .auth
        .clone()
        .set_account_disabled(request)
        .await
        .map_err(|s| Problem::from_status(&s, "auth"))?;
    if body.disabled {
        state.verifier.sessions().catch_up(&state.backends).await;
    }
    AccountStatusView::from_account(response.into_inner().account).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_country_pattern_lists_exactly_the_accepted_codes() {
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(COUNTRIES.len(), 249);
        assert_eq!(
            COUNTRY_PATTERN,
            format!("^(?:{})$", COUNTRIES.join("|")),
            "the pattern in CreateAddressBody and UpdateAddressBody must list COUNTRIES"
        );
        assert!(country("DE").is_ok());
        assert!(country("de").is_err());
        assert!(country("XX").is_err());
    }

    #[test]
    fn postal_codes_are_letters_digits_spaces_and_hyphens() {
        for good in ["SW1Y 4LG", "10115", "1234-567", "A"] {
            assert!(postal_code(good).is_ok(), "{good}");
        }
        for bad in ["", " 10115", "10115 ", "10_115", "123456789012345678901"] {
            assert!(postal_code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(phone("+4915112345678").is_ok());
        for bad in [
            "4915112345678",
            "+0151123456",
            "+49 151",
            "+123456",
            "+1234567890123456",
        ] {
            assert!(phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locales_are_language_script_region_tags() {
        for good in ["en", "de-DE", "zh-Hant-TW", "es-419", "fil"] {
            assert!(locale(good).is_ok(), "{good}");
        }
        for bad in ["", "e", "english", "de_DE", "de-", "de-DE-x", "12"] {
            assert!(locale(bad).is_err(), "{bad}");
        }
    }
}
