//! GetContact: how the notification service finds a user.

use gocommerce_proto::user::v1::{
    GetContactRequest, NotificationChannels, Preferences, UpdatePreferencesRequest,
    UpdateProfileRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{as_admin, as_customer, as_peer, refused, spawn_app};

fn contact(user: Uuid) -> GetContactRequest {
    GetContactRequest {
        user_id: user.to_string(),
    }
}

#[tokio::test]
async fn a_peer_gets_a_new_users_contact_with_default_preferences() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    let reply = app
        .client
        .clone()
        .get_contact(as_peer(contact(user)))
        .await
        .expect("contact")
        .into_inner();

    assert_eq!(reply.user_id, user.to_string());
    assert_eq!(reply.email, "ada@example.com");
    assert_eq!(reply.name, "Ada Lovelace");
    assert_eq!(reply.phone, "");
    let preferences = reply.preferences.expect("preferences");
    assert_eq!(
        preferences.channels,
        Some(NotificationChannels {
            email: true,
            sms: false,
            push: false
        })
    );
    assert_eq!(preferences.locale, "en");
}

#[tokio::test]
async fn the_contact_follows_profile_and_preference_changes() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let mut client = app.client.clone();
    client
        .update_profile(as_customer(
            user,
            UpdateProfileRequest {
                user_id: user.to_string(),
                name: Some("Countess".to_owned()),
                phone: Some("+447700900123".to_owned()),
            },
        ))
        .await
        .expect("profile updated");
    client
        .update_preferences(as_customer(
            user,
            UpdatePreferencesRequest {
                user_id: user.to_string(),
                preferences: Some(Preferences {
                    channels: Some(NotificationChannels {
                        email: false,
                        sms: true,
                        push: false,
                    }),
                    locale: "de-DE".to_owned(),
                    marketing_opt_in: false,
                    updated_at: None,
                }),
            },
        ))
        .await
        .expect("preferences updated");

    let reply = client
        .get_contact(as_admin(contact(user)))
        .await
        .expect("contact")
        .into_inner();

    assert_eq!(reply.name, "Countess");
    assert_eq!(reply.phone, "+447700900123");
    let preferences = reply.preferences.expect("preferences");
    assert_eq!(preferences.locale, "de-DE");
    assert_eq!(
        preferences.channels,
        Some(NotificationChannels {
            email: false,
            sms: true,
            push: false
        })
    );
}

#[tokio::test]
async fn contacts_are_not_for_customers_even_their_own() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    let (code, _) = refused(
        app.client
            .clone()
            .get_contact(as_customer(user, contact(user)))
            .await,
    );

    assert_eq!(code, Code::PermissionDenied);
}

#[tokio::test]
async fn an_unknown_user_has_no_contact_and_a_malformed_id_is_invalid() {
    let app = spawn_app().await;

    let (unknown, _) = refused(
        app.client
            .clone()
            .get_contact(as_peer(contact(Uuid::new_v4())))
            .await,
    );
    let (malformed, message) = refused(
        app.client
            .clone()
            .get_contact(as_peer(GetContactRequest {
                user_id: "someone".to_owned(),
            }))
            .await,
    );

    assert_eq!(unknown, Code::NotFound);
    assert_eq!(malformed, Code::InvalidArgument);
    assert!(message.starts_with("user_id: "), "{message}");
}
