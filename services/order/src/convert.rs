//! Rows to protobuf, the address snapshot, and the events an order emits.

use gocommerce_platform::events;
use gocommerce_platform::outbox::OutboxMessage;
use gocommerce_platform::time::timestamp;
use gocommerce_proto::common::v1::{Money, PostalAddress};
use gocommerce_proto::events::v1 as ev;
use gocommerce_proto::order::v1 as pb;

use crate::db::{self, Changes, HistoryRow, ItemRow, NewOrder, OrderRow, ShippingAddress};
use crate::domain::Status;

pub const SOURCE: &str = "gocommerce-order";

pub fn money(amount: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount,
        currency: currency.to_owned(),
    })
}

/// The shipping address as stored with the order.
pub fn address_to_stored(address: &PostalAddress) -> ShippingAddress {
    ShippingAddress {
        name: address.name.clone(),
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        city: address.city.clone(),
        region: address.region.clone(),
        postal_code: address.postal_code.clone(),
        country: address.country.clone(),
    }
}

pub fn address_to_proto(address: &ShippingAddress) -> PostalAddress {
    PostalAddress {
        name: address.name.clone(),
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        city: address.city.clone(),
        region: address.region.clone(),
        postal_code: address.postal_code.clone(),
        country: address.country.clone(),
    }
}

fn status_proto(raw: &str) -> i32 {
    Status::parse(raw).map_or(pb::OrderStatus::Unspecified, Status::to_proto) as i32
}

pub fn history_to_proto(entry: &HistoryRow) -> pb::OrderHistoryEntry {
    pb::OrderHistoryEntry {
        from_status: entry
            .from_status
            .as_deref()
            .map_or(pb::OrderStatus::Unspecified as i32, status_proto),
        to_status: status_proto(&entry.to_status),
        at: Some(timestamp(entry.at)),
        actor: entry.actor.clone(),
        reason: entry.reason.clone(),
    }
}

pub fn item_to_proto(item: &ItemRow, currency: &str) -> pb::OrderItem {
    pb::OrderItem {
        product_id: item.product_id.to_string(),
        sku: item.sku.clone(),
        name: item.name.clone(),
        unit_price: money(item.unit_price, currency),
        quantity: item.quantity,
        line_total: money(item.line_total, currency),
    }
}

pub fn order_to_proto(order: &OrderRow, items: &[ItemRow], history: &[HistoryRow]) -> pb::Order {
    let shipment = order.carrier.as_ref().map(|carrier| pb::Shipment {
        carrier: carrier.clone(),
        tracking_number: order.tracking_number.clone().unwrap_or_default(),
        shipped_at: order.shipped_at.map(timestamp),
        delivered_at: order.delivered_at.map(timestamp),
    });
    pb::Order {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: order.status().to_proto() as i32,
        items: items
            .iter()
            .map(|i| item_to_proto(i, &order.currency))
            .collect(),
        total: money(order.total, &order.currency),
        shipping_address: Some(address_to_proto(&order.shipping_address)),
        shipping_address_id: order.shipping_address_id.to_string(),
        payment_method: order.payment_method.clone(),
        cancel_reason: order.cancel_reason.clone().unwrap_or_default(),
        shipment,
        refunded_amount: money(order.refunded_amount, &order.currency),
        history: history.iter().map(history_to_proto).collect(),
        created_at: Some(timestamp(order.created_at)),
        updated_at: Some(timestamp(order.updated_at)),
    }
}

fn lines(currency: &str, items: &[ItemRow]) -> Vec<ev::OrderLine> {
    items
        .iter()
        .map(|item| ev::OrderLine {
            product_id: item.product_id.to_string(),
            sku: item.sku.clone(),
            name: item.name.clone(),
            unit_price: money(item.unit_price, currency),
            quantity: item.quantity,
            line_total: money(item.line_total, currency),
        })
        .collect()
}

/// The `order.created` event of an order about to be written, which
/// `db::insert_order` writes with it.
pub fn created_event(new: &NewOrder<'_>) -> OutboxMessage {
    let payload = ev::event_envelope::Payload::OrderCreated(ev::OrderCreated {
        order_id: new.id.to_string(),
        user_id: new.user_id.to_string(),
        items: lines(new.currency, new.items),
        total: money(new.total, new.currency),
        shipping_address: Some(address_to_proto(&new.shipping_address)),
        payment_method: new.payment_method.to_owned(),
    });
    events::message(SOURCE, new.id, payload)
}

/// The event of moving `order` to `to` with `changes`, to be written with
/// the transition (`db::Event`), if that status has one.
pub fn transition_event<'a>(
    order: &'a OrderRow,
    to: Status,
    changes: &Changes,
    items: &[ItemRow],
    actor: &str,
) -> Option<db::Event<'a>> {
    status_event(&changes.applied_to(order, to), items, actor).map(|message| db::Event {
        held: order,
        message,
    })
}

/// The event announcing `order`'s current status, if that status has one.
pub fn status_event(
    order: &OrderRow,
    items: &[ItemRow],
    cancelled_by: &str,
) -> Option<OutboxMessage> {
    use ev::event_envelope::Payload;
    let id = order.id.to_string();
    let user_id = order.user_id.to_string();
    let total = money(order.total, &order.currency);
    let address = Some(address_to_proto(&order.shipping_address));
    let payload = match order.status() {
        Status::Paid => Payload::OrderPaid(ev::OrderPaid {
            order_id: id,
            user_id,
            items: lines(&order.currency, items),
            total,
            shipping_address: address,
            payment_id: order
                .payment_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
        }),
        Status::Cancelled => Payload::OrderCancelled(ev::OrderCancelled {
            order_id: id,
            user_id,
            items: lines(&order.currency, items),
            total,
            reason: order.cancel_reason.clone().unwrap_or_default(),
            cancelled_by: cancelled_by.to_owned(),
            refund_amount: money(order.refunded_amount, &order.currency),
        }),
        Status::Shipped => Payload::OrderShipped(ev::OrderShipped {
            order_id: id,
            user_id,
            items: lines(&order.currency, items),
            total,
            carrier: order.carrier.clone().unwrap_or_default(),
            tracking_number: order.tracking_number.clone().unwrap_or_default(),
            shipping_address: address,
        }),
        Status::Delivered => Payload::OrderDelivered(ev::OrderDelivered {
            order_id: id,
            user_id,
            items: lines(&order.currency, items),
            total,
        }),
        // A new order is announced as it is written (`created_event`), and
        // refunds by the payment service (payment.refunded).
        Status::Pending | Status::Reserved | Status::Refunded | Status::PartiallyRefunded => {
            return None;
        }
    };
    Some(events::message(SOURCE, order.id, payload))
}
