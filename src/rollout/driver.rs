//! The rollout driver: the only async loop of a deploy. It executes the decisions of
//! [`machine`](super::machine) through the [`Platform`], journals every phase in the same write as
//! the traffic change it describes, and reports progress through [`RolloutReporter`].
//!
//! Order of a deploy, and why:
//! 1. take the lock (one rollout per service);
//! 2. create the new revision with **0% traffic** and a tag, naming every revision of the split
//!    explicitly — a split that follows "latest" would send traffic to an unverified revision;
//! 3. verify identity on the tag URL (service, commit) and the image digest;
//! 4. canary steps, each judged by the analysis as soon as the data allow;
//! 5. promote, then the post-deploy monitor;
//! 6. on any failure after traffic moved: one write putting 100% back on the stable revision.

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    identity::{self, HealthProbe},
    journal::{Journal, LocalJournal, Phase, JOURNAL_ANNOTATION},
    lock::{self, Lock, LockError},
    machine::{self, Judgement, MonitorNext, Next, StepPolicy, StepState},
};
use crate::{
    checks::{RequestCounts, RequestMetrics},
    config::{HealthConfig, RolloutConfig},
    interaction::Prompter,
    platform::{
        read_service, write_guarded, Platform, PlatformError, RetryPolicy, RevisionSpec, ServiceId,
        ServiceSnapshot, ServiceUpdate, TrafficTarget,
    },
};

/// The tag every canary gets: its URL reaches the new revision alone.
pub const CANARY_TAG: &str = "canary";

/// Judges request counts (the statistics live in `crate::analysis`).
pub trait Analyser: Send + Sync {
    /// Judges the canary's counts against the stable revision's (`None` when there is no
    /// baseline, as in the post-deploy monitor).
    fn judge(&self, canary: RequestCounts, stable: Option<RequestCounts>) -> Judgement;
}

/// Progress events, for the CLI to draw.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Something happened (one line).
    Note {
        /// The line.
        message: String,
    },
    /// Traffic was moved.
    Traffic {
        /// The canary's percent.
        canary_percent: u8,
        /// The split written.
        split: Vec<TrafficTarget>,
    },
    /// An analysis result.
    Analysis {
        /// The canary's percent.
        canary_percent: u8,
        /// The canary's counts in the step.
        canary: RequestCounts,
        /// The stable revision's counts in the step.
        stable: Option<RequestCounts>,
        /// What the analysis said.
        judgement: Judgement,
        /// Time left at this step (or in the monitor).
        remaining: Duration,
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

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The platform service.
    pub id: ServiceId,
    /// The service name `/health` must report.
    pub service_name: String,
    /// The image, by digest.
    pub image: String,
    /// The commit the image was built from.
    pub commit: String,
    /// The fingerprint of uncommitted changes the image was built with, if any (recorded on the
    /// revision as `deployer-dirty`, so a build from a dirty tree is never taken for the commit).
    pub dirty: Option<String>,
    /// Environment of the new revision (`None`: keep the template's).
    pub env: Option<BTreeMap<String, String>>,
    /// The rollout policy.
    pub policy: RolloutConfig,
    /// The health endpoint and identity fields.
    pub health: HealthConfig,
    /// How long to wait for another rollout's lock.
    pub lock_wait: Duration,
    /// How long a new revision may take to become Ready and answer `/health`.
    pub ready_timeout: Duration,
}

/// The rollout's final report.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// The rollout's id.
    pub id: String,
    /// The service.
    pub service: String,
    /// The new revision, once created.
    pub canary: Option<String>,
    /// The revision serving before.
    pub stable: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Notes gathered on the way (pinned traffic found, checks not run, ...).
    pub notes: Vec<String>,
}

/// Errors that end a deploy before it could start (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Another rollout holds the lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The platform failed before anything changed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

/// A future that completes when the user interrupts (Ctrl-C); never, in tests.
pub type Interrupt = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Everything the driver talks to.
pub struct Driver<'a> {
    /// The platform.
    pub platform: &'a dyn Platform,
    /// Request counts.
    pub metrics: &'a dyn RequestMetrics,
    /// The statistics.
    pub analyser: &'a dyn Analyser,
    /// Health endpoints.
    pub probe: &'a dyn HealthProbe,
    /// Progress.
    pub reporter: &'a dyn RolloutReporter,
    /// Questions (resume or roll back, on Ctrl-C).
    pub prompter: &'a dyn Prompter,
    /// The local journal copy.
    pub local_journal: LocalJournal,
    /// Retries of platform calls.
    pub retry: RetryPolicy,
}

/// A rollout in progress: the journal and the last etag.
struct Running {
    journal: Journal,
    etag: String,
}

impl Driver<'_> {
    fn note(&self, message: impl Into<String>) {
        self.reporter.event(&Event::Note {
            message: message.into(),
        });
    }

    /// Writes `update` plus the journal, guarded by the last etag; records the journal locally.
    async fn write(
        &self,
        id: &ServiceId,
        running: &mut Running,
        journal: Journal,
        mut update: ServiceUpdate,
    ) -> Result<ServiceSnapshot, PlatformError> {
        update
            .annotations
            .insert(JOURNAL_ANNOTATION.to_string(), Some(journal.encode()));
        let snapshot = write_guarded(self.platform, id, &running.etag, &update, self.retry).await?;
        running.etag = snapshot.etag.clone();
        running.journal = journal;
        self.local_journal.record(id, &running.journal);
        Ok(snapshot)
    }

    /// Emergency-grade rollback inside a rollout: 100% to `stable`, releasing nothing else.
    /// On a conflict (someone else wrote the service) it re-reads and still puts 100% on
    /// `stable`: the intent is absolute, and a rollback must not give up because of a race.
    async fn roll_back(
        &self,
        id: &ServiceId,
        running: &mut Running,
        stable: &str,
        reason: &str,
    ) -> Outcome {
        self.note(format!("rolling back: 100% to `{stable}` — {reason}"));
        let journal = running
            .journal
            .finished(Phase::RolledBack, 0, Some(reason.to_string()));
        let update = ServiceUpdate::traffic(vec![TrafficTarget::to_revision(stable, 100)]);
        for _ in 0..3 {
            match self
                .write(id, running, journal.clone(), update.clone())
                .await
            {
                Ok(_) => {
                    return Outcome::RolledBack {
                        reason: reason.to_string(),
                        revision: stable.to_string(),
                    }
                }
                Err(PlatformError::Conflict(_)) => {
                    match read_service(self.platform, id, self.retry).await {
                        Ok(Some(snapshot)) => running.etag = snapshot.etag,
                        Ok(None) => break,
                        Err(error) => {
                            return self.rollback_failed(id, running, reason, &error.to_string())
                        }
                    }
                }
                Err(error) => return self.rollback_failed(id, running, reason, &error.to_string()),
            }
        }
        self.rollback_failed(
            id,
            running,
            reason,
            "the service kept changing under the rollback",
        )
    }

    fn rollback_failed(
        &self,
        id: &ServiceId,
        running: &mut Running,
        reason: &str,
        error: &str,
    ) -> Outcome {
        let reason = format!("{reason}; the rollback itself failed: {error}");
        running.journal = running.journal.finished(
            Phase::RollbackFailed,
            running.journal.percent,
            Some(reason.clone()),
        );
        self.local_journal.record(id, &running.journal);
        Outcome::RollbackFailed { reason }
    }

    /// Deploys `request` as a guarded rollout. `interrupt` completes on Ctrl-C.
    pub async fn deploy(
        &self,
        request: &DeployRequest,
        mut interrupt: Interrupt,
    ) -> Result<RolloutReport, DeployError> {
        let id = &request.id;
        let rollout_id = rollout_id(&request.commit);
        let mut notes = Vec::new();
        let existing = read_service(self.platform, id, self.retry).await?;
        let Some(existing) = existing else {
            return self.first_deploy(request, rollout_id).await;
        };
        if let Some(journal) = Journal::of(&existing).filter(|journal| !journal.phase.is_terminal())
        {
            // An unfinished journal under a live lock is a rollout that is running, not one
            // that was interrupted: recovering it would roll back someone else's rollout. Only
            // an expired lock, or one whose process is provably gone, lets this run recover;
            // otherwise the lock below says who holds it.
            let running = Lock::of(&existing)
                .is_some_and(|held| !held.is_expired(Utc::now()) && !held.holder_gone());
            if !running {
                match self.recover(id, &existing, &journal).await? {
                    Recovery::RolledBack(note) => notes.push(note),
                    Recovery::Resume(journal) => {
                        return self.resume(request, journal, &mut interrupt).await
                    }
                }
            }
        }
        let ttl =
            rollout_duration(&request.policy) + request.ready_timeout + Duration::from_secs(600);
        let lock = Lock::new(&rollout_id, ttl, Utc::now());
        let snapshot = lock::acquire(
            self.platform,
            id,
            &lock,
            request.lock_wait,
            Duration::from_secs(2),
        )
        .await?;
        self.note(format!("lock taken: {}", lock.describe()));
        let result = self
            .run(request, &rollout_id, snapshot, &mut notes, &mut interrupt)
            .await;
        if let Err(error) = lock::release(self.platform, id, &rollout_id).await {
            notes.push(format!(
                "could not release the lock: {error} (`deployer unlock` breaks it)"
            ));
        }
        let (canary, stable, outcome) = result?;
        Ok(RolloutReport {
            id: rollout_id,
            service: id.name.clone(),
            canary,
            stable,
            outcome,
            notes,
        })
    }

    async fn first_deploy(
        &self,
        request: &DeployRequest,
        rollout_id: String,
    ) -> Result<RolloutReport, DeployError> {
        let id = &request.id;
        let spec = revision_spec(request);
        self.note(format!(
            "`{}` does not exist yet: creating it with revision `{}` (no previous revision to compare with or roll back to)",
            id.name, spec.name
        ));
        let snapshot = match self.platform.create(id, &spec).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                return Ok(RolloutReport {
                    id: rollout_id,
                    service: id.name.clone(),
                    canary: Some(spec.name),
                    stable: None,
                    outcome: Outcome::StoppedBeforeTraffic {
                        reason: format!("the service could not be created: {error}"),
                    },
                    notes: Vec::new(),
                })
            }
        };
        let url = format!(
            "{}{}",
            snapshot.uri.trim_end_matches('/'),
            request.health.path
        );
        let outcome = match self.verify_url(request, &url).await {
            Ok(()) => Outcome::Promoted {
                revision: spec.name.clone(),
            },
            Err(reason) => Outcome::RollbackFailed {
                reason: format!("{reason}; this is the service's first revision, there is nothing to roll back to"),
            },
        };
        Ok(RolloutReport {
            id: rollout_id,
            service: id.name.clone(),
            canary: Some(spec.name),
            stable: None,
            outcome,
            notes: Vec::new(),
        })
    }

    /// Deals with an interrupted rollout found in the journal. Before traffic moved, the split is
    /// put back (the only safe choice). After, the prompter chooses: roll back (the safe default,
    /// taken when nobody can be asked), resume it where it stopped, or leave it for a human.
    async fn recover(
        &self,
        id: &ServiceId,
        snapshot: &ServiceSnapshot,
        journal: &Journal,
    ) -> Result<Recovery, DeployError> {
        let Some(stable) = journal.stable.clone() else {
            return Ok(Recovery::RolledBack(format!(
                "an interrupted rollout `{}` had no stable revision; left as it is",
                journal.id
            )));
        };
        self.note(format!(
            "found an interrupted rollout `{}` of `{}` in phase `{:?}` at {}% (owner {})",
            journal.id, journal.canary, journal.phase, journal.percent, journal.owner
        ));
        if journal.phase.traffic_moved() {
            let options = [
                format!("roll it back (100% to `{stable}`), then deploy"),
                format!(
                    "resume it: continue `{}` from {}% (this run then deploys nothing else)",
                    journal.canary, journal.percent
                ),
                "leave it for a human (stop here)".to_string(),
            ];
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            match self
                .prompter
                .choose("An interrupted rollout was found. What now?", &options, 0)
            {
                1 => return Ok(Recovery::Resume(journal.clone())),
                2 => {
                    return Err(DeployError::Lock(LockError::Held {
                        service: id.name.clone(),
                        holder: format!(
                            "an interrupted rollout `{}` (left for a human)",
                            journal.id
                        ),
                    }))
                }
                _ => {}
            }
        }
        let mut running = Running {
            journal: journal.clone(),
            etag: snapshot.etag.clone(),
        };
        let reason = format!("interrupted rollout `{}` recovered", journal.id);
        match self.roll_back(id, &mut running, &stable, &reason).await {
            Outcome::RolledBack { .. } => {
                // The crashed run's lock is stale by construction: break it.
                lock::release(self.platform, id, &journal.id).await?;
                Ok(Recovery::RolledBack(format!(
                    "interrupted rollout `{}` rolled back: 100% on `{stable}`",
                    journal.id
                )))
            }
            other => Err(DeployError::Platform(PlatformError::Refused(format!(
                "could not recover the interrupted rollout: {other:?}"
            )))),
        }
    }

    /// Continues an interrupted rollout from its journal: same canary, same stable revision,
    /// from the step it was at (a rollout interrupted in its monitor is promoted again and
    /// monitored from the start). Identity was verified before any traffic moved, and the
    /// journal only reaches `canary` after that.
    async fn resume(
        &self,
        request: &DeployRequest,
        journal: Journal,
        interrupt: &mut Interrupt,
    ) -> Result<RolloutReport, DeployError> {
        let id = &request.id;
        let stable = journal.stable.clone().unwrap_or_default();
        let canary = journal.canary.clone();
        // The crashed run's lock is stale (expired, or its process is gone): replace it with
        // ours, under the same rollout id.
        lock::release(self.platform, id, &journal.id).await?;
        let ttl =
            rollout_duration(&request.policy) + request.ready_timeout + Duration::from_secs(600);
        let lock = Lock::new(&journal.id, ttl, Utc::now());
        let snapshot = lock::acquire(
            self.platform,
            id,
            &lock,
            request.lock_wait,
            Duration::from_secs(2),
        )
        .await?;
        self.note(format!(
            "resuming rollout `{}`: `{canary}` at {}% (stable `{stable}`)",
            journal.id, journal.percent
        ));
        let start = match journal.phase {
            Phase::Monitoring => request.policy.steps.len().saturating_sub(1),
            _ => journal.step.unwrap_or(0),
        };
        let mut running = Running {
            journal,
            etag: snapshot.etag,
        };
        let mut notes = vec![format!(
            "resumed the interrupted rollout `{}`; the requested image was not deployed: run `deploy` again for it",
            running.journal.id
        )];
        let outcome = self
            .roll_out(
                request,
                &mut running,
                Pair {
                    canary: &canary,
                    stable: &stable,
                },
                start,
                &mut notes,
                interrupt,
            )
            .await;
        if let Err(error) = lock::release(self.platform, id, &running.journal.id).await {
            notes.push(format!(
                "could not release the lock: {error} (`deployer unlock` breaks it)"
            ));
        }
        Ok(RolloutReport {
            id: running.journal.id.clone(),
            service: id.name.clone(),
            canary: Some(canary),
            stable: Some(stable),
            outcome,
            notes,
        })
    }

    async fn run(
        &self,
        request: &DeployRequest,
        rollout_id: &str,
        snapshot: ServiceSnapshot,
        notes: &mut Vec<String>,
        interrupt: &mut Interrupt,
    ) -> Result<(Option<String>, Option<String>, Outcome), DeployError> {
        let id = &request.id;
        let Some(stable) = snapshot.primary_revision() else {
            return Ok((
                None,
                None,
                Outcome::StoppedBeforeTraffic {
                    reason:
                        "no revision serves traffic; deploy needs a stable revision to compare with"
                            .into(),
                },
            ));
        };
        if snapshot.traffic_follows_latest() {
            notes.push(format!(
                "traffic followed \"latest\" (now `{stable}`); deployer pins it to `{stable}` explicitly"
            ));
        } else if snapshot.serving().len() > 1 {
            notes.push(format!(
                "traffic was split across {} revisions; deployer moves it to `{stable}` and the canary",
                snapshot.serving().len()
            ));
        } else if snapshot.latest_ready_revision != stable {
            notes.push(format!(
                "pinned traffic: 100% on `{stable}` while the latest ready revision is `{}`",
                snapshot.latest_ready_revision
            ));
        }
        let spec = revision_spec(request);
        let canary = spec.name.clone();
        let mut running = Running {
            journal: Journal {
                id: rollout_id.to_string(),
                phase: Phase::Verifying,
                stable: Some(stable.clone()),
                canary: canary.clone(),
                commit: request.commit.clone(),
                image: request.image.clone(),
                step: None,
                percent: 0,
                reason: None,
                owner: lock::current_owner(),
                started: Utc::now(),
                updated: Utc::now(),
            },
            etag: snapshot.etag.clone(),
        };
        let stop = |reason: String| {
            Ok((
                Some(canary.clone()),
                Some(stable.clone()),
                Outcome::StoppedBeforeTraffic { reason },
            ))
        };

        // Safety: the new revision starts at 0% with a tag, and the rest of the split names the
        // stable revision explicitly. Nobody is served by it until its identity is verified.
        self.note(format!(
            "creating revision `{canary}` with 0% traffic and tag `{CANARY_TAG}`"
        ));
        let update = ServiceUpdate {
            template: Some(spec),
            traffic: Some(split(&stable, &canary, 0)),
            ..ServiceUpdate::default()
        };
        let journal = running.journal.clone();
        if let Err(error) = self.write(id, &mut running, journal, update).await {
            let reason = match self.platform.revision(id, &canary).await {
                Ok(Some(revision)) if revision.failure.is_some() => format!(
                    "revision `{canary}` failed to start: {}",
                    revision.failure.unwrap_or_default()
                ),
                _ => format!("creating revision `{canary}` failed: {error}"),
            };
            self.finish_stopped(id, &mut running, &reason).await;
            return stop(reason);
        }

        if let Err(reason) = self.verify(request, &canary, &mut running).await {
            self.clear_canary(id, &mut running, &stable, &reason).await;
            return stop(reason);
        }

        let outcome = self
            .roll_out(
                request,
                &mut running,
                Pair {
                    canary: &canary,
                    stable: &stable,
                },
                0,
                notes,
                interrupt,
            )
            .await;
        Ok((Some(canary), Some(stable), outcome))
    }

    /// The canary steps from `start` (an index into `rollout.steps`), promotion, the monitor and
    /// the final split: the part of a rollout that a resumed run repeats.
    async fn roll_out(
        &self,
        request: &DeployRequest,
        running: &mut Running,
        revisions: Pair<'_>,
        start: usize,
        notes: &mut Vec<String>,
        interrupt: &mut Interrupt,
    ) -> Outcome {
        let Pair { canary, stable } = revisions;
        let id = &request.id;
        let step_policy = StepPolicy {
            steps: request.policy.steps.clone(),
            hold: request.policy.hold.get(),
            inconclusive: request.policy.inconclusive,
            consecutive_error_limit: request.policy.consecutive_error_limit,
        };
        let canary_health = read_service(self.platform, id, self.retry)
            .await
            .ok()
            .flatten()
            .and_then(|snapshot| snapshot.tag_uri(CANARY_TAG).map(str::to_string))
            .map(|url| format!("{}{}", url.trim_end_matches('/'), request.health.path));
        let mut index = start.min(step_policy.steps.len().saturating_sub(1));
        loop {
            let percent = step_policy.steps[index];
            if percent >= 100 {
                break;
            }
            let journal = running.journal.at(Phase::Canary, Some(index), percent);
            if let Err(error) = self
                .move_traffic(id, running, journal, revisions, percent)
                .await
            {
                return self
                    .after_failed_write(id, running, stable, canary, percent, error)
                    .await;
            }
            match self
                .analyse_step(
                    request,
                    &step_policy,
                    index,
                    Pair { canary, stable },
                    canary_health.as_deref(),
                    interrupt,
                )
                .await
            {
                StepEnd::Step(next) => index = next,
                StepEnd::Promote => break,
                StepEnd::Rollback(reason) => {
                    return self.roll_back(id, running, stable, &reason).await;
                }
                StepEnd::Hold(reason) => {
                    let journal =
                        running
                            .journal
                            .finished(Phase::Held, percent, Some(reason.clone()));
                    // The split stays as it is; if this write fails, the journal still says
                    // `canary` and the next run treats the rollout as interrupted.
                    let _ = self
                        .write(id, running, journal, ServiceUpdate::default())
                        .await;
                    return Outcome::Held { reason };
                }
            }
        }

        // Promote: the canary takes 100%; the stable revision stays listed at 0% so that the
        // monitor's rollback is a plain split change.
        let journal = running.journal.at(Phase::Monitoring, None, 100);
        if let Err(error) = self
            .move_traffic(id, running, journal, revisions, 100)
            .await
        {
            return self
                .roll_back(id, running, stable, &format!("promotion failed: {error}"))
                .await;
        }
        if let Some(reason) = self.monitor(request, canary, interrupt).await {
            let outcome = self.roll_back(id, running, stable, &reason).await;
            return outcome;
        }
        let journal = running.journal.finished(Phase::Promoted, 100, None);
        let final_split = vec![TrafficTarget::to_revision(canary, 100).tagged(CANARY_TAG)];
        if let Err(error) = self
            .write(id, running, journal, ServiceUpdate::traffic(final_split))
            .await
        {
            notes.push(format!(
                "promoted, but the final write (dropping `{stable}` from the split) failed: {error}"
            ));
        }
        Outcome::Promoted {
            revision: canary.to_string(),
        }
    }

    /// Writes the split with the canary at `percent` together with `journal`, and reports it.
    async fn move_traffic(
        &self,
        id: &ServiceId,
        running: &mut Running,
        journal: Journal,
        revisions: Pair<'_>,
        percent: u8,
    ) -> Result<(), PlatformError> {
        let traffic = split(revisions.stable, revisions.canary, percent);
        self.write(
            id,
            running,
            journal,
            ServiceUpdate::traffic(traffic.clone()),
        )
        .await?;
        self.reporter.event(&Event::Traffic {
            canary_percent: percent,
            split: traffic,
        });
        Ok(())
    }

    /// A traffic write failed mid-rollout. If another writer already took the canary out of
    /// the split (an emergency rollback, typically), respect that and stop; otherwise put all
    /// traffic back on the stable revision.
    async fn after_failed_write(
        &self,
        id: &ServiceId,
        running: &mut Running,
        stable: &str,
        canary: &str,
        percent: u8,
        error: PlatformError,
    ) -> Outcome {
        if let (PlatformError::Conflict(_), Ok(Some(snapshot))) =
            (&error, read_service(self.platform, id, self.retry).await)
        {
            let canary_share: u8 = snapshot
                .serving()
                .iter()
                .filter(|(name, _)| name == canary)
                .map(|(_, share)| *share)
                .sum();
            if canary_share == 0 {
                let serving = snapshot.primary_revision().unwrap_or_default();
                let reason = format!(
                    "someone else changed the service during the rollout and took the canary out of the split; now `{serving}` serves — deployer stops without writing"
                );
                running.etag = snapshot.etag;
                running.journal =
                    running
                        .journal
                        .finished(Phase::RolledBack, 0, Some(reason.clone()));
                self.local_journal.record(id, &running.journal);
                return Outcome::RolledBack {
                    reason,
                    revision: serving,
                };
            }
        }
        self.roll_back(
            id,
            running,
            stable,
            &format!("moving traffic to {percent}% failed: {error}"),
        )
        .await
    }

    async fn finish_stopped(&self, id: &ServiceId, running: &mut Running, reason: &str) {
        let journal = running
            .journal
            .finished(Phase::Stopped, 0, Some(reason.to_string()));
        if let Ok(Some(snapshot)) = read_service(self.platform, id, self.retry).await {
            running.etag = snapshot.etag;
            let _ = self
                .write(id, running, journal, ServiceUpdate::default())
                .await;
        } else {
            running.journal = journal;
            self.local_journal.record(id, &running.journal);
        }
    }

    /// After a failed verification: the canary still has 0%; drop it from the split.
    async fn clear_canary(
        &self,
        id: &ServiceId,
        running: &mut Running,
        stable: &str,
        reason: &str,
    ) {
        self.note(format!("stopping before any traffic moved: {reason}"));
        let journal = running
            .journal
            .finished(Phase::Stopped, 0, Some(reason.to_string()));
        let update = ServiceUpdate::traffic(vec![TrafficTarget::to_revision(stable, 100)]);
        if self.write(id, running, journal, update).await.is_err() {
            self.finish_stopped(id, running, reason).await;
        }
    }

    async fn verify_url(&self, request: &DeployRequest, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + request.ready_timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match self.probe.get(url, request.health.timeout.get()).await {
                Ok(answer) => match identity::check_identity(
                    &answer,
                    &request.health,
                    &request.service_name,
                    &request.commit,
                ) {
                    Ok(()) => return Ok(()),
                    // A wrong identity is final: retrying will not change the code.
                    Err(reason) if reason.starts_with("wrong code deployed") => return Err(reason),
                    Err(reason) => last = reason,
                },
                Err(error) => last = error,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!(
            "`{url}` did not answer a healthy identity within {}: {last}",
            humantime::format_duration(request.ready_timeout)
        ))
    }

    /// Waits for the canary to be Ready, then checks its image digest and its identity on the
    /// tag URL.
    async fn verify(
        &self,
        request: &DeployRequest,
        canary: &str,
        running: &mut Running,
    ) -> Result<(), String> {
        let id = &request.id;
        let deadline = Instant::now() + request.ready_timeout;
        let revision = loop {
            match self.platform.revision(id, canary).await {
                Ok(Some(revision)) if revision.ready => break revision,
                Ok(Some(revision)) if revision.failure.is_some() && !revision.reconciling => {
                    return Err(format!(
                        "revision `{canary}` failed to start: {}",
                        revision.failure.unwrap_or_default()
                    ))
                }
                Ok(_) | Err(_) if Instant::now() >= deadline => {
                    return Err(format!(
                        "revision `{canary}` was not Ready within {}",
                        humantime::format_duration(request.ready_timeout)
                    ))
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        if !identity::same_image(&revision.image, &request.image) {
            return Err(format!(
                "wrong code deployed: revision `{canary}` runs `{}`, expected `{}`",
                revision.image, request.image
            ));
        }
        let snapshot = read_service(self.platform, id, self.retry)
            .await
            .map_err(|error| error.to_string())?
            .ok_or_else(|| format!("`{}` disappeared", id.name))?;
        running.etag = snapshot.etag.clone();
        let url = snapshot
            .tag_uri(CANARY_TAG)
            .ok_or_else(|| format!("the platform reports no URL for tag `{CANARY_TAG}`"))?;
        let url = format!("{}{}", url.trim_end_matches('/'), request.health.path);
        self.verify_url(request, &url).await?;
        self.note(format!(
            "identity verified: `{url}` reports service `{}` and commit `{}`; image digest matches",
            request.service_name,
            short(&request.commit)
        ));
        Ok(())
    }

    async fn analyse_step(
        &self,
        request: &DeployRequest,
        policy: &StepPolicy,
        index: usize,
        revisions: Pair<'_>,
        canary_health: Option<&str>,
        interrupt: &mut Interrupt,
    ) -> StepEnd {
        let Pair { canary, stable } = revisions;
        let started = Instant::now();
        let interval = request.policy.interval.get();
        let mut consecutive_errors = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = &mut *interrupt => return self.interrupted(),
            }
            let elapsed = started.elapsed();
            let window = elapsed + Duration::from_secs(1);
            let (judgement, canary_counts, stable_counts) =
                match self.counts(&request.id, canary, stable, window).await {
                    Ok((canary_counts, stable_counts)) => (
                        self.analyser.judge(canary_counts, Some(stable_counts)),
                        canary_counts,
                        Some(stable_counts),
                    ),
                    Err(reason) => (
                        Judgement::MeasurementError { reason },
                        RequestCounts::default(),
                        None,
                    ),
                };
            // A canary whose own `/health` fails is failing, whatever its request counts say.
            let judgement = match (&judgement, canary_health) {
                (Judgement::Fail { .. }, _) | (_, None) => judgement,
                (_, Some(url)) => match self.health_ok(url, request).await {
                    Ok(()) => judgement,
                    Err(reason) => Judgement::Fail {
                        reason: format!("the canary's health check failed: {reason}"),
                    },
                },
            };
            self.reporter.event(&Event::Analysis {
                canary_percent: policy.steps[index],
                canary: canary_counts,
                stable: stable_counts,
                judgement: judgement.clone(),
                remaining: policy.hold.saturating_sub(elapsed),
            });
            let state = StepState {
                index,
                elapsed,
                consecutive_errors,
            };
            match machine::after_analysis(policy, state, &judgement) {
                Next::Analyse {
                    consecutive_errors: errors,
                } => consecutive_errors = errors,
                Next::Step(next) => return StepEnd::Step(next),
                Next::Promote => return StepEnd::Promote,
                Next::Rollback(reason) => return StepEnd::Rollback(reason),
                Next::Hold(reason) => return StepEnd::Hold(reason),
            }
        }
    }

    fn interrupted(&self) -> StepEnd {
        // Ctrl-C: interactive users choose; unattended runs take the safe default (roll back).
        let choice = self.prompter.choose(
            "Interrupted. What now?",
            &[
                "roll back (100% to the stable revision)",
                "leave the split as it is, for a human",
            ],
            0,
        );
        if choice == 0 {
            StepEnd::Rollback("interrupted by the user".into())
        } else {
            StepEnd::Hold("interrupted by the user; split left as it was".into())
        }
    }

    async fn counts(
        &self,
        id: &ServiceId,
        canary: &str,
        stable: &str,
        window: Duration,
    ) -> Result<(RequestCounts, RequestCounts), String> {
        let canary_counts = self
            .metrics
            .request_counts(id, canary, window)
            .await
            .map_err(|error| error.to_string())?;
        let stable_counts = self
            .metrics
            .request_counts(id, stable, window)
            .await
            .map_err(|error| error.to_string())?;
        Ok((canary_counts, stable_counts))
    }

    /// The post-deploy monitor. Returns the reason to roll back, if any.
    async fn monitor(
        &self,
        request: &DeployRequest,
        canary: &str,
        interrupt: &mut Interrupt,
    ) -> Option<String> {
        let duration = request.policy.monitor_duration.get();
        if duration.is_zero() {
            self.note("post-deploy monitor disabled (monitor_duration = 0s)");
            return None;
        }
        self.note(format!(
            "post-deploy monitor: {} checks every {}",
            humantime::format_duration(duration),
            humantime::format_duration(request.policy.monitor_interval.get())
        ));
        let started = Instant::now();
        let interval = request.policy.monitor_interval.get();
        let mut consecutive_errors = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = &mut *interrupt => {
                    return match self.interrupted() {
                        StepEnd::Rollback(reason) => Some(reason),
                        _ => None,
                    };
                }
            }
            let elapsed = started.elapsed();
            let judgement = match self
                .metrics
                .request_counts(&request.id, canary, interval)
                .await
            {
                Ok(counts) => {
                    let judgement = self.analyser.judge(counts, None);
                    self.reporter.event(&Event::Analysis {
                        canary_percent: 100,
                        canary: counts,
                        stable: None,
                        judgement: judgement.clone(),
                        remaining: duration.saturating_sub(elapsed),
                    });
                    judgement
                }
                Err(error) => Judgement::MeasurementError {
                    reason: error.to_string(),
                },
            };
            let judgement = match (&judgement, self.service_health(request).await) {
                (Judgement::Fail { .. }, _) | (_, Ok(())) => judgement,
                (_, Err(reason)) => Judgement::Fail { reason },
            };
            match machine::after_monitor_check(
                &judgement,
                elapsed,
                duration,
                consecutive_errors,
                request.policy.consecutive_error_limit,
            ) {
                MonitorNext::Continue {
                    consecutive_errors: errors,
                } => consecutive_errors = errors,
                MonitorNext::Done => {
                    self.note("post-deploy monitor passed");
                    return None;
                }
                MonitorNext::Rollback(reason) => return Some(reason),
            }
        }
    }

    /// `/health` of the service's main URL answers 200 (the seed's monitor check).
    async fn service_health(&self, request: &DeployRequest) -> Result<(), String> {
        let snapshot = read_service(self.platform, &request.id, self.retry)
            .await
            .map_err(|error| error.to_string())?
            .ok_or_else(|| "the service disappeared".to_string())?;
        let url = format!(
            "{}{}",
            snapshot.uri.trim_end_matches('/'),
            request.health.path
        );
        self.health_ok(&url, request).await
    }

    /// `GET url` answers 200; two tries, so that one lost request does not roll back a healthy
    /// revision.
    async fn health_ok(&self, url: &str, request: &DeployRequest) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..2 {
            match self.probe.get(url, request.health.timeout.get()).await {
                Ok(answer) if answer.status == 200 => return Ok(()),
                Ok(answer) => last = format!("`{url}` answered HTTP {}", answer.status),
                Err(error) => last = format!("`{url}` did not answer: {error}"),
            }
        }
        Err(last)
    }
}

/// The two revisions of a rollout.
#[derive(Debug, Clone, Copy)]
struct Pair<'a> {
    canary: &'a str,
    stable: &'a str,
}

/// What became of an interrupted rollout.
enum Recovery {
    /// Rolled back (or nothing to do); the note says what happened.
    RolledBack(String),
    /// To be resumed from its journal.
    Resume(Journal),
}

/// How a canary step ended.
enum StepEnd {
    Step(usize),
    Promote,
    Rollback(String),
    Hold(String),
}

/// The split with the canary at `percent` and the stable revision at the rest.
pub fn split(stable: &str, canary: &str, percent: u8) -> Vec<TrafficTarget> {
    vec![
        TrafficTarget::to_revision(stable, 100 - percent.min(100)),
        TrafficTarget::to_revision(canary, percent.min(100)).tagged(CANARY_TAG),
    ]
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

/// `length` random lowercase letters and digits (valid in revision names and lock ids).
fn random_suffix(length: usize) -> String {
    (0..length)
        .map(|_| {
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36usize)])
        })
        .collect()
}

/// A rollout's id, which is also its lock's id: unique per run, since two deploys of the same
/// commit in the same second (a pipeline triggered twice) must not both hold "their" lock.
fn rollout_id(commit: &str) -> String {
    let suffix = random_suffix(4);
    format!(
        "{}-{}-{suffix}",
        Utc::now().format("%Y%m%d%H%M%S"),
        &short(commit).to_ascii_lowercase()
    )
}

fn revision_spec(request: &DeployRequest) -> RevisionSpec {
    let suffix = random_suffix(3);
    let commit: String = short(&request.commit)
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let name = format!("{}-{commit}-{suffix}", request.id.name);
    RevisionSpec {
        name,
        image: request.image.clone(),
        labels: {
            let mut labels = crate::platform::cloud_run::revision_labels(&request.commit);
            if let Some(fingerprint) = &request.dirty {
                labels.insert(
                    "deployer-dirty".to_string(),
                    crate::platform::cloud_run::label_value(fingerprint),
                );
            }
            labels
        },
        env: request.env.clone(),
    }
}

/// The longest a rollout can take: every step held to its limit, plus the monitor.
pub fn rollout_duration(policy: &RolloutConfig) -> Duration {
    policy.hold.get() * u32::try_from(policy.steps.len()).unwrap_or(u32::MAX)
        + policy.monitor_duration.get()
}
