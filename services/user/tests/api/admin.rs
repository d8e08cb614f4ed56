//! Admin RPCs: listing users page by page with filters, and the copy of
//! each account's role and status that auth keeps here.

use gocommerce_platform::time::timestamp;
use gocommerce_proto::auth::v1::Role as RolePb;
use gocommerce_proto::common::v1::PageRequest;
use gocommerce_proto::user::v1::{
    AccountState, ListUsersRequest, ListUsersResponse, SyncAccountsRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, as_admin, as_customer, as_peer, refused, spawn_app};

fn list(page_size: u32, page_token: &str, role: RolePb, email: &str) -> ListUsersRequest {
    ListUsersRequest {
        page: Some(PageRequest {
            page_size,
            page_token: page_token.to_owned(),
        }),
        role: role as i32,
        email: email.to_owned(),
        disabled: None,
    }
}

/// An account's state as auth would send it.
fn state(user: Uuid, role: RolePb, disabled: bool, version: i64) -> AccountState {
    AccountState {
        user_id: user.to_string(),
        role: role as i32,
        disabled_at: disabled.then(|| timestamp(chrono::Utc::now())),
        version,
    }
}

/// Sends the states as auth does; returns how many profiles took them.
async fn sync(app: &TestApp, accounts: Vec<AccountState>) -> u32 {
    app.client
        .clone()
        .sync_accounts(as_peer(SyncAccountsRequest { accounts }))
        .await
        .expect("synced")
        .into_inner()
        .updated
}

async fn page(app: &TestApp, request: ListUsersRequest) -> ListUsersResponse {
    app.client
        .clone()
        .list_users(as_admin(request))
        .await
        .expect("listed")
        .into_inner()
}

/// Every page of a listing, following the tokens.
async fn all_pages(app: &TestApp, size: u32, role: RolePb, email: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let response = page(app, list(size, &token, role, email)).await;
        pages.push(response.items.into_iter().map(|p| p.id).collect());
        if response.next_page_token.is_empty() {
            return pages;
        }
        token = response.next_page_token;
    }
}

#[tokio::test]
async fn users_are_listed_oldest_first_page_by_page() {
    let app = spawn_app().await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(
            app.customer(&format!("user{i}@example.com"))
                .await
                .to_string(),
        );
    }

    let pages = all_pages(&app, 2, RolePb::Unspecified, "").await;

    assert_eq!(
        pages,
        vec![
            users[0..2].to_vec(),
            users[2..4].to_vec(),
            users[4..5].to_vec()
        ]
    );
    let everything = page(&app, ListUsersRequest::default()).await;
    assert_eq!(
        everything.items.len(),
        5,
        "the default page size holds them all"
    );
    assert!(everything.next_page_token.is_empty());
}

#[tokio::test]
async fn an_exactly_full_last_page_has_no_next_token() {
    let app = spawn_app().await;
    for i in 0..4 {
        app.customer(&format!("user{i}@example.com")).await;
    }

    let pages = all_pages(&app, 2, RolePb::Unspecified, "").await;

    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
}

#[tokio::test]
async fn users_can_be_filtered_by_role_and_by_email() {
    let app = spawn_app().await;
    let ada = app.customer("ada@lovelace.example").await;
    let bob = app.customer("bob@example.com").await;
    let carol = app.customer("carol@lovelace.example").await;
    let dave = app.customer("dave@lovelace.example").await;
    let admins = [ada, bob, dave].map(|admin| state(admin, RolePb::Admin, false, 1));
    sync(&app, admins.to_vec()).await;

    let admins = all_pages(&app, 100, RolePb::Admin, "").await.concat();
    let customers = all_pages(&app, 100, RolePb::Customer, "").await.concat();
    let lovelace = all_pages(&app, 100, RolePb::Unspecified, "LoveLace")
        .await
        .concat();
    let lovelace_admins = all_pages(&app, 1, RolePb::Admin, "lovelace").await;

    let ids = |users: &[Uuid]| users.iter().map(Uuid::to_string).collect::<Vec<_>>();
    assert_eq!(admins, ids(&[ada, bob, dave]));
    assert_eq!(customers, ids(&[carol]));
    assert_eq!(lovelace, ids(&[ada, carol, dave]));
    assert_eq!(lovelace_admins, vec![ids(&[ada]), ids(&[dave])]);
}

#[tokio::test]
async fn the_email_filter_takes_wildcards_literally() {
    let app = spawn_app().await;
    app.customer("ada@example.com").await;
    let odd = app.customer("100%_real@example.com").await;

    let percent = all_pages(&app, 10, RolePb::Unspecified, "%").await.concat();
    let underscore = all_pages(&app, 10, RolePb::Unspecified, "0%_r")
        .await
        .concat();

    assert_eq!(percent, vec![odd.to_string()]);
    assert_eq!(underscore, vec![odd.to_string()]);
}

#[tokio::test]
async fn bad_page_sizes_tokens_and_roles_are_invalid_arguments() {
    let app = spawn_app().await;
    app.customer("ada@example.com").await;
    let mut client = app.client.clone();

    let (size, size_message) = refused(
        client
            .list_users(as_admin(list(101, "", RolePb::Unspecified, "")))
            .await,
    );
    let (token, token_message) = refused(
        client
            .list_users(as_admin(list(10, "not a token", RolePb::Unspecified, "")))
            .await,
    );
    let (forged, _) = refused(
        client
            .list_users(as_admin(list(
                10,
                "MTIzOm5vdC1hLXV1aWQ",
                RolePb::Unspecified,
                "",
            )))
            .await,
    );
    // A token of a time before PostgreSQL's range, made by hand.
    let ancient = gocommerce_platform::page::token(
        chrono::DateTime::from_timestamp(-300_000_000_000, 0).expect("a time"),
        uuid::Uuid::nil(),
    );
    let (ancient, ancient_message) = refused(
        client
            .list_users(as_admin(list(10, &ancient, RolePb::Unspecified, "")))
            .await,
    );
    let (nul, nul_message) = refused(
        client
            .list_users(as_admin(list(10, "", RolePb::Unspecified, "ada\0")))
            .await,
    );
    let (role, role_message) = refused(
        client
            .list_users(as_admin(ListUsersRequest {
                role: 9,
                ..Default::default()
            }))
            .await,
    );
    let largest = client
        .list_users(as_admin(list(100, "", RolePb::Unspecified, "")))
        .await;

    assert_eq!(size, Code::InvalidArgument);
    assert!(
        size_message.starts_with("page.page_size: "),
        "{size_message}"
    );
    assert_eq!(token, Code::InvalidArgument);
    assert!(
        token_message.starts_with("page.page_token: "),
        "{token_message}"
    );
    assert_eq!(forged, Code::InvalidArgument);
    assert_eq!(ancient, Code::InvalidArgument);
    assert!(
        ancient_message.starts_with("page.page_token: "),
        "{ancient_message}"
    );
    assert_eq!(nul, Code::InvalidArgument);
    assert_eq!(nul_message, "email: must not contain control characters");
    assert_eq!(role, Code::InvalidArgument);
    assert!(role_message.starts_with("role: "), "{role_message}");
    assert!(largest.is_ok());
}

#[tokio::test]
async fn only_admins_list_users() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;

    let (customer, _) = refused(
        app.client
            .clone()
            .list_users(as_customer(ada, ListUsersRequest::default()))
            .await,
    );
    let (anonymous, _) = refused(
        app.client
            .clone()
            .list_users(as_peer(ListUsersRequest::default()))
            .await,
    );

    assert_eq!(customer, Code::PermissionDenied);
    assert_eq!(anonymous, Code::Unauthenticated);
}

#[tokio::test]
async fn users_can_be_filtered_by_whether_their_account_is_disabled() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let carol = app.customer("carol@example.com").await;
    sync(
        &app,
        vec![
            state(bob, RolePb::Customer, true, 2),
            state(carol, RolePb::Admin, true, 2),
        ],
    )
    .await;
    let only = |disabled| ListUsersRequest {
        disabled: Some(disabled),
        ..Default::default()
    };

    let disabled = page(&app, only(true)).await.items;
    let enabled = page(&app, only(false)).await.items;
    let disabled_admins = page(
        &app,
        ListUsersRequest {
            role: RolePb::Admin as i32,
            ..only(true)
        },
    )
    .await
    .items;
    let everyone = page(&app, ListUsersRequest::default()).await.items;

    let ids = |profiles: &[gocommerce_proto::user::v1::Profile]| {
        profiles.iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&disabled), [bob.to_string(), carol.to_string()]);
    assert!(disabled.iter().all(|p| p.disabled_at.is_some()));
    assert_eq!(ids(&enabled), [ada.to_string()]);
    assert_eq!(enabled[0].disabled_at, None);
    assert_eq!(ids(&disabled_admins), [carol.to_string()]);
    assert_eq!(everyone.len(), 3, "no filter: everyone");
}

#[tokio::test]
async fn a_copy_is_taken_only_when_it_is_newer_than_the_profiles() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let before = app.profile(ada).await;

    let promoted = sync(&app, vec![state(ada, RolePb::Admin, false, 2)]).await;
    let after_promotion = app.profile(ada).await;
    // A copy of an earlier change, arriving late.
    let late = sync(&app, vec![state(ada, RolePb::Customer, false, 1)]).await;
    let repeated = sync(&app, vec![state(ada, RolePb::Admin, false, 2)]).await;
    let after_repeats = app.profile(ada).await;
    let disabled = sync(&app, vec![state(ada, RolePb::Customer, true, 3)]).await;
    let after_disabling = app.profile(ada).await;

    assert_eq!(promoted, 1);
    assert_eq!(after_promotion.role, RolePb::Admin as i32);
    assert_ne!(after_promotion.updated_at, before.updated_at);
    assert_eq!((late, repeated), (0, 0), "neither is newer");
    assert_eq!(
        after_repeats, after_promotion,
        "nothing changed, not even updated_at"
    );
    assert_eq!(disabled, 1);
    assert_eq!(after_disabling.role, RolePb::Customer as i32);
    assert!(after_disabling.disabled_at.is_some());
}

#[tokio::test]
async fn of_two_copies_of_one_account_in_a_request_the_newer_counts() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;

    let updated = sync(
        &app,
        vec![
            state(ada, RolePb::Admin, false, 3),
            state(bob, RolePb::Admin, false, 2),
            state(ada, RolePb::Customer, true, 2),
            state(bob, RolePb::Customer, true, 3),
        ],
    )
    .await;

    assert_eq!(updated, 2);
    let (ada, bob) = (app.profile(ada).await, app.profile(bob).await);
    assert_eq!((ada.role, ada.disabled_at), (RolePb::Admin as i32, None));
    assert_eq!(bob.role, RolePb::Customer as i32);
    assert!(bob.disabled_at.is_some());
}

#[tokio::test]
async fn sync_accounts_refuses_users_bad_states_and_too_many_accounts() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let mut client = app.client.clone();
    let request = |accounts| SyncAccountsRequest { accounts };
    let promote = || vec![state(ada, RolePb::Admin, false, 2)];

    let (customer, _) = refused(
        client
            .sync_accounts(as_customer(ada, request(promote())))
            .await,
    );
    let (admin, _) = refused(client.sync_accounts(as_admin(request(promote()))).await);
    let (unspecified, unspecified_message) = refused(
        client
            .sync_accounts(as_peer(request(vec![
                state(Uuid::new_v4(), RolePb::Admin, false, 2),
                state(ada, RolePb::Unspecified, false, 2),
            ])))
            .await,
    );
    let (version, version_message) = refused(
        client
            .sync_accounts(as_peer(request(vec![state(ada, RolePb::Admin, false, 0)])))
            .await,
    );
    let (malformed, malformed_message) = refused(
        client
            .sync_accounts(as_peer(request(vec![AccountState {
                user_id: "ada".to_owned(),
                ..state(ada, RolePb::Admin, false, 2)
            }])))
            .await,
    );
    let (many, many_message) = refused(
        client
            .sync_accounts(as_peer(request(
                (0..101)
                    .map(|_| state(Uuid::new_v4(), RolePb::Admin, false, 2))
                    .collect(),
            )))
            .await,
    );
    let unknown = sync(&app, vec![state(Uuid::new_v4(), RolePb::Admin, false, 2)]).await;

    assert_eq!(customer, Code::PermissionDenied);
    assert_eq!(admin, Code::PermissionDenied, "only auth copies accounts");
    assert_eq!(unspecified, Code::InvalidArgument);
    assert!(
        unspecified_message.starts_with("accounts[1].role: "),
        "{unspecified_message}"
    );
    assert_eq!(version, Code::InvalidArgument);
    assert!(
        version_message.starts_with("accounts[0].version: "),
        "{version_message}"
    );
    assert_eq!(malformed, Code::InvalidArgument);
    assert!(
        malformed_message.starts_with("accounts[0].user_id: "),
        "{malformed_message}"
    );
    assert_eq!(many, Code::InvalidArgument);
    assert!(many_message.starts_with("accounts: "), "{many_message}");
    assert_eq!(unknown, 0, "an unknown user is skipped");
    assert_eq!(
        app.profile(ada).await.role,
        RolePb::Customer as i32,
        "a refused request changes nothing"
    );
}
