//! The rollout as one explicit state machine: `advance(state, input) -> (state, action)`.
//!
//! Pure and synchronous: no I/O, no clock. The driver ([`super::driver`]) carries out each
//! [`Action`] through the platform, the metrics and the prompter, and feeds what happened back
//! as an [`Input`]. The [`State`] is exactly what the journal stores on the service, so resuming
//! after `kill -9` is starting the same loop from the stored state.
//!
//! The phases: create at 0% (`verifying`) → identity verified → `validating` (service checks
//! gated on `validation`) → each `canary` step → promotion and `monitoring` → `promoted`; or
//! `rolled-back`, `stopped` (before any traffic moved), `held` (split left for a human),
//! `rollback-failed`. Start-up is decided here too: with no revision serving, a first deploy
//! (promoted, or `rollback-failed` when its identity fails: nothing to roll back to); a failed
//! creation of the new revision stops before traffic; an unfinished rollout found after a crash
//! is stopped before traffic moved and asked about after; a rollback someone else already made
//! is not written again.
//!
//! One vocabulary for a decision. Every look produces an [`Observation`]: a list of
//! [`MetricResult`](super::observation::MetricResult)s (the request-error test is one of them, the canary's `/health` another, each
//! gated service check one more), each [`Status::Pass`], `Warn`, `Inconclusive`, `NoData`,
//! `Error` or `Fail`. The look's verdict is the worst of them, as in Argo Rollouts:
//!
//! | look (worst metric first)                   | canary step                         | monitor interval           |
//! |---------------------------------------------|-------------------------------------|----------------------------|
//! | a `Fail` of the canary                      | roll back                           | roll back                  |
//! | a `Fail` the stable revision shares         | roll back if `inconclusive = "rollback"`, else hold | roll back    |
//! | a metric unread more than its error limit   | roll back, or hold with `hold`      | roll back                  |
//! | every metric `Pass`                         | next step (promote after the last)  | interval judged            |
//! | read, not all `Pass`, before the deadline   | look again                          | interval judged            |
//! | read, not all `Pass`, at the deadline       | the `inconclusive` policy           | —                          |
//! | a metric unread (NoData/Error), before the deadline | look again                  | not judged by this look    |
//! | a metric unread at the deadline, an earlier look of the step read all | the `inconclusive` policy on what it read | — |
//! | a metric unread at the deadline, no look of the step read all | roll back, or hold: **never promote** | —   |
//! | monitor over, every interval judged          | —                                   | promoted                   |
//! | monitor over, an interval no look of which read all | —                            | roll back, or hold: never promoted |
//!
//! The safety rule behind the last rows: *nothing is ever promoted when the metrics cannot be
//! read*. `promote` applies only to a step whose metrics were read and were inconclusive (too
//! little traffic, say); a look with no metric at all is never a pass. A step's counts are
//! cumulative, so the latest look that read every metric ([`State::read`]) is what the step
//! knows: a last look that fails to read does not erase it. Monitor intervals are counted from
//! when the promotion's split is in place; each ends only at a look attempted at or after its
//! due time, and is judged when some look in it read every metric.

mod inputs;
mod looks;

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

pub use super::identity::IdentityError;
use super::observation::{Observation, Status};
use crate::config::{InconclusivePolicy, RolloutConfig};
pub use inputs::{
    Action, BeforeRollBack, CreationFailure, FirstDeploy, Input, Interruption, Manual, Recovery,
    Written,
};
use looks::{canary_look, monitor_look};

/// Where a rollout is. Stored in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The new revision exists with 0%; its identity is being verified.
    Verifying,
    /// Identity verified; the validation-gated service checks run (still 0%).
    Validating,
    /// The canary has `percent`% of traffic and is being analysed.
    Canary,
    /// The canary has 100%; the post-deploy monitor is watching it.
    Monitoring,
    /// Done: the new revision serves 100%.
    Promoted,
    /// Done: traffic is back on the stable revision.
    RolledBack,
    /// Stopped before any traffic moved to the new revision.
    Stopped,
    /// Stopped with the split left as it was, for a human.
    Held,
    /// A rollback was needed and failed: a human must act.
    RollbackFailed,
    /// A held rollout ended by a human (`deployer abort`): traffic back on the stable revision.
    Aborted,
}

impl Phase {
    /// True when the rollout is over (nothing to resume).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Promoted
                | Phase::RolledBack
                | Phase::Stopped
                | Phase::Held
                | Phase::RollbackFailed
                | Phase::Aborted
        )
    }

    /// True once the new revision may have received traffic.
    pub fn traffic_moved(self) -> bool {
        !matches!(self, Phase::Verifying | Phase::Validating | Phase::Stopped)
    }
}

/// The policy knobs the machine needs (from the service file's `[rollout]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Canary percentages, ascending, ending at 100.
    pub steps: Vec<u8>,
    /// Longest time at one step without a decision.
    pub hold: Duration,
    /// Time between looks during a step.
    pub interval: Duration,
    /// What a step that reaches `hold` undecided does.
    pub inconclusive: InconclusivePolicy,
    /// Unread looks in a row tolerated per metric (unless the metric sets its own).
    pub consecutive_error_limit: u32,
    /// Length of the post-deploy monitor (zero: none).
    pub monitor_duration: Duration,
    /// Time between looks of the monitor.
    pub monitor_interval: Duration,
    /// True when service checks gate the validation phase.
    pub validation: bool,
}

impl Policy {
    /// The policy of a service's rollout; `validation` tells whether it has validation checks.
    pub fn new(rollout: &RolloutConfig, validation: bool) -> Self {
        Self {
            steps: rollout.steps.clone(),
            hold: rollout.hold.get(),
            interval: rollout.interval.get(),
            inconclusive: rollout.inconclusive,
            consecutive_error_limit: rollout.consecutive_error_limit,
            monitor_duration: rollout.monitor_duration.get(),
            monitor_interval: rollout.monitor_interval.get(),
            validation,
        }
    }
}

/// Where a rollout is: what the journal stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The phase.
    pub phase: Phase,
    /// Index of the canary step (in `canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The canary's traffic percent.
    pub percent: u8,
    /// Time spent in the current step or monitor, in milliseconds.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Unread looks in a row, per metric.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u32>,
    /// Monitor intervals in which no look read every metric.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unjudged: u32,
    /// Monitor intervals ended (each by a look attempted in it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub intervals: u32,
    /// What the latest look of the current canary step (or monitor interval) that read every
    /// metric found short of a pass (empty when it all passed); `None` while no look of it has
    /// read every metric. A step whose last look fails ends on this, never on nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// Why the rollout ended as it did (or what a human is asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl State {
    /// A new rollout: the revision is created at 0% in the write that journals this state.
    pub fn start() -> Self {
        Self {
            phase: Phase::Verifying,
            step: None,
            percent: 0,
            elapsed_ms: 0,
            errors: BTreeMap::new(),
            unjudged: 0,
            intervals: 0,
            read: None,
            reason: None,
        }
    }

    /// Time spent in the current step or monitor.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms)
    }

    fn with_phase(&self, phase: Phase) -> Self {
        Self {
            phase,
            ..self.clone()
        }
    }

    fn ended(&self, phase: Phase, reason: String) -> Self {
        Self {
            phase,
            reason: Some(reason),
            ..self.clone()
        }
    }
}

/// The next state and action after `input` in `state`. Inputs that make no sense in a phase
/// (a look after the rollout ended, say) leave the state as it is and answer [`Action::Done`]
/// for terminal states, or repeat the phase's natural next action otherwise.
pub fn advance(policy: &Policy, state: &State, input: Input) -> (State, Action) {
    use Input as I;
    match (state.phase, input) {
        // Safety: a new revision gets traffic only beside a stable revision that serves, so
        // that it can be judged against it and rolled back to it. With no revision serving
        // there is nothing to protect or roll back to: the new one is deployed at once.
        (Phase::Verifying, I::Found { serving: false }) => (state.clone(), Action::DeployFirst),
        (Phase::Verifying, I::Found { serving: true }) => (state.clone(), Action::CreateRevision),
        (Phase::Verifying, I::FirstDeployed(deployed)) => first_deployed(state, deployed),
        (Phase::Verifying, I::RevisionCreated(Ok(()))) => (state.clone(), Action::VerifyIdentity),
        (Phase::Verifying, I::RevisionCreated(Err(failure))) => {
            let reason = match failure.start_failure {
                Some(why) => format!("revision `{}` failed to start: {why}", failure.revision),
                None => format!(
                    "creating revision `{}` failed: {}",
                    failure.revision, failure.error
                ),
            };
            // The journal is written alone; the split is pinned to the stable revision in the
            // same write (the driver's `Record`), since a split naming a revision that failed
            // is refused by Cloud Run.
            (state.ended(Phase::Stopped, reason), Action::Record)
        }
        (Phase::Verifying, I::Identity(Ok(()))) if policy.validation => {
            (state.with_phase(Phase::Validating), Action::Validate)
        }
        (Phase::Verifying, I::Identity(Ok(()))) => enter_step(policy, 0),
        (Phase::Verifying, I::Identity(Err(error))) => stop(state, error.to_string()),

        (Phase::Validating, I::Validated(observation)) => validated(policy, state, &observation),
        (Phase::Validating, I::Confirmed(true)) => enter_step(policy, 0),
        (Phase::Validating, I::Confirmed(false)) => stop(
            state,
            format!(
                "validation warnings were not accepted: {}",
                state.reason.clone().unwrap_or_default()
            ),
        ),

        (Phase::Canary, I::TrafficMoved) => observe(state, policy.interval),
        (Phase::Monitoring, I::TrafficMoved) if policy.monitor_duration.is_zero() => {
            (state.with_phase(Phase::Promoted), Action::Complete)
        }
        (Phase::Monitoring, I::TrafficMoved) => observe(state, policy.monitor_interval),
        (Phase::Canary, I::TrafficFailed(error)) => roll_back(
            state,
            format!("moving traffic to {}% failed: {error}", state.percent),
        ),
        (Phase::Monitoring, I::TrafficFailed(error)) => {
            roll_back(state, format!("the promotion failed: {error}"))
        }

        (
            Phase::Canary,
            I::Observed {
                observation,
                elapsed,
            },
        ) => canary_look(policy, state, &observation, elapsed),
        (
            Phase::Monitoring,
            I::Observed {
                observation,
                elapsed,
            },
        ) => monitor_look(policy, state, &observation, elapsed),

        (Phase::Canary | Phase::Monitoring, I::Interrupted(Interruption::RollBack)) => {
            roll_back(state, "interrupted by the user".to_string())
        }
        (Phase::Canary | Phase::Monitoring, I::Interrupted(Interruption::Leave)) => hold(
            state,
            format!(
                "interrupted by the user; the split was left as it was (canary at {}%)",
                state.percent
            ),
        ),

        // Safety: before any traffic moved, dropping the canary is the only safe choice, and
        // nobody is asked.
        (phase, I::Unfinished | I::Recovered(_))
            if !phase.is_terminal() && !phase.traffic_moved() =>
        {
            stop(
                state,
                "an interrupted rollout was recovered before any traffic moved".to_string(),
            )
        }
        (Phase::Canary | Phase::Monitoring, I::Unfinished) => {
            (state.clone(), Action::ChooseRecovery)
        }
        (Phase::Canary | Phase::Monitoring, I::Recovered(Recovery::RollBack)) => {
            roll_back(state, "an interrupted rollout was recovered".to_string())
        }
        (Phase::Canary, I::Recovered(Recovery::Resume)) => {
            enter_step(policy, state.step.unwrap_or(0))
        }
        (Phase::Monitoring, I::Recovered(Recovery::Resume)) => promote(),
        (_, I::Recovered(Recovery::Leave)) => (state.clone(), Action::Done),

        // Only a held rollout waits for a human's decision; any other phase ignores one.
        (Phase::Held, I::Manual(Manual::Promote)) => promote(),
        (Phase::Held, I::Manual(Manual::Abort)) => (
            state.ended(Phase::Aborted, "aborted by a human".to_string()),
            Action::RollBack,
        ),

        // Someone else (an on-call engineer's emergency rollback, typically) took the canary
        // out of the split after traffic moved: their change stands, nothing is written.
        (Phase::RolledBack | Phase::Aborted, I::ReadBeforeRollBack(read))
            if read.canary_percent == 0 && read.changed_by_others =>
        {
            superseded(state, &read)
        }
        (Phase::RolledBack | Phase::Aborted, I::ReadBeforeRollBack(_)) => {
            (state.clone(), Action::RollBack)
        }
        (Phase::Stopped, I::ReadBeforeRollBack(_)) => (state.clone(), Action::ClearCanary),
        (Phase::RolledBack | Phase::Aborted, I::Wrote(Written::Failed(error))) => {
            let reason = format!(
                "{}; the rollback itself failed: {error}",
                state.reason.clone().unwrap_or_default()
            );
            (state.ended(Phase::RollbackFailed, reason), Action::Done)
        }
        (Phase::RolledBack, I::Wrote(Written::Superseded(reason))) => {
            (state.ended(Phase::RolledBack, reason), Action::Done)
        }
        (_, I::Wrote(_)) => (state.clone(), Action::Done),

        // Anything else is out of place: a finished rollout stays finished; an unfinished one
        // repeats what it was waiting for.
        (phase, _) if phase.is_terminal() => (state.clone(), Action::Done),
        (Phase::Verifying, _) => (state.clone(), Action::VerifyIdentity),
        (Phase::Validating, _) => (state.clone(), Action::Validate),
        (Phase::Canary, _) => observe(state, policy.interval),
        (Phase::Monitoring, _) => observe(state, policy.monitor_interval),
        // Unreachable: every phase is covered above; kept total without a panic.
        _ => (state.clone(), Action::Done),
    }
}

/// A first deploy's end: nothing was compared and nothing can be rolled back to.
fn first_deployed(state: &State, deployed: FirstDeploy) -> (State, Action) {
    match deployed {
        FirstDeploy::NotCreated(error) => (
            state.ended(
                Phase::Stopped,
                format!("the service could not be created: {error}"),
            ),
            Action::Done,
        ),
        // No canary, no monitor: the revision is named alone in the split (`Complete`) and
        // recorded as promoted unmonitored, not known-good until a later rollout passes with
        // it as its stable revision.
        FirstDeploy::Verified(Ok(())) => (
            State {
                percent: 100,
                ..state.with_phase(Phase::Promoted)
            },
            Action::Complete,
        ),
        // The wrong code serves and there is no revision to roll back to: a human must act
        // (the outcome of a failed rollback). Only the release history is written.
        FirstDeploy::Verified(Err(error)) => (
            State {
                percent: 100,
                ..state.ended(
                    Phase::RollbackFailed,
                    format!(
                        "{error}; this is the service's first revision, there is nothing to roll back to"
                    ),
                )
            },
            Action::Record,
        ),
    }
}

/// The rollback is not written: someone else already took the canary out of the split. A
/// rollback says so; an abort keeps its reason.
fn superseded(state: &State, read: &BeforeRollBack) -> (State, Action) {
    if state.phase != Phase::RolledBack {
        return (state.clone(), Action::Done);
    }
    let reason = format!(
        "{}; meanwhile someone else changed the service and took the canary out of the split: `{}` serves — deployer stops without writing",
        state.reason.clone().unwrap_or_default(),
        read.serving
    );
    (state.ended(Phase::RolledBack, reason), Action::Done)
}

fn observe(state: &State, wait: Duration) -> (State, Action) {
    (state.clone(), Action::Observe { wait })
}

/// Moves to canary step `index` (or, when it is the 100% step, to the promotion).
fn enter_step(policy: &Policy, index: usize) -> (State, Action) {
    let index = index.min(policy.steps.len().saturating_sub(1));
    let percent = policy.steps.get(index).copied().unwrap_or(100);
    if percent >= 100 {
        return promote();
    }
    let next = State {
        phase: Phase::Canary,
        step: Some(index),
        percent,
        elapsed_ms: 0,
        errors: BTreeMap::new(),
        unjudged: 0,
        intervals: 0,
        read: None,
        reason: None,
    };
    (next, Action::MoveTraffic { percent })
}

/// The canary takes 100%; the monitor starts from zero (whatever the step was).
fn promote() -> (State, Action) {
    let next = State {
        phase: Phase::Monitoring,
        step: None,
        percent: 100,
        elapsed_ms: 0,
        errors: BTreeMap::new(),
        unjudged: 0,
        intervals: 0,
        read: None,
        reason: None,
    };
    (next, Action::MoveTraffic { percent: 100 })
}

fn stop(state: &State, reason: String) -> (State, Action) {
    (state.ended(Phase::Stopped, reason), Action::ClearCanary)
}

fn roll_back(state: &State, reason: String) -> (State, Action) {
    (state.ended(Phase::RolledBack, reason), Action::RollBack)
}

fn hold(state: &State, reason: String) -> (State, Action) {
    (state.ended(Phase::Held, reason), Action::Record)
}

/// Roll back, or hold when the policy is `hold`/`promote`: the answer when there is no data to
/// promote on, or when the whole service is failing.
fn without_promotion(policy: &Policy, state: &State, reason: String) -> (State, Action) {
    match policy.inconclusive {
        InconclusivePolicy::Rollback => roll_back(state, reason),
        InconclusivePolicy::Hold | InconclusivePolicy::Promote => hold(state, reason),
    }
}

fn validated(policy: &Policy, state: &State, observation: &Observation) -> (State, Action) {
    match observation.worst() {
        Status::Fail => stop(
            state,
            format!(
                "validation failed: {}",
                observation.with_status(|metric| metric.status == Status::Fail)
            ),
        ),
        // A gate never counts NO DATA or ERROR as a pass.
        Status::NoData | Status::Error => stop(
            state,
            format!("validation could not be judged: {}", observation.unread()),
        ),
        Status::Warn | Status::Inconclusive => {
            let warnings = observation.with_status(|metric| metric.status != Status::Pass);
            let mut next = state.clone();
            next.reason = Some(warnings.clone());
            (next, Action::Confirm { warnings })
        }
        Status::Pass => enter_step(policy, 0),
    }
}

#[cfg(test)]
mod tests;
