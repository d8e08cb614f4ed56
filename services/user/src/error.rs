//! The user service's errors and how each reaches a client.

use gocommerce_platform::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("no profile for this user")]
    ProfileNotFound,
    #[error("no such address in this user's address book")]
    AddressNotFound,
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl UserError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

impl From<UserError> for tonic::Status {
    fn from(error: UserError) -> Self {
        let code = match &error {
            UserError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            UserError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            UserError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            UserError::ProfileNotFound | UserError::AddressNotFound => ErrorCode::NotFound,
            UserError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            UserError::Aborted(_) => ErrorCode::Aborted,
            UserError::Database(e) => return gocommerce_platform::error::database(&error, e),
        };
        code.status(error.to_string())
    }
}
