//! Access-token verification at the gateway: every way a token can be wrong
//! gets a 401 problem that says what is wrong.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app};

struct Forger {
    kid: String,
    key: EncodingKey,
    public_key: Vec<u8>,
    user_id: String,
}

impl Forger {
    async fn new(app: &TestApp, user_id: &str) -> Self {
        let db = app.auth_db().await;
        let (kid, pem, public_key): (String, String, Vec<u8>) =
            sqlx::query_as("SELECT kid, private_key_pem, public_key FROM signing_keys")
                .fetch_one(&db)
                .await
                .expect("the signing key is stored");
        Self {
            kid,
            key: EncodingKey::from_ed_pem(pem.as_bytes()).expect("pem"),
            public_key,
            user_id: user_id.to_owned(),
        }
    }

    fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": "gocommerce", "aud": "gocommerce-api", "sub": self.user_id,
            "exp": now + 600, "iat": now, "nbf": now, "jti": "test",
            "role": "customer", "token_type": "access",
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signed")
    }

    fn with(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.claims();
        change(&mut claims);
        self.sign(&claims)
    }
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn a_valid_access_token_reaches_the_callers_account() {
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;

    let response = app
        .get_with_token(
            "/v1/auth/me",
            tokens["access_token"].as_str().expect("token"),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["email"], email);
    assert_eq!(body["role"], "customer");
}

#[tokio::test]
async fn a_request_without_a_token_is_401_with_a_bearer_challenge() {
    let app = spawn_app().await;

    let response = app
        .request(reqwest::Method::GET, "/v1/auth/me")
        .send()
        .await
        .expect("sent");

    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer")
    );
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("missing")
    );
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_with_a_reason() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let me: Value = app
        .get_with_token(
            "/v1/auth/me",
            tokens["access_token"].as_str().expect("token"),
        )
        .await
        .json()
        .await
        .expect("json");
    let forger = Forger::new(&app, me["id"].as_str().expect("id")).await;
    let now = chrono::Utc::now().timestamp();
    let other_key = {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        EncodingKey::from_ed_der(key.to_pkcs8_der().expect("der").as_bytes())
    };
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(forger.kid.clone());
        jsonwebtoken::encode(
            &header,
            &forger.claims(),
            &EncodingKey::from_secret(&forger.public_key),
        )
        .expect("signed")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "not.a.jwt".to_owned(), "well-formed"),
        (
            "expired",
            forger.with(|c| c["exp"] = json!(now - 120)),
            "expired",
        ),
        (
            "not yet valid",
            forger.with(|c| c["nbf"] = json!(now + 600)),
            "not valid yet",
        ),
        (
            "wrong audience",
            forger.with(|c| c["aud"] = json!("someone-else")),
            "audience",
        ),
        (
            "wrong issuer",
            forger.with(|c| c["iss"] = json!("evil")),
            "issuer",
        ),
        (
            "missing subject",
            forger.with(|c| {
                c.as_object_mut()
                    .map(|o| o.remove("sub"))
                    .map(drop)
                    .unwrap_or_default()
            }),
            "claim",
        ),
        (
            "refresh-typed jwt",
            forger.with(|c| c["token_type"] = json!("refresh")),
            "not an access token",
        ),
        (
            "refresh token as access token",
            tokens["refresh_token"].as_str().expect("token").to_owned(),
            "well-formed",
        ),
        (
            "alg none",
            unsigned(
                &json!({"alg": "none", "typ": "JWT", "kid": forger.kid}),
                &forger.claims(),
            ),
            "well-formed",
        ),
        (
            "hs256 with the public key",
            hs256_with_public_key,
            "algorithm",
        ),
        (
            "unknown kid",
            {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some("no-such-key".to_owned());
                jsonwebtoken::encode(&header, &forger.claims(), &forger.key).expect("signed")
            },
            "unknown key",
        ),
        (
            "forged signature with the real kid",
            {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(forger.kid.clone());
                jsonwebtoken::encode(&header, &forger.claims(), &other_key).expect("signed")
            },
            "signature",
        ),
    ];
    for (case, token, reason) in cases {
        let response = app.get_with_token("/v1/auth/me", &token).await;

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        let problem = assert_problem(response, StatusCode::UNAUTHORIZED).await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(
            detail.contains(reason),
            "{case}: {detail:?} should mention {reason:?}"
        );
    }
    // The control: the forger's honest token is accepted.
    let honest = app
        .get_with_token("/v1/auth/me", &forger.sign(&forger.claims()))
        .await;
    assert_eq!(honest.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_within_the_clock_skew_leeway_is_accepted() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let me: Value = app
        .get_with_token(
            "/v1/auth/me",
            tokens["access_token"].as_str().expect("token"),
        )
        .await
        .json()
        .await
        .expect("json");
    let forger = Forger::new(&app, me["id"].as_str().expect("id")).await;
    let now = chrono::Utc::now().timestamp();

    let response = app
        .get_with_token("/v1/auth/me", &forger.with(|c| c["exp"] = json!(now - 5)))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_jwks_publishes_the_key_that_signs_access_tokens() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let token = tokens["access_token"].as_str().expect("token");

    let jwks: Value = app
        .request(reqwest::Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");

    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the token's kid is published");
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    let key =
        jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().expect("x")).expect("key");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["gocommerce-api"]);
    validation.set_issuer(&["gocommerce"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("verifies")
        .claims;
    for claim in ["iss", "aud", "sub", "exp", "iat", "role", "token_type"] {
        assert!(claims.get(claim).is_some(), "claim {claim} present");
    }
    assert_eq!(claims["token_type"], "access");
}
