//! The payment service's errors and how each reaches a client.

use gocommerce_platform::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("no payment for this order")]
    NotFound,
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("the processor did not answer before the deadline; the charge goes on, ask again")]
    DeadlineExceeded,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("charge worker failed: {0}")]
    Worker(String),
}

impl From<PaymentError> for tonic::Status {
    fn from(error: PaymentError) -> Self {
        let code = match &error {
            PaymentError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            PaymentError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            PaymentError::NotFound => ErrorCode::NotFound,
            PaymentError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            PaymentError::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            PaymentError::Database(e) => return gocommerce_platform::error::database(&error, e),
            PaymentError::Worker(_) => return gocommerce_platform::error::internal(&error),
        };
        code.status(error.to_string())
    }
}
