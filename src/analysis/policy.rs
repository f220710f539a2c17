//! `AnalysisPolicy`: the part of a service's rollout policy that the analysis reads.
//!
//! The service file states one error rate, `rollout.max_error_rate`: the rate at which a canary
//! must be rolled back (the team's old rule, "error rate < 5%", rolls back at 5%). A sequential
//! test needs two: the failing rate p1 (H1) and a healthy rate p0 (H0) below it. p0 is derived:
//! `HEALTHY_FRACTION × max_error_rate`. Between p0 and p1 lies the indifference zone, where the
//! test may go either way; its width trades speed for sharpness (see `docs/ANALYSIS.md`, where
//! the choice of 0.4 is measured).

use serde::Serialize;

use crate::config::RolloutConfig;

/// p0 as a fraction of `max_error_rate`. With the defaults (5%) a canary at 2% errors or less is
/// rolled back with probability at most `alpha`, one at 5% or more is promoted with probability
/// at most `beta`. 0.4 rather than 0.5 because with 0.5 a canary at 4× the threshold is detected
/// within 15 s (5 canary requests/s) only 95% of the time; with 0.4, 98.5% (`docs/BENCHMARKS.md`).
pub const HEALTHY_FRACTION: f64 = 0.4;

/// What the analysis needs from the rollout policy (the error limit and the inconclusive
/// policy are the state machine's: `crate::rollout::machine::Policy`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnalysisPolicy {
    /// p1: at or above this error rate a revision is failing.
    pub max_error_rate: f64,
    /// p0: at or below this error rate a revision is healthy.
    pub healthy_error_rate: f64,
    /// Fewest canary requests (in the current step) before anything is decided.
    pub min_requests: u64,
    /// Bound on the probability of failing a revision whose error rate is at most p0.
    pub alpha: f64,
    /// Bound on the probability of passing a revision whose error rate is at least p1.
    pub beta: f64,
}

impl From<&RolloutConfig> for AnalysisPolicy {
    fn from(rollout: &RolloutConfig) -> Self {
        Self {
            max_error_rate: rollout.max_error_rate,
            healthy_error_rate: rollout.max_error_rate * HEALTHY_FRACTION,
            min_requests: rollout.min_requests,
            alpha: rollout.alpha,
            beta: rollout.beta,
        }
    }
}

impl Default for AnalysisPolicy {
    fn default() -> Self {
        Self::from(&RolloutConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_from_the_rollout_policy() {
        let rollout = RolloutConfig {
            max_error_rate: 0.1,
            min_requests: 200,
            alpha: 0.02,
            beta: 0.1,
            ..RolloutConfig::default()
        };
        let policy = AnalysisPolicy::from(&rollout);
        assert_eq!(policy.max_error_rate, 0.1);
        assert!((policy.healthy_error_rate - 0.04).abs() < 1e-12);
        assert_eq!(policy.min_requests, 200);
        assert_eq!(policy.alpha, 0.02);
        assert_eq!(policy.beta, 0.1);
    }
}
