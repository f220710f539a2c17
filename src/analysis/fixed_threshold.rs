//! The team's old rule, kept as the benchmark's point of comparison: every interval, the error
//! rate of that interval must be below the threshold; after `checks` passing intervals the canary
//! passes, and one interval at or above the threshold rolls it back.
//!
//! It is a [`MetricTracker`] with `count = checks` and `failure_limit = 0`. An interval without
//! requests passes, as `errors / requests < 5%` did in the script when it printed 0% for no
//! traffic. Its weakness is the one the sequential test fixes: each interval is judged alone, so
//! at 5 canary requests per second two errors in 25 requests (8%) roll back a canary whose real
//! error rate is 1%, and the risk compounds over every check.

use super::{Counts, MeasurementOutcome, MetricLimits, MetricTracker, Phase};

/// The fixed-threshold check over successive intervals.
#[derive(Debug, Clone)]
pub struct FixedThresholdAnalysis {
    threshold: f64,
    tracker: MetricTracker,
}

impl FixedThresholdAnalysis {
    /// `checks` intervals must each have an error rate below `threshold`;
    /// `consecutive_error_limit` failed reads are tolerated.
    pub fn new(threshold: f64, checks: u32, consecutive_error_limit: u32) -> Self {
        Self {
            threshold,
            tracker: MetricTracker::new(MetricLimits {
                count: checks,
                failure_limit: 0,
                inconclusive_limit: 0,
                consecutive_error_limit,
            }),
        }
    }

    /// Judges one interval's canary counts (`None`: the metrics could not be read).
    pub fn record(&mut self, window: Option<Counts>) -> Phase {
        let outcome = match window.map(Counts::error_rate) {
            None => MeasurementOutcome::Error,
            Some(None) => MeasurementOutcome::Pass,
            Some(Some(rate)) if rate < self.threshold => MeasurementOutcome::Pass,
            Some(Some(_)) => MeasurementOutcome::Fail,
        };
        self.tracker.record(outcome)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.tracker.phase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, errors: u64) -> Option<Counts> {
        Some(Counts::new(requests, errors).expect("valid counts"))
    }

    #[test]
    fn one_bad_interval_fails_and_all_good_intervals_pass() {
        let mut analysis = FixedThresholdAnalysis::new(0.05, 3, 2);
        assert_eq!(analysis.record(window(25, 1)), Phase::Running); // 4% < 5%
        assert_eq!(analysis.record(window(0, 0)), Phase::Running); // no traffic passes
        assert_eq!(analysis.record(window(25, 0)), Phase::Successful);

        let mut analysis = FixedThresholdAnalysis::new(0.05, 3, 2);
        assert_eq!(analysis.record(window(25, 1)), Phase::Running);
        assert_eq!(analysis.record(window(25, 2)), Phase::Failed); // 8% ≥ 5%

        let mut analysis = FixedThresholdAnalysis::new(0.05, 3, 2);
        assert_eq!(analysis.record(window(20, 1)), Phase::Failed); // exactly 5% fails
    }

    #[test]
    fn unreadable_metrics_count_as_errors() {
        let mut analysis = FixedThresholdAnalysis::new(0.05, 3, 1);
        assert_eq!(analysis.record(None), Phase::Running);
        assert_eq!(analysis.record(None), Phase::Error);
    }
}
