//! The order state machine. Every status change goes through `transition`,
//! which refuses anything the machine does not allow:
//!
//! ```text
//! PENDING -> RESERVED -> PAID -> SHIPPED -> DELIVERED
//! PENDING, RESERVED -> CANCELLED
//! PAID -> CANCELLED (with a full refund)
//! PAID, SHIPPED, DELIVERED, PARTIALLY_REFUNDED -> REFUNDED | PARTIALLY_REFUNDED
//! ```

use gocommerce_proto::order::v1::OrderStatus;

/// The payment-method tokens the payment service accepts. Checked here too,
/// so an order with an unknown method is refused before anything is written.
pub const PAYMENT_METHODS: [&str; 4] = [
    "pm_card_ok",
    "pm_card_declined",
    "pm_card_error",
    "pm_card_slow",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Reserved,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
    PartiallyRefunded,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Self::Pending,
        Self::Reserved,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
        Self::Refunded,
        Self::PartiallyRefunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Reserved => "RESERVED",
            Self::Paid => "PAID",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
            Self::Cancelled => "CANCELLED",
            Self::Refunded => "REFUNDED",
            Self::PartiallyRefunded => "PARTIALLY_REFUNDED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn to_proto(self) -> OrderStatus {
        match self {
            Self::Pending => OrderStatus::Pending,
            Self::Reserved => OrderStatus::Reserved,
            Self::Paid => OrderStatus::Paid,
            Self::Shipped => OrderStatus::Shipped,
            Self::Delivered => OrderStatus::Delivered,
            Self::Cancelled => OrderStatus::Cancelled,
            Self::Refunded => OrderStatus::Refunded,
            Self::PartiallyRefunded => OrderStatus::PartiallyRefunded,
        }
    }

    pub fn from_proto(status: OrderStatus) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.to_proto() == status)
    }

    /// Whether `self -> to` is a step of the machine.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, Reserved)
                | (Reserved, Paid)
                | (Paid | PartiallyRefunded, Shipped)
                | (Shipped | PartiallyRefunded, Delivered)
                | (Pending | Reserved | Paid, Cancelled)
                | (
                    Paid | Shipped | Delivered | PartiallyRefunded,
                    Refunded | PartiallyRefunded
                )
        )
    }

    /// No further change is expected in the normal course of an order; a
    /// live status stream ends here.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Cancelled | Self::Refunded)
    }

    /// Whether fulfilment may take `order` to `to`. A partial refund leaves
    /// the order PARTIALLY_REFUNDED whether or not it was shipped, and its
    /// goods still go out: such an order is shipped if it never was and
    /// delivered if it was shipped and not yet delivered.
    pub fn fulfilment_allows(shipped: bool, delivered: bool, to: Status) -> bool {
        match to {
            Status::Shipped => !shipped,
            Status::Delivered => shipped && !delivered,
            _ => true,
        }
    }

    /// Whether refunds may be requested.
    pub fn refundable(self) -> bool {
        matches!(
            self,
            Self::Paid | Self::Shipped | Self::Delivered | Self::PartiallyRefunded
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_allows_exactly_the_documented_transitions() {
        use Status::*;
        let allowed = [
            (Pending, Reserved),
            (Reserved, Paid),
            (Paid, Shipped),
            (PartiallyRefunded, Shipped),
            (Shipped, Delivered),
            (PartiallyRefunded, Delivered),
            (Pending, Cancelled),
            (Reserved, Cancelled),
            (Paid, Cancelled),
            (Paid, Refunded),
            (Paid, PartiallyRefunded),
            (Shipped, Refunded),
            (Shipped, PartiallyRefunded),
            (Delivered, Refunded),
            (Delivered, PartiallyRefunded),
            (PartiallyRefunded, Refunded),
            (PartiallyRefunded, PartiallyRefunded),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn a_partly_refunded_order_is_shipped_once_and_then_delivered_once() {
        assert!(Status::fulfilment_allows(false, false, Status::Shipped));
        assert!(!Status::fulfilment_allows(true, false, Status::Shipped));
        assert!(!Status::fulfilment_allows(false, false, Status::Delivered));
        assert!(Status::fulfilment_allows(true, false, Status::Delivered));
        assert!(!Status::fulfilment_allows(true, true, Status::Delivered));
    }

    #[test]
    fn statuses_round_trip_through_names_and_protobuf() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Status::from_proto(status.to_proto()), Some(status));
        }
        assert_eq!(Status::parse("SHIPPING"), None);
    }
}
