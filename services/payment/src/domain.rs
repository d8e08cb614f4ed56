//! Payment methods, statuses and the conversions to protobuf.

use gocommerce_proto::payment::v1 as pb;

use crate::error::PaymentError;

/// The simulated processor's test tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Always captured.
    Ok,
    /// Always declined; never retried.
    Declined,
    /// Fails transiently on every call, so retries run out.
    Error,
    /// Answers only after the caller's deadline, then captures.
    Slow,
}

impl Method {
    pub const TOKENS: [&'static str; 4] = [
        "pm_card_ok",
        "pm_card_declined",
        "pm_card_error",
        "pm_card_slow",
    ];

    pub fn parse(token: &str) -> Result<Self, PaymentError> {
        match token {
            "pm_card_ok" => Ok(Self::Ok),
            "pm_card_declined" => Ok(Self::Declined),
            "pm_card_error" => Ok(Self::Error),
            "pm_card_slow" => Ok(Self::Slow),
            other => Err(PaymentError::InvalidArgument(format!(
                "payment_method: unknown method {other:?}; use one of {}",
                Self::TOKENS.join(", ")
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Succeeded,
    Declined,
    Failed,
    RefundPending,
    PartiallyRefunded,
    Refunded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
            Self::Failed => "failed",
            Self::RefundPending => "refund_pending",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(raw: &str) -> Self {
        match raw {
            "succeeded" => Self::Succeeded,
            "declined" => Self::Declined,
            "failed" => Self::Failed,
            "refund_pending" => Self::RefundPending,
            "partially_refunded" => Self::PartiallyRefunded,
            "refunded" => Self::Refunded,
            // The CHECK constraint admits nothing else.
            _ => Self::Pending,
        }
    }

    /// Whether money was captured (and may be refunded).
    pub fn captured(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::RefundPending | Self::PartiallyRefunded | Self::Refunded
        )
    }

    pub fn to_proto(self) -> pb::PaymentStatus {
        match self {
            Self::Pending => pb::PaymentStatus::Pending,
            Self::Succeeded => pb::PaymentStatus::Succeeded,
            Self::Declined => pb::PaymentStatus::Declined,
            Self::Failed => pb::PaymentStatus::Failed,
            Self::RefundPending => pb::PaymentStatus::RefundPending,
            Self::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
            Self::Refunded => pb::PaymentStatus::Refunded,
        }
    }
}

pub fn refund_status_to_proto(raw: &str) -> pb::RefundStatus {
    match raw {
        "succeeded" => pb::RefundStatus::Succeeded,
        "failed" => pb::RefundStatus::Failed,
        _ => pb::RefundStatus::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_token_parses_and_others_are_refused() {
        for token in Method::TOKENS {
            assert!(Method::parse(token).is_ok(), "{token}");
        }
        let error = Method::parse("pm_card_gold").expect_err("unknown");
        assert!(error.to_string().contains("pm_card_ok"), "{error}");
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            Status::Pending,
            Status::Succeeded,
            Status::Declined,
            Status::Failed,
            Status::RefundPending,
            Status::PartiallyRefunded,
            Status::Refunded,
        ] {
            assert_eq!(Status::parse(status.as_str()), status);
        }
        assert!(!Status::Declined.captured());
        assert!(Status::PartiallyRefunded.captured());
    }
}
