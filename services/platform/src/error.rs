//! The one error-code type of GoCommerce. Services return it as a gRPC status,
//! the gateway turns the gRPC status into an HTTP status, so both sides agree
//! on a single table. Internal details never reach a client: an internal error
//! is logged where it happens and leaves as a bare "internal error", and a
//! database outage as "the database is unavailable, retry later".

use std::fmt::Display;

use http::StatusCode;
use tonic::Code;

/// What went wrong, as far as a client needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range: 400.
    InvalidArgument,
    /// No valid credentials: 401.
    Unauthenticated,
    /// Valid credentials without the right to do this: 403.
    PermissionDenied,
    /// The resource does not exist (or is not the caller's to see): 404.
    NotFound,
    /// A resource with the same unique key exists: 409.
    AlreadyExists,
    /// A concurrent change won; retrying may succeed: 409.
    Aborted,
    /// The resource's state forbids this operation: 409.
    FailedPrecondition,
    /// A quota or rate limit was hit: 429.
    ResourceExhausted,
    /// A dependency is down; retrying later may succeed: 503.
    Unavailable,
    /// The deadline passed before an answer: 504.
    DeadlineExceeded,
    /// A bug or an unexpected failure: 500, with no detail.
    Internal,
}

impl ErrorCode {
    pub fn grpc(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::Aborted => Code::Aborted,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Internal => Code::Internal,
        }
    }

    /// The gateway's mapping. FAILED_PRECONDITION is 409 Conflict: in this API
    /// it always means "the resource's current state forbids this", which is
    /// what 409 says; a malformed request is INVALID_ARGUMENT (400) instead.
    pub fn http(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted | Self::FailedPrecondition => StatusCode::CONFLICT,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every gRPC code maps to one of ours; the ones a client cannot act on
    /// (UNKNOWN, DATA_LOSS, UNIMPLEMENTED, …) become `Internal`.
    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::Aborted => Self::Aborted,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::Unavailable => Self::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => Self::DeadlineExceeded,
            _ => Self::Internal,
        }
    }

    /// A short human title, used as the problem+json `title`.
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidArgument => "Invalid request",
            Self::Unauthenticated => "Unauthenticated",
            Self::PermissionDenied => "Forbidden",
            Self::NotFound => "Not found",
            Self::AlreadyExists => "Already exists",
            Self::Aborted => "Conflict",
            Self::FailedPrecondition => "Conflict",
            Self::ResourceExhausted => "Too many requests",
            Self::Unavailable => "Service unavailable",
            Self::DeadlineExceeded => "Gateway timeout",
            Self::Internal => "Internal server error",
        }
    }

    /// A stable slug for the problem+json `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid-argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission-denied",
            Self::NotFound => "not-found",
            Self::AlreadyExists => "already-exists",
            Self::Aborted => "aborted",
            Self::FailedPrecondition => "failed-precondition",
            Self::ResourceExhausted => "resource-exhausted",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Internal => "internal",
        }
    }

    /// A status a client may see. For `Internal` the message is replaced.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        match self {
            Self::Internal => tonic::Status::internal("internal error"),
            code => tonic::Status::new(code.grpc(), message),
        }
    }
}

/// Logs an unexpected failure with its full detail and returns the bare
/// status a client may see.
#[track_caller]
pub fn internal(err: impl Display) -> tonic::Status {
    let location = std::panic::Location::caller();
    tracing::error!(error = %err, at = %location, "internal error");
    tonic::Status::internal("internal error")
}

/// The Retry-After, in seconds, of an answer that a dependency is
/// unavailable, unless the service said otherwise: the gRPC channels try a
/// lost connection again after a second, and a pool a refused connect
/// sooner, so a second later is when trying again can first succeed.
pub const RETRY_UNAVAILABLE_SECS: u64 = 1;

/// A failed database call that can tell an outage from any other failure.
pub trait DatabaseFailure {
    /// Whether the database cannot be reached or refuses work for now.
    fn is_outage(&self) -> bool;
}

impl DatabaseFailure for sqlx::Error {
    fn is_outage(&self) -> bool {
        crate::db::is_outage(self)
    }
}

impl DatabaseFailure for crate::pipeline::PipelineError {
    fn is_outage(&self) -> bool {
        crate::pipeline::PipelineError::is_outage(self)
    }
}

/// Logs a failed database call (`err`, caused by `cause`) with its full
/// detail and returns what a client may see: for an outage, UNAVAILABLE
/// with a Retry-After of a second, which the gateway answers as 503, since
/// trying again later is the remedy; for anything else, [`internal`].
#[track_caller]
pub fn database(err: impl Display, cause: &dyn DatabaseFailure) -> tonic::Status {
    if !cause.is_outage() {
        return internal(err);
    }
    let location = std::panic::Location::caller();
    tracing::warn!(error = %err, at = %location, "database unavailable");
    let mut status = ErrorCode::Unavailable.status("the database is unavailable, retry later");
    status
        .metadata_mut()
        .insert("retry-after", RETRY_UNAVAILABLE_SECS.into());
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_asks_the_client_to_retry_and_hides_the_detail() {
        let outage = database("pool timed out", &sqlx::Error::PoolTimedOut);
        let failure = database("no row", &sqlx::Error::RowNotFound);

        assert_eq!(outage.code(), Code::Unavailable);
        assert_eq!(outage.message(), "the database is unavailable, retry later");
        assert_eq!(
            outage
                .metadata()
                .get("retry-after")
                .map(|v| v.to_str().ok()),
            Some(Some("1"))
        );
        assert_eq!(failure.code(), Code::Internal);
        assert_eq!(failure.message(), "internal error");
    }

    #[test]
    fn every_code_round_trips_through_grpc() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::Aborted,
            ErrorCode::FailedPrecondition,
            ErrorCode::ResourceExhausted,
            ErrorCode::Unavailable,
            ErrorCode::DeadlineExceeded,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_grpc(code.grpc()), code);
        }
    }

    #[test]
    fn grpc_codes_map_to_the_documented_http_statuses() {
        let http = |code| ErrorCode::from_grpc(code).http().as_u16();
        assert_eq!(http(Code::InvalidArgument), 400);
        assert_eq!(http(Code::Unauthenticated), 401);
        assert_eq!(http(Code::PermissionDenied), 403);
        assert_eq!(http(Code::NotFound), 404);
        assert_eq!(http(Code::AlreadyExists), 409);
        assert_eq!(http(Code::Aborted), 409);
        assert_eq!(http(Code::FailedPrecondition), 409);
        assert_eq!(http(Code::ResourceExhausted), 429);
        assert_eq!(http(Code::Unavailable), 503);
        assert_eq!(http(Code::DeadlineExceeded), 504);
        assert_eq!(http(Code::Unknown), 500);
        assert_eq!(http(Code::DataLoss), 500);
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let status = ErrorCode::Internal.status("connection refused to 10.0.0.3");
        assert_eq!(status.message(), "internal error");
        let status = internal("password column missing");
        assert_eq!(status.message(), "internal error");
    }
}
