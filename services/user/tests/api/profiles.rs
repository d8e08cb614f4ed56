//! Profiles: created once per account by auth, read and changed by their
//! owner or an admin.

use futures::future::join_all;
use gocommerce_proto::auth::v1::Role as RolePb;
use gocommerce_proto::user::v1::{GetProfileRequest, UpdateProfileRequest};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{as_admin, as_customer, as_peer, profile_request, refused, spawn_app};

fn update(user: Uuid, name: Option<&str>, phone: Option<&str>) -> UpdateProfileRequest {
    UpdateProfileRequest {
        user_id: user.to_string(),
        name: name.map(str::to_owned),
        phone: phone.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_registration_creates_a_profile_mirroring_the_account() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();

    let response = app
        .client
        .clone()
        .create_profile(as_peer(profile_request(
            user,
            " Ada@Example.COM ",
            " Ada Lovelace ",
        )))
        .await
        .expect("created")
        .into_inner();

    assert!(response.created);
    let profile = response.profile.expect("profile");
    assert_eq!(profile.id, user.to_string());
    assert_eq!(profile.email, "ada@example.com");
    assert_eq!(profile.name, "Ada Lovelace");
    assert_eq!(profile.phone, "");
    assert_eq!(profile.role, RolePb::Customer as i32);
    assert!(profile.created_at.is_some());
    assert_eq!(app.profile(user).await, profile);
}

#[tokio::test]
async fn creating_a_profile_again_returns_the_existing_one_unchanged() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let first = app
        .client
        .clone()
        .create_profile(as_peer(profile_request(user, "ada@example.com", "Ada")))
        .await
        .expect("created")
        .into_inner();

    let again = app
        .client
        .clone()
        .create_profile(as_peer(profile_request(
            user,
            "other@example.com",
            "Someone Else",
        )))
        .await
        .expect("idempotent")
        .into_inner();

    assert!(!again.created);
    assert_eq!(again.profile, first.profile);
    assert_eq!(app.profile(user).await.name, "Ada");
}

#[tokio::test]
async fn concurrent_repeats_of_a_registration_create_one_profile() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();

    let results = join_all((0..8).map(|_| {
        let mut client = app.client.clone();
        async move {
            client
                .create_profile(as_peer(profile_request(user, "ada@example.com", "Ada")))
                .await
                .map(|r| r.into_inner())
        }
    }))
    .await;

    let created = results
        .iter()
        .filter(|r| r.as_ref().expect("answered").created)
        .count();
    assert_eq!(created, 1);
    let profiles: i64 = sqlx::query_scalar("SELECT count(*) FROM profiles")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let preferences: i64 = sqlx::query_scalar("SELECT count(*) FROM preferences")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!((profiles, preferences), (1, 1));
}

#[tokio::test]
async fn two_profiles_may_share_an_email_because_auth_owns_uniqueness() {
    let app = spawn_app().await;

    let first = app.customer("ada@example.com").await;
    let second = app.customer("ada@example.com").await;

    assert_ne!(first, second);
    assert_eq!(app.profile(second).await.email, "ada@example.com");
}

#[tokio::test]
async fn create_profile_refuses_malformed_ids_emails_names_and_roles() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let cases = [
        (profile_request(user, "not-an-email", "Ada"), "email"),
        (profile_request(user, "", "Ada"), "email"),
        (profile_request(user, "ada@example.com", "   "), "name"),
        (
            profile_request(user, "ada@example.com", &"a".repeat(101)),
            "name",
        ),
    ];
    let mut bad_id = profile_request(user, "ada@example.com", "Ada");
    bad_id.user_id = "42".to_owned();
    let mut bad_role = profile_request(user, "ada@example.com", "Ada");
    bad_role.role = 7;

    for (request, field) in cases
        .into_iter()
        .chain([(bad_id, "user_id"), (bad_role, "role")])
    {
        let (code, message) = refused(app.client.clone().create_profile(as_peer(request)).await);
        assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM profiles")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn an_unset_role_at_registration_means_customer() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let mut request = profile_request(user, "ada@example.com", "Ada");
    request.role = RolePb::Unspecified as i32;

    let profile = app
        .client
        .clone()
        .create_profile(as_peer(request))
        .await
        .expect("created")
        .into_inner()
        .profile
        .expect("profile");

    assert_eq!(profile.role, RolePb::Customer as i32);
}

#[tokio::test]
async fn a_customer_may_not_create_profiles_but_an_admin_may() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();

    let (code, _) = refused(
        app.client
            .clone()
            .create_profile(as_customer(
                user,
                profile_request(user, "ada@example.com", "Ada"),
            ))
            .await,
    );
    let by_admin = app
        .client
        .clone()
        .create_profile(as_admin(profile_request(user, "ada@example.com", "Ada")))
        .await;

    assert_eq!(code, Code::PermissionDenied);
    assert!(by_admin.expect("admin may").into_inner().created);
}

#[tokio::test]
async fn a_customer_reads_only_their_own_profile_and_an_admin_reads_any() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let request = |user: Uuid| GetProfileRequest {
        user_id: user.to_string(),
    };

    let (code, _) = refused(
        app.client
            .clone()
            .get_profile(as_customer(ada, request(bob)))
            .await,
    );
    let by_admin = app.client.clone().get_profile(as_admin(request(bob))).await;
    let (anonymous, _) = refused(app.client.clone().get_profile(as_peer(request(bob))).await);

    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(
        by_admin
            .expect("admin")
            .into_inner()
            .profile
            .expect("profile")
            .email,
        "bob@example.com"
    );
    assert_eq!(anonymous, Code::Unauthenticated);
}

#[tokio::test]
async fn an_unknown_profile_is_not_found_and_a_malformed_id_is_invalid() {
    let app = spawn_app().await;
    let stranger = Uuid::new_v4();

    let (unknown, _) = refused(
        app.client
            .clone()
            .get_profile(as_customer(
                stranger,
                GetProfileRequest {
                    user_id: stranger.to_string(),
                },
            ))
            .await,
    );
    let (malformed, message) = refused(
        app.client
            .clone()
            .get_profile(as_admin(GetProfileRequest {
                user_id: "me".to_owned(),
            }))
            .await,
    );

    assert_eq!(unknown, Code::NotFound);
    assert_eq!(malformed, Code::InvalidArgument);
    assert!(message.starts_with("user_id: "), "{message}");
}

#[tokio::test]
async fn updating_a_profile_changes_only_the_fields_that_are_set() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let mut client = app.client.clone();

    let with_phone = client
        .update_profile(as_customer(
            user,
            update(user, None, Some("+4915112345678")),
        ))
        .await
        .expect("phone set")
        .into_inner()
        .profile
        .expect("profile");
    let renamed = client
        .update_profile(as_customer(
            user,
            update(user, Some("Countess of Lovelace"), None),
        ))
        .await
        .expect("renamed")
        .into_inner()
        .profile
        .expect("profile");

    assert_eq!(with_phone.phone, "+4915112345678");
    assert_eq!(with_phone.name, "Ada Lovelace");
    assert_eq!(renamed.name, "Countess of Lovelace");
    assert_eq!(renamed.phone, "+4915112345678");
    assert_eq!(renamed.email, "ada@example.com");
    assert_eq!(app.profile(user).await, renamed);
}

#[tokio::test]
async fn an_empty_phone_removes_the_phone_number() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let mut client = app.client.clone();
    client
        .update_profile(as_customer(user, update(user, None, Some("+12025550123"))))
        .await
        .expect("phone set");

    client
        .update_profile(as_customer(user, update(user, None, Some(""))))
        .await
        .expect("phone removed");

    assert_eq!(app.profile(user).await.phone, "");
}

#[tokio::test]
async fn phone_numbers_must_be_e164() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    for bad in [
        "015112345678",
        "+0151123456",
        "+1234567",
        "+1234567890123456",
        "+49 151 12345678",
        "+49-151-1234567",
        "phone",
    ] {
        let (code, message) = refused(
            app.client
                .clone()
                .update_profile(as_customer(user, update(user, Some("Ada"), Some(bad))))
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{bad}");
        assert!(message.starts_with("phone: "), "{message}");
    }
    let profile = app.profile(user).await;
    assert_eq!(
        (profile.name.as_str(), profile.phone.as_str()),
        ("Ada Lovelace", "")
    );
}

#[tokio::test]
async fn blank_or_too_long_names_are_refused() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    for bad in [String::new(), "   ".to_owned(), "a".repeat(101)] {
        let (code, message) = refused(
            app.client
                .clone()
                .update_profile(as_customer(user, update(user, Some(&bad), None)))
                .await,
        );
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.starts_with("name: "), "{message}");
    }
}

#[tokio::test]
async fn a_customer_may_not_update_someone_else_and_unknown_users_are_not_found() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let stranger = Uuid::new_v4();

    let (denied, _) = refused(
        app.client
            .clone()
            .update_profile(as_customer(ada, update(bob, Some("Mallory"), None)))
            .await,
    );
    let (missing, _) = refused(
        app.client
            .clone()
            .update_profile(as_admin(update(stranger, Some("Nobody"), None)))
            .await,
    );

    assert_eq!(denied, Code::PermissionDenied);
    assert_eq!(missing, Code::NotFound);
    assert_eq!(app.profile(bob).await.name, "Ada Lovelace");
}

#[tokio::test]
async fn an_update_that_sets_nothing_returns_the_profile_untouched() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let before = app.profile(user).await;

    let after = app
        .client
        .clone()
        .update_profile(as_customer(user, update(user, None, None)))
        .await
        .expect("answered")
        .into_inner()
        .profile
        .expect("profile");

    assert_eq!(after, before, "not even updated_at moves");
}
