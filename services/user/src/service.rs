//! The `UserService` gRPC handlers.

use chrono::{DateTime, Utc};
use gocommerce_platform::db::Db;
use gocommerce_platform::time::{from_timestamp, timestamp};
use gocommerce_platform::validate::{self, EMAIL_MAX_CHARS};
use gocommerce_platform::{Role, page};
use gocommerce_proto::common::v1::PostalAddress;
use gocommerce_proto::user::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::access;
use crate::db::{self, AddressRow, NewPreferences, NewProfile, PreferencesRow, ProfileRow};
use crate::domain::{self, MAX_ADDRESSES, PostalFields, parse_uuid};
use crate::error::UserError;

const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone)]
pub struct UserService {
    pub db: Db,
}

fn profile_to_proto(row: &ProfileRow) -> pb::Profile {
    pb::Profile {
        id: row.id.to_string(),
        email: row.email.clone(),
        name: row.name.clone(),
        phone: row.phone.clone().unwrap_or_default(),
        role: domain::role_to_proto(&row.role) as i32,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
        disabled_at: row.disabled_at.map(timestamp),
    }
}

/// Most accounts one `SyncAccounts` takes.
const MAX_SYNCED_ACCOUNTS: usize = 100;

/// The request's accounts, checked, one per user: the highest version.
fn account_copies(states: Vec<pb::AccountState>) -> Result<Vec<db::AccountCopy>, UserError> {
    if states.len() > MAX_SYNCED_ACCOUNTS {
        return Err(UserError::invalid(format!(
            "accounts: at most {MAX_SYNCED_ACCOUNTS}"
        )));
    }
    let mut copies: Vec<db::AccountCopy> = Vec::with_capacity(states.len());
    for (i, state) in states.into_iter().enumerate() {
        let id = parse_uuid(&format!("accounts[{i}].user_id"), &state.user_id)?;
        let role = domain::role_from_proto(state.role)?.ok_or_else(|| {
            UserError::invalid(format!(
                "accounts[{i}].role: must be ROLE_CUSTOMER or ROLE_ADMIN"
            ))
        })?;
        let disabled_at = match &state.disabled_at {
            None => None,
            Some(at) => Some(from_timestamp(at).ok_or_else(|| {
                UserError::invalid(format!("accounts[{i}].disabled_at: not a valid time"))
            })?),
        };
        if state.version < 1 {
            return Err(UserError::invalid(format!(
                "accounts[{i}].version: must be at least 1"
            )));
        }
        let copy = db::AccountCopy {
            id,
            role,
            disabled_at,
            version: state.version,
        };
        match copies.iter_mut().find(|c| c.id == id) {
            Some(held) if held.version < copy.version => *held = copy,
            Some(_) => {}
            None => copies.push(copy),
        }
    }
    Ok(copies)
}

fn preferences_to_proto(row: &PreferencesRow) -> pb::Preferences {
    pb::Preferences {
        channels: Some(pb::NotificationChannels {
            email: row.email_enabled,
            sms: row.sms_enabled,
            push: row.push_enabled,
        }),
        locale: row.locale.clone(),
        marketing_opt_in: row.marketing_opt_in,
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn address_to_proto(row: &AddressRow) -> pb::Address {
    pb::Address {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        postal_address: Some(PostalAddress {
            name: row.name.clone(),
            line1: row.line1.clone(),
            line2: row.line2.clone(),
            city: row.city.clone(),
            region: row.region.clone(),
            postal_code: row.postal_code.clone(),
            country: row.country.clone(),
        }),
        is_default: row.is_default,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn page_token(row: &ProfileRow) -> String {
    page::token(row.created_at, row.id)
}

fn parse_page_token(token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, UserError> {
    if token.is_empty() {
        return Ok(None);
    }
    page::parse(token).map(Some).ok_or_else(|| {
        UserError::invalid(
            "page.page_token: malformed; pass back the next_page_token of a previous page",
        )
    })
}

impl UserService {
    async fn create_profile(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> Result<pb::CreateProfileResponse, UserError> {
        access::peer_or_admin(request.metadata())?;
        let request = request.into_inner();
        let user_id = parse_uuid("user_id", &request.user_id)?;
        let email = domain::email("email", &request.email)?;
        let name = domain::name("name", &request.name)?;
        // Registration creates customers; auth may leave the role unset.
        let role = domain::role_from_proto(request.role)?.unwrap_or(Role::Customer);

        let mut tx = self.db.begin().await?;
        let new = NewProfile {
            id: user_id,
            email: &email,
            name: &name,
            role,
        };
        let response = match db::insert_profile(&mut tx, &new).await? {
            Some(profile) => {
                tx.commit().await?;
                tracing::info!(user_id = %user_id, "profile created");
                pb::CreateProfileResponse {
                    profile: Some(profile_to_proto(&profile)),
                    created: true,
                }
            }
            None => {
                let existing = db::find_profile(&mut tx, user_id)
                    .await?
                    .ok_or(UserError::ProfileNotFound)?;
                tx.commit().await?;
                pb::CreateProfileResponse {
                    profile: Some(profile_to_proto(&existing)),
                    created: false,
                }
            }
        };
        Ok(response)
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<ProfileRow, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let mut conn = self.db.acquire().await?;
        let row = db::find_profile(&mut conn, user_id).await?;
        conn.keep();
        row.ok_or(UserError::ProfileNotFound)
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<ProfileRow, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let request = request.into_inner();
        let name = request
            .name
            .as_deref()
            .map(|raw| domain::name("name", raw))
            .transpose()?;
        let phone = request
            .phone
            .as_deref()
            .map(|raw| domain::phone("phone", raw))
            .transpose()?;
        let mut conn = self.db.acquire().await?;
        let row = if name.is_none() && phone.is_none() {
            db::find_profile(&mut conn, user_id).await?
        } else {
            db::update_profile(
                &mut conn,
                user_id,
                name.as_deref(),
                phone.as_ref().map(Option::as_deref),
            )
            .await?
        };
        conn.keep();
        row.ok_or(UserError::ProfileNotFound)
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<PreferencesRow, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let mut conn = self.db.acquire().await?;
        let row = db::find_preferences(&mut conn, user_id).await?;
        conn.keep();
        row.ok_or(UserError::ProfileNotFound)
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> Result<PreferencesRow, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let preferences = request
            .into_inner()
            .preferences
            .ok_or_else(|| UserError::invalid("preferences: is required"))?;
        // PUT semantics: a missing channel set would silently turn every
        // channel off, so it must be spelled out.
        let channels = preferences
            .channels
            .ok_or_else(|| UserError::invalid("preferences.channels: is required"))?;
        let locale = domain::locale("preferences.locale", &preferences.locale)?;
        let mut conn = self.db.acquire().await?;
        let row = db::replace_preferences(
            &mut conn,
            user_id,
            &NewPreferences {
                email: channels.email,
                sms: channels.sms,
                push: channels.push,
                locale: &locale,
                marketing_opt_in: preferences.marketing_opt_in,
            },
        )
        .await?;
        conn.keep();
        row.ok_or(UserError::ProfileNotFound)
    }

    async fn list_addresses(
        &self,
        request: Request<pb::ListAddressesRequest>,
    ) -> Result<Vec<AddressRow>, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let mut conn = self.db.acquire().await?;
        db::find_profile(&mut conn, user_id)
            .await?
            .ok_or(UserError::ProfileNotFound)?;
        let rows = db::list_addresses(&mut conn, user_id).await?;
        conn.keep();
        Ok(rows)
    }

    async fn create_address(
        &self,
        request: Request<pb::CreateAddressRequest>,
    ) -> Result<AddressRow, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let request = request.into_inner();
        let address = request
            .postal_address
            .ok_or_else(|| UserError::invalid("postal_address: is required"))?;
        let fields = PostalFields {
            name: address.name,
            line1: address.line1,
            line2: address.line2,
            city: address.city,
            region: address.region,
            postal_code: address.postal_code,
            country: address.country,
        }
        .validate("postal_address.")?;

        let mut tx = self.db.begin().await?;
        db::lock_profile(&mut tx, user_id)
            .await?
            .ok_or(UserError::ProfileNotFound)?;
        let count = db::count_addresses(&mut tx, user_id).await?;
        if count >= MAX_ADDRESSES {
            return Err(UserError::FailedPrecondition(format!(
                "the address book is full: at most {MAX_ADDRESSES} addresses; delete one first"
            )));
        }
        let is_default = request.is_default || count == 0;
        if is_default {
            db::clear_default(&mut tx, user_id).await?;
        }
        let row = db::insert_address(&mut tx, user_id, &fields, is_default).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, address_id = %row.id, is_default, "address created");
        Ok(row)
    }

    async fn get_address(
        &self,
        request: Request<pb::GetAddressRequest>,
    ) -> Result<AddressRow, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        let address_id = parse_uuid("address_id", &request.get_ref().address_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let mut conn = self.db.acquire().await?;
        let row = db::find_address(&mut conn, user_id, address_id).await?;
        conn.keep();
        row.ok_or(UserError::AddressNotFound)
    }

    async fn update_address(
        &self,
        request: Request<pb::UpdateAddressRequest>,
    ) -> Result<AddressRow, UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        let address_id = parse_uuid("address_id", &request.get_ref().address_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        let request = request.into_inner();

        let mut tx = self.db.begin().await?;
        db::lock_profile(&mut tx, user_id)
            .await?
            .ok_or(UserError::AddressNotFound)?;
        let current = db::find_address(&mut tx, user_id, address_id)
            .await?
            .ok_or(UserError::AddressNotFound)?;
        let stored = current.fields();
        let fields = PostalFields {
            name: request.name.unwrap_or(stored.name),
            line1: request.line1.unwrap_or(stored.line1),
            line2: request.line2.unwrap_or(stored.line2),
            city: request.city.unwrap_or(stored.city),
            region: request.region.unwrap_or(stored.region),
            postal_code: request.postal_code.unwrap_or(stored.postal_code),
            country: request.country.unwrap_or(stored.country),
        }
        .validate("")?;
        let is_default = request.is_default.unwrap_or(current.is_default);
        if fields == current.fields() && is_default == current.is_default {
            return Ok(current);
        }
        if is_default && !current.is_default {
            db::clear_default(&mut tx, user_id).await?;
        }
        // Gone if it was deleted after it was read: deleting takes the
        // profile's lock too, but an address removed some other way (by hand,
        // with the profile) must still be a 404, not a server error.
        let row = db::update_address(&mut tx, address_id, &fields, is_default)
            .await?
            .ok_or(UserError::AddressNotFound)?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, address_id = %address_id, is_default, "address updated");
        Ok(row)
    }

    async fn delete_address(
        &self,
        request: Request<pb::DeleteAddressRequest>,
    ) -> Result<(), UserError> {
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        let address_id = parse_uuid("address_id", &request.get_ref().address_id)?;
        access::owner_or_admin(request.metadata(), user_id)?;
        // Under the profile's lock, as every change of the address book: an
        // update that read the address finishes before it goes.
        let mut tx = self.db.begin().await?;
        db::lock_profile(&mut tx, user_id)
            .await?
            .ok_or(UserError::AddressNotFound)?;
        let deleted = db::delete_address(&mut tx, user_id, address_id).await?;
        if !deleted {
            return Err(UserError::AddressNotFound);
        }
        tx.commit().await?;
        tracing::info!(user_id = %user_id, address_id = %address_id, "address deleted");
        Ok(())
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<pb::ListUsersResponse, UserError> {
        access::admin(request.metadata())?;
        let request = request.into_inner();
        let role = domain::role_from_proto(request.role)?;
        validate::text(&request.email, EMAIL_MAX_CHARS, false, false)
            .map_err(|message| UserError::invalid(format!("email: {message}")))?;
        let email = request.email.trim().to_lowercase();
        let page = request.page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(UserError::invalid(format!(
                    "page.page_size: at most {MAX_PAGE_SIZE}"
                )));
            }
            size => size,
        };
        let after = parse_page_token(&page.page_token)?;
        let mut conn = self.db.acquire().await?;
        let filter = db::ProfileFilter {
            role,
            disabled: request.disabled,
            email: Some(email.as_str()).filter(|e| !e.is_empty()),
        };
        let mut rows = db::list_profiles(&mut conn, filter, after, i64::from(size) + 1).await?;
        conn.keep();
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(page_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListUsersResponse {
            items: rows.iter().map(profile_to_proto).collect(),
            next_page_token,
        })
    }

    async fn sync_accounts(
        &self,
        request: Request<pb::SyncAccountsRequest>,
    ) -> Result<pb::SyncAccountsResponse, UserError> {
        access::peer(request.metadata())?;
        let copies = account_copies(request.into_inner().accounts)?;
        let mut conn = self.db.acquire().await?;
        let updated = db::sync_accounts(&mut conn, &copies).await?;
        conn.keep();
        if updated > 0 {
            tracing::info!(accounts = copies.len(), updated, "account states copied");
        }
        Ok(pb::SyncAccountsResponse {
            updated: u32::try_from(updated).unwrap_or(u32::MAX),
        })
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<pb::GetContactResponse, UserError> {
        access::peer_or_admin(request.metadata())?;
        let user_id = parse_uuid("user_id", &request.get_ref().user_id)?;
        let mut conn = self.db.acquire().await?;
        let contact = db::find_contact(&mut conn, user_id).await?;
        conn.keep();
        let contact = contact.ok_or(UserError::ProfileNotFound)?;
        Ok(pb::GetContactResponse {
            user_id: contact.id.to_string(),
            email: contact.email,
            name: contact.name,
            phone: contact.phone.unwrap_or_default(),
            preferences: Some(preferences_to_proto(&contact.preferences)),
        })
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserService {
    async fn create_profile(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> Result<Response<pb::CreateProfileResponse>, Status> {
        Ok(Response::new(
            UserService::create_profile(self, request).await?,
        ))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let row = UserService::get_profile(self, request).await?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(profile_to_proto(&row)),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let row = UserService::update_profile(self, request).await?;
        Ok(Response::new(pb::UpdateProfileResponse {
            profile: Some(profile_to_proto(&row)),
        }))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::GetPreferencesResponse>, Status> {
        let row = UserService::get_preferences(self, request).await?;
        Ok(Response::new(pb::GetPreferencesResponse {
            preferences: Some(preferences_to_proto(&row)),
        }))
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> Result<Response<pb::UpdatePreferencesResponse>, Status> {
        let row = UserService::update_preferences(self, request).await?;
        Ok(Response::new(pb::UpdatePreferencesResponse {
            preferences: Some(preferences_to_proto(&row)),
        }))
    }

    async fn list_addresses(
        &self,
        request: Request<pb::ListAddressesRequest>,
    ) -> Result<Response<pb::ListAddressesResponse>, Status> {
        let rows = UserService::list_addresses(self, request).await?;
        Ok(Response::new(pb::ListAddressesResponse {
            items: rows.iter().map(address_to_proto).collect(),
        }))
    }

    async fn create_address(
        &self,
        request: Request<pb::CreateAddressRequest>,
    ) -> Result<Response<pb::CreateAddressResponse>, Status> {
        let row = UserService::create_address(self, request).await?;
        Ok(Response::new(pb::CreateAddressResponse {
            address: Some(address_to_proto(&row)),
        }))
    }

    async fn get_address(
        &self,
        request: Request<pb::GetAddressRequest>,
    ) -> Result<Response<pb::GetAddressResponse>, Status> {
        let row = UserService::get_address(self, request).await?;
        Ok(Response::new(pb::GetAddressResponse {
            address: Some(address_to_proto(&row)),
        }))
    }

    async fn update_address(
        &self,
        request: Request<pb::UpdateAddressRequest>,
    ) -> Result<Response<pb::UpdateAddressResponse>, Status> {
        let row = UserService::update_address(self, request).await?;
        Ok(Response::new(pb::UpdateAddressResponse {
            address: Some(address_to_proto(&row)),
        }))
    }

    async fn delete_address(
        &self,
        request: Request<pb::DeleteAddressRequest>,
    ) -> Result<Response<pb::DeleteAddressResponse>, Status> {
        UserService::delete_address(self, request).await?;
        Ok(Response::new(pb::DeleteAddressResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Ok(Response::new(UserService::list_users(self, request).await?))
    }

    async fn sync_accounts(
        &self,
        request: Request<pb::SyncAccountsRequest>,
    ) -> Result<Response<pb::SyncAccountsResponse>, Status> {
        Ok(Response::new(
            UserService::sync_accounts(self, request).await?,
        ))
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::GetContactResponse>, Status> {
        Ok(Response::new(
            UserService::get_contact(self, request).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let row = ProfileRow {
            id: Uuid::new_v4(),
            email: "ada@example.com".to_owned(),
            name: "Ada".to_owned(),
            phone: None,
            role: "customer".to_owned(),
            created_at: at,
            updated_at: at,
            disabled_at: None,
        };
        let token = page_token(&row);
        assert_eq!(parse_page_token(&token).expect("valid"), Some((at, row.id)));
        assert_eq!(parse_page_token("").expect("first page"), None);
        assert!(parse_page_token("!!!").is_err());
        assert!(parse_page_token(&URL_SAFE_NO_PAD.encode("12:not-a-uuid")).is_err());
        assert!(parse_page_token(&URL_SAFE_NO_PAD.encode("soon:")).is_err());
    }
}
