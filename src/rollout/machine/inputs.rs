//! The state machine's vocabulary with the driver: every [`Input`] (what happened: an identity
//! check, a look, a write, a human's answer, what start-up or recovery found) and every
//! [`Action`] it answers with (what to carry out next). [`super::advance`] holds the rules.

use std::{fmt, time::Duration};

use super::IdentityError;
use crate::rollout::observation::Observation;

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
