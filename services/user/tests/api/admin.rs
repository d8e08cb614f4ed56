//! Admin RPCs: listing users page by page with filters, and the role mirror.

use gocommerce_proto::auth::v1::Role as RolePb;
use gocommerce_proto::common::v1::PageRequest;
use gocommerce_proto::user::v1::{ListUsersRequest, ListUsersResponse, SetUserRoleRequest};
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
    }
}

fn set_role(user: Uuid, role: RolePb) -> SetUserRoleRequest {
    SetUserRoleRequest {
        user_id: user.to_string(),
        role: role as i32,
    }
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
    for admin in [ada, bob, dave] {
        app.client
            .clone()
            .set_user_role(as_peer(set_role(admin, RolePb::Admin)))
            .await
            .expect("role set");
    }

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
async fn setting_a_role_updates_the_mirror_and_a_repeat_changes_nothing() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let mut client = app.client.clone();

    let promoted = client
        .set_user_role(as_peer(set_role(ada, RolePb::Admin)))
        .await
        .expect("promoted")
        .into_inner()
        .profile
        .expect("profile");
    let repeated = client
        .set_user_role(as_admin(set_role(ada, RolePb::Admin)))
        .await
        .expect("idempotent")
        .into_inner()
        .profile
        .expect("profile");

    assert_eq!(promoted.role, RolePb::Admin as i32);
    assert_eq!(repeated, promoted, "a repeat leaves even updated_at alone");
    assert_eq!(app.profile(ada).await.role, RolePb::Admin as i32);
}

#[tokio::test]
async fn set_user_role_refuses_customers_unspecified_roles_and_unknown_users() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let mut client = app.client.clone();

    let (customer, _) = refused(
        client
            .set_user_role(as_customer(ada, set_role(ada, RolePb::Admin)))
            .await,
    );
    let (unspecified, message) = refused(
        client
            .set_user_role(as_peer(set_role(ada, RolePb::Unspecified)))
            .await,
    );
    let (unknown, _) = refused(
        client
            .set_user_role(as_peer(set_role(Uuid::new_v4(), RolePb::Admin)))
            .await,
    );
    let (malformed, _) = refused(
        client
            .set_user_role(as_peer(SetUserRoleRequest {
                user_id: "ada".to_owned(),
                role: RolePb::Admin as i32,
            }))
            .await,
    );

    assert_eq!(customer, Code::PermissionDenied);
    assert_eq!(unspecified, Code::InvalidArgument);
    assert!(message.starts_with("role: "), "{message}");
    assert_eq!(unknown, Code::NotFound);
    assert_eq!(malformed, Code::InvalidArgument);
    assert_eq!(app.profile(ada).await.role, RolePb::Customer as i32);
}
