//! Who may call what. The caller comes from the gateway's metadata; peer
//! services call the internal RPCs without any. A customer may only name
//! their own user id, an admin anyone.

use gocommerce_platform::Caller;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::error::UserError;

fn caller(metadata: &MetadataMap) -> Result<Option<Caller>, UserError> {
    Caller::optional_from_metadata(metadata)
        .map_err(|status| UserError::Unauthenticated(status.message().to_owned()))
}

/// For RPCs a user calls about their own data: a caller is required, and a
/// customer may only name themselves.
pub fn owner_or_admin(metadata: &MetadataMap, user_id: Uuid) -> Result<Caller, UserError> {
    let caller = caller(metadata)?.ok_or_else(|| {
        UserError::Unauthenticated("this operation needs an authenticated caller".to_owned())
    })?;
    if caller.may_access(user_id) {
        Ok(caller)
    } else {
        Err(UserError::PermissionDenied(
            "customers may only access their own profile".to_owned(),
        ))
    }
}

/// For internal RPCs: peer services (no caller) and admins may, customers
/// may not.
pub fn peer_or_admin(metadata: &MetadataMap) -> Result<(), UserError> {
    match caller(metadata)? {
        Some(caller) if !caller.is_admin() => Err(UserError::PermissionDenied(
            "this operation is for services and admins only".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// For RPCs only a peer service calls: no caller at all. A request through
/// the gateway always names its caller, so no client reaches these.
pub fn peer(metadata: &MetadataMap) -> Result<(), UserError> {
    match caller(metadata)? {
        None => Ok(()),
        Some(_) => Err(UserError::PermissionDenied(
            "this operation is for services only".to_owned(),
        )),
    }
}

/// For admin-only RPCs: an admin caller is required.
pub fn admin(metadata: &MetadataMap) -> Result<(), UserError> {
    match caller(metadata)? {
        Some(caller) if caller.is_admin() => Ok(()),
        Some(_) => Err(UserError::PermissionDenied(
            "this operation is for admins only".to_owned(),
        )),
        None => Err(UserError::Unauthenticated(
            "this operation needs an authenticated caller".to_owned(),
        )),
    }
}
