//! Access-token verification. Tokens are checked locally against the auth
//! service's JWKS, which is cached and fetched again when a token names an
//! unknown `kid` (at most every few seconds, so forged kids cannot turn into
//! a flood of fetches). The verified caller travels on to the services.
//!
//! A signature check costs more than the rest of a cached catalog read, and a
//! client sends the same access token with every request for its lifetime, so
//! tokens that verified are remembered (by their exact text) until they
//! expire; a JWKS change forgets them all, since a key may have been retired.
//! Either way, a token whose session has ended is refused (see
//! [`crate::sessions`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use gocommerce_platform::expiring::ExpiringMap;
use gocommerce_platform::token::{self, ACCESS_TOKEN_TYPE, AccessClaims};
use gocommerce_platform::{Caller, ErrorCode};
use gocommerce_proto::auth::v1::{GetJwksRequest, Jwk};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::backend::Backends;
use crate::problem::Problem;
use crate::sessions::EndedSessions;
use crate::startup::AppState;

const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Most verified tokens remembered; about half a KiB each.
const VERIFIED_CAPACITY: usize = 10_000;

/// Why a token was refused; each becomes a 401 whose detail says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing Authorization header")]
    Missing,
    #[error("the Authorization header must be 'Bearer <access token>'")]
    NotBearer,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted (only EdDSA)")]
    Algorithm,
    #[error("the token has no key id (kid)")]
    NoKeyId,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued for another audience")]
    Audience,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token lacks a required claim")]
    Claims,
    #[error("the token is not an access token")]
    NotAccessToken,
    #[error("the token's session has ended; log in again")]
    SessionEnded,
}

/// Verifies access tokens against a cached JWKS.
#[derive(Debug)]
pub struct TokenVerifier {
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    validation: Validation,
    verified: VerifiedTokens,
    sessions: Arc<EndedSessions>,
}

/// What a valid token says: who calls, and in which session (tokens signed
/// before sessions were named have none).
#[derive(Debug, Clone, Copy)]
struct Verified {
    caller: Caller,
    session_id: Option<Uuid>,
}

/// Tokens whose signature and claims were checked, with what they say,
/// until the Unix time from which they are refused (`exp` plus leeway).
type VerifiedTokens = std::sync::Mutex<ExpiringMap<String, Verified, i64>>;

/// Now as a Unix time in seconds, the unit of JWT times.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl TokenVerifier {
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            keys: RwLock::default(),
            last_fetch: Mutex::new(None),
            validation: token::validation(issuer, audience),
            verified: std::sync::Mutex::new(ExpiringMap::new(VERIFIED_CAPACITY)),
            sessions: Arc::default(),
        }
    }

    /// The ended sessions whose tokens this verifier refuses.
    pub fn sessions(&self) -> &Arc<EndedSessions> {
        &self.sessions
    }

    pub fn has_keys(&self) -> bool {
        !self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// Fetches the JWKS unless another fetch happened moments ago.
    #[tracing::instrument(skip_all, err)]
    pub async fn refresh(&self, backends: &Backends) -> Result<(), tonic::Status> {
        let mut last_fetch = self.last_fetch.lock().await;
        if last_fetch.is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL) {
            return Ok(());
        }
        let response = backends
            .auth
            .clone()
            .get_jwks(backends.request(GetJwksRequest {}, None))
            .await?;
        let keys: HashMap<String, DecodingKey> = response
            .into_inner()
            .keys
            .iter()
            .filter_map(|jwk| decoding_key(jwk).map(|key| (jwk.kid.clone(), key)))
            .collect();
        tracing::debug!(keys = keys.len(), "fetched jwks");
        let mut current = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A retired key's tokens must stop working at once.
        if current.keys().any(|kid| !keys.contains_key(kid)) {
            self.verified().clear();
        }
        *current = keys;
        drop(current);
        *last_fetch = Some(Instant::now());
        Ok(())
    }

    /// Verifies a bearer token and returns the caller it names and its
    /// session, if the token names one.
    pub async fn verify(
        &self,
        token: &str,
        backends: &Backends,
    ) -> Result<(Caller, Option<Uuid>), Problem> {
        let verified = self.verify_signed(token, backends).await?;
        if verified
            .session_id
            .is_some_and(|session| self.sessions.contains(&session))
        {
            return Err(Problem::unauthenticated(
                TokenError::SessionEnded.to_string(),
            ));
        }
        Ok((verified.caller, verified.session_id))
    }

    /// Checks the token's signature and claims, or finds it checked before.
    async fn verify_signed(&self, token: &str, backends: &Backends) -> Result<Verified, Problem> {
        let now = unix_now();
        if let Some(verified) = self.verified().get(token, now) {
            return Ok(*verified);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Problem::unauthenticated(TokenError::Malformed.to_string()))?;
        if header.alg != token::ALGORITHM {
            return Err(Problem::unauthenticated(TokenError::Algorithm.to_string()));
        }
        let kid = header
            .kid
            .ok_or_else(|| Problem::unauthenticated(TokenError::NoKeyId.to_string()))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh(backends)
                    .await
                    .map_err(|status| Problem::from_status(&status, "auth"))?;
                self.key(&kid)
                    .ok_or_else(|| Problem::unauthenticated(TokenError::UnknownKey.to_string()))?
            }
        };
        let (verified, exp) = self
            .check(token, &key)
            .map_err(|e| Problem::unauthenticated(e.to_string()))?;
        // Remembered for as long as a fresh check would accept it: until
        // `exp` plus the clock-skew leeway.
        let leeway = i64::try_from(token::LEEWAY_SECONDS).unwrap_or(0);
        self.verified()
            .insert(token.to_owned(), verified, exp.saturating_add(leeway), now);
        Ok(verified)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, ExpiringMap<String, Verified, i64>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, token: &str, key: &DecodingKey) -> Result<(Verified, i64), TokenError> {
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => TokenError::Claims,
                _ => TokenError::Malformed,
            })?
            .claims;
        if claims.token_type != ACCESS_TOKEN_TYPE {
            return Err(TokenError::NotAccessToken);
        }
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| TokenError::Claims)?;
        let role = claims.role.parse().map_err(|_| TokenError::Claims)?;
        let session_id = claims
            .sid
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| TokenError::Claims)?;
        let verified = Verified {
            caller: Caller { user_id, role },
            session_id,
        };
        Ok((verified, claims.exp))
    }
}

fn decoding_key(jwk: &Jwk) -> Option<DecodingKey> {
    (jwk.kty == "OKP" && jwk.crv == "Ed25519" && jwk.alg == "EdDSA")
        .then(|| DecodingKey::from_ed_components(&jwk.x).ok())
        .flatten()
}

/// The verified caller of a protected route.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let InSession { caller, .. } = InSession::from_request_parts(parts, state).await?;
        Ok(Self(caller))
    }
}

/// The verified caller of a protected route and the session of its token,
/// for a response that outlives the request (a stream) and must end when
/// the session does.
#[derive(Debug, Clone, Copy)]
pub struct InSession {
    pub caller: Caller,
    /// `None` for a token signed before sessions were named.
    pub session: Option<Uuid>,
}

impl FromRequestParts<AppState> for InSession {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| Problem::unauthenticated(TokenError::Missing.to_string()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Problem::unauthenticated(TokenError::NotBearer.to_string()))?;
        let (caller, session) = state.verifier.verify(token, &state.backends).await?;
        Ok(Self { caller, session })
    }
}

/// An admin caller; a customer gets 403, no token 401.
#[derive(Debug, Clone, Copy)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Authenticated(caller) = Authenticated::from_request_parts(parts, state).await?;
        if caller.is_admin() {
            Ok(Self(caller))
        } else {
            Err(Problem::new(
                ErrorCode::PermissionDenied,
                "this route is for admins only",
            ))
        }
    }
}
