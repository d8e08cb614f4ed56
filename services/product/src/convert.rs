//! Database rows as protobuf messages.

use gocommerce_platform::time::timestamp;
use gocommerce_proto::common::v1::Money;
use gocommerce_proto::product::v1 as pb;

use crate::db::{
    CategoryRow, MovementRow, ProductRow, ReservationItemRow, ReservationRow, StockRow,
};

pub fn category(row: &CategoryRow) -> pb::Category {
    pb::Category {
        id: row.id.to_string(),
        name: row.name.clone(),
        slug: row.slug.clone(),
        parent_id: row.parent_id.map(|id| id.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn product(row: &ProductRow) -> pb::Product {
    pb::Product {
        id: row.id.to_string(),
        sku: row.sku.clone(),
        name: row.name.clone(),
        description: row.description.clone(),
        price: Some(Money {
            amount: row.price,
            currency: row.currency.clone(),
        }),
        category_id: row.category_id.to_string(),
        attributes_json: row.attributes.clone(),
        images: row.images.clone(),
        active: row.active,
        in_stock: row.in_stock,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn stock(row: &StockRow) -> pb::Stock {
    pb::Stock {
        product_id: row.product_id.to_string(),
        on_hand: row.on_hand,
        reserved: row.reserved,
        available: row.on_hand - row.reserved,
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn movement_kind(kind: &str) -> pb::StockMovementKind {
    match kind {
        "initial" => pb::StockMovementKind::Initial,
        "adjustment" => pb::StockMovementKind::Adjustment,
        "reservation" => pb::StockMovementKind::Reservation,
        "release" => pb::StockMovementKind::Release,
        "commit" => pb::StockMovementKind::Commit,
        _ => pb::StockMovementKind::Unspecified,
    }
}

pub fn movement(row: &MovementRow) -> pb::StockMovement {
    pb::StockMovement {
        id: row.id.to_string(),
        product_id: row.product_id.to_string(),
        kind: movement_kind(&row.kind) as i32,
        on_hand_delta: row.on_hand_delta,
        reserved_delta: row.reserved_delta,
        reason: row.reason.clone(),
        order_id: row.order_id.map(|id| id.to_string()).unwrap_or_default(),
        actor: row.actor.clone(),
        created_at: Some(timestamp(row.created_at)),
    }
}

pub fn reservation(row: &ReservationRow, items: &[ReservationItemRow]) -> pb::Reservation {
    let status = match row.status.as_str() {
        "reserved" => pb::ReservationStatus::Reserved,
        "released" => pb::ReservationStatus::Released,
        "committed" => pb::ReservationStatus::Committed,
        _ => pb::ReservationStatus::Unspecified,
    };
    pb::Reservation {
        order_id: row.order_id.to_string(),
        status: status as i32,
        items: items
            .iter()
            .map(|i| pb::ReservationItem {
                product_id: i.product_id.to_string(),
                quantity: i.quantity,
            })
            .collect(),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}
