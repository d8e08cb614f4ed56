//! The access-token signing key. It comes from `JWT_SIGNING_KEY`, or is
//! generated on first start and kept in the database, so restarts and replicas
//! share it. Its `kid` is the RFC 7638 thumbprint of its public JWK.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use gocommerce_proto::auth::v1::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::db;
use crate::error::AuthError;

/// The key that signs new tokens, and every public key a verifier may meet.
pub struct KeyStore {
    kid: String,
    encoding: EncodingKey,
    jwks: Vec<Jwk>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Uses the configured key, or the stored one, generating it if none exists.
    #[tracing::instrument(skip_all, err)]
    pub async fn load(
        conn: &mut PgConnection,
        configured_pem: Option<&str>,
    ) -> Result<Self, AuthError> {
        if let Some(pem) = configured_pem {
            let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| {
                AuthError::Signing(format!(
                    "JWT_SIGNING_KEY is not an Ed25519 PKCS#8 PEM key: {e}"
                ))
            })?;
            return Self::from_keys(&key, &[]);
        }
        let stored = db::load_or_create_signing_key(conn, || {
            let key = SigningKey::generate(&mut OsRng);
            let pem = key
                .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .map_err(|e| AuthError::Signing(e.to_string()))?;
            let public = key.verifying_key().to_bytes();
            Ok((thumbprint(&public), pem.to_string(), public.to_vec()))
        })
        .await?;
        let current = SigningKey::from_pkcs8_pem(&stored.current_pem)
            .map_err(|e| AuthError::Signing(format!("stored signing key is unreadable: {e}")))?;
        Self::from_keys(&current, &stored.older_public_keys)
    }

    fn from_keys(current: &SigningKey, older_public_keys: &[Vec<u8>]) -> Result<Self, AuthError> {
        let public = current.verifying_key().to_bytes();
        let der = current
            .to_pkcs8_der()
            .map_err(|e| AuthError::Signing(e.to_string()))?;
        let mut jwks = vec![jwk(&public)];
        jwks.extend(
            older_public_keys
                .iter()
                .filter(|k| k.as_slice() != public.as_slice())
                .map(|k| jwk(k)),
        );
        Ok(Self {
            kid: thumbprint(&public),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwks,
        })
    }

    pub fn jwks(&self) -> &[Jwk] {
        &self.jwks
    }

    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let mut header = Header::new(gocommerce_platform::token::ALGORITHM);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }
}

fn jwk(public: &[u8]) -> Jwk {
    Jwk {
        kty: "OKP".to_owned(),
        crv: "Ed25519".to_owned(),
        x: URL_SAFE_NO_PAD.encode(public),
        kid: thumbprint(public),
        alg: "EdDSA".to_owned(),
        r#use: "sig".to_owned(),
    }
}

/// RFC 7638 thumbprint: SHA-256 of the required members in lexical order.
fn thumbprint(public: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_key_signs_tokens_its_jwk_verifies() {
        let key = SigningKey::generate(&mut OsRng);
        let store = KeyStore::from_keys(&key, &[]).expect("keys");
        let token = store
            .sign(&serde_json::json!({"sub": "u", "exp": 4_000_000_000_i64}))
            .expect("signed");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(store.jwks()[0].kid.as_str()));

        let decoding =
            jsonwebtoken::DecodingKey::from_ed_components(&store.jwks()[0].x).expect("jwk");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
            .expect("verifies");
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("base64");
        assert_eq!(
            thumbprint(&x),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
