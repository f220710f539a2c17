//! Canary analysis: from request and error counts, decide whether a canary step passes, fails or
//! cannot tell yet — as soon as the data allow, with bounded error probabilities.
//!
//! This module is pure: no I/O, no clock, no printing, no state kept between looks. The rollout
//! driver reads the counts (Cloud Monitoring `request_count` by revision, cumulative over the
//! step) at every look and [`crate::rollout::analyser`] judges them afresh ([`CanaryAnalysis::judge`]),
//! turning the [`Assessment`] into the request-error metric of an observation; the rollout's
//! state machine (`crate::rollout::machine`) decides, and counts the looks that could not read.
//! The statistics (Wald's SPRT with Ville's boundaries, minimum traffic, service-wide
//! failures) are explained in `docs/ANALYSIS.md`; the
//! simulation that measures them is `examples/analysis_simulation.rs`.
//!
//! Scope: each verdict is a test on one canary step's requests (or the post-deploy monitor's),
//! counted from the step's start, so that a revision that only breaks under the larger
//! share of a later step is judged on that step's own traffic.

mod policy;
mod sprt;

use serde::Serialize;
use thiserror::Error;

pub use policy::{AnalysisPolicy, HEALTHY_FRACTION};
pub use sprt::{Sprt, SprtOutcome};

/// Errors of the analysis: only parameters that make the test meaningless.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AnalysisError {
    /// The two error rates do not satisfy `0 < healthy < failing < 1`.
    #[error(
        "error rates `healthy_error_rate` = {healthy_rate} and `max_error_rate` = {failing_rate} \
         must satisfy 0 < healthy < max < 1"
    )]
    Rates {
        /// p0.
        healthy_rate: f64,
        /// p1.
        failing_rate: f64,
    },
    /// `alpha` or `beta` is outside `(0, 0.5)`.
    #[error("`{name}` = {value} must be between 0 and 0.5 (exclusive)")]
    ErrorBound {
        /// `alpha` or `beta`.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count reports more errors than requests.
    #[error("`errors` ({errors}) exceeds `requests` ({requests})")]
    MoreErrorsThanRequests {
        /// Requests counted.
        requests: u64,
        /// Errors counted.
        errors: u64,
    },
}

/// Requests and errors (5xx responses) of one revision over some period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    requests: u64,
    errors: u64,
}

impl Counts {
    /// Counts with `errors <= requests`; anything else is an error, because metric backends
    /// that sample requests and errors separately can report it, and it must not be analysed
    /// as if it were real.
    pub fn new(requests: u64, errors: u64) -> Result<Self, AnalysisError> {
        if errors > requests {
            return Err(AnalysisError::MoreErrorsThanRequests { requests, errors });
        }
        Ok(Self { requests, errors })
    }

    /// Requests counted.
    pub fn requests(self) -> u64 {
        self.requests
    }

    /// Errors counted.
    pub fn errors(self) -> u64 {
        self.errors
    }

    /// `errors / requests`, or `None` without requests.
    pub fn error_rate(self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// The counts of a step so far, for the canary and, when it still serves traffic, the stable
/// revision. They are cumulative since the step started: the log likelihood ratio of
/// cumulative counts is the sum of the per-window ratios, so judging them afresh at every look
/// is the same sequential test as feeding the windows one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Observation {
    /// The canary's counts in the step.
    pub canary: Counts,
    /// The stable revision's counts in the step; `None` when it serves no traffic (e.g. the
    /// post-deploy monitor) or its counts could not be attributed.
    pub stable: Option<Counts>,
}

/// Who is failing, when the verdict is a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureCause {
    /// The canary is failing and the stable revision is not known to be: blame the canary.
    Canary,
    /// The stable revision is failing too (its own test reached the failing boundary): the
    /// whole service is failing, and rolling back to the stable revision would not fix it.
    ServiceWide,
}

/// Why there is no decision yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum InconclusiveReason {
    /// Fewer canary requests in the step than `min_requests`.
    TooFewRequests {
        /// Canary requests in the step.
        observed: u64,
        /// `min_requests`.
        required: u64,
    },
    /// Enough requests, but the test is between its boundaries.
    Undecided,
}

/// The analysis' answer on a step's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// The canary's error rate is at most the healthy rate (probability of a miss ≤ beta).
    Pass,
    /// The canary's error rate is at least `max_error_rate` (probability of a false
    /// rollback ≤ alpha).
    Fail {
        /// Canary alone, or the whole service.
        cause: FailureCause,
    },
    /// Not decided.
    Inconclusive {
        /// Why.
        reason: InconclusiveReason,
    },
}

/// What the stable revision's own test says, for the service-wide diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineStatus {
    /// No stable counts in the step (no traffic on it, or not reported).
    NoData,
    /// Fewer stable requests than `min_requests`, or between the boundaries.
    Undecided,
    /// The stable revision's error rate is at most the healthy rate.
    Healthy,
    /// The stable revision's error rate is at least `max_error_rate`.
    Failing,
}

/// The verdict on a step's counts and the numbers behind it: everything the driver reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// The verdict.
    pub verdict: Verdict,
    /// Canary requests and errors in the step.
    pub canary: Counts,
    /// Stable requests and errors in the step.
    pub stable: Counts,
    /// The canary's log likelihood ratio and the boundaries it is compared with.
    pub log_likelihood_ratio: f64,
    /// `ln(1/alpha)`.
    pub fail_boundary: f64,
    /// `ln(beta)`.
    pub pass_boundary: f64,
    /// The stable revision's own test.
    pub baseline: BaselineStatus,
}

/// The sequential analysis of canary steps under one policy: a pure function of a step's
/// counts. It keeps no history: unread looks, deadlines and the first decisive look ending a
/// step are the rollout's state machine's (`crate::rollout::machine`).
#[derive(Debug, Clone)]
pub struct CanaryAnalysis {
    policy: AnalysisPolicy,
    test: Sprt,
}

impl CanaryAnalysis {
    /// The analysis under `policy`. Errors when the policy's rates or bounds make the test
    /// meaningless (see [`Sprt::new`]).
    pub fn new(policy: AnalysisPolicy) -> Result<Self, AnalysisError> {
        let test = Sprt::new(
            policy.healthy_error_rate,
            policy.max_error_rate,
            policy.alpha,
            policy.beta,
        )?;
        Ok(Self { policy, test })
    }

    /// The policy in force.
    pub fn policy(&self) -> &AnalysisPolicy {
        &self.policy
    }

    /// The test in force.
    pub fn test(&self) -> &Sprt {
        &self.test
    }

    /// The verdict on a step's counts so far.
    pub fn judge(&self, observation: Observation) -> Assessment {
        let canary = observation.canary;
        let baseline = self.baseline(observation.stable);
        Assessment {
            verdict: self.verdict(canary, baseline),
            canary,
            stable: observation.stable.unwrap_or_default(),
            log_likelihood_ratio: self.test.log_likelihood_ratio(canary),
            fail_boundary: self.test.fail_boundary(),
            pass_boundary: self.test.pass_boundary(),
            baseline,
        }
    }

    fn verdict(&self, canary: Counts, baseline: BaselineStatus) -> Verdict {
        // Why a minimum even though the SPRT is valid from the first request: the Bernoulli
        // model assumes independent requests, which start-up (cold starts, connection pools
        // filling) violates; `min_requests` keeps those first correlated requests from deciding.
        let required = self.policy.min_requests.max(1);
        if canary.requests() < required {
            let reason = InconclusiveReason::TooFewRequests {
                observed: canary.requests(),
                required,
            };
            return Verdict::Inconclusive { reason };
        }
        match self.test.test(canary) {
            SprtOutcome::Failing => {
                let cause = if baseline == BaselineStatus::Failing {
                    FailureCause::ServiceWide
                } else {
                    FailureCause::Canary
                };
                Verdict::Fail { cause }
            }
            SprtOutcome::Healthy => Verdict::Pass,
            SprtOutcome::Continue => Verdict::Inconclusive {
                reason: InconclusiveReason::Undecided,
            },
        }
    }

    /// The stable revision's test, on the same hypotheses and minimum.
    fn baseline(&self, stable: Option<Counts>) -> BaselineStatus {
        let Some(stable) = stable.filter(|stable| stable.requests() > 0) else {
            return BaselineStatus::NoData;
        };
        if stable.requests() < self.policy.min_requests.max(1) {
            return BaselineStatus::Undecided;
        }
        match self.test.test(stable) {
            SprtOutcome::Failing => BaselineStatus::Failing,
            SprtOutcome::Healthy => BaselineStatus::Healthy,
            SprtOutcome::Continue => BaselineStatus::Undecided,
        }
    }
}

#[cfg(test)]
mod tests;
