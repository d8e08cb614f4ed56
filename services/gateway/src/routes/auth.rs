//! `/v1/auth/*` and the JWKS: registration, login, refresh, logout, password
//! changes and resets, and the caller's own account.

use crate::json::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use gocommerce_platform::validate;
use gocommerce_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::authn::Authenticated;
use crate::extract::{ClientIp, ValidJson, Validate, check};
use crate::problem::{FieldError, Problem};
use crate::routes::rfc3339;
use crate::startup::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Used to log in; trimmed and lower-cased.
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    pub password: String,
    /// Display name, 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "Ada Lovelace"
    )]
    pub name: String,
}

impl Validate for RegisterBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(&mut errors, "email", validate::email(&self.email));
        check(&mut errors, "password", validate::password(&self.password));
        check(&mut errors, "name", validate::name(&self.name));
        errors
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(min_length = 1, max_length = 254, example = "ada@example.com")]
    pub email: String,
    #[schema(min_length = 1, max_length = 1024, example = "correct horse battery")]
    pub password: String,
}

impl Validate for LoginBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        // Only presence is checked: any other rule could tell an attacker
        // something about the account the way a 401 does not. A blank email
        // is present, as the schema's minLength says, and is as wrong as any
        // other address that has no account.
        if self.email.is_empty() {
            errors.push(required("email"));
        }
        if self.password.is_empty() {
            errors.push(required("password"));
        }
        if self.email.chars().count() > validate::EMAIL_MAX_CHARS {
            errors.push(too_long("email", validate::EMAIL_MAX_CHARS));
        }
        if self.password.chars().count() > 1024 {
            errors.push(too_long("password", 1024));
        }
        errors
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenBody {
    /// The refresh token from the last login or refresh.
    #[schema(min_length = 1, max_length = 256)]
    pub refresh_token: String,
}

impl Validate for RefreshTokenBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.refresh_token.is_empty() {
            errors.push(required("refresh_token"));
        }
        // Characters, as the schema's maxLength counts, not bytes.
        if self.refresh_token.chars().count() > 256 {
            errors.push(too_long("refresh_token", 256));
        }
        errors
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    /// The account's password now.
    #[schema(min_length = 1, max_length = 1024, example = "correct horse battery")]
    pub current_password: String,
    /// 8 to 128 characters; the current one again just ends every other
    /// session.
    #[schema(
        min_length = 8,
        max_length = 128,
        example = "battery staple horse correct"
    )]
    pub new_password: String,
}

impl Validate for ChangePasswordBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        // The current password is only checked against the account, as a
        // login's is.
        if self.current_password.is_empty() {
            errors.push(required("current_password"));
        }
        if self.current_password.chars().count() > 1024 {
            errors.push(too_long("current_password", 1024));
        }
        check(
            &mut errors,
            "new_password",
            validate::password(&self.new_password),
        );
        errors
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetBody {
    /// The account's email.
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    pub email: String,
}

impl Validate for PasswordResetBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(&mut errors, "email", validate::email(&self.email));
        errors
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPasswordResetBody {
    /// The token from the reset email.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    /// 8 to 128 characters.
    #[schema(
        min_length = 8,
        max_length = 128,
        example = "battery staple horse correct"
    )]
    pub new_password: String,
}

impl Validate for ConfirmPasswordResetBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.token.is_empty() {
            errors.push(required("token"));
        }
        if self.token.chars().count() > 256 {
            errors.push(too_long("token", 256));
        }
        check(
            &mut errors,
            "new_password",
            validate::password(&self.new_password),
        );
        errors
    }
}

fn required(field: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: "must not be empty".to_owned(),
    }
}

fn too_long(field: &str, max: usize) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: format!("must be at most {max} characters"),
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleView {
    Customer,
    Admin,
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: RoleView,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<pb::Account> for AccountView {
    fn from(account: pb::Account) -> Self {
        let role = match pb::Role::try_from(account.role) {
            Ok(pb::Role::Admin) => RoleView::Admin,
            _ => RoleView::Customer,
        };
        Self {
            id: account.id,
            email: account.email,
            name: account.name,
            role,
            created_at: account.created_at.map(rfc3339).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum TokenType {
    Bearer,
}

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Single use: each refresh returns a new one; reusing an old one revokes the session.
    pub refresh_token: String,
    pub token_type: TokenType,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

impl TokenResponse {
    fn from_pair(pair: Option<pb::TokenPair>) -> Result<Self, Problem> {
        let pair = pair.ok_or_else(|| {
            Problem::from_status(&tonic::Status::internal("empty token pair"), "auth")
        })?;
        Ok(Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: TokenType::Bearer,
            expires_in: pair.expires_in,
        })
    }
}

/// A JSON Web Key Set (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwksView {
    pub keys: Vec<JwkView>,
}

/// An Ed25519 public key (RFC 8037).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkView {
    #[schema(example = "OKP")]
    pub kty: String,
    #[schema(example = "Ed25519")]
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub key_use: String,
}

fn backend_error(status: tonic::Status) -> Problem {
    Problem::from_status(&status, "auth")
}

/// Create a customer account.
#[utoipa::path(
    post, path = "/v1/auth/register", tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The account was created", body = AccountView),
        (status = 409, description = "An account with this email exists", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<RegisterBody>,
) -> Result<impl IntoResponse, Problem> {
    let request = state.backends.request(
        pb::RegisterRequest {
            email: body.email,
            password: body.password,
            name: body.name,
        },
        None,
    );
    let account = state
        .backends
        .auth
        .clone()
        .register(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .account
        .ok_or_else(|| backend_error(tonic::Status::internal("empty account")))?;
    Ok((StatusCode::CREATED, Json(AccountView::from(account))))
}

/// Exchange email and password for a token pair.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong email or password (the same answer whether the email exists or not)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The password is right but an admin has disabled the account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ValidJson(body): ValidJson<LoginBody>,
) -> Result<Json<TokenResponse>, Problem> {
    let request = state.backends.request(
        pb::LoginRequest {
            email: body.email,
            password: body.password,
            client_ip: ip.to_string(),
        },
        None,
    );
    let response = state
        .backends
        .auth
        .clone()
        .login(request)
        .await
        .map_err(backend_error)?;
    TokenResponse::from_pair(response.into_inner().tokens).map(Json)
}

/// Rotate a refresh token: returns a new pair; the old refresh token is spent.
/// Presenting a spent one ends its session, and the session's access tokens
/// are refused from then on.
#[utoipa::path(
    post, path = "/v1/auth/refresh", tag = "auth",
    request_body = RefreshTokenBody,
    responses(
        (status = 200, description = "A new token pair", body = TokenResponse),
        (status = 401, description = "The refresh token is invalid, expired, revoked or was already used (which revokes its whole session)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<RefreshTokenBody>,
) -> Result<Json<TokenResponse>, Problem> {
    let request = state.backends.request(
        pb::RefreshRequest {
            refresh_token: body.refresh_token,
        },
        None,
    );
    let response = match state.backends.auth.clone().refresh(request).await {
        Ok(response) => response,
        Err(status) => {
            // A reused refresh token has just ended its session: the thief's
            // (or the owner's) access token is refused here at once.
            if status.code() == tonic::Code::Unauthenticated {
                state.verifier.sessions().catch_up(&state.backends).await;
            }
            return Err(backend_error(status));
        }
    };
    TokenResponse::from_pair(response.into_inner().tokens).map(Json)
}

/// End the session the refresh token belongs to: its refresh token and its
/// access tokens are refused from now on. Idempotent.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    request_body = RefreshTokenBody,
    responses((status = 204, description = "The session is ended"))
)]
pub async fn logout(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<RefreshTokenBody>,
) -> Result<StatusCode, Problem> {
    let request = state.backends.request(
        pb::LogoutRequest {
            refresh_token: body.refresh_token,
        },
        None,
    );
    state
        .backends
        .auth
        .clone()
        .logout(request)
        .await
        .map_err(backend_error)?;
    state.verifier.sessions().catch_up(&state.backends).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Sessions ended by [`logout_everywhere`].
#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutEverywhereView {
    /// How many sessions were still live.
    pub sessions_ended: u64,
}

/// End every session of the caller's account, on every device: their
/// refresh tokens and access tokens (this one too) are refused from now on.
/// Idempotent.
#[utoipa::path(
    post, path = "/v1/auth/logout-everywhere", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every session has ended", body = LogoutEverywhereView),
        (status = 401, description = "Missing, malformed, expired or forged access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<LogoutEverywhereView>, Problem> {
    let request = state.backends.request(
        pb::LogoutEverywhereRequest {
            user_id: caller.user_id.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .auth
        .clone()
        .logout_everywhere(request)
        .await
        .map_err(backend_error)?;
    state.verifier.sessions().catch_up(&state.backends).await;
    Ok(Json(LogoutEverywhereView {
        sessions_ended: response.into_inner().sessions_ended,
    }))
}

/// Change the caller's password. Every session of the account ends (their
/// refresh and access tokens, this one too, are refused) and the answer is a
/// new session for this client. The account's owner is told by email.
#[utoipa::path(
    post, path = "/v1/auth/password", tag = "auth",
    security(("bearer" = [])),
    request_body = ChangePasswordBody,
    responses(
        (status = 200, description = "Changed: a new token pair, every other session has ended", body = TokenResponse),
        (status = 401, description = "Missing, malformed, expired or forged access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is wrong (counted as a failed login)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The password was changed by another request meanwhile; try again", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ClientIp(ip): ClientIp,
    ValidJson(body): ValidJson<ChangePasswordBody>,
) -> Result<Json<TokenResponse>, Problem> {
    let request = state.backends.request(
        pb::ChangePasswordRequest {
            user_id: caller.user_id.to_string(),
            current_password: body.current_password,
            new_password: body.new_password,
            client_ip: ip.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .auth
        .clone()
        .change_password(request)
        .await
        .map_err(backend_error)?;
    state.verifier.sessions().catch_up(&state.backends).await;
    TokenResponse::from_pair(response.into_inner().tokens).map(Json)
}

/// Ask for a password reset: if an account has this email, a single-use
/// token that works for 30 minutes is emailed to it (at most one a minute
/// and five an hour).
/// The answer is the same whether or not the account exists.
#[utoipa::path(
    post, path = "/v1/auth/password-reset", tag = "auth",
    request_body = PasswordResetBody,
    responses((status = 202, description = "Accepted: an email is on its way if the account exists"))
)]
pub async fn request_password_reset(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<PasswordResetBody>,
) -> Result<StatusCode, Problem> {
    let request = state
        .backends
        .request(pb::RequestPasswordResetRequest { email: body.email }, None);
    state
        .backends
        .auth
        .clone()
        .request_password_reset(request)
        .await
        .map_err(backend_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// Set a new password with the token from a reset email. Every session of
/// the account ends and its login lockout is lifted; log in with the new
/// password.
#[utoipa::path(
    post, path = "/v1/auth/password-reset/confirm", tag = "auth",
    request_body = ConfirmPasswordResetBody,
    responses(
        (status = 204, description = "The password is set"),
        (status = 401, description = "The token is invalid, expired or already used", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<ConfirmPasswordResetBody>,
) -> Result<StatusCode, Problem> {
    let request = state.backends.request(
        pb::ResetPasswordRequest {
            token: body.token,
            new_password: body.new_password,
        },
        None,
    );
    state
        .backends
        .auth
        .clone()
        .reset_password(request)
        .await
        .map_err(backend_error)?;
    state.verifier.sessions().catch_up(&state.backends).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own account.
#[utoipa::path(
    get, path = "/v1/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = AccountView),
        (status = 401, description = "Missing, malformed, expired or forged access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<AccountView>, Problem> {
    let request = state.backends.request(
        pb::GetAccountRequest {
            user_id: caller.user_id.to_string(),
        },
        Some(&caller),
    );
    let account = state
        .backends
        .auth
        .clone()
        .get_account(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .account
        .ok_or_else(|| backend_error(tonic::Status::internal("empty account")))?;
    Ok(Json(AccountView::from(account)))
}

/// The public keys that verify access tokens.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "The JSON Web Key Set", body = JwksView))
)]
pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    let request = state.backends.request(pb::GetJwksRequest {}, None);
    let keys = state
        .backends
        .auth
        .clone()
        .get_jwks(request)
        .await
        .map_err(backend_error)?
        .into_inner()
        .keys
        .into_iter()
        .map(|k| JwkView {
            kty: k.kty,
            crv: k.crv,
            x: k.x,
            kid: k.kid,
            alg: k.alg,
            key_use: k.r#use,
        })
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(JwksView { keys }),
    ))
}
