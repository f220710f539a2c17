//! What a rollout tells the world: typed progress events (for the CLI to draw as text, or to
//! write as one JSON object per line), and how it ended.

use std::time::Duration;

use serde::Serialize;

use super::{journal::Journal, machine::Phase, observation::MetricResult};
use crate::{checks::RequestCounts, platform::TrafficTarget};

/// Progress events. The CLI draws them as text, or writes one JSON object per line on stderr.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The rollout lock was taken.
    LockTaken {
        /// Who holds it, until when.
        holder: String,
    },
    /// An unfinished rollout was found (a crash, `kill -9`).
    InterruptedRolloutFound {
        /// Its journal.
        journal: Box<Journal>,
    },
    /// Something the report also notes (pinned traffic, a lock not released, ...).
    Notice {
        /// The line.
        message: String,
    },
    /// Something the user should know is unusual (a skipped checklist, a setting the target
    /// will not apply); the report also notes it.
    Warning {
        /// The line.
        message: String,
    },
    /// The rollout of an image starts (the pipeline's opening line).
    Deploying {
        /// The service.
        service: String,
        /// Where it is deployed.
        target: String,
        /// The image, by digest or content id.
        image: String,
        /// The commit (abbreviated to 12 digits).
        commit: String,
    },
    /// The settings of the new revision that differ from the stable revision's.
    SettingsChanged {
        /// One line per setting.
        changes: Vec<String>,
    },
    /// The new revision was created with 0% and the canary tag.
    RevisionCreated {
        /// Its name.
        revision: String,
    },
    /// The new revision's identity was verified on its tag URL.
    IdentityVerified {
        /// The URL asked.
        url: String,
        /// The service it reported.
        service: String,
        /// The commit it reported.
        commit: String,
    },
    /// The validation checks ran.
    Validation {
        /// Their results.
        results: Vec<MetricResult>,
    },
    /// Traffic was moved.
    TrafficMoved {
        /// The canary's percent.
        canary_percent: u8,
        /// The split written.
        split: Vec<TrafficTarget>,
    },
    /// One look of a canary step or of the monitor.
    Analysis {
        /// `canary` or `monitoring`.
        phase: Phase,
        /// The canary's percent.
        canary_percent: u8,
        /// The canary's request counts, if read.
        canary: Option<RequestCounts>,
        /// The stable revision's, if read (not in the monitor).
        stable: Option<RequestCounts>,
        /// Every metric of the look.
        results: Vec<MetricResult>,
        /// Time left at this step (or in the monitor).
        remaining: Duration,
    },
    /// Traffic goes back to the stable revision.
    RollingBack {
        /// Where traffic goes.
        to: String,
        /// Why.
        reason: String,
    },
    /// The rollout ended.
    Finished {
        /// How.
        outcome: Outcome,
    },
}

/// Receives progress events.
pub trait RolloutReporter: Send + Sync {
    /// One event.
    fn event(&self, event: &Event);
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The new revision serves 100%.
    Promoted {
        /// The new revision.
        revision: String,
    },
    /// Stopped before any traffic moved to the new revision; the service is unchanged.
    StoppedBeforeTraffic {
        /// Why.
        reason: String,
    },
    /// Traffic went back to the stable revision.
    RolledBack {
        /// Why.
        reason: String,
        /// Where traffic went.
        revision: String,
    },
    /// The split was left as it is, for a human.
    Held {
        /// Why.
        reason: String,
    },
    /// A rollback was needed and failed: a human must act now.
    RollbackFailed {
        /// Why the rollback was needed and why it failed.
        reason: String,
    },
}

impl Outcome {
    /// The outcome a finished journal records.
    pub fn of(journal: &Journal) -> Outcome {
        let reason = journal.state.reason.clone().unwrap_or_default();
        match journal.state.phase {
            Phase::Promoted => Outcome::Promoted {
                revision: journal.canary.clone(),
            },
            Phase::RolledBack => Outcome::RolledBack {
                reason,
                revision: journal.stable.clone().unwrap_or_default(),
            },
            Phase::Held => Outcome::Held { reason },
            // The human's decision was carried out: traffic is back on the stable revision.
            Phase::Aborted => Outcome::RolledBack {
                reason,
                revision: journal.stable.clone().unwrap_or_default(),
            },
            Phase::RollbackFailed => Outcome::RollbackFailed { reason },
            Phase::Stopped | Phase::Verifying | Phase::Validating => {
                Outcome::StoppedBeforeTraffic { reason }
            }
            // Unfinished after traffic moved (cannot happen: the loop runs to a terminal
            // phase); say so rather than claim an outcome.
            Phase::Canary | Phase::Monitoring => Outcome::Held {
                reason: format!("the rollout stopped in phase `{:?}`", journal.state.phase),
            },
        }
    }
}

/// The rollout's final report.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// The rollout's id (none when the deploy stopped before its rollout began, at the
    /// preflight checklist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The service.
    pub service: String,
    /// The new revision, once created.
    pub canary: Option<String>,
    /// The revision serving before.
    pub stable: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Notes gathered on the way (pinned traffic found, ...).
    pub notes: Vec<String>,
}
