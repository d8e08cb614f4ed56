//! The order service's errors and how each reaches a client.

use gocommerce_platform::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("order not found")]
    NotFound,
    #[error("{0}")]
    FailedPrecondition(String),
    /// A backend answered with a status the caller should see as is.
    #[error("{}", .0.message())]
    Backend(tonic::Status),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<OrderError> for tonic::Status {
    fn from(error: OrderError) -> Self {
        let code = match &error {
            OrderError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            OrderError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            OrderError::NotFound => ErrorCode::NotFound,
            OrderError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            OrderError::Backend(status) => {
                let code = ErrorCode::from_grpc(status.code());
                if code == ErrorCode::Internal {
                    return gocommerce_platform::error::internal(&error);
                }
                code
            }
            OrderError::Database(e) => return gocommerce_platform::error::database(&error, e),
        };
        let mut status = code.status(error.to_string());
        // A backend that asked to be retried later (its database out, say)
        // asks the same of our client.
        if let OrderError::Backend(backend) = &error
            && let Some(retry_after) = backend.metadata().get("retry-after")
        {
            status
                .metadata_mut()
                .insert("retry-after", retry_after.clone());
        }
        status
    }
}
