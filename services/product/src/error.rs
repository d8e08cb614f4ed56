//! The product service's errors and how each reaches a client.

use gocommerce_platform::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A status to pass on as it is: unreadable caller metadata, a broken stream.
    #[error("{}", .0.message())]
    Status(tonic::Status),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Pipeline(#[from] gocommerce_platform::pipeline::PipelineError),
}

impl ProductError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

impl From<ProductError> for tonic::Status {
    fn from(error: ProductError) -> Self {
        let code = match &error {
            ProductError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ProductError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            ProductError::NotFound(_) => ErrorCode::NotFound,
            ProductError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            ProductError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            ProductError::Status(status) => return status.clone(),
            ProductError::Database(e) => return gocommerce_platform::error::database(&error, e),
            ProductError::Pipeline(e) => return gocommerce_platform::error::database(&error, e),
        };
        code.status(error.to_string())
    }
}
