//! What the rollout driver does with an assessment: continue, roll back, or hold.
//!
//! Two pure functions. [`decide`] is asked after every look: it answers only once the analysis
//! is final. [`decide_at_deadline`] is asked when a step's `hold` time is over and always
//! answers, applying the service's inconclusive policy. Three rules hold everywhere:
//!
//! - nothing is promoted on unavailable metrics (measurement errors, or the latest read failed):
//!   `promote` then holds instead — "metrics unavailable" must never look like "healthy";
//! - a service-wide failure (the stable revision fails too) is not blamed on the canary: rolling
//!   back would not fix the service, so it is neither promoted nor automatically rolled back
//!   unless the policy is `rollback` (back to the known previous state, for humans to fix);
//! - a canary failure rolls back at once, whatever the policy.

use serde::Serialize;

use super::{AnalysisPolicy, Assessment, FailureCause, InconclusiveReason, Verdict};
use crate::config::InconclusivePolicy;

/// The driver's next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Go on: next step, or promotion after the last step.
    Continue,
    /// Put all traffic back on the previous revision.
    Rollback,
    /// Keep the current split, stop, and hand over to a human.
    Hold,
}

/// The decision after a look, or `None` to keep looking until the step's deadline.
pub fn decide(assessment: &Assessment, policy: &AnalysisPolicy) -> Option<Decision> {
    match &assessment.verdict {
        Verdict::Pass => Some(Decision::Continue),
        Verdict::Fail {
            cause: FailureCause::Canary,
        } => Some(Decision::Rollback),
        Verdict::Fail {
            cause: FailureCause::ServiceWide,
        } => Some(without_promotion(policy.inconclusive)),
        Verdict::Inconclusive {
            reason: InconclusiveReason::MeasurementErrors { .. },
        } => Some(without_promotion(policy.inconclusive)),
        Verdict::Inconclusive { .. } => None,
    }
}

/// The decision when a step's deadline is reached: final verdicts as in [`decide`]; an
/// undecided step follows the inconclusive policy, except that it is never promoted when the
/// metrics are unavailable.
pub fn decide_at_deadline(assessment: &Assessment, policy: &AnalysisPolicy) -> Decision {
    if let Some(decision) = decide(assessment, policy) {
        return decision;
    }
    if assessment.metrics_unavailable() {
        return without_promotion(policy.inconclusive);
    }
    match policy.inconclusive {
        InconclusivePolicy::Hold => Decision::Hold,
        InconclusivePolicy::Rollback => Decision::Rollback,
        InconclusivePolicy::Promote => Decision::Continue,
    }
}

/// The inconclusive policy with `promote` downgraded to `hold`.
fn without_promotion(policy: InconclusivePolicy) -> Decision {
    match policy {
        InconclusivePolicy::Rollback => Decision::Rollback,
        InconclusivePolicy::Hold | InconclusivePolicy::Promote => Decision::Hold,
    }
}
