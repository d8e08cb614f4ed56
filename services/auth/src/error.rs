//! The auth service's errors and how each reaches a client.

use std::time::Duration;

use gocommerce_platform::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The same error whether the email exists or not.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The password given as the current one is not the account's.
    #[error("current_password: is not the account's password")]
    WrongCurrentPassword,
    #[error("the password was changed meanwhile, try again")]
    PasswordChangedMeanwhile,
    #[error("too many failed logins, retry later")]
    Throttled { retry_after: Duration },
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidRefreshToken,
    #[error("the reset token is invalid, expired or used")]
    InvalidResetToken,
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("account not found")]
    NotFound,
    /// Only told to someone who proved they hold the account's password or
    /// an access token of it.
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error(transparent)]
    Profile(#[from] crate::profiles::ProfileError),
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        let code = match &error {
            AuthError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            AuthError::PasswordChangedMeanwhile => ErrorCode::Aborted,
            AuthError::EmailTaken => ErrorCode::AlreadyExists,
            AuthError::InvalidCredentials
            | AuthError::InvalidRefreshToken
            | AuthError::InvalidResetToken
            | AuthError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AuthError::Throttled { retry_after } => {
                let mut status = ErrorCode::ResourceExhausted.status(error.to_string());
                if let Ok(value) = retry_after.as_secs().max(1).to_string().parse() {
                    status.metadata_mut().insert("retry-after", value);
                }
                return status;
            }
            AuthError::PermissionDenied(_)
            | AuthError::WrongCurrentPassword
            | AuthError::AccountDisabled => ErrorCode::PermissionDenied,
            AuthError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            AuthError::NotFound => ErrorCode::NotFound,
            AuthError::Profile(crate::profiles::ProfileError::Unavailable(_)) => {
                // A registration wrote nothing: the client may simply try
                // again.
                return ErrorCode::Unavailable
                    .status("the user service is unavailable, retry later");
            }
            AuthError::Database(e) => return gocommerce_platform::error::database(&error, e),
            AuthError::Hashing(_) | AuthError::Signing(_) | AuthError::Profile(_) => {
                return gocommerce_platform::error::internal(&error);
            }
        };
        code.status(error.to_string())
    }
}
