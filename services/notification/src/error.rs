//! The notification service's errors and how each reaches a client.

use gocommerce_platform::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker error: {0}")]
    Broker(#[from] gocommerce_platform::broker::BrokerError),
}

impl From<NotificationError> for tonic::Status {
    fn from(error: NotificationError) -> Self {
        let code = match &error {
            NotificationError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            NotificationError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            NotificationError::Broker(_) => {
                return ErrorCode::Unavailable
                    .status("the message broker is unavailable, retry later");
            }
            NotificationError::Database(e) => {
                return gocommerce_platform::error::database(&error, e);
            }
        };
        code.status(error.to_string())
    }
}
