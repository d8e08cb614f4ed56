//! Who is calling a service. The gateway verifies the access token and passes
//! the caller's id and role in gRPC metadata; each service then decides for
//! itself what that caller may do. Only the gateway and named peer services
//! can reach a service (Kubernetes NetworkPolicies), which is what makes the
//! metadata trustworthy.

use std::fmt;
use std::str::FromStr;

use tonic::metadata::{MetadataMap, MetadataValue};
use uuid::Uuid;

use crate::ErrorCode;

pub const USER_ID_KEY: &str = "x-gocommerce-user-id";
pub const ROLE_KEY: &str = "x-gocommerce-role";

/// An account's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Self::Customer),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
}

impl Caller {
    /// The caller of a request that must be authenticated.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Self, tonic::Status> {
        Self::optional_from_metadata(metadata)?.ok_or_else(|| {
            ErrorCode::Unauthenticated.status("this operation needs an authenticated caller")
        })
    }

    /// The caller, if the request carries one.
    pub fn optional_from_metadata(metadata: &MetadataMap) -> Result<Option<Self>, tonic::Status> {
        let (Some(id), Some(role)) = (metadata.get(USER_ID_KEY), metadata.get(ROLE_KEY)) else {
            return Ok(None);
        };
        let bad = || ErrorCode::Unauthenticated.status("malformed caller metadata");
        let user_id = id
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(bad)?;
        let role = role
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok(Some(Self { user_id, role }))
    }

    /// Writes the caller into outgoing metadata.
    pub fn write_to(&self, metadata: &mut MetadataMap) {
        // A UUID and a role name are always valid ASCII metadata.
        if let Ok(id) = MetadataValue::try_from(self.user_id.to_string()) {
            metadata.insert(USER_ID_KEY, id);
        }
        metadata.insert(ROLE_KEY, MetadataValue::from_static(self.role.as_str()));
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// PERMISSION_DENIED unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), tonic::Status> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ErrorCode::PermissionDenied.status("this operation is for admins only"))
        }
    }

    /// Whether the caller may see what `owner` owns: their own, or anything for an admin.
    pub fn may_access(&self, owner: Uuid) -> bool {
        self.is_admin() || self.user_id == owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_survives_a_round_trip_through_metadata() {
        let caller = Caller {
            user_id: Uuid::new_v4(),
            role: Role::Admin,
        };
        let mut metadata = MetadataMap::new();
        caller.write_to(&mut metadata);
        assert_eq!(Caller::from_metadata(&metadata).expect("valid"), caller);
    }

    #[test]
    fn missing_or_malformed_metadata_is_unauthenticated() {
        let status = Caller::from_metadata(&MetadataMap::new()).expect_err("missing");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        let mut metadata = MetadataMap::new();
        metadata.insert(USER_ID_KEY, MetadataValue::from_static("not-a-uuid"));
        metadata.insert(ROLE_KEY, MetadataValue::from_static("admin"));
        let status = Caller::from_metadata(&metadata).expect_err("malformed");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn customers_may_only_access_their_own() {
        let me = Caller {
            user_id: Uuid::new_v4(),
            role: Role::Customer,
        };
        assert!(me.may_access(me.user_id));
        assert!(!me.may_access(Uuid::new_v4()));
        assert_eq!(
            me.require_admin().expect_err("customer").code(),
            tonic::Code::PermissionDenied
        );
    }
}
