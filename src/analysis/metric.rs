//! Metric phases and measurement limits, after argo-rollouts' analysis model.
//!
//! A step's analysis is made of metrics (the canary error-rate test, the canary's `/health`,
//! service checks); each has a [`Phase`], and the step's phase is the worst of them
//! ([`Phase::combine`]). Metrics judged one measurement at a time (a health probe, a threshold
//! check) use a [`MetricTracker`] with argo's three limits: failed measurements tolerated,
//! inconclusive measurements tolerated, and consecutive measurement errors tolerated (an error
//! is "could not measure": provider down, metrics missing — not "measured and bad").

use serde::Serialize;

/// The state of one metric, or of a whole analysis (argo-rollouts' `AnalysisPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing measured yet.
    Pending,
    /// Measuring; no decision yet.
    Running,
    /// Decided: healthy.
    Successful,
    /// Decided: failing.
    Failed,
    /// Measurements kept failing (more consecutive errors than the limit): nothing can be
    /// decided from data, and the driver must not promote.
    Error,
    /// Decided that no decision is possible (more inconclusive measurements than the limit).
    Inconclusive,
}

impl Phase {
    /// Rank for [`Phase::combine`]: higher is worse. A failure dominates everything; an error
    /// (we could not look) is worse than an inconclusive answer (we looked and could not tell);
    /// either stops a promotion, which an unfinished metric (`Running`, `Pending`) only delays;
    /// `Successful` is the best and wins only when every metric is successful.
    fn severity(self) -> u8 {
        match self {
            Phase::Successful => 0,
            Phase::Pending => 1,
            Phase::Running => 2,
            Phase::Inconclusive => 3,
            Phase::Error => 4,
            Phase::Failed => 5,
        }
    }

    /// True once the metric will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Running)
    }

    /// The worst of several phases; `Successful` for none (nothing required, nothing failed).
    pub fn combine(phases: impl IntoIterator<Item = Phase>) -> Phase {
        phases
            .into_iter()
            .max_by_key(|phase| phase.severity())
            .unwrap_or(Phase::Successful)
    }
}

/// The outcome of one measurement of a per-measurement metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeasurementOutcome {
    /// The value met the success condition.
    Pass,
    /// The value met the failure condition.
    Fail,
    /// The value met neither (e.g. no traffic in the window).
    Inconclusive,
    /// No value: the provider failed or the metric was missing.
    Error,
}

/// argo-rollouts' limits for a per-measurement metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricLimits {
    /// Measurements needed before the metric can succeed (argo's `count`).
    pub count: u32,
    /// Failed measurements tolerated; one more fails the metric (argo default 0).
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated; one more makes the metric inconclusive (default 0).
    pub inconclusive_limit: u32,
    /// Consecutive errors tolerated; one more puts the metric in `Error` (argo default 4).
    pub consecutive_error_limit: u32,
}

/// Follows one per-measurement metric through its measurements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricTracker {
    limits: MetricLimits,
    passed: u32,
    failed: u32,
    inconclusive: u32,
    errors: u32,
    consecutive_errors: u32,
    phase: Phase,
}

impl MetricTracker {
    /// A metric with no measurement yet (`Pending`).
    pub fn new(limits: MetricLimits) -> Self {
        Self {
            limits,
            passed: 0,
            failed: 0,
            inconclusive: 0,
            errors: 0,
            consecutive_errors: 0,
            phase: Phase::Pending,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Consecutive measurement errors so far (reset by any measurement that produced a value).
    pub fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors
    }

    /// Measurements that produced a value (pass, fail or inconclusive).
    pub fn measured(&self) -> u32 {
        self.passed + self.failed + self.inconclusive
    }

    /// Adds a measurement and returns the new phase. A final phase never changes: later
    /// measurements are ignored, as argo stops measuring a completed metric.
    pub fn record(&mut self, outcome: MeasurementOutcome) -> Phase {
        if self.phase.is_final() {
            return self.phase;
        }
        match outcome {
            MeasurementOutcome::Error => {
                self.errors += 1;
                self.consecutive_errors += 1;
            }
            MeasurementOutcome::Pass => self.passed += 1,
            MeasurementOutcome::Fail => self.failed += 1,
            MeasurementOutcome::Inconclusive => self.inconclusive += 1,
        }
        if outcome != MeasurementOutcome::Error {
            self.consecutive_errors = 0;
        }
        self.phase = if self.failed > self.limits.failure_limit {
            Phase::Failed
        } else if self.consecutive_errors > self.limits.consecutive_error_limit {
            Phase::Error
        } else if self.inconclusive > self.limits.inconclusive_limit {
            Phase::Inconclusive
        } else if self.measured() >= self.limits.count {
            Phase::Successful
        } else {
            Phase::Running
        };
        self.phase
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MeasurementOutcome::{Error, Fail, Inconclusive, Pass};

    const LIMITS: MetricLimits = MetricLimits {
        count: 3,
        failure_limit: 1,
        inconclusive_limit: 0,
        consecutive_error_limit: 2,
    };

    fn run(outcomes: &[MeasurementOutcome]) -> Phase {
        let mut tracker = MetricTracker::new(LIMITS);
        let mut phase = tracker.phase();
        for outcome in outcomes {
            phase = tracker.record(*outcome);
        }
        phase
    }

    #[test]
    fn phases_follow_the_limits() {
        let table: &[(&[MeasurementOutcome], Phase)] = &[
            (&[], Phase::Pending),
            (&[Pass], Phase::Running),
            (&[Pass, Pass, Pass], Phase::Successful),
            // One failure is tolerated (failure_limit 1) and still counts as a measurement.
            (&[Pass, Fail, Pass], Phase::Successful),
            (&[Fail, Fail], Phase::Failed),
            (&[Inconclusive], Phase::Inconclusive),
            // Two consecutive errors are tolerated, the third is not.
            (&[Error, Error], Phase::Running),
            (&[Error, Error, Error], Phase::Error),
            // A value in between resets the run of errors.
            (&[Error, Error, Pass, Error, Error], Phase::Running),
            // Final phases stick.
            (&[Fail, Fail, Pass, Pass, Pass], Phase::Failed),
            (&[Pass, Pass, Pass, Fail, Fail], Phase::Successful),
        ];
        for (outcomes, expected) in table {
            assert_eq!(run(outcomes), *expected, "{outcomes:?}");
        }
    }

    #[test]
    fn the_worst_phase_wins() {
        use Phase::*;
        assert_eq!(Phase::combine([]), Successful);
        assert_eq!(Phase::combine([Successful, Successful]), Successful);
        assert_eq!(Phase::combine([Successful, Running]), Running);
        assert_eq!(Phase::combine([Pending, Running]), Running);
        assert_eq!(Phase::combine([Running, Inconclusive]), Inconclusive);
        assert_eq!(Phase::combine([Inconclusive, Error, Successful]), Error);
        assert_eq!(Phase::combine([Error, Failed, Successful]), Failed);
    }
}
