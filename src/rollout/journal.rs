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

use crate::platform::{ServiceId, ServiceSnapshot};

/// The annotation holding the journal.
pub const JOURNAL_ANNOTATION: &str = "deployer.dev/rollout";

/// The phases of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The new revision is being created with 0% traffic.
    Creating,
    /// The new revision exists with 0%; its identity is being verified.
    Verifying,
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
    /// Stopped with the split left as it was, for a human (inconclusive with `hold`).
    Held,
    /// A rollback was needed and failed: a human must act.
    RollbackFailed,
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
        )
    }

    /// True once the new revision may have received traffic.
    pub fn traffic_moved(self) -> bool {
        !matches!(self, Phase::Creating | Phase::Verifying | Phase::Stopped)
    }
}

/// One rollout's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The rollout's id (also the lock's id).
    pub id: String,
    /// Where the rollout is.
    pub phase: Phase,
    /// The revision serving before the rollout (the rollback target), if any.
    pub stable: Option<String>,
    /// The new revision.
    pub canary: String,
    /// The commit being deployed.
    pub commit: String,
    /// The image being deployed, by digest.
    pub image: String,
    /// Index of the canary step (in `phase = canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The canary's traffic percent.
    pub percent: u8,
    /// Why the rollout ended as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who runs it (`user@host`).
    pub owner: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When this record was written.
    pub updated: DateTime<Utc>,
}

impl Journal {
    /// The journal recorded on a service, if any and readable.
    pub fn of(snapshot: &ServiceSnapshot) -> Option<Journal> {
        snapshot
            .annotations
            .get(JOURNAL_ANNOTATION)
            .and_then(|text| serde_json::from_str(text).ok())
    }

    /// This record in a later phase.
    pub fn at(&self, phase: Phase, step: Option<usize>, percent: u8) -> Journal {
        Journal {
            phase,
            step,
            percent,
            updated: Utc::now(),
            ..self.clone()
        }
    }

    /// This record, finished with a reason.
    pub fn finished(&self, phase: Phase, percent: u8, reason: Option<String>) -> Journal {
        Journal {
            phase,
            percent,
            reason,
            updated: Utc::now(),
            ..self.clone()
        }
    }

    /// The annotation value.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
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
            tracing::warn!(path = %path.display(), %error, "cannot write the local rollout journal");
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
            phase: Phase::Canary,
            stable: Some("svc-1".into()),
            canary: "svc-2".into(),
            commit: "abc".into(),
            image: "img@sha256:1".into(),
            step: Some(1),
            percent: 25,
            reason: None,
            owner: "alice@laptop".into(),
            started: Utc::now(),
            updated: Utc::now(),
        }
    }

    #[test]
    fn phases_know_whether_traffic_moved() {
        assert!(!Phase::Verifying.traffic_moved());
        assert!(Phase::Canary.traffic_moved());
        assert!(!Phase::Canary.is_terminal());
        assert!(Phase::RolledBack.is_terminal());
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
