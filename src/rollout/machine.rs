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
//! `rollback-failed`.
//!
//! One vocabulary for a decision. Every look produces an [`Observation`]: a list of
//! [`MetricResult`]s (the request-error test is one of them, the canary's `/health` another, each
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

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};

pub use super::identity::IdentityError;
use crate::config::{InconclusivePolicy, RolloutConfig};

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

/// The result of one metric at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Healthy.
    Pass,
    /// Read; worse than the warning threshold, better than the critical one.
    Warn,
    /// Read; not enough to decide (too little traffic, the test between its boundaries).
    Inconclusive,
    /// The provider answered, with nothing to judge (no row, no series): not a read.
    NoData,
    /// The metric could not be read (provider down, timeout, malformed answer).
    Error,
    /// Read, and failing.
    Fail,
}

impl Status {
    /// True when the metric was read: its value can be judged.
    pub fn is_read(self) -> bool {
        !matches!(self, Status::NoData | Status::Error)
    }

    /// The status as shown to people.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Inconclusive => "INCONCLUSIVE",
            Status::NoData => "NO DATA",
            Status::Error => "ERROR",
            Status::Fail => "FAIL",
        }
    }
}

/// One metric's result at one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// The metric (`request errors`, `canary health`, a check's name).
    pub name: String,
    /// Its status.
    pub status: Status,
    /// The numbers behind it, or what went wrong.
    pub detail: String,
    /// For a `Fail`: the stable revision fails as much (the whole service is failing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_wide: bool,
    /// Unread looks in a row tolerated for this metric (`None`: the rollout's
    /// `consecutive_error_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_limit: Option<u32>,
}

impl MetricResult {
    /// A result with the rollout's error limit.
    pub fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            service_wide: false,
            error_limit: None,
        }
    }

    /// Marks a failure as shared by the stable revision.
    pub fn service_wide(mut self) -> Self {
        self.service_wide = true;
        self
    }

    fn summary(&self) -> String {
        format!("{} {}: {}", self.name, self.status.label(), self.detail)
    }
}

/// Everything one look measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// One result per metric.
    pub metrics: Vec<MetricResult>,
}

impl Observation {
    /// An observation of these results.
    pub fn of(metrics: Vec<MetricResult>) -> Self {
        Self { metrics }
    }

    /// The worst status (`Error` for a look that measured nothing).
    pub fn worst(&self) -> Status {
        self.metrics
            .iter()
            .map(|metric| metric.status)
            .max()
            .unwrap_or(Status::Error)
    }

    /// True when every metric was read (and there was at least one).
    pub fn all_read(&self) -> bool {
        !self.metrics.is_empty() && self.metrics.iter().all(|metric| metric.status.is_read())
    }

    /// True when every metric passed (and there was at least one).
    pub fn all_pass(&self) -> bool {
        !self.metrics.is_empty()
            && self
                .metrics
                .iter()
                .all(|metric| metric.status == Status::Pass)
    }

    fn with_status(&self, keep: impl Fn(&MetricResult) -> bool) -> String {
        let parts: Vec<String> = self
            .metrics
            .iter()
            .filter(|metric| keep(metric))
            .map(MetricResult::summary)
            .collect();
        if parts.is_empty() {
            "no metric was measured".to_string()
        } else {
            parts.join("; ")
        }
    }

    fn unread(&self) -> String {
        self.with_status(|metric| !metric.status.is_read())
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

/// A human's (or the unattended default's) answer to an interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// Roll back (the safe default).
    RollBack,
    /// Leave the split as it is for a human.
    Leave,
}

/// What to do with a rollout found unfinished after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// 100% back on its stable revision (the safe default).
    RollBack,
    /// Continue from the journalled step (a rollout in its monitor is promoted and monitored
    /// again).
    Resume,
    /// Touch nothing.
    Leave,
}

/// A human's decision on a held rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manual {
    /// `deployer promote`: the canary takes 100%, then the post-deploy monitor (none with a
    /// zero `monitor_duration`, i.e. `--skip-monitor`), with the usual rollback rules.
    Promote,
    /// `deployer abort`: 100% back on the stable revision.
    Abort,
}

/// How a write the machine asked for went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// It landed.
    Done,
    /// It failed.
    Failed(String),
    /// Someone else already took the canary out of the split: nothing was written.
    Superseded(String),
}

/// How a first deploy went: the service created (or, when none of its revisions serves, its
/// template replaced) with the new revision at 100%, then its identity checked.
#[derive(Debug, Clone, PartialEq)]
pub enum FirstDeploy {
    /// The service could not be created (or its template replaced).
    NotCreated(String),
    /// The revision was written; the identity check said this.
    Verified(Result<(), IdentityError>),
}

/// Why [`Action::CreateRevision`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreationFailure {
    /// The new revision.
    pub revision: String,
    /// What the write answered.
    pub error: String,
    /// Why the revision failed to start, when the platform says it did.
    pub start_failure: Option<String>,
}

/// The service as read just before a rollback's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeforeRollBack {
    /// The canary's share of traffic, in percent.
    pub canary_percent: u16,
    /// True when someone else wrote the service since the rollout's last write (its etag moved
    /// on).
    pub changed_by_others: bool,
    /// The revision serving the most traffic.
    pub serving: String,
}

/// What happened, fed to [`advance`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The service before the rollout wrote anything.
    Found {
        /// True when some revision serves traffic (false for a service that does not exist
        /// yet, or whose revisions all failed).
        serving: bool,
    },
    /// How [`Action::DeployFirst`] went.
    FirstDeployed(FirstDeploy),
    /// How [`Action::CreateRevision`] went.
    RevisionCreated(Result<(), CreationFailure>),
    /// Identity verification finished.
    Identity(Result<(), IdentityError>),
    /// The validation-gated checks ran.
    Validated(Observation),
    /// The answer to [`Action::Confirm`].
    Confirmed(bool),
    /// A [`Action::MoveTraffic`] write landed.
    TrafficMoved,
    /// A [`Action::MoveTraffic`] write failed.
    TrafficFailed(String),
    /// A look of a canary step or the monitor; `elapsed` since the step (or monitor) started.
    Observed {
        /// What the look measured.
        observation: Observation,
        /// Time in the step or monitor.
        elapsed: Duration,
    },
    /// Ctrl-C during a step or the monitor, with the answer.
    Interrupted(Interruption),
    /// An unfinished rollout found after a crash (its journalled state is the state).
    Unfinished,
    /// The answer to [`Action::ChooseRecovery`].
    Recovered(Recovery),
    /// A human's decision on a held rollout.
    Manual(Manual),
    /// What [`Action::RollBack`] or [`Action::ClearCanary`] read before writing; answered with
    /// the same action (write it) or [`Action::Done`] (nothing to write).
    ReadBeforeRollBack(BeforeRollBack),
    /// A final write ([`Action::RollBack`], [`Action::ClearCanary`], [`Action::Record`],
    /// [`Action::Complete`]) went like this.
    Wrote(Written),
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deploy the new revision as the service's first (create the service, or replace the
    /// template of one no revision serves) with 100% of traffic, then check its identity;
    /// answer [`Input::FirstDeployed`].
    DeployFirst,
    /// Create the new revision with 0% of traffic and its tag, journalling the state in the
    /// same write; answer [`Input::RevisionCreated`].
    CreateRevision,
    /// Ask what to do with an unfinished rollout found after a crash; answer
    /// [`Input::Recovered`].
    ChooseRecovery,
    /// Wait for the new revision to be Ready and check its identity; answer [`Input::Identity`].
    VerifyIdentity,
    /// Run the validation-gated checks; answer [`Input::Validated`].
    Validate,
    /// Ask whether to continue past warnings; answer [`Input::Confirmed`].
    Confirm {
        /// What is asked about.
        warnings: String,
    },
    /// Write the split with the canary at `percent` (journalling the new state in the same
    /// write); answer [`Input::TrafficMoved`] or [`Input::TrafficFailed`].
    MoveTraffic {
        /// The canary's share.
        percent: u8,
    },
    /// Wait `wait`, then look (or answer [`Input::Interrupted`] on Ctrl-C).
    Observe {
        /// Time until the look.
        wait: Duration,
    },
    /// 100% back on the stable revision, journalled `rolled-back`: read the service, answer
    /// [`Input::ReadBeforeRollBack`], and after the write [`Input::Wrote`].
    RollBack,
    /// Drop the 0% canary from the split, journalled `stopped`: as [`Action::RollBack`].
    ClearCanary,
    /// Write the journal alone (the split stays); answer [`Input::Wrote`].
    Record,
    /// The promoted revision alone in the split, journalled `promoted`; answer [`Input::Wrote`].
    Complete,
    /// Nothing more: the state says how it ended. For an unfinished state (a recovery left
    /// for a human) nothing was written.
    Done,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
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
        (Phase::Verifying | Phase::Validating, I::Unfinished | I::Recovered(_)) => stop(
            state,
            "an interrupted rollout was recovered before any traffic moved".to_string(),
        ),
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

/// Counts unread looks per metric; returns the new counts and the first metric over its limit.
fn count_errors(
    policy: &Policy,
    state: &State,
    observation: &Observation,
) -> (BTreeMap<String, u32>, Option<String>) {
    let mut errors = state.errors.clone();
    let mut over = None;
    if observation.metrics.is_empty() {
        // A look that measured nothing counts against an implicit "observation" metric.
        let count = errors.entry("observation".to_string()).or_insert(0);
        *count = count.saturating_add(1);
        if *count > policy.consecutive_error_limit {
            over = Some(format!("{count} looks in a row measured nothing"));
        }
        return (errors, over);
    }
    errors.remove("observation");
    for metric in &observation.metrics {
        if metric.status.is_read() {
            errors.remove(&metric.name);
            continue;
        }
        let count = errors.entry(metric.name.clone()).or_insert(0);
        *count = count.saturating_add(1);
        let limit = metric.error_limit.unwrap_or(policy.consecutive_error_limit);
        if *count > limit && over.is_none() {
            over = Some(format!(
                "{count} unread looks in a row of {}: {}",
                metric.name, metric.detail
            ));
        }
    }
    (errors, over)
}

/// What a look that read every metric found short of a pass; `None` when it did not read them.
fn read_now(observation: &Observation) -> Option<String> {
    observation.all_read().then(|| {
        let short = observation.with_status(|metric| metric.status != Status::Pass);
        if observation.all_pass() {
            String::new()
        } else {
            short
        }
    })
}

fn first_failure(observation: &Observation, service_wide: bool) -> Option<&MetricResult> {
    observation
        .metrics
        .iter()
        .find(|metric| metric.status == Status::Fail && metric.service_wide == service_wide)
}

fn canary_look(
    policy: &Policy,
    state: &State,
    observation: &Observation,
    elapsed: Duration,
) -> (State, Action) {
    let (errors, over_limit) = count_errors(policy, state, observation);
    let state = &State {
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        errors,
        read: read_now(observation).or_else(|| state.read.clone()),
        ..state.clone()
    };
    if let Some(failure) = first_failure(observation, false) {
        return roll_back(state, failure.summary());
    }
    if let Some(failure) = first_failure(observation, true) {
        // The stable revision fails too: never promote, and do not blame the canary. Rolling
        // back does not fix a service-wide failure, so it happens only with `rollback`.
        return without_promotion(
            policy,
            state,
            format!(
                "the whole service is failing, not only the canary: {}",
                failure.summary()
            ),
        );
    }
    if let Some(why) = over_limit {
        return without_promotion(
            policy,
            state,
            format!("the metrics could not be read at {}%: {why}", state.percent),
        );
    }
    if observation.all_pass() {
        return enter_step(policy, state.step.unwrap_or(0) + 1);
    }
    if elapsed < policy.hold {
        return observe(state, policy.interval);
    }
    let at = format!(
        "no decision within {} at {}%",
        humantime::format_duration(policy.hold),
        state.percent
    );
    // The step is judged on what its looks read: the counts are cumulative over the step, so
    // the latest look that read every metric is what is known; a last look that could not
    // read does not erase it.
    let undecided = match (&state.read, observation.all_read()) {
        // Safety: a step none of whose looks read its metrics is never a pass, whatever the
        // policy.
        (None, _) => {
            return without_promotion(
                policy,
                state,
                format!(
                    "{at}: the metrics could not be read by any look of the step (last look: {}); never promoted without data",
                    observation.unread()
                ),
            )
        }
        (Some(_), true) => observation.with_status(|metric| metric.status != Status::Pass),
        (Some(read), false) => format!(
            "{read} (the latest look that read every metric; the last look could not read: {})",
            observation.unread()
        ),
    };
    match policy.inconclusive {
        InconclusivePolicy::Promote => enter_step(policy, state.step.unwrap_or(0) + 1),
        InconclusivePolicy::Rollback => roll_back(
            state,
            format!("{at}: {undecided} (inconclusive policy: rollback)"),
        ),
        InconclusivePolicy::Hold => hold(
            state,
            format!("{at}: {undecided} (inconclusive policy: hold)"),
        ),
    }
}

/// The monitor's intervals: `monitor_duration` in intervals of `monitor_interval` (at least
/// one).
fn monitor_intervals(policy: &Policy) -> u32 {
    let interval = policy.monitor_interval.as_millis().max(1);
    let count = policy.monitor_duration.as_millis().div_ceil(interval);
    u32::try_from(count).unwrap_or(u32::MAX).max(1)
}

/// A look of the post-deploy monitor. Its intervals are counted from when the promotion's
/// split is in place (the driver's clock starts when that write lands, however long its
/// retries took): interval `k` is due to end at `k × monitor_interval`, and ends only at a
/// look attempted at or after that time — an interval no look reached (a slow look spanning
/// it) is not ended, let alone judged, until one does. An interval is judged when some look in
/// it read every metric; the monitor passes when every interval is judged. A look that ends an
/// interval and cannot read is tried again half an interval later (its window still covers
/// half of the interval): one throttled read does not leave an interval unjudged, two do.
fn monitor_look(
    policy: &Policy,
    state: &State,
    observation: &Observation,
    elapsed: Duration,
) -> (State, Action) {
    let (errors, over_limit) = count_errors(policy, state, observation);
    let judged = state.read.is_some() || observation.all_read();
    let due = policy
        .monitor_interval
        .saturating_mul(state.intervals.saturating_add(1));
    let second_look = due.saturating_add(policy.monitor_interval / 2);
    let ends = elapsed >= due && (judged || elapsed >= second_look);
    let look_again = (elapsed >= due && !ends).then(|| second_look.saturating_sub(elapsed));
    let state = &State {
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        errors,
        unjudged: state.unjudged.saturating_add(u32::from(ends && !judged)),
        intervals: state.intervals.saturating_add(u32::from(ends)),
        read: if ends {
            None
        } else {
            read_now(observation).or_else(|| state.read.clone())
        },
        ..state.clone()
    };
    if let Some(failure) = observation
        .metrics
        .iter()
        .find(|metric| metric.status == Status::Fail)
    {
        return roll_back(state, format!("post-deploy monitor: {}", failure.summary()));
    }
    if let Some(why) = over_limit {
        return roll_back(
            state,
            format!("post-deploy monitor: the metrics could not be read: {why}"),
        );
    }
    let total = monitor_intervals(policy);
    if let Some(wait) = look_again {
        return observe(state, wait);
    }
    if state.intervals < total {
        // The next look when the next interval is due (from the split, not from this look).
        let next_due = policy
            .monitor_interval
            .saturating_mul(state.intervals.saturating_add(1));
        return observe(state, next_due.saturating_sub(elapsed));
    }
    if state.unjudged == 0 {
        return (state.with_phase(Phase::Promoted), Action::Complete);
    }
    // Safety: the monitor passes only when every interval was judged on data.
    let last = if observation.all_read() {
        "the last look read every metric".to_string()
    } else {
        format!("last look: {}", observation.unread())
    };
    without_promotion(
        policy,
        state,
        format!(
            "post-deploy monitor: {} of {total} interval(s) of {} had no look that read every metric ({last}); not passed",
            state.unjudged,
            humantime::format_duration(policy.monitor_interval),
        ),
    )
}

#[cfg(test)]
mod tests;
