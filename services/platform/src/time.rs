//! Times between their Rust form (`chrono`) and their protobuf form, the one
//! conversion every service's messages and events need.

use chrono::{DateTime, Utc};

/// The protobuf form of a time, to the nanosecond.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Below a billion, so it always fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The Rust form of a protobuf time; `None` when it is out of chrono's
/// range or its nanoseconds are not below a billion.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_keeps_its_seconds_and_nanoseconds() {
        let at = DateTime::from_timestamp(1_796_656_200, 123_456_789).expect("a valid time");

        let ts = timestamp(at);

        assert_eq!((ts.seconds, ts.nanos), (1_796_656_200, 123_456_789));
    }

    #[test]
    fn a_time_before_1970_counts_its_nanoseconds_forward() {
        let at = DateTime::from_timestamp(-1, 500_000_000).expect("a valid time");

        let ts = timestamp(at);

        // protobuf's rule: nanos are never negative.
        assert_eq!((ts.seconds, ts.nanos), (-1, 500_000_000));
    }

    #[test]
    fn a_protobuf_time_comes_back_as_it_went_out() {
        let at = DateTime::from_timestamp(1_796_656_200, 123_456_789).expect("a valid time");

        assert_eq!(from_timestamp(&timestamp(at)), Some(at));
    }

    #[test]
    fn protobuf_times_chrono_cannot_hold_are_refused() {
        let negative_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        let leap_nanos = prost_types::Timestamp {
            seconds: 59,
            nanos: 1_500_000_000,
        };
        let too_far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };

        assert_eq!(from_timestamp(&negative_nanos), None);
        assert_eq!(from_timestamp(&leap_nanos), None);
        assert_eq!(from_timestamp(&too_far), None);
    }
}
