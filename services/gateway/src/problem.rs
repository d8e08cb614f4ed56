//! RFC 9457 problem details: every error the gateway answers, whether its own
//! (validation, authentication, rate limits) or a backend's gRPC status, which
//! is mapped through the platform's single error-code table.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gocommerce_platform::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI identifying the kind of problem, e.g. `urn:gocommerce:problem:invalid-argument`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What is wrong with this request, in words a client developer can act on.
    pub detail: String,
    /// Per-field validation errors, when the request failed validation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after: Option<u64>,
    #[serde(skip)]
    www_authenticate: bool,
}

/// One invalid field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name in the request body or query.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::with_status(code.http(), code.slug(), code.title(), detail)
    }

    pub fn with_status(
        status: StatusCode,
        slug: &str,
        title: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:gocommerce:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            www_authenticate: false,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let mut problem = Self::new(
            ErrorCode::InvalidArgument,
            format!("invalid fields: {}", fields.join(", ")),
        );
        problem.errors = errors;
        problem
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(ErrorCode::Unauthenticated, detail);
        problem.www_authenticate = true;
        problem
    }

    pub fn too_many_requests(retry_after_secs: u64, detail: impl Into<String>) -> Self {
        let mut problem = Self::new(ErrorCode::ResourceExhausted, detail);
        problem.retry_after = Some(retry_after_secs.max(1));
        problem
    }

    /// A backend's gRPC status as a problem. `backend` names the service for
    /// availability errors; internal errors say nothing more.
    pub fn from_status(status: &tonic::Status, backend: &str) -> Self {
        let code = ErrorCode::from_grpc(status.code());
        let detail = match code {
            ErrorCode::Internal => "an unexpected error occurred".to_owned(),
            ErrorCode::Unavailable => format!("the {backend} service is unavailable, retry later"),
            ErrorCode::DeadlineExceeded => format!("the {backend} service did not answer in time"),
            _ => status.message().to_owned(),
        };
        if code == ErrorCode::Internal {
            tracing::error!(backend, grpc.code = ?status.code(), grpc.message = status.message(), "backend failed");
        }
        let mut problem = Self::new(code, detail);
        if code == ErrorCode::Unauthenticated {
            problem.www_authenticate = true;
        }
        problem.retry_after = status
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if code == ErrorCode::Unavailable && problem.retry_after.is_none() {
            // Unavailable is always worth retrying, and a service that said
            // nothing of when (auth, after retrying the user service itself;
            // the gateway's own channel to a backend it cannot reach) means
            // what a database outage says.
            problem.retry_after = Some(gocommerce_platform::error::RETRY_UNAVAILABLE_SECS);
        }
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let www_authenticate = self.www_authenticate.then(|| {
            // The detail is ours; quotes are replaced so the header stays well formed.
            format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.detail.replace('"', "'")
            )
        });
        // serde_json's writer, not ours: a body our writer could not write is
        // answered with a problem, so a problem must not depend on it.
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(value) = www_authenticate.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Unknown paths.
pub async fn not_found() -> Problem {
    Problem::new(ErrorCode::NotFound, "no such route")
}

/// Known paths asked with a method they do not take; the router adds the
/// `Allow` header.
pub async fn method_not_allowed() -> Problem {
    Problem::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "the route does not take this method; the Allow header lists those it takes",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_internal_errors_hide_their_message() {
        let problem =
            Problem::from_status(&tonic::Status::internal("db password is hunter2"), "auth");
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
    }

    #[test]
    fn an_unavailable_backend_is_retried_when_it_says_or_else_in_a_second() {
        let mut later = tonic::Status::unavailable("the database is unavailable");
        later.metadata_mut().insert(
            "retry-after",
            tonic::metadata::MetadataValue::from_static("7"),
        );
        let unreachable = tonic::Status::unavailable("connection refused");

        let later = Problem::from_status(&later, "product").into_response();
        let unreachable = Problem::from_status(&unreachable, "product").into_response();

        assert_eq!(later.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(later.headers()[header::RETRY_AFTER], "7");
        assert_eq!(unreachable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unreachable.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_throttled_backend_call_carries_retry_after() {
        let mut status = tonic::Status::resource_exhausted("too many failed logins");
        status.metadata_mut().insert(
            "retry-after",
            tonic::metadata::MetadataValue::from_static("30"),
        );
        let response = Problem::from_status(&status, "auth").into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
