//! Canary analysis: from request and error counts, decide whether a canary step passes, fails or
//! cannot tell yet — as soon as the data allow, with bounded error probabilities.
//!
//! This module is pure: no I/O, no clock, no printing. The rollout driver reads the counts
//! (Cloud Monitoring `request_count` by revision), feeds them in as [`Measurement`]s, one per
//! look; [`crate::rollout::analyser`] turns the [`Assessment`] into the request-error metric of
//! an observation, and the rollout's state machine (`crate::rollout::machine`) decides. The statistics (Wald's SPRT with Ville's boundaries, minimum traffic,
//! service-wide failures, measurement errors) are explained in `docs/ANALYSIS.md`; the
//! simulation that measures them is `examples/analysis_simulation.rs`.
//!
//! Scope: one [`CanaryAnalysis`] per canary step (and one for the post-deploy monitor). Each is
//! a fresh test on that step's requests, so that a revision that only breaks under the larger
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

    /// The sum of two periods' counts (saturating: a corrupt huge count must not panic).
    pub fn plus(self, other: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_add(other.requests),
            errors: self.errors.saturating_add(other.errors).min(
                // Saturation of requests could otherwise leave errors above requests.
                self.requests.saturating_add(other.requests),
            ),
        }
    }
}

/// The counts of one look: what happened since the previous look (a window), for the canary
/// and, when it still serves traffic, the stable revision. The analysis sums windows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// The canary's counts in the window.
    pub canary: Counts,
    /// The stable revision's counts in the window; `None` when it serves no traffic (e.g. the
    /// post-deploy monitor) or its counts could not be attributed.
    pub stable: Option<Counts>,
}

/// One look at the metrics: counts, or the reason there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Measurement {
    /// The metrics were read.
    Counts(Observation),
    /// The metrics could not be read (provider error, timeout, missing series).
    Unavailable {
        /// Why, for the report.
        reason: String,
    },
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
    /// No measurement produced counts yet.
    NoData,
    /// Fewer canary requests in the step than `min_requests`.
    TooFewRequests {
        /// Canary requests in the step.
        observed: u64,
        /// `min_requests`.
        required: u64,
    },
    /// Enough requests, but the test is between its boundaries.
    Undecided,
    /// The metrics could not be read, more times in a row than `consecutive_error_limit`.
    MeasurementErrors {
        /// Consecutive failed reads.
        consecutive: u32,
        /// The last reason given.
        last_reason: String,
    },
}

/// The analysis' answer after a look.
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

/// The state of a step's analysis after a look: everything the driver reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// The verdict.
    pub verdict: Verdict,
    /// Canary requests and errors in the step so far.
    pub canary: Counts,
    /// Stable requests and errors in the step so far.
    pub stable: Counts,
    /// The canary's log likelihood ratio and the boundaries it is compared with.
    pub log_likelihood_ratio: f64,
    /// `ln(1/alpha)`.
    pub fail_boundary: f64,
    /// `ln(beta)`.
    pub pass_boundary: f64,
    /// The stable revision's own test.
    pub baseline: BaselineStatus,
    /// Measurements that produced counts.
    pub measurements: u32,
    /// Failed reads in a row, up to now.
    pub consecutive_errors: u32,
    /// True when the most recent look failed to read the metrics.
    pub last_measurement_failed: bool,
}

impl Assessment {
    /// True when the metrics are unavailable: nothing was ever read, or the latest read failed.
    /// The driver never promotes on unavailable metrics, whatever the inconclusive policy.
    pub fn metrics_unavailable(&self) -> bool {
        self.measurements == 0 || self.last_measurement_failed
    }
}

/// The sequential analysis of one canary step.
#[derive(Debug, Clone)]
pub struct CanaryAnalysis {
    policy: AnalysisPolicy,
    test: Sprt,
    canary: Counts,
    stable: Counts,
    stable_seen: bool,
    measurements: u32,
    consecutive_errors: u32,
    last_error: Option<String>,
    last_measurement_failed: bool,
    /// Set once the verdict is final: the SPRT stops at a boundary, and so does this.
    settled: Option<Verdict>,
}

impl CanaryAnalysis {
    /// A step analysis with no data (`Pending`). Errors when the policy's rates or bounds make
    /// the test meaningless (see [`Sprt::new`]).
    pub fn new(policy: AnalysisPolicy) -> Result<Self, AnalysisError> {
        let test = Sprt::new(
            policy.healthy_error_rate,
            policy.max_error_rate,
            policy.alpha,
            policy.beta,
        )?;
        Ok(Self {
            policy,
            test,
            canary: Counts::default(),
            stable: Counts::default(),
            stable_seen: false,
            measurements: 0,
            consecutive_errors: 0,
            last_error: None,
            last_measurement_failed: false,
            settled: None,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &AnalysisPolicy {
        &self.policy
    }

    /// The test in force.
    pub fn test(&self) -> &Sprt {
        &self.test
    }

    /// Adds one look and returns the new assessment. Once the verdict is final (pass, fail or
    /// measurement error), later looks are ignored and the same verdict is returned: a
    /// sequential test's guarantees hold for the first boundary crossing only.
    pub fn record(&mut self, measurement: Measurement) -> Assessment {
        if self.settled.is_none() {
            match measurement {
                Measurement::Counts(observation) => {
                    self.measurements += 1;
                    self.consecutive_errors = 0;
                    self.last_measurement_failed = false;
                    self.canary = self.canary.plus(observation.canary);
                    if let Some(stable) = observation.stable {
                        self.stable_seen = true;
                        self.stable = self.stable.plus(stable);
                    }
                }
                Measurement::Unavailable { reason } => {
                    self.consecutive_errors = self.consecutive_errors.saturating_add(1);
                    self.last_measurement_failed = true;
                    self.last_error = Some(reason);
                }
            }
            self.settled = self.settle();
        }
        self.assessment()
    }

    /// The assessment without a new look.
    pub fn assessment(&self) -> Assessment {
        let verdict = match &self.settled {
            Some(verdict) => verdict.clone(),
            None => self.unsettled(),
        };
        Assessment {
            verdict,
            canary: self.canary,
            stable: self.stable,
            log_likelihood_ratio: self.test.log_likelihood_ratio(self.canary),
            fail_boundary: self.test.fail_boundary(),
            pass_boundary: self.test.pass_boundary(),
            baseline: self.baseline(),
            measurements: self.measurements,
            consecutive_errors: self.consecutive_errors,
            last_measurement_failed: self.last_measurement_failed,
        }
    }

    /// A final phase and verdict, if the data allow one.
    fn settle(&self) -> Option<Verdict> {
        if self.consecutive_errors > self.policy.consecutive_error_limit {
            let reason = InconclusiveReason::MeasurementErrors {
                consecutive: self.consecutive_errors,
                last_reason: self.last_error.clone().unwrap_or_default(),
            };
            return Some(Verdict::Inconclusive { reason });
        }
        // Why a minimum even though the SPRT is valid from the first request: the Bernoulli
        // model assumes independent requests, which start-up (cold starts, connection pools
        // filling) violates; `min_requests` keeps those first correlated requests from deciding.
        if self.canary.requests() < self.policy.min_requests.max(1) {
            return None;
        }
        match self.test.test(self.canary) {
            SprtOutcome::Failing => {
                let cause = if self.baseline() == BaselineStatus::Failing {
                    FailureCause::ServiceWide
                } else {
                    FailureCause::Canary
                };
                Some(Verdict::Fail { cause })
            }
            SprtOutcome::Healthy => Some(Verdict::Pass),
            SprtOutcome::Continue => None,
        }
    }

    /// The verdict while no decision is final.
    fn unsettled(&self) -> Verdict {
        if self.measurements == 0 {
            let reason = InconclusiveReason::NoData;
            return Verdict::Inconclusive { reason };
        }
        let required = self.policy.min_requests.max(1);
        let reason = if self.canary.requests() < required {
            InconclusiveReason::TooFewRequests {
                observed: self.canary.requests(),
                required,
            }
        } else {
            InconclusiveReason::Undecided
        };
        Verdict::Inconclusive { reason }
    }

    /// The stable revision's test, on the same hypotheses and minimum.
    fn baseline(&self) -> BaselineStatus {
        if !self.stable_seen || self.stable.requests() == 0 {
            return BaselineStatus::NoData;
        }
        if self.stable.requests() < self.policy.min_requests.max(1) {
            return BaselineStatus::Undecided;
        }
        match self.test.test(self.stable) {
            SprtOutcome::Failing => BaselineStatus::Failing,
            SprtOutcome::Healthy => BaselineStatus::Healthy,
            SprtOutcome::Continue => BaselineStatus::Undecided,
        }
    }
}

#[cfg(test)]
mod tests;
