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
}
