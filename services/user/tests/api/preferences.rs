//! Notification preferences: defaults at registration, replaced as a whole.

use gocommerce_proto::user::v1::{
    GetPreferencesRequest, NotificationChannels, Preferences, UpdatePreferencesRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, as_admin, as_customer, refused, spawn_app};

fn preferences(sms: bool, locale: &str) -> Preferences {
    Preferences {
        channels: Some(NotificationChannels {
            email: false,
            sms,
            push: true,
        }),
        locale: locale.to_owned(),
        marketing_opt_in: true,
        updated_at: None,
    }
}

fn replace(user: Uuid, preferences: Option<Preferences>) -> UpdatePreferencesRequest {
    UpdatePreferencesRequest {
        user_id: user.to_string(),
        preferences,
    }
}

async fn stored(app: &TestApp, user: Uuid) -> Preferences {
    app.client
        .clone()
        .get_preferences(as_customer(
            user,
            GetPreferencesRequest {
                user_id: user.to_string(),
            },
        ))
        .await
        .expect("preferences")
        .into_inner()
        .preferences
        .expect("preferences")
}

#[tokio::test]
async fn a_new_profile_gets_the_default_preferences() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    let preferences = stored(&app, user).await;

    assert_eq!(
        preferences.channels,
        Some(NotificationChannels {
            email: true,
            sms: false,
            push: false,
        })
    );
    assert_eq!(preferences.locale, "en");
    assert!(!preferences.marketing_opt_in);
    assert!(preferences.updated_at.is_some());
}

#[tokio::test]
async fn updating_preferences_replaces_them_as_a_whole() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    let returned = app
        .client
        .clone()
        .update_preferences(as_customer(
            user,
            replace(user, Some(preferences(true, "pt-br"))),
        ))
        .await
        .expect("replaced")
        .into_inner()
        .preferences
        .expect("preferences");

    let expected_channels = Some(NotificationChannels {
        email: false,
        sms: true,
        push: true,
    });
    assert_eq!(returned.channels, expected_channels);
    assert_eq!(returned.locale, "pt-BR", "canonical case");
    assert!(returned.marketing_opt_in);
    assert_eq!(stored(&app, user).await, returned);
}

#[tokio::test]
async fn locales_that_are_not_bcp47_tags_are_refused_and_nothing_changes() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    for bad in ["", "english", "en_GB", "en-", "e", "en-GB-!", "12-34"] {
        let (code, message) = refused(
            app.client
                .clone()
                .update_preferences(as_customer(
                    user,
                    replace(user, Some(preferences(true, bad))),
                ))
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{bad:?}");
        assert!(message.starts_with("preferences.locale: "), "{message}");
    }
    let unchanged = stored(&app, user).await;
    assert_eq!(unchanged.locale, "en");
    assert!(!unchanged.channels.expect("channels").sms);
}

#[tokio::test]
async fn common_locales_are_accepted() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    for locale in ["en", "en-GB", "pt-BR", "de-DE", "zh-Hant-TW", "es-419"] {
        let returned = app
            .client
            .clone()
            .update_preferences(as_customer(
                user,
                replace(user, Some(preferences(false, locale))),
            ))
            .await
            .expect(locale)
            .into_inner()
            .preferences
            .expect("preferences");
        assert_eq!(returned.locale, locale);
    }
}

#[tokio::test]
async fn preferences_and_their_channels_are_required() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let without_channels = Preferences {
        channels: None,
        ..preferences(true, "en")
    };

    let (missing, message) = refused(
        app.client
            .clone()
            .update_preferences(as_customer(user, replace(user, None)))
            .await,
    );
    let (no_channels, channels_message) = refused(
        app.client
            .clone()
            .update_preferences(as_customer(user, replace(user, Some(without_channels))))
            .await,
    );

    assert_eq!(missing, Code::InvalidArgument);
    assert!(message.starts_with("preferences: "), "{message}");
    assert_eq!(no_channels, Code::InvalidArgument);
    assert!(
        channels_message.starts_with("preferences.channels: "),
        "{channels_message}"
    );
}

#[tokio::test]
async fn a_customer_may_not_see_or_change_someone_elses_preferences() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;

    let (read, _) = refused(
        app.client
            .clone()
            .get_preferences(as_customer(
                ada,
                GetPreferencesRequest {
                    user_id: bob.to_string(),
                },
            ))
            .await,
    );
    let (write, _) = refused(
        app.client
            .clone()
            .update_preferences(as_customer(
                ada,
                replace(bob, Some(preferences(true, "en"))),
            ))
            .await,
    );

    assert_eq!(read, Code::PermissionDenied);
    assert_eq!(write, Code::PermissionDenied);
    assert!(!stored(&app, bob).await.channels.expect("channels").sms);
}

#[tokio::test]
async fn an_admin_sees_any_users_preferences_and_unknown_users_are_not_found() {
    let app = spawn_app().await;
    let bob = app.customer("bob@example.com").await;
    let stranger = Uuid::new_v4();

    let bobs = app
        .client
        .clone()
        .get_preferences(as_admin(GetPreferencesRequest {
            user_id: bob.to_string(),
        }))
        .await;
    let (read, _) = refused(
        app.client
            .clone()
            .get_preferences(as_admin(GetPreferencesRequest {
                user_id: stranger.to_string(),
            }))
            .await,
    );
    let (write, _) = refused(
        app.client
            .clone()
            .update_preferences(as_admin(replace(stranger, Some(preferences(true, "en")))))
            .await,
    );

    assert!(bobs.is_ok());
    assert_eq!(read, Code::NotFound);
    assert_eq!(write, Code::NotFound);
}
