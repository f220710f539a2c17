//! The release history: what deployer did to a service and how each change ended, kept on the
//! service itself so that every engineer and CI job reads the same record.
//!
//! The rollout journal (`rollout::journal`) says where the *current* rollout is; this module
//! remembers the *finished* ones: every rollout's outcome (promoted, rolled back, stopped before
//! traffic, held, aborted, rollback failed), every emergency rollback (from what, to what, who,
//! why) and every manual promotion of a held canary. From that record it derives a verdict per
//! revision — known-good or known-bad — which is what `deployer rollback` needs to never
//! restore a revision that was rolled back as faulty (docs/ROLLOUT.md, "Release history").
//!
//! ## Where and how it is stored
//!
//! The service annotation `deployer.dev/releases`: one compact JSON document, written *in the
//! same etag-guarded write* as the traffic change (or journal close) it records. A revision is
//! recorded good only by the write that ends its rollout as promoted — after the post-deploy
//! monitor passed — so a `kill -9` at any moment leaves at worst an unfinished journal (the
//! revision is then not known-good), never a record calling a bad revision good.
//!
//! Revision labels cannot hold outcomes: a Cloud Run revision is immutable once created, and
//! its labels come from the template that created it. Annotations on the service are mutable
//! and versioned by the etag, like the lock and the journal.
//!
//! ## Bounded
//!
//! Kubernetes-style metadata limits all annotations of an object to 256 KiB together; the
//! history keeps itself under [`MAX_ENCODED_BYTES`] (48 KiB) and [`MAX_ENTRIES`] entries. When
//! it would grow past either, the oldest entries are dropped and their verdicts folded into a
//! short list (`earlier`, at most [`MAX_EARLIER`] revisions): a revision rolled back long ago is
//! still known bad after its entry was compacted away.

pub mod metrics;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::platform::ServiceSnapshot;

/// The annotation holding the release history.
pub const HISTORY_ANNOTATION: &str = "deployer.dev/releases";

/// Most entries kept in full.
pub const MAX_ENTRIES: usize = 100;

/// Most bytes of the encoded history.
pub const MAX_ENCODED_BYTES: usize = 48 * 1024;

/// Most revisions whose verdicts are kept after their entries were compacted away.
pub const MAX_EARLIER: usize = 200;

/// Longest `why` kept in an entry, in characters.
pub const MAX_WHY_CHARS: usize = 400;

/// What kind of change an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A guarded rollout (`deployer deploy`).
    Rollout,
    /// `deployer rollback`: 100% moved to another revision by hand.
    EmergencyRollback,
    /// `deployer promote`: a held canary given 100% by a human.
    Promote,
    /// `deployer abort`: a held rollout ended with 100% on its stable revision.
    Abort,
}

/// How the recorded change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new revision serves 100% and passed the post-deploy monitor.
    Promoted,
    /// The new revision serves 100%, promoted by a human without the monitor.
    PromotedUnmonitored,
    /// Traffic went back to the stable revision.
    RolledBack,
    /// Stopped before any traffic moved to the new revision.
    StoppedBeforeTraffic,
    /// The split was left as it was for a human.
    Held,
    /// A held rollout was ended by a human: 100% on its stable revision.
    Aborted,
    /// A rollback was needed and failed.
    RollbackFailed,
    /// An emergency rollback moved 100% to `revision`.
    Restored,
}

impl Outcome {
    /// The label used in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::PromotedUnmonitored => "promoted (monitor skipped)",
            Outcome::RolledBack => "rolled back",
            Outcome::StoppedBeforeTraffic => "stopped before traffic",
            Outcome::Held => "held",
            Outcome::Aborted => "aborted",
            Outcome::RollbackFailed => "rollback failed",
            Outcome::Restored => "emergency rollback",
        }
    }

    /// True when the change failed (the change failure rate's numerator).
    pub fn failed(self) -> bool {
        matches!(
            self,
            Outcome::RolledBack
                | Outcome::StoppedBeforeTraffic
                | Outcome::Aborted
                | Outcome::RollbackFailed
        )
    }
}

/// Who made a change: a person at a machine, or a CI run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `user@host`, or the CI actor (`github:octocat`).
    pub who: String,
    /// The CI run's URL, when run in GitHub Actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

impl Actor {
    /// The actor of this process: the GitHub Actions actor and run URL when
    /// `GITHUB_ACTIONS`-style variables are set, else `user@host`.
    pub fn current() -> Self {
        Self::from_lookup(
            |name| std::env::var(name).ok(),
            crate::process::current_owner,
        )
    }

    /// The actor from an environment lookup (for tests), `local` giving `user@host`.
    pub fn from_lookup(
        variable: impl Fn(&str) -> Option<String>,
        local: impl FnOnce() -> String,
    ) -> Self {
        let set = |name: &str| variable(name).filter(|value| !value.trim().is_empty());
        let run = match (
            set("GITHUB_SERVER_URL"),
            set("GITHUB_REPOSITORY"),
            set("GITHUB_RUN_ID"),
        ) {
            (Some(server), Some(repository), Some(run)) => Some(format!(
                "{}/{repository}/actions/runs/{run}",
                server.trim_end_matches('/')
            )),
            _ => None,
        };
        let who = match set("GITHUB_ACTOR") {
            Some(actor) if run.is_some() => format!("github:{actor}"),
            _ => local(),
        };
        Self { who, run }
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it ended (the write that recorded it).
    pub at: DateTime<Utc>,
    /// When it started.
    pub started: DateTime<Utc>,
    /// What kind of change.
    pub kind: Kind,
    /// How it ended.
    pub outcome: Outcome,
    /// The revision the change was about: a rollout's new revision, or the target of an
    /// emergency rollback.
    pub revision: String,
    /// The revision serving before (a rollout's stable revision; for an emergency rollback the
    /// revisions it took traffic from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// The commit of `revision`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When that commit was made (for the lead time), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<DateTime<Utc>>,
    /// The rollout's id (an emergency rollback names the rollout it closed, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// Who.
    #[serde(flatten)]
    pub actor: Actor,
    /// Why (the rollback's reason with its numbers, a `--reason`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Entry {
    /// How long the change took.
    pub fn duration(&self) -> chrono::Duration {
        self.at - self.started
    }

    fn bounded(mut self) -> Self {
        if let Some(why) = &self.why {
            let short = crate::untrusted::shortened(why, MAX_WHY_CHARS);
            if short.len() != why.len() {
                self.why = Some(short.into_owned());
            }
        }
        self
    }
}

/// What the history says about one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// It served 100% after a passed rollout (or was the stable revision of one), and nothing
    /// failed it since.
    Good,
    /// It was rolled back, stopped, aborted or emergency-rolled-back from since it last was
    /// good.
    Bad,
}

/// The release history of one service, oldest entry first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Format version.
    #[serde(default = "version")]
    pub v: u32,
    /// The entries, oldest first.
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// Verdicts of revisions whose entries were compacted away, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<(String, Verdict)>,
    /// How many entries were compacted away in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compacted: u64,
}

fn version() -> u32 {
    1
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Why the history on a service could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the release history (annotation `{HISTORY_ANNOTATION}`) is unreadable: {0}")]
pub struct Unreadable(String);

impl History {
    /// The history recorded on a service: empty when there is none; an error when the
    /// annotation exists but cannot be read (a rollback must then not pretend to know).
    pub fn of(snapshot: &ServiceSnapshot) -> Result<History, Unreadable> {
        match snapshot.annotations.get(HISTORY_ANNOTATION) {
            None => Ok(History::default()),
            Some(text) => Self::decode(text),
        }
    }

    /// Parses the annotation's value.
    pub fn decode(text: &str) -> Result<History, Unreadable> {
        serde_json::from_str(text).map_err(|error| {
            Unreadable(crate::untrusted::shortened(&error.to_string(), 200).into_owned())
        })
    }

    /// The annotation's value: compact JSON.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// True when nothing was ever recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.earlier.is_empty()
    }

    /// This history with `entry` appended, compacted to its bounds.
    pub fn with(&self, entry: Entry) -> History {
        let mut next = self.clone();
        next.v = version();
        next.entries.push(entry.bounded());
        next.compact();
        next
    }

    fn compact(&mut self) {
        while self.entries.len() > MAX_ENTRIES
            || (self.entries.len() > 1 && self.encode().len() > MAX_ENCODED_BYTES)
        {
            // The verdicts of everything up to the dropped entry survive it.
            let verdicts = verdicts_of(&self.earlier, &self.entries[..1]);
            self.entries.remove(0);
            self.compacted += 1;
            self.earlier = verdicts.into_iter().collect::<Vec<_>>();
            // Keep the most recently judged revisions; `verdicts_of` keeps the order of
            // the last judgement, oldest first.
            if self.earlier.len() > MAX_EARLIER {
                let excess = self.earlier.len() - MAX_EARLIER;
                self.earlier.drain(..excess);
            }
        }
    }

    /// Each revision's verdict, from the whole record.
    pub fn verdicts(&self) -> BTreeMap<String, Verdict> {
        verdicts_of(&self.earlier, &self.entries)
            .into_iter()
            .collect()
    }

    /// The verdict of one revision, if it has one.
    pub fn verdict(&self, revision: &str) -> Option<Verdict> {
        self.verdicts().get(revision).copied()
    }

    /// True when the history mentions `revision` at all.
    pub fn mentions(&self, revision: &str) -> bool {
        self.earlier.iter().any(|(name, _)| name == revision)
            || self
                .entries
                .iter()
                .any(|entry| entry.revision == revision || entry.from.iter().any(|r| r == revision))
    }

    /// The entries, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev()
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<&Entry> {
        self.entries.last()
    }

    /// The entry that recorded `revision` as promoted most recently, if any.
    pub fn promotion_of(&self, revision: &str) -> Option<&Entry> {
        self.newest_first().find(|entry| {
            entry.revision == revision
                && matches!(
                    entry.outcome,
                    Outcome::Promoted | Outcome::PromotedUnmonitored
                )
        })
    }
}

/// The verdicts after `entries` (oldest first) on top of `earlier`: the latest judgement of
/// each revision wins; the result is ordered by when each revision was last judged, oldest
/// first.
fn verdicts_of(earlier: &[(String, Verdict)], entries: &[Entry]) -> Vec<(String, Verdict)> {
    fn set(verdicts: &mut Vec<(String, Verdict)>, revision: &str, verdict: Verdict) {
        verdicts.retain(|(name, _)| name != revision);
        verdicts.push((revision.to_string(), verdict));
    }
    let mut verdicts: Vec<(String, Verdict)> = earlier.to_vec();
    for entry in entries {
        match entry.outcome {
            Outcome::Promoted => {
                // The stable revision of a passed rollout served, healthy, as its baseline
                // until the end: good, unless something failed it before.
                for stable in entry.from.iter().filter(|name| **name != entry.revision) {
                    let bad = verdicts
                        .iter()
                        .any(|(name, verdict)| name == stable && *verdict == Verdict::Bad);
                    if !bad {
                        set(&mut verdicts, stable, Verdict::Good);
                    }
                }
                set(&mut verdicts, &entry.revision, Verdict::Good);
            }
            // A human vouched for it, but no monitor judged it; a held canary was never
            // judged: neither is known-good, neither is known-bad.
            Outcome::PromotedUnmonitored | Outcome::Held => {}
            Outcome::RolledBack
            | Outcome::StoppedBeforeTraffic
            | Outcome::Aborted
            | Outcome::RollbackFailed => set(&mut verdicts, &entry.revision, Verdict::Bad),
            Outcome::Restored => {
                // On-call moved traffic away from these revisions: they are bad now.
                for from in entry.from.iter().filter(|name| **name != entry.revision) {
                    set(&mut verdicts, from, Verdict::Bad);
                }
            }
        }
    }
    verdicts
}

#[cfg(test)]
mod tests;
