//! The access-token format shared by the auth service, which signs tokens, and
//! the gateway, which verifies them. Tokens are EdDSA (Ed25519) JWTs; the
//! validation rules are strict and live here so both sides agree on them.

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

/// The only accepted signing algorithm. `alg: none` and HMAC with the public
/// key as secret are therefore refused before any signature check.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// The `token_type` claim of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "access";

/// Allowed clock skew between the signer and a verifier, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id (UUID).
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// The session (refresh family, a UUID) the token was issued for: when
    /// the session ends, the gateway refuses its tokens before they expire.
    /// Absent from tokens signed before sessions were named, which simply
    /// run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// `customer` or `admin`.
    pub role: String,
    /// Always `access`; refresh tokens are opaque and never JWTs.
    pub token_type: String,
}

/// Strict validation: EdDSA only; `iss`, `aud`, `sub`, `exp`, `nbf` required
/// and checked with an explicit leeway.
pub fn validation(issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(ALGORITHM);
    validation.algorithms = vec![ALGORITHM];
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation
}
