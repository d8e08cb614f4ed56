//! Address books: validated fields, at most one default that moves
//! atomically, a size limit, and no way to see another user's addresses.

use futures::future::join_all;
use gocommerce_proto::common::v1::PostalAddress;
use gocommerce_proto::user::v1::{
    CreateAddressRequest, DeleteAddressRequest, GetAddressRequest, ListAddressesRequest,
    UpdateAddressRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, as_admin, as_customer, postal, refused, spawn_app};

fn create(user: Uuid, postal_address: PostalAddress, is_default: bool) -> CreateAddressRequest {
    CreateAddressRequest {
        user_id: user.to_string(),
        postal_address: Some(postal_address),
        is_default,
    }
}

fn update(user: Uuid, address: &str) -> UpdateAddressRequest {
    UpdateAddressRequest {
        user_id: user.to_string(),
        address_id: address.to_owned(),
        ..Default::default()
    }
}

fn get(user: Uuid, address: &str) -> GetAddressRequest {
    GetAddressRequest {
        user_id: user.to_string(),
        address_id: address.to_owned(),
    }
}

fn delete(user: Uuid, address: &str) -> DeleteAddressRequest {
    DeleteAddressRequest {
        user_id: user.to_string(),
        address_id: address.to_owned(),
    }
}

/// The ids of the user's default addresses, straight from the database.
async fn defaults(app: &TestApp, user: Uuid) -> Vec<String> {
    sqlx::query_scalar::<_, Uuid>("SELECT id FROM addresses WHERE user_id = $1 AND is_default")
        .bind(user)
        .fetch_all(&app.pool)
        .await
        .expect("defaults")
        .into_iter()
        .map(|id| id.to_string())
        .collect()
}

#[tokio::test]
async fn the_first_address_becomes_the_default_and_later_ones_do_not() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    let first = app.add_address(user, "1 Analytical Row", false).await;
    let second = app.add_address(user, "2 Difference Lane", false).await;

    assert!(first.is_default);
    assert!(!second.is_default);
    assert_eq!(first.user_id, user.to_string());
    assert_eq!(first.postal_address, Some(postal("1 Analytical Row")));
    assert_eq!(defaults(&app, user).await, vec![first.id]);
}

#[tokio::test]
async fn creating_an_address_as_default_moves_the_default_there() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let first = app.add_address(user, "1 Analytical Row", false).await;

    let second = app.add_address(user, "2 Difference Lane", true).await;

    assert!(second.is_default);
    assert_eq!(defaults(&app, user).await, vec![second.id.clone()]);
    let listed = app.addresses(user).await;
    let old = listed.iter().find(|a| a.id == first.id).expect("first");
    assert!(!old.is_default);
}

#[tokio::test]
async fn addresses_are_listed_default_first_then_newest_first() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let first = app.add_address(user, "1 Analytical Row", false).await;
    let second = app.add_address(user, "2 Difference Lane", false).await;
    let third = app.add_address(user, "3 Engine Street", false).await;

    let listed: Vec<String> = app
        .addresses(user)
        .await
        .into_iter()
        .map(|a| a.id)
        .collect();

    assert_eq!(listed, vec![first.id, third.id, second.id]);
}

#[tokio::test]
async fn concurrent_default_addresses_leave_exactly_one_default() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    let results = join_all((0..8).map(|i| {
        let mut client = app.client.clone();
        async move {
            client
                .create_address(as_customer(
                    user,
                    create(user, postal(&format!("{i} Race Street")), true),
                ))
                .await
        }
    }))
    .await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(app.addresses(user).await.len(), 8);
    assert_eq!(defaults(&app, user).await.len(), 1);
}

#[tokio::test]
async fn updating_is_default_moves_the_default_and_false_leaves_none() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let first = app.add_address(user, "1 Analytical Row", false).await;
    let second = app.add_address(user, "2 Difference Lane", false).await;
    let mut client = app.client.clone();

    let moved = client
        .update_address(as_customer(
            user,
            UpdateAddressRequest {
                is_default: Some(true),
                ..update(user, &second.id)
            },
        ))
        .await
        .expect("moved")
        .into_inner()
        .address
        .expect("address");
    let after_move = defaults(&app, user).await;
    client
        .update_address(as_customer(
            user,
            UpdateAddressRequest {
                is_default: Some(false),
                ..update(user, &second.id)
            },
        ))
        .await
        .expect("unset");

    assert!(moved.is_default);
    assert_eq!(
        moved.postal_address, second.postal_address,
        "fields untouched"
    );
    assert_eq!(after_move, vec![second.id]);
    assert!(defaults(&app, user).await.is_empty());
    assert!(!app.addresses(user).await.iter().any(|a| a.is_default));
    assert_ne!(first.id, moved.id);
}

#[tokio::test]
async fn updating_an_address_changes_only_the_fields_that_are_set() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let created = app
        .client
        .clone()
        .create_address(as_customer(
            user,
            create(
                user,
                PostalAddress {
                    line2: "Flat 3".to_owned(),
                    region: "Greater London".to_owned(),
                    ..postal("1 Analytical Row")
                },
                false,
            ),
        ))
        .await
        .expect("created")
        .into_inner()
        .address
        .expect("address");

    let updated = app
        .client
        .clone()
        .update_address(as_customer(
            user,
            UpdateAddressRequest {
                city: Some("Cambridge".to_owned()),
                postal_code: Some("CB2 1TN".to_owned()),
                line2: Some(String::new()),
                name: Some(String::new()),
                ..update(user, &created.id)
            },
        ))
        .await
        .expect("updated")
        .into_inner()
        .address
        .expect("address");

    let postal_address = updated.postal_address.clone().expect("postal address");
    assert_eq!(postal_address.city, "Cambridge");
    assert_eq!(postal_address.postal_code, "CB2 1TN");
    assert_eq!(
        postal_address.line2, "",
        "an empty optional field clears it"
    );
    assert_eq!(postal_address.name, "");
    assert_eq!(postal_address.line1, "1 Analytical Row");
    assert_eq!(postal_address.region, "Greater London");
    assert_eq!(postal_address.country, "GB");
    assert!(updated.is_default);
    assert_eq!(app.addresses(user).await, vec![updated]);
}

#[tokio::test]
async fn a_user_reads_their_address_as_the_order_service_does() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let created = app.add_address(user, "1 Analytical Row", false).await;

    let fetched = app
        .client
        .clone()
        .get_address(as_customer(user, get(user, &created.id)))
        .await
        .expect("found")
        .into_inner()
        .address
        .expect("address");

    assert_eq!(fetched, created);
}

#[tokio::test]
async fn another_users_address_is_not_found_never_forbidden() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let bobs = app.add_address(bob, "9 Other Street", false).await;
    let mut client = app.client.clone();

    let (read, read_message) = refused(
        client
            .get_address(as_customer(ada, get(ada, &bobs.id)))
            .await,
    );
    let (change, _) = refused(
        client
            .update_address(as_customer(
                ada,
                UpdateAddressRequest {
                    line1: Some("Stolen".to_owned()),
                    ..update(ada, &bobs.id)
                },
            ))
            .await,
    );
    let (remove, _) = refused(
        client
            .delete_address(as_customer(ada, delete(ada, &bobs.id)))
            .await,
    );
    let (admin_wrong_owner, _) = refused(client.get_address(as_admin(get(ada, &bobs.id))).await);

    assert_eq!(read, Code::NotFound, "{read_message}");
    assert_eq!(change, Code::NotFound);
    assert_eq!(remove, Code::NotFound);
    assert_eq!(admin_wrong_owner, Code::NotFound);
    assert_eq!(app.addresses(bob).await, vec![bobs]);
}

#[tokio::test]
async fn a_customer_naming_another_user_is_refused() {
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let bobs = app.add_address(bob, "9 Other Street", false).await;
    let mut client = app.client.clone();

    let (list, _) = refused(
        client
            .list_addresses(as_customer(
                ada,
                ListAddressesRequest {
                    user_id: bob.to_string(),
                },
            ))
            .await,
    );
    let (add, _) = refused(
        client
            .create_address(as_customer(
                ada,
                create(bob, postal("1 Intruder Way"), true),
            ))
            .await,
    );
    let (read, _) = refused(
        client
            .get_address(as_customer(ada, get(bob, &bobs.id)))
            .await,
    );

    assert_eq!(list, Code::PermissionDenied);
    assert_eq!(add, Code::PermissionDenied);
    assert_eq!(read, Code::PermissionDenied);
    assert_eq!(app.addresses(bob).await.len(), 1);
}

#[tokio::test]
async fn an_admin_manages_any_users_address_book() {
    let app = spawn_app().await;
    let bob = app.customer("bob@example.com").await;

    let created = app
        .client
        .clone()
        .create_address(as_admin(create(bob, postal("9 Other Street"), false)))
        .await
        .expect("admin may")
        .into_inner()
        .address
        .expect("address");

    assert_eq!(created.user_id, bob.to_string());
    assert_eq!(app.addresses(bob).await, vec![created]);
}

#[tokio::test]
async fn malformed_address_fields_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let cases = [
        (
            PostalAddress {
                country: "UK".to_owned(),
                ..postal("1 Row")
            },
            "postal_address.country",
        ),
        (
            PostalAddress {
                country: "XX".to_owned(),
                ..postal("1 Row")
            },
            "postal_address.country",
        ),
        (
            PostalAddress {
                country: "GBR".to_owned(),
                ..postal("1 Row")
            },
            "postal_address.country",
        ),
        (
            PostalAddress {
                country: String::new(),
                ..postal("1 Row")
            },
            "postal_address.country",
        ),
        (
            PostalAddress {
                postal_code: String::new(),
                ..postal("1 Row")
            },
            "postal_address.postal_code",
        ),
        (
            PostalAddress {
                postal_code: "N1/9GU".to_owned(),
                ..postal("1 Row")
            },
            "postal_address.postal_code",
        ),
        (
            PostalAddress {
                postal_code: "1".repeat(21),
                ..postal("1 Row")
            },
            "postal_address.postal_code",
        ),
        (postal("   "), "postal_address.line1"),
        (postal(&"x".repeat(201)), "postal_address.line1"),
        (
            PostalAddress {
                line2: "x".repeat(201),
                ..postal("1 Row")
            },
            "postal_address.line2",
        ),
        (
            PostalAddress {
                city: String::new(),
                ..postal("1 Row")
            },
            "postal_address.city",
        ),
        (
            PostalAddress {
                city: "x".repeat(101),
                ..postal("1 Row")
            },
            "postal_address.city",
        ),
        (
            PostalAddress {
                region: "x".repeat(101),
                ..postal("1 Row")
            },
            "postal_address.region",
        ),
    ];

    for (address, field) in cases {
        let (code, message) = refused(
            app.client
                .clone()
                .create_address(as_customer(user, create(user, address, false)))
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    let (missing, message) = refused(
        app.client
            .clone()
            .create_address(as_customer(
                user,
                CreateAddressRequest {
                    user_id: user.to_string(),
                    postal_address: None,
                    is_default: false,
                },
            ))
            .await,
    );
    assert_eq!(missing, Code::InvalidArgument);
    assert!(message.starts_with("postal_address: "), "{message}");
    assert!(app.addresses(user).await.is_empty());
}

#[tokio::test]
async fn a_lower_case_country_is_accepted_as_its_code() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;

    let created = app
        .client
        .clone()
        .create_address(as_customer(
            user,
            create(
                user,
                PostalAddress {
                    country: "de".to_owned(),
                    ..postal("1 Row")
                },
                false,
            ),
        ))
        .await
        .expect("created")
        .into_inner()
        .address
        .expect("address");

    assert_eq!(created.postal_address.expect("postal").country, "DE");
}

#[tokio::test]
async fn a_malformed_update_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let created = app.add_address(user, "1 Analytical Row", false).await;

    let (country, country_message) = refused(
        app.client
            .clone()
            .update_address(as_customer(
                user,
                UpdateAddressRequest {
                    city: Some("Paris".to_owned()),
                    country: Some("ZZ".to_owned()),
                    ..update(user, &created.id)
                },
            ))
            .await,
    );
    let (line1, line1_message) = refused(
        app.client
            .clone()
            .update_address(as_customer(
                user,
                UpdateAddressRequest {
                    line1: Some(String::new()),
                    ..update(user, &created.id)
                },
            ))
            .await,
    );

    assert_eq!(country, Code::InvalidArgument);
    assert!(
        country_message.starts_with("country: "),
        "{country_message}"
    );
    assert_eq!(line1, Code::InvalidArgument);
    assert!(line1_message.starts_with("line1: "), "{line1_message}");
    assert_eq!(app.addresses(user).await, vec![created]);
}

#[tokio::test]
async fn malformed_ids_are_invalid_and_unknown_ones_not_found() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let stranger = Uuid::new_v4();
    let mut client = app.client.clone();

    let (bad_address, address_message) = refused(
        client
            .get_address(as_customer(user, get(user, "address-1")))
            .await,
    );
    let (bad_user, user_message) = refused(
        client
            .list_addresses(as_admin(ListAddressesRequest {
                user_id: "nobody".to_owned(),
            }))
            .await,
    );
    let (unknown_address, _) = refused(
        client
            .get_address(as_customer(user, get(user, &Uuid::new_v4().to_string())))
            .await,
    );
    let (unknown_user_list, _) = refused(
        client
            .list_addresses(as_admin(ListAddressesRequest {
                user_id: stranger.to_string(),
            }))
            .await,
    );
    let (unknown_user_create, _) = refused(
        client
            .create_address(as_admin(create(stranger, postal("1 Row"), false)))
            .await,
    );

    assert_eq!(bad_address, Code::InvalidArgument);
    assert!(
        address_message.starts_with("address_id: "),
        "{address_message}"
    );
    assert_eq!(bad_user, Code::InvalidArgument);
    assert!(user_message.starts_with("user_id: "), "{user_message}");
    assert_eq!(unknown_address, Code::NotFound);
    assert_eq!(unknown_user_list, Code::NotFound);
    assert_eq!(unknown_user_create, Code::NotFound);
}

#[tokio::test]
async fn an_address_book_holds_at_most_twenty_addresses() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let mut created = Vec::new();
    for i in 0..20 {
        created.push(
            app.add_address(user, &format!("{i} Full Street"), false)
                .await,
        );
    }

    let (code, _) = refused(
        app.client
            .clone()
            .create_address(as_customer(
                user,
                create(user, postal("21 Full Street"), true),
            ))
            .await,
    );
    app.client
        .clone()
        .delete_address(as_customer(user, delete(user, &created[5].id)))
        .await
        .expect("deleted");
    let again = app.add_address(user, "21 Full Street", false).await;

    assert_eq!(code, Code::FailedPrecondition);
    assert_eq!(app.addresses(user).await.len(), 20);
    assert!(!again.is_default);
    assert_eq!(defaults(&app, user).await, vec![created[0].id.clone()]);
}

#[tokio::test]
async fn deleting_the_default_leaves_the_user_without_one() {
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let first = app.add_address(user, "1 Analytical Row", false).await;
    let second = app.add_address(user, "2 Difference Lane", false).await;
    let mut client = app.client.clone();

    client
        .delete_address(as_customer(user, delete(user, &first.id)))
        .await
        .expect("deleted");
    let (again, _) = refused(
        client
            .delete_address(as_customer(user, delete(user, &first.id)))
            .await,
    );

    assert_eq!(again, Code::NotFound);
    assert_eq!(app.addresses(user).await, vec![second]);
    assert!(defaults(&app, user).await.is_empty());
}

#[tokio::test]
async fn an_address_removed_while_an_update_waits_for_it_is_not_found() {
    // Arrange: the address's row is held while an update that has read it
    // waits to write it, and the address is removed meanwhile.
    let app = spawn_app().await;
    let user = app.customer("ada@example.com").await;
    let address = app.add_address(user, "2 Difference Lane", false).await;
    let id = Uuid::parse_str(&address.id).expect("uuid");
    let mut held = app.pool.begin().await.expect("transaction");
    sqlx::query("SELECT 1 FROM addresses WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *held)
        .await
        .expect("address locked");
    let mut client = app.client.clone();
    let update = tokio::spawn(async move {
        client
            .update_address(as_customer(
                user,
                UpdateAddressRequest {
                    line1: Some("3 Engine Street".to_owned()),
                    ..update(user, &id.to_string())
                },
            ))
            .await
    });
    gocommerce_platform::testing::wait_for_lock_waiters(&app.pool, 1).await;

    // Act
    sqlx::query("DELETE FROM addresses WHERE id = $1")
        .bind(id)
        .execute(&mut *held)
        .await
        .expect("removed");
    held.commit().await.expect("committed");

    // Assert
    let (code, _) = refused(update.await.expect("answered"));
    assert_eq!(code, Code::NotFound);
}
