//! The rollout journal: where a rollout is, recorded so that a crash never leaves a service in an
//! unknown split.
//!
//! The journal lives in the service annotation `deployer.dev/rollout`, written *in the same
//! etag-guarded write* as the traffic change it describes, so the platform can never show a
//! split without the journal entry that explains it. A copy is kept in a local file
//! (`$DEPLOYER_STATE_DIR`, else `$XDG_STATE_HOME/deployer`, else `~/.local/state/deployer`)
//! for `deployer status` when the platform cannot be read.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::machine::{Phase, State};
use crate::{
    platform::{ServiceId, ServiceSnapshot},
    release,
};

/// The annotation holding the journal.
pub const JOURNAL_ANNOTATION: &str = "deployer.dev/rollout";

/// One rollout's record: who runs it, on which revisions, and the state machine's [`State`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The rollout's id (also the lock's id).
    pub id: String,
    /// The revision serving before the rollout (the rollback target), if any.
    pub stable: Option<String>,
    /// The new revision.
    pub canary: String,
    /// The commit being deployed.
    pub commit: String,
    /// When that commit was made, when known (the release history's lead time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<DateTime<Utc>>,
    /// The image being deployed, by digest.
    pub image: String,
    /// Who runs it (`user@host`).
    pub owner: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When this record was written.
    pub updated: DateTime<Utc>,
    /// Where the rollout is (phase, step, percent, the analysis' counters, the reason).
    #[serde(flatten)]
    pub state: State,
    /// What a human did to it after it was held (`promote`/`abort`), who and why; none for a
    /// rollout run by `deploy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// A human's decision on a held rollout, recorded in its journal and release history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `promote` or `abort`.
    pub kind: release::Kind,
    /// Who.
    #[serde(flatten)]
    pub actor: release::Actor,
    /// Why (`--reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `promote --skip-monitor`: promoted without the post-deploy monitor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmonitored: bool,
}

impl Journal {
    /// The journal recorded on a service, if any and readable.
    pub fn of(snapshot: &ServiceSnapshot) -> Option<Journal> {
        snapshot
            .annotations
            .get(JOURNAL_ANNOTATION)
            .and_then(|text| serde_json::from_str(text).ok())
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    /// This record with a new state.
    pub fn with_state(&self, state: State) -> Journal {
        Journal {
            state,
            updated: Utc::now(),
            ..self.clone()
        }
    }

    /// This record, finished in `phase` with a reason (the rest of the state kept).
    pub fn finished(&self, phase: Phase, reason: String) -> Journal {
        self.with_state(State {
            phase,
            reason: Some(reason),
            ..self.state.clone()
        })
    }

    /// The annotation value.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The release-history entry of this rollout once it has ended (`None` while it runs):
    /// written in the same write as the journal that ends it.
    pub fn release_entry(
        &self,
        kind: release::Kind,
        actor: release::Actor,
    ) -> Option<release::Entry> {
        let (kind, actor) = match &self.decision {
            Some(decision) => (decision.kind, decision.actor.clone()),
            None => (kind, actor),
        };
        let unmonitored = self
            .decision
            .as_ref()
            .is_some_and(|decision| decision.unmonitored);
        let outcome = match self.phase() {
            Phase::Promoted if unmonitored => release::Outcome::PromotedUnmonitored,
            Phase::Promoted => release::Outcome::Promoted,
            Phase::Aborted => release::Outcome::Aborted,
            Phase::RolledBack => release::Outcome::RolledBack,
            Phase::Stopped => release::Outcome::StoppedBeforeTraffic,
            Phase::Held => release::Outcome::Held,
            Phase::RollbackFailed => release::Outcome::RollbackFailed,
            Phase::Verifying | Phase::Validating | Phase::Canary | Phase::Monitoring => {
                return None
            }
        };
        Some(release::Entry {
            at: self.updated,
            started: self.started,
            kind,
            outcome,
            revision: self.canary.clone(),
            from: self.stable.iter().cloned().collect(),
            commit: Some(self.commit.clone()).filter(|commit| !commit.is_empty()),
            commit_time: self.commit_time,
            rollout: Some(self.id.clone()),
            actor,
            why: match (
                self.decision
                    .as_ref()
                    .and_then(|decision| decision.reason.as_ref()),
                &self.state.reason,
            ) {
                (Some(reason), Some(state)) => Some(format!("{reason} ({state})")),
                (Some(reason), None) => Some(reason.clone()),
                (None, state) => state.clone(),
            },
        })
    }
}

/// The local copy of journals.
#[derive(Debug, Clone)]
pub struct LocalJournal {
    directory: PathBuf,
}

impl LocalJournal {
    /// The directory from the environment (see the module doc).
    pub fn from_environment() -> Self {
        let directory = std::env::var_os("DEPLOYER_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_STATE_HOME").map(|dir| PathBuf::from(dir).join("deployer"))
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".local/state/deployer"))
            })
            .unwrap_or_else(|| PathBuf::from(".deployer-state"));
        Self { directory }
    }

    /// The state directory (shared with the health check's history).
    pub fn directory(&self) -> &std::path::Path {
        &self.directory
    }

    /// A journal store in `directory`.
    pub fn in_directory(directory: PathBuf) -> Self {
        Self { directory }
    }

    fn path(&self, id: &ServiceId) -> PathBuf {
        self.directory
            .join("rollouts")
            .join(format!("{}--{}--{}.json", id.project, id.region, id.name))
    }

    /// Records `journal` (atomically: write then rename). Failures are logged, not fatal: the
    /// platform's copy is the one that counts.
    pub fn record(&self, id: &ServiceId, journal: &Journal) {
        let path = self.path(id);
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let temporary = path.with_extension("json.tmp");
            std::fs::write(
                &temporary,
                serde_json::to_vec_pretty(journal).unwrap_or_default(),
            )?;
            std::fs::rename(&temporary, &path)
        })();
        if let Err(error) = result {
            tracing::info!(target: "deployer::progress", "warning: cannot write the local rollout journal `{}`: {error}", path.display());
        }
    }

    /// The last journal recorded locally for a service.
    pub fn load(&self, id: &ServiceId) -> Option<Journal> {
        let text = std::fs::read_to_string(self.path(id)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> Journal {
        Journal {
            id: "r1".into(),
            stable: Some("svc-1".into()),
            canary: "svc-2".into(),
            commit: "abc".into(),
            commit_time: None,
            image: "img@sha256:1".into(),
            owner: "alice@laptop".into(),
            started: Utc::now(),
            updated: Utc::now(),
            state: State {
                phase: Phase::Canary,
                step: Some(1),
                percent: 25,
                ..State::start()
            },
            decision: None,
        }
    }

    #[test]
    fn phases_know_whether_traffic_moved() {
        assert!(!Phase::Verifying.traffic_moved());
        assert!(!Phase::Validating.traffic_moved());
        assert!(Phase::Canary.traffic_moved());
        assert!(!Phase::Canary.is_terminal());
        assert!(Phase::RolledBack.is_terminal());
    }

    #[test]
    fn the_annotation_round_trips_with_the_machine_state() {
        let mut recorded = journal();
        recorded.state.errors.insert("request errors".into(), 2);
        recorded.state.elapsed_ms = 45_000;
        let text = recorded.encode();
        assert!(text.contains("\"phase\":\"canary\""), "{text}");
        let snapshot_text: Journal = serde_json::from_str(&text).unwrap();
        assert_eq!(snapshot_text, recorded);
    }

    #[test]
    fn the_local_copy_round_trips() {
        let directory = tempfile::tempdir().unwrap();
        let store = LocalJournal::in_directory(directory.path().to_path_buf());
        let id = ServiceId {
            project: "p".into(),
            region: "r".into(),
            name: "svc".into(),
        };
        assert!(store.load(&id).is_none());
        let recorded = journal();
        store.record(&id, &recorded);
        assert_eq!(store.load(&id), Some(recorded));
    }
}
