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
        let axum::Json(value) = axum::Json::<T>::from_request(request, state)
            .await
            .map_err(json_problem)?;
        let errors = value.validate();
        if errors.is_empty() {
            Ok(Self(value))
        } else {
            Err(Problem::validation(errors))
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the body must be JSON with Content-Type: application/json",
        ),
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
                .filter_map(|v| v.trim().parse::<IpAddr>().ok())
                .next_back()
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
