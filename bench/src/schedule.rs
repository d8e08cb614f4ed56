//! The open-loop schedule: when each request is meant to be sent. Latency is
//! measured from these intended times, not from when the generator actually
//! got round to sending, so a stalled server cannot hide its queue by slowing
//! the client down (coordinated omission).

use std::time::Duration;

/// Requests evenly spaced at a fixed rate for a fixed duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate_per_sec: f64,
    duration: Duration,
}

impl Schedule {
    /// A rate of zero or less (or not finite) sends nothing.
    pub fn new(rate_per_sec: f64, duration: Duration) -> Self {
        let rate_per_sec = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            0.0
        };
        Self {
            rate_per_sec,
            duration,
        }
    }

    /// How many requests the schedule holds: every `i` with `offset(i) < duration`.
    pub fn count(&self) -> u64 {
        if self.rate_per_sec == 0.0 {
            return 0;
        }
        // Not floor(duration * rate): offsets are computed from the index, so
        // count exactly the indices whose offset is inside the window.
        let estimate = (self.duration.as_secs_f64() * self.rate_per_sec).ceil() as u64;
        (0..=estimate.saturating_add(1))
            .rev()
            .find(|&i| i == 0 || self.offset(i - 1) < self.duration)
            .unwrap_or(0)
    }

    /// When request `index` (from zero) is meant to be sent, after the start.
    /// Computed from the index rather than accumulated, so rounding does not
    /// drift over a long run.
    pub fn offset(&self, index: u64) -> Duration {
        if self.rate_per_sec == 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(index as f64 / self.rate_per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced_at_the_requested_rate() {
        let schedule = Schedule::new(200.0, Duration::from_secs(1));
        assert_eq!(schedule.offset(0), Duration::ZERO);
        assert_eq!(schedule.offset(1), Duration::from_millis(5));
        assert_eq!(schedule.offset(100), Duration::from_millis(500));
    }

    #[test]
    fn a_second_at_a_thousand_a_second_holds_a_thousand_requests() {
        assert_eq!(Schedule::new(1000.0, Duration::from_secs(1)).count(), 1000);
        assert_eq!(Schedule::new(3.0, Duration::from_secs(2)).count(), 6);
        assert_eq!(Schedule::new(0.5, Duration::from_secs(3)).count(), 2);
    }

    #[test]
    fn every_scheduled_request_falls_inside_the_window() {
        let schedule = Schedule::new(333.3, Duration::from_millis(1500));
        let n = schedule.count();
        assert!(schedule.offset(n - 1) < Duration::from_millis(1500));
        assert!(schedule.offset(n) >= Duration::from_millis(1500));
    }

    #[test]
    fn offsets_do_not_drift_over_a_long_run() {
        let schedule = Schedule::new(3.0, Duration::from_secs(3600));
        let at = schedule.offset(3 * 3600);
        assert!((at.as_secs_f64() - 3600.0).abs() < 1e-6, "{at:?}");
    }

    #[test]
    fn a_zero_or_invalid_rate_sends_nothing() {
        assert_eq!(Schedule::new(0.0, Duration::from_secs(5)).count(), 0);
        assert_eq!(Schedule::new(-1.0, Duration::from_secs(5)).count(), 0);
        assert_eq!(Schedule::new(f64::NAN, Duration::from_secs(5)).count(), 0);
    }
}
