//! The rollout's decisions, as a pure function: given where the rollout is and what the last
//! analysis said, what happens next. No I/O, no clocks: the driver passes elapsed times in, so
//! every branch is a table test.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::InconclusivePolicy;

/// What one analysis of the canary (or, in the monitor, of the promoted revision) concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Judgement {
    /// Healthy, with the confidence the policy asks for.
    Pass,
    /// Worse than allowed, with the confidence the policy asks for.
    Fail {
        /// The numbers that decided it.
        reason: String,
    },
    /// Not enough data to decide either way yet.
    Inconclusive {
        /// Why (too little traffic, ...).
        reason: String,
    },
    /// The stable revision fails as much as the canary: the service is failing, not the canary.
    ServiceWide {
        /// The numbers.
        reason: String,
    },
    /// The measurement itself failed (metrics unavailable).
    MeasurementError {
        /// What failed.
        reason: String,
    },
}

/// The policy knobs the decisions need.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPolicy {
    /// Canary percentages, ascending, ending at 100.
    pub steps: Vec<u8>,
    /// Longest time at one step without a decision.
    pub hold: Duration,
    /// What to do when `hold` passes without a decision.
    pub inconclusive: InconclusivePolicy,
    /// Measurement errors in a row that end the wait.
    pub consecutive_error_limit: u32,
}

/// Where a canary step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepState {
    /// Index into `steps`.
    pub index: usize,
    /// Time spent at this step so far.
    pub elapsed: Duration,
    /// Measurement errors in a row so far.
    pub consecutive_errors: u32,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Wait one interval and analyse again (with the updated error count).
    Analyse {
        /// Measurement errors in a row, to carry into the next state.
        consecutive_errors: u32,
    },
    /// Move the canary to the step at this index.
    Step(usize),
    /// Give the canary 100% and start the post-deploy monitor.
    Promote,
    /// Put all traffic back on the stable revision.
    Rollback(String),
    /// Leave the split as it is and stop for a human.
    Hold(String),
}

/// The decision after an analysis during a canary step.
pub fn after_analysis(policy: &StepPolicy, state: StepState, judgement: &Judgement) -> Next {
    let proceed = || {
        let next = state.index + 1;
        // The last step is 100%: reaching it is the promotion itself.
        if next + 1 >= policy.steps.len() {
            Next::Promote
        } else {
            Next::Step(next)
        }
    };
    let deadline_passed = state.elapsed >= policy.hold;
    let at_deadline = |why: &str| {
        let reason = |name: &str| {
            format!(
                "no decision within {} at {}%: {why} (inconclusive policy: {name})",
                humantime::format_duration(policy.hold),
                policy.steps[state.index.min(policy.steps.len() - 1)]
            )
        };
        match policy.inconclusive {
            InconclusivePolicy::Promote => proceed(),
            InconclusivePolicy::Rollback => Next::Rollback(reason("rollback")),
            InconclusivePolicy::Hold => Next::Hold(reason("hold")),
        }
    };
    match judgement {
        Judgement::Pass => proceed(),
        Judgement::Fail { reason } => Next::Rollback(reason.clone()),
        // The stable revision fails too: never promote, and do not blame the canary. Rolling
        // back does not fix a service-wide failure, so it happens only when the policy says
        // `rollback`; otherwise the split is held for a human (docs/ANALYSIS.md).
        Judgement::ServiceWide { reason } => {
            let reason = format!("the whole service is failing, not only the canary: {reason}");
            match policy.inconclusive {
                InconclusivePolicy::Rollback => Next::Rollback(reason),
                _ => Next::Hold(reason),
            }
        }
        Judgement::Inconclusive { reason } if deadline_passed => at_deadline(reason),
        Judgement::Inconclusive { .. } => Next::Analyse {
            consecutive_errors: 0,
        },
        Judgement::MeasurementError { reason } => {
            let errors = state.consecutive_errors + 1;
            // `consecutive_error_limit` errors in a row are tolerated; one more ends the wait.
            if errors > policy.consecutive_error_limit {
                // Never promote on missing data: errors end in a rollback or a hold.
                match policy.inconclusive {
                    InconclusivePolicy::Hold => {
                        Next::Hold(format!("{errors} measurement errors in a row: {reason}"))
                    }
                    _ => Next::Rollback(format!("{errors} measurement errors in a row: {reason}")),
                }
            } else if deadline_passed {
                at_deadline(reason)
            } else {
                Next::Analyse {
                    consecutive_errors: errors,
                }
            }
        }
    }
}

/// What the post-deploy monitor does after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorNext {
    /// Keep watching.
    Continue {
        /// Measurement errors in a row so far.
        consecutive_errors: u32,
    },
    /// The monitor ran its full duration without a failure.
    Done,
    /// Roll back to the previous revision.
    Rollback(String),
}

/// The decision after a check of the post-deploy monitor. Only a statistically significant
/// failure (or persistent measurement errors) rolls back; inconclusive is fine here, the
/// revision already passed its canary steps.
pub fn after_monitor_check(
    judgement: &Judgement,
    elapsed: Duration,
    duration: Duration,
    consecutive_errors: u32,
    consecutive_error_limit: u32,
) -> MonitorNext {
    match judgement {
        Judgement::Fail { reason } => MonitorNext::Rollback(reason.clone()),
        Judgement::MeasurementError { reason }
            if consecutive_errors + 1 > consecutive_error_limit =>
        {
            MonitorNext::Rollback(format!(
                "{} measurement errors in a row during the monitor: {reason}",
                consecutive_errors + 1
            ))
        }
        Judgement::MeasurementError { .. } if elapsed < duration => MonitorNext::Continue {
            consecutive_errors: consecutive_errors + 1,
        },
        _ if elapsed >= duration => MonitorNext::Done,
        _ => MonitorNext::Continue {
            consecutive_errors: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(inconclusive: InconclusivePolicy) -> StepPolicy {
        StepPolicy {
            steps: vec![5, 25, 50, 100],
            hold: Duration::from_secs(300),
            inconclusive,
            consecutive_error_limit: 3,
        }
    }

    fn state(index: usize, elapsed: u64, errors: u32) -> StepState {
        StepState {
            index,
            elapsed: Duration::from_secs(elapsed),
            consecutive_errors: errors,
        }
    }

    fn inconclusive() -> Judgement {
        Judgement::Inconclusive {
            reason: "12 requests (< 50)".into(),
        }
    }

    fn error() -> Judgement {
        Judgement::MeasurementError {
            reason: "HTTP 503".into(),
        }
    }

    #[test]
    fn step_decisions() {
        use InconclusivePolicy::{Hold, Promote, Rollback};
        let fail = Judgement::Fail {
            reason: "canary 20% errors".into(),
        };
        let wide = Judgement::ServiceWide {
            reason: "stable 30%".into(),
        };
        let cases: Vec<(InconclusivePolicy, StepState, Judgement, &str)> = vec![
            // A pass moves one step; passing the last step below 100 promotes.
            (Rollback, state(0, 10, 0), Judgement::Pass, "step 1"),
            (Rollback, state(1, 10, 0), Judgement::Pass, "step 2"),
            (Rollback, state(2, 10, 0), Judgement::Pass, "promote"),
            // A failure rolls back whatever the policy.
            (Promote, state(0, 10, 0), fail.clone(), "rollback"),
            (Hold, state(2, 10, 0), fail, "rollback"),
            // Service-wide failure is never blamed on the canary, never promoted.
            (Promote, state(0, 10, 0), wide.clone(), "hold"),
            (Hold, state(1, 400, 0), wide.clone(), "hold"),
            (Rollback, state(1, 10, 0), wide, "rollback"),
            // Inconclusive waits until the deadline, then follows the policy.
            (Rollback, state(0, 299, 0), inconclusive(), "analyse 0"),
            (Rollback, state(0, 300, 0), inconclusive(), "rollback"),
            (Hold, state(0, 300, 0), inconclusive(), "hold"),
            (Promote, state(0, 300, 0), inconclusive(), "step 1"),
            (Promote, state(2, 300, 0), inconclusive(), "promote"),
            // Measurement errors count up, end at the limit, and never promote.
            (Rollback, state(0, 10, 0), error(), "analyse 1"),
            (Rollback, state(0, 10, 2), error(), "analyse 3"),
            (Rollback, state(0, 10, 3), error(), "rollback"),
            (Promote, state(0, 10, 3), error(), "rollback"),
            (Hold, state(0, 10, 3), error(), "hold"),
            (Promote, state(0, 300, 0), error(), "step 1"),
        ];
        for (inconclusive_policy, step, judgement, expected) in cases {
            let next = after_analysis(&policy(inconclusive_policy), step, &judgement);
            let actual = match &next {
                Next::Analyse { consecutive_errors } => format!("analyse {consecutive_errors}"),
                Next::Step(index) => format!("step {index}"),
                Next::Promote => "promote".into(),
                Next::Rollback(_) => "rollback".into(),
                Next::Hold(_) => "hold".into(),
            };
            assert_eq!(
                actual, expected,
                "{inconclusive_policy:?} {step:?} {judgement:?} → {next:?}"
            );
        }
    }

    #[test]
    fn reasons_carry_the_numbers() {
        let next = after_analysis(
            &policy(InconclusivePolicy::Rollback),
            state(1, 300, 0),
            &inconclusive(),
        );
        assert_eq!(
            next,
            Next::Rollback(
                "no decision within 5m at 25%: 12 requests (< 50) (inconclusive policy: rollback)"
                    .into()
            )
        );
    }

    #[test]
    fn monitor_decisions() {
        let minute = Duration::from_secs(60);
        let thirty = Duration::from_secs(1800);
        let fail = Judgement::Fail {
            reason: "errors".into(),
        };
        assert_eq!(
            after_monitor_check(&fail, minute, thirty, 0, 3),
            MonitorNext::Rollback("errors".into())
        );
        assert_eq!(
            after_monitor_check(&inconclusive(), minute, thirty, 2, 3),
            MonitorNext::Continue {
                consecutive_errors: 0
            }
        );
        assert_eq!(
            after_monitor_check(&Judgement::Pass, thirty, thirty, 0, 3),
            MonitorNext::Done
        );
        assert_eq!(
            after_monitor_check(&error(), minute, thirty, 2, 3),
            MonitorNext::Continue {
                consecutive_errors: 3
            }
        );
        assert!(matches!(
            after_monitor_check(&error(), minute, thirty, 3, 3),
            MonitorNext::Rollback(_)
        ));
    }
}
