//! The calls auth makes to the user service, which keeps a profile of every
//! account: created before the account commits (so no account ever lacks a
//! profile), retried with backoff until it succeeds or its time budget runs
//! out, and told about role and status changes (see `mirror`).

use std::time::Duration;

use gocommerce_platform::Role;
use gocommerce_platform::grpc::{self, GrpcError, Traced};
use gocommerce_platform::time::timestamp;
use gocommerce_proto::auth::v1 as auth_pb;
use gocommerce_proto::user::v1 as pb;
use gocommerce_proto::user::v1::user_service_client::UserServiceClient;
use tonic::Code;
use uuid::Uuid;

use crate::db::AccountRow;

/// The first wait between attempts; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The user service could not be reached in time; nothing was committed.
    #[error("the user service is unavailable: {0}")]
    Unavailable(String),
    /// The user service refused the request: a bug or a contract mismatch.
    #[error("the user service refused the profile: {0}")]
    Refused(String),
}

/// A client of the user service for the calls auth makes.
#[derive(Debug, Clone)]
pub struct Profiles {
    client: UserServiceClient<Traced>,
}

impl Profiles {
    /// A lazily connected client: auth starts even while the user service does not.
    pub fn connect(url: &str) -> Result<Self, GrpcError> {
        Ok(Self {
            client: UserServiceClient::new(grpc::traced(url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
        })
    }

    /// Creates the account's profile, or finds the one an earlier attempt made.
    #[tracing::instrument(skip_all, fields(user_id = %user_id), err)]
    pub async fn create(
        &self,
        user_id: Uuid,
        email: &str,
        name: &str,
        role: Role,
        budget: Duration,
    ) -> Result<(), ProfileError> {
        let message = pb::CreateProfileRequest {
            user_id: user_id.to_string(),
            email: email.to_owned(),
            name: name.to_owned(),
            role: proto_role(role).into(),
        };
        retry(budget, || {
            let mut client = self.client.clone();
            let message = message.clone();
            async move { client.create_profile(message).await.map(drop) }
        })
        .await
    }

    /// Copies the accounts' role and disabled status, with their versions,
    /// onto their profiles in one call, tried once: the mirror loop sends
    /// again what this did not.
    pub async fn sync_once(
        &self,
        accounts: &[AccountRow],
        timeout: Duration,
    ) -> Result<(), ProfileError> {
        let message = pb::SyncAccountsRequest {
            accounts: accounts
                .iter()
                .map(|account| pb::AccountState {
                    user_id: account.id.to_string(),
                    role: proto_role(account.role()).into(),
                    disabled_at: account.disabled_at.map(timestamp),
                    version: account.mirror_version,
                })
                .collect(),
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(timeout, client.sync_accounts(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) if transient(status.code()) => {
                Err(ProfileError::Unavailable(status.message().to_owned()))
            }
            Ok(Err(status)) => Err(ProfileError::Refused(status.message().to_owned())),
            Err(_) => Err(ProfileError::Unavailable("timed out".to_owned())),
        }
    }
}

fn proto_role(role: Role) -> auth_pb::Role {
    match role {
        Role::Customer => auth_pb::Role::Customer,
        Role::Admin => auth_pb::Role::Admin,
    }
}

/// Whether a failed call may succeed when tried again.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
    )
}

async fn retry<F, Fut>(budget: Duration, mut call: F) -> Result<(), ProfileError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status = match tokio::time::timeout(remaining, call()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(status)) if !transient(status.code()) => {
                return Err(ProfileError::Refused(status.message().to_owned()));
            }
            Ok(Err(status)) => status.message().to_owned(),
            Err(_) => "timed out".to_owned(),
        };
        let now = tokio::time::Instant::now();
        if now + backoff >= deadline {
            return Err(ProfileError::Unavailable(status));
        }
        tracing::warn!(error = %status, backoff_ms = backoff.as_millis() as u64, "user service call failed, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
