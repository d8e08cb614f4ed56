//! Request extractors that turn every malformed request into a problem: JSON
//! bodies (syntax, shape, unknown fields, size, content type) followed by the
//! body's own validation, and the client's address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use gocommerce_platform::ErrorCode;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};
use crate::startup::AppState;

/// A body that checks its own fields after deserialising.
pub trait Validate {
    fn validate(&self) -> Vec<FieldError>;
}

/// Collects field errors: `check(&mut errors, "email", validate::email(..))`.
pub fn check<T>(errors: &mut Vec<FieldError>, field: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(message) => {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            });
            None
        }
    }
}

/// A JSON body that deserialised and validated.
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| json_problem(JsonRejection::from(e)))?;
        valid_object(&bytes).map(Self)
    }
}

/// A JSON body that may be left out: no body, only whitespace or `null` is
/// `T::default()`; anything else is read as [`ValidJson`] reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Validate + Default,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| json_problem(JsonRejection::from(e)))?;
        if matches!(bytes.trim_ascii(), b"" | b"null") {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        valid_object(&bytes).map(Self)
    }
}

/// `bytes` as a JSON object of `T` that passes its validation.
fn valid_object<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, Problem> {
    // serde would also build a struct from a JSON array of its fields in
    // order; every body of this API is an object, so anything else is refused.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::new(
            ErrorCode::InvalidArgument,
            "the body must be a JSON object",
        ));
    }
    let axum::Json(value) = axum::Json::<T>::from_bytes(bytes).map_err(json_problem)?;
    let errors = value.validate();
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(Problem::validation(errors))
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

fn unsupported_media_type() -> Problem {
    Problem::with_status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        "the body must be JSON with Content-Type: application/json",
    )
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        JsonRejection::JsonSyntaxError(e) => Problem::new(
            ErrorCode::InvalidArgument,
            format!("the body is not valid JSON: {}", source_message(&e)),
        ),
        JsonRejection::JsonDataError(e) => Problem::new(
            ErrorCode::InvalidArgument,
            format!("the body does not match the schema: {}", source_message(&e)),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::with_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "the body is larger than this API accepts",
            )
        }
        other => Problem::new(ErrorCode::InvalidArgument, other.body_text()),
    }
}

/// serde's own words ("missing field `email` at line 1 column 2") without
/// axum's preamble.
fn source_message(error: &dyn std::error::Error) -> String {
    let mut innermost = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        innermost = e.to_string();
        source = e.source();
    }
    innermost
}

/// The client's address: the peer, or with `GATEWAY_TRUST_FORWARDED_FOR` the
/// last `X-Forwarded-For` entry, the one our own proxy appended.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(parts, state.trust_forwarded_for)))
    }
}

pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| {
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                // Only the last entry is the trusted proxy's; the ones before
                // are the client's to make up, so a last entry that is not an
                // address falls back to the peer, never to an earlier one.
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        })
        .flatten();
    forwarded
        .or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Path parameters; a malformed one (an id that is not a UUID) is a 400 problem.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection: PathRejection| {
                Problem::new(
                    ErrorCode::InvalidArgument,
                    format!("invalid path parameter: {}", source_message(&rejection)),
                )
            })
    }
}

/// Query parameters; unknown, malformed or mistyped ones are a 400 problem.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection: QueryRejection| {
                    Problem::new(
                        ErrorCode::InvalidArgument,
                        format!("invalid query: {}", source_message(&rejection)),
                    )
                })?;
        let errors = value.validate();
        if errors.is_empty() {
            Ok(Self(value))
        } else {
            Err(Problem::validation(errors))
        }
    }
}

/// Whole-number body fields. JSON Schema counts `3.0` as an integer, and so
/// do many clients' serialisers; serde does not. These accept any JSON number
/// without a fractional part that fits the field, and refuse the rest with a
/// message saying so: `#[serde(deserialize_with = "whole::deserialize")]`, or
/// `whole::option` with `#[serde(default)]` for optional fields.
pub mod whole {
    use serde::de::{Deserialize, Deserializer, Error};

    fn to_i128(number: &serde_json::Number) -> Option<i128> {
        if let Some(n) = number.as_i64() {
            return Some(i128::from(n));
        }
        if let Some(n) = number.as_u64() {
            return Some(i128::from(n));
        }
        let f = number.as_f64()?;
        // Beyond ±2^63 every f64 is whole, but no field here is that large.
        (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i128)
    }

    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        let number = serde_json::Number::deserialize(deserializer)?;
        to_i128(&number)
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number in range")))
    }

    pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        match Option::<serde_json::Number>::deserialize(deserializer)? {
            None => Ok(None),
            Some(number) => to_i128(&number)
                .and_then(|n| T::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    D::Error::custom(format!("{number} is not a whole number in range"))
                }),
        }
    }

    #[cfg(test)]
    mod tests {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[serde(deserialize_with = "super::deserialize")]
            n: u32,
            #[serde(default, deserialize_with = "super::option")]
            m: Option<i64>,
        }

        fn parse(json: &str) -> Result<Body, String> {
            serde_json::from_str(json).map_err(|e| e.to_string())
        }

        #[test]
        fn whole_numbers_are_accepted_in_any_json_spelling() {
            let body = parse(r#"{"n": 1462.0, "m": -5}"#).expect("whole");
            assert_eq!((body.n, body.m), (1462, Some(-5)));
            assert_eq!(parse(r#"{"n": 7}"#).expect("whole").m, None);
            assert_eq!(parse(r#"{"n": 1e3}"#).expect("whole").n, 1000);
        }

        #[test]
        fn fractions_out_of_range_values_and_other_types_are_refused() {
            for bad in [
                r#"{"n": 1.5}"#,
                r#"{"n": -1}"#,
                r#"{"n": 4294967296}"#,
                r#"{"n": "3"}"#,
                r#"{"n": 1, "m": 0.25}"#,
            ] {
                assert!(parse(bad).is_err(), "{bad}");
            }
            assert!(
                parse(r#"{"n": 1.5}"#)
                    .expect_err("fraction")
                    .contains("not a whole number")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(forwarded_for: &[&str]) -> Parts {
        let mut request = axum::http::Request::builder();
        for value in forwarded_for {
            request = request.header("x-forwarded-for", *value);
        }
        let (mut parts, ()) = request.body(()).expect("a request").into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 40000))));
        parts
    }

    #[test]
    fn the_client_is_the_last_forwarded_entry_only_when_it_is_an_address() {
        let peer = IpAddr::from([10, 0, 0, 9]);
        let proxy_said = IpAddr::from([203, 0, 113, 7]);

        let last = client_ip(&parts(&["198.51.100.1, 203.0.113.7"]), true);
        let last_header = client_ip(&parts(&["198.51.100.1", "203.0.113.7"]), true);
        let not_an_address = client_ip(&parts(&["198.51.100.1, 203.0.113.7:5678"]), true);
        let untrusted = client_ip(&parts(&["203.0.113.7"]), false);
        let none = client_ip(&parts(&[]), true);

        assert_eq!(last, proxy_said);
        assert_eq!(last_header, proxy_said);
        assert_eq!(
            not_an_address, peer,
            "never the client's own entry before it"
        );
        assert_eq!(untrusted, peer);
        assert_eq!(none, peer);
    }
}
