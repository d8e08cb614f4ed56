//! Latency histograms (HDR, microsecond resolution) and their summaries, and
//! the ratios every figure is reported as.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::Cpu;

/// Why a request failed, so a report can say what its errors were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// Answered with this status, not a 2xx.
    Status(u16),
    /// The connection failed, or the body could not be read.
    Transport,
    /// An answer other than the one waited for (an order that ended
    /// unpaid, a body that is not the JSON expected), or a baseline's
    /// transaction that failed.
    Wrong,
    /// No answer in time.
    Timeout,
    /// Never sent: no connection came free before the window closed.
    Unsent,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "{code}"),
            Self::Transport => f.write_str("transport"),
            Self::Wrong => f.write_str("wrong answer"),
            Self::Timeout => f.write_str("timeout"),
            Self::Unsent => f.write_str("unsent"),
        }
    }
}

/// What became of one request.
pub type Outcome = Result<(), Failure>;

/// Latencies recorded in microseconds, 1 µs to 5 minutes, three significant
/// digits, and the failures by kind.
#[derive(Debug, Clone)]
pub struct Recorder {
    histogram: Histogram<u64>,
    failures: BTreeMap<Failure, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        #[allow(clippy::expect_used)]
        let histogram = Histogram::new_with_bounds(1, 300_000_000, 3)
            .expect("constant histogram bounds are valid");
        Self {
            histogram,
            failures: BTreeMap::new(),
        }
    }

    /// A completed request; a failed one counts as an error of its kind and
    /// its latency is still recorded (a fast error is not a fast answer, but
    /// a slow one is still slow).
    pub fn record(&mut self, latency: Duration, outcome: Outcome) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
        if let Err(failure) = outcome {
            *self.failures.entry(failure).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        for (failure, count) in &other.failures {
            *self.failures.entry(*failure).or_default() += count;
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The figures of a run that lasted `elapsed`; throughput counts only the
    /// requests that succeeded.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let requests = self.histogram.len();
        let errors = self.failures.values().sum();
        let ok = requests.saturating_sub(errors);
        let secs = elapsed.as_secs_f64();
        let ms = |micros: u64| micros as f64 / 1000.0;
        let (p50, p90, p99, max) = if requests == 0 {
            (0.0, 0.0, 0.0, 0.0)
        } else {
            (
                ms(self.histogram.value_at_quantile(0.50)),
                ms(self.histogram.value_at_quantile(0.90)),
                ms(self.histogram.value_at_quantile(0.99)),
                ms(self.histogram.max()),
            )
        };
        Summary {
            requests,
            errors,
            failures: self
                .failures
                .iter()
                .map(|(failure, count)| (failure.to_string(), *count))
                .collect(),
            seconds: secs,
            throughput: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            p50_ms: p50,
            p90_ms: p90,
            p99_ms: p99,
            max_ms: max,
            cpu: None,
        }
    }
}

impl Summary {
    /// The error count, with its kinds when there are any: "0", or
    /// "69 (unsent 66, 503: 3)".
    pub fn errors_by_kind(&self) -> String {
        if self.failures.is_empty() {
            return self.errors.to_string();
        }
        let kinds: Vec<String> = self
            .failures
            .iter()
            .map(|(kind, count)| {
                if kind.parse::<u16>().is_ok() {
                    format!("{kind}: {count}")
                } else {
                    format!("{kind} {count}")
                }
            })
            .collect();
        format!("{} ({})", self.errors, kinds.join(", "))
    }
}

/// What one measurement reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    /// The errors by kind: a status code, "transport", "wrong answer",
    /// "timeout" or "unsent".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Successful requests (or transactions) a second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU per request over the measurement, where it was sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
}

/// `measured / baseline`, or None when the baseline is zero or either is not
/// a number, so a broken baseline shows as "n/a" rather than as infinity.
pub fn ratio(measured: f64, baseline: f64) -> Option<f64> {
    if !measured.is_finite() || !baseline.is_finite() || baseline <= 0.0 {
        return None;
    }
    Some(measured / baseline)
}

/// The request rate a mix should sustain if each kind of request cost what it
/// costs alone: the weighted harmonic combination of the isolated maxima,
/// `1 / Σ (share_i / max_i)`. None when a share is given no positive maximum.
pub fn predicted_mix_rate(parts: &[(f64, f64)]) -> Option<f64> {
    let total_share: f64 = parts.iter().map(|(share, _)| share).sum();
    if total_share <= 0.0 {
        return None;
    }
    let mut seconds_per_request = 0.0;
    for &(share, max) in parts {
        if share <= 0.0 {
            continue;
        }
        if !(max.is_finite() && max > 0.0) {
            return None;
        }
        seconds_per_request += (share / total_share) / max;
    }
    (seconds_per_request > 0.0).then(|| 1.0 / seconds_per_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reports_percentiles_of_the_recorded_latencies() {
        let mut recorder = Recorder::new();
        for ms in 1..=100 {
            recorder.record(Duration::from_millis(ms), Ok(()));
        }
        let summary = recorder.summary(Duration::from_secs(2));
        assert_eq!(summary.requests, 100);
        assert_eq!(summary.errors, 0);
        assert!((summary.throughput - 50.0).abs() < 1e-9);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p90_ms - 90.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn errors_are_counted_by_kind_and_left_out_of_the_throughput() {
        let mut recorder = Recorder::new();
        recorder.record(Duration::from_millis(1), Ok(()));
        recorder.record(Duration::from_millis(1), Err(Failure::Unsent));
        recorder.record(Duration::from_millis(1), Err(Failure::Status(503)));
        recorder.record(Duration::from_millis(1), Err(Failure::Unsent));
        let summary = recorder.summary(Duration::from_secs(1));
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.errors, 3);
        assert_eq!(summary.failures["unsent"], 2);
        assert_eq!(summary.failures["503"], 1);
        assert_eq!(summary.errors_by_kind(), "3 (503: 1, unsent 2)");
        assert!((summary.throughput - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_run_without_errors_reports_a_bare_zero() {
        let mut recorder = Recorder::new();
        recorder.record(Duration::from_millis(1), Ok(()));
        let summary = recorder.summary(Duration::from_secs(1));
        assert!(summary.failures.is_empty());
        assert_eq!(summary.errors_by_kind(), "0");
    }

    #[test]
    fn an_empty_run_reports_zeros_rather_than_failing() {
        let summary = Recorder::new().summary(Duration::ZERO);
        assert_eq!(summary.requests, 0);
        assert_eq!(summary.throughput, 0.0);
        assert_eq!(summary.p99_ms, 0.0);
    }

    #[test]
    fn merged_recorders_hold_both_sets_of_latencies_and_errors() {
        let mut a = Recorder::new();
        a.record(Duration::from_millis(1), Err(Failure::Timeout));
        let mut b = Recorder::new();
        b.record(Duration::from_millis(200), Err(Failure::Timeout));
        b.record(Duration::from_millis(2), Ok(()));
        a.merge(&b);
        let summary = a.summary(Duration::from_secs(1));
        assert_eq!(summary.requests, 3);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.failures["timeout"], 2);
        assert!((summary.max_ms - 200.0).abs() < 0.5);
    }

    #[test]
    fn a_ratio_against_a_zero_or_broken_baseline_is_not_available() {
        assert_eq!(ratio(50.0, 100.0), Some(0.5));
        assert_eq!(ratio(50.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
    }

    #[test]
    fn the_predicted_mix_rate_is_the_weighted_harmonic_combination() {
        // Half at 100/s and half at 300/s: 0.5/100 + 0.5/300 = 1/150.
        let rate = predicted_mix_rate(&[(0.5, 100.0), (0.5, 300.0)]).expect("rate");
        assert!((rate - 150.0).abs() < 1e-9, "{rate}");
        // Shares need not add up to one.
        let rate = predicted_mix_rate(&[(57.0, 1000.0), (43.0, 1000.0)]).expect("rate");
        assert!((rate - 1000.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn a_mix_with_an_unmeasured_part_has_no_prediction() {
        assert_eq!(predicted_mix_rate(&[(0.5, 100.0), (0.5, 0.0)]), None);
        assert_eq!(predicted_mix_rate(&[]), None);
        // A part with no share does not need a maximum.
        assert!(predicted_mix_rate(&[(1.0, 10.0), (0.0, 0.0)]).is_some());
    }
}
