//! The category tree: unique slugs, no cycles, no deleting what is in use.

use gocommerce_proto::product::v1::{
    ArchiveProductRequest, CreateCategoryRequest, DeleteCategoryRequest, GetCategoryRequest,
    ListCategoriesRequest, UpdateCategoryRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{admin, anonymous, assert_status, customer, input, spawn_app};

fn create(name: &str, slug: &str, parent_id: &str) -> CreateCategoryRequest {
    CreateCategoryRequest {
        name: name.to_owned(),
        slug: slug.to_owned(),
        parent_id: parent_id.to_owned(),
    }
}

fn update(id: &str) -> UpdateCategoryRequest {
    UpdateCategoryRequest {
        category_id: id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn categories_form_a_tree_that_anyone_can_read_ordered_by_name() {
    let app = spawn_app().await;
    let games = app.category("Games", "games", "").await;
    let board = app.category("Board games", "board-games", &games.id).await;
    let books = app.category("Books", "books", "").await;

    let list = app
        .client()
        .list_categories(anonymous(ListCategoriesRequest {}))
        .await
        .expect("listed")
        .into_inner()
        .items;
    let fetched = app
        .client()
        .get_category(anonymous(GetCategoryRequest {
            category_id: board.id.clone(),
        }))
        .await
        .expect("found")
        .into_inner()
        .category
        .expect("category");

    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Board games", "Books", "Games"]);
    assert_eq!(fetched.parent_id, games.id);
    assert_eq!(fetched.slug, "board-games");
    assert_eq!(list[1].id, books.id);
    assert_eq!(list[1].parent_id, "");
}

#[tokio::test]
async fn a_taken_slug_is_already_exists_on_create_and_on_update() {
    let app = spawn_app().await;
    app.category("Games", "games", "").await;
    let books = app.category("Books", "books", "").await;

    let created = app
        .client()
        .create_category(admin(create("More games", "games", "")))
        .await;
    let updated = app
        .client()
        .update_category(admin(UpdateCategoryRequest {
            slug: Some("games".to_owned()),
            ..update(&books.id)
        }))
        .await;

    assert_status(created, Code::AlreadyExists, "slug");
    assert_status(updated, Code::AlreadyExists, "slug");
}

#[tokio::test]
async fn bad_category_input_is_refused_with_the_field_named() {
    let app = spawn_app().await;
    let mut client = app.client();

    for (request, field) in [
        (create("", "ok", ""), "name"),
        (create("   ", "ok", ""), "name"),
        (create("Ok", "Not A Slug", ""), "slug"),
        (create("Ok", "", ""), "slug"),
        (create("Ok", "under_score", ""), "slug"),
        (create("Ok", "ok", "not-a-uuid"), "parent_id"),
    ] {
        assert_status(
            client.create_category(admin(request)).await,
            Code::InvalidArgument,
            field,
        );
    }
    assert_status(
        client
            .create_category(admin(create("Ok", "ok", &Uuid::new_v4().to_string())))
            .await,
        Code::NotFound,
        "parent_id",
    );
    assert_status(
        client
            .get_category(anonymous(GetCategoryRequest {
                category_id: "nope".to_owned(),
            }))
            .await,
        Code::InvalidArgument,
        "category_id",
    );
    assert_status(
        client
            .get_category(anonymous(GetCategoryRequest {
                category_id: Uuid::new_v4().to_string(),
            }))
            .await,
        Code::NotFound,
        "category",
    );
    assert_status(
        client
            .update_category(admin(update(&Uuid::new_v4().to_string())))
            .await,
        Code::NotFound,
        "category",
    );
}

#[tokio::test]
async fn a_category_cannot_move_under_itself_or_its_descendants() {
    let app = spawn_app().await;
    let root = app.category("Root", "root", "").await;
    let child = app.category("Child", "child", &root.id).await;
    let grandchild = app.category("Grandchild", "grandchild", &child.id).await;
    let mut client = app.client();

    let under_grandchild = client
        .update_category(admin(UpdateCategoryRequest {
            parent_id: Some(grandchild.id.clone()),
            ..update(&root.id)
        }))
        .await;
    let under_itself = client
        .update_category(admin(UpdateCategoryRequest {
            parent_id: Some(child.id.clone()),
            ..update(&child.id)
        }))
        .await;
    let moved = client
        .update_category(admin(UpdateCategoryRequest {
            parent_id: Some(root.id.clone()),
            name: Some("Grandchild, promoted".to_owned()),
            ..update(&grandchild.id)
        }))
        .await
        .expect("moved")
        .into_inner()
        .category
        .expect("category");
    let rooted = client
        .update_category(admin(UpdateCategoryRequest {
            parent_id: Some(String::new()),
            ..update(&child.id)
        }))
        .await
        .expect("made a root")
        .into_inner()
        .category
        .expect("category");

    assert_status(under_grandchild, Code::InvalidArgument, "parent_id");
    assert_status(under_itself, Code::InvalidArgument, "parent_id");
    assert_eq!(moved.parent_id, root.id);
    assert_eq!(moved.name, "Grandchild, promoted");
    assert_eq!(moved.slug, "grandchild", "unset fields stay unchanged");
    assert_eq!(rooted.parent_id, "");
    assert_status(
        client
            .update_category(admin(UpdateCategoryRequest {
                parent_id: Some(Uuid::new_v4().to_string()),
                ..update(&child.id)
            }))
            .await,
        Code::NotFound,
        "parent_id",
    );
}

#[tokio::test]
async fn a_category_with_products_or_subcategories_cannot_be_deleted() {
    let app = spawn_app().await;
    let root = app.category("Root", "root", "").await;
    let leaf = app.category("Leaf", "leaf", &root.id).await;
    let stocked = app.category("Stocked", "stocked", "").await;
    let product = app.product(input("Lamp", 100, &stocked.id, 1)).await;
    app.client()
        .archive_product(admin(ArchiveProductRequest {
            product_id: product.id.clone(),
        }))
        .await
        .expect("archived");
    let delete = |id: &str| {
        let mut client = app.client();
        let request = admin(DeleteCategoryRequest {
            category_id: id.to_owned(),
        });
        async move { client.delete_category(request).await }
    };

    assert_status(
        delete(&root.id).await,
        Code::FailedPrecondition,
        "subcategories",
    );
    assert_status(
        delete(&stocked.id).await,
        Code::FailedPrecondition,
        "products",
    );
    delete(&leaf.id).await.expect("an empty leaf is deleted");
    delete(&root.id).await.expect("now childless");

    assert_status(delete(&leaf.id).await, Code::NotFound, "category");
    assert_status(delete("bad").await, Code::InvalidArgument, "category_id");
    let left: Vec<String> = app
        .client()
        .list_categories(anonymous(ListCategoriesRequest {}))
        .await
        .expect("listed")
        .into_inner()
        .items
        .into_iter()
        .map(|c| c.slug)
        .collect();
    assert_eq!(left, ["stocked"]);
}

#[tokio::test]
async fn only_admins_may_change_categories() {
    let app = spawn_app().await;
    let games = app.category("Games", "games", "").await;
    let mut client = app.client();

    assert_status(
        client.create_category(customer(create("X", "x", ""))).await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .create_category(anonymous(create("X", "x", "")))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .update_category(customer(UpdateCategoryRequest {
                name: Some("Mine".to_owned()),
                ..update(&games.id)
            }))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .delete_category(customer(DeleteCategoryRequest {
                category_id: games.id.clone(),
            }))
            .await,
        Code::PermissionDenied,
        "admin",
    );
}
