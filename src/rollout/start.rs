//! The start of a deploy: read the service, recover an interrupted rollout, take the lock, and
//! carry out the machine's first decision — a first deploy when no revision serves (the
//! service created, or its template replaced, at 100%; nothing to compare with or roll back
//! to), otherwise the new revision created at 0% beside the serving one — before the driver's
//! loop ([`Driver::drive`]) takes over. The lock's lifetime and the longest a rollout can take
//! are here too.

use std::time::Duration;

use chrono::Utc;

use super::{
    driver::{split, tag_url, Driver},
    events::{Event, Outcome, RolloutReport},
    identity,
    journal::Journal,
    lock::{self, Lock, LockError},
    machine::{self, Action, CreationFailure, FirstDeploy, Input, Phase, Policy, State},
    naming,
    ports::{DeployError, DeployRequest, Interrupt},
};
use crate::{
    config::RolloutConfig,
    platform::{
        read_service, write_guarded, PlatformError, RevisionSettings, RevisionSpec, ServiceId,
        ServiceSnapshot, ServiceUpdate, TrafficTarget,
    },
    release::{self, Actor, History, HISTORY_ANNOTATION},
};

/// How often a rollout waiting for the lock looks again (within the request's `lock_wait`).
const LOCK_POLL: Duration = Duration::from_secs(2);

impl Driver<'_> {
    /// Deploys `request` as a guarded rollout. `interrupt` completes on Ctrl-C.
    pub async fn deploy(
        &self,
        request: &DeployRequest,
        mut interrupt: Interrupt,
    ) -> Result<RolloutReport, DeployError> {
        let id = &request.id;
        let rollout_id = naming::rollout_id(&request.commit);
        let mut notes = Vec::new();
        let Some(existing) = read_service(self.platform, id, self.retry).await? else {
            // No service, so nothing serves: the machine's answer is a first deploy.
            let policy = self.policy(request);
            let (state, _deploy_first) =
                machine::advance(&policy, &State::start(), Input::Found { serving: false });
            return self
                .deploy_first(request, rollout_id, None, &policy, state)
                .await;
        };
        if let Some(journal) =
            Journal::of(&existing).filter(|journal| !journal.phase().is_terminal())
        {
            // An unfinished journal under a live lock is a rollout that is running, not one
            // that was interrupted: recovering it would roll back someone else's rollout. Only
            // an expired lock, or one whose process is provably gone, lets this run recover;
            // otherwise the lock below says who holds it.
            let running = Lock::of(&existing)
                .is_some_and(|held| !held.is_expired(Utc::now()) && !held.holder_gone());
            if !running {
                if let Some(report) = self
                    .recover(request, &existing, journal, &mut notes, &mut interrupt)
                    .await?
                {
                    return Ok(report);
                }
            }
        }
        if let Some(stale) = Lock::of(&existing).filter(|held| held.holder_gone()) {
            self.notice(
                &mut notes,
                format!(
                    "taking over the lock of a deployer that is gone (its process no longer runs): {}",
                    stale.describe()
                ),
            );
        }
        let (_lock, snapshot) = self.take_lock(request, &rollout_id).await?;
        let report = self
            .run(request, &rollout_id, snapshot, &mut notes, &mut interrupt)
            .await;
        self.release(id, &rollout_id, &mut notes).await;
        let mut report = report?;
        notes.append(&mut report.notes);
        report.notes = notes;
        Ok(report)
    }

    /// Takes the service's lock for `rollout_id`, waiting up to the request's `lock_wait`, and
    /// says who holds it now: every rollout (a new one, a resumed one, `promote`/`abort`)
    /// starts here.
    pub(super) async fn take_lock(
        &self,
        request: &DeployRequest,
        rollout_id: &str,
    ) -> Result<(Lock, ServiceSnapshot), LockError> {
        let lock = Lock::new(rollout_id, lock_ttl(request), Utc::now());
        let snapshot = lock::acquire(
            self.platform,
            &request.id,
            &lock,
            request.lock_wait,
            LOCK_POLL,
        )
        .await?;
        self.reporter.event(&Event::LockTaken {
            holder: lock.describe(),
        });
        Ok((lock, snapshot))
    }

    pub(super) async fn release(&self, id: &ServiceId, rollout_id: &str, notes: &mut Vec<String>) {
        if let Err(error) = lock::release(self.platform, id, rollout_id).await {
            self.notice(
                notes,
                format!("could not release the lock: {error} (`deployer unlock` breaks it)"),
            );
        }
    }

    /// [`Action::DeployFirst`] from `state`, to the end: a first deploy of a new service
    /// (`existing` None, created), or of one where no revision serves (`existing`, its template
    /// replaced and its split following "latest", as a created service's does).
    async fn deploy_first(
        &self,
        request: &DeployRequest,
        rollout_id: String,
        existing: Option<&ServiceSnapshot>,
        policy: &Policy,
        state: State,
    ) -> Result<RolloutReport, DeployError> {
        let id = &request.id;
        let name = naming::revision_name(&id.name, &request.commit);
        let spec = self.revision_spec(request, name.clone(), None, RevisionSettings::default());
        let mut notes = Vec::new();
        let what = match existing {
            None => format!("`{}` does not exist yet: creating it", id.name),
            Some(_) => format!(
                "no revision of `{}` serves traffic (every revision failed): deploying",
                id.name
            ),
        };
        self.notice(
            &mut notes,
            format!(
                "{what} with revision `{name}` (no previous revision to compare with or roll back to)"
            ),
        );
        let started = Utc::now();
        let written = match existing {
            None => self.platform.create(id, &spec).await,
            Some(snapshot) => {
                let update = ServiceUpdate {
                    template: Some(spec.clone()),
                    traffic: Some(vec![TrafficTarget {
                        revision: None,
                        percent: 100,
                        tag: None,
                    }]),
                    ..ServiceUpdate::default()
                };
                write_guarded(self.platform, id, &snapshot.etag, &update, self.retry).await
            }
        };
        let deployed = match written {
            Err(error) => FirstDeploy::NotCreated(error.to_string()),
            Ok(snapshot) => {
                let url = format!(
                    "{}{}",
                    snapshot.uri.trim_end_matches('/'),
                    request.health.path
                );
                FirstDeploy::Verified(
                    identity::verify_url(self.probe, &url, request.expected()).await,
                )
            }
        };
        let (state, action) = machine::advance(policy, &state, Input::FirstDeployed(deployed));
        let reason = state.reason.clone().unwrap_or_default();
        let (outcome, recorded) = match state.phase {
            Phase::Promoted => (
                Outcome::Promoted {
                    revision: name.clone(),
                },
                release::Outcome::PromotedUnmonitored,
            ),
            Phase::RollbackFailed => (
                Outcome::RollbackFailed {
                    reason: reason.clone(),
                },
                release::Outcome::RollbackFailed,
            ),
            _ => (
                Outcome::StoppedBeforeTraffic { reason },
                release::Outcome::RollbackFailed,
            ),
        };
        if matches!(action, Action::Complete | Action::Record) {
            let entry = release::Entry {
                at: Utc::now(),
                started,
                kind: release::Kind::Rollout,
                outcome: recorded,
                revision: name.clone(),
                from: Vec::new(),
                commit: Some(request.commit.clone()),
                commit_time: request.commit_time,
                rollout: Some(rollout_id.clone()),
                actor: Actor::current(),
                why: match &outcome {
                    Outcome::RollbackFailed { reason } => Some(reason.clone()),
                    _ => None,
                },
            };
            let pin = (action == Action::Complete).then_some(name.as_str());
            self.finish_first_revision(id, pin, entry, &mut notes).await;
        }
        self.reporter.event(&Event::Finished {
            outcome: outcome.clone(),
        });
        Ok(RolloutReport {
            id: Some(rollout_id),
            service: id.name.clone(),
            canary: Some(name),
            stable: None,
            outcome,
            notes,
        })
    }

    /// A created service follows "latest"; name its first revision in the split (`pin`), as
    /// every later write does, so that a revision created by someone else never gets traffic
    /// by becoming the latest — in the same write as the first entry of the release history.
    /// A failure is noted (the next deploy pins it too).
    async fn finish_first_revision(
        &self,
        id: &ServiceId,
        pin: Option<&str>,
        entry: release::Entry,
        notes: &mut Vec<String>,
    ) {
        let written = async {
            let snapshot = read_service(self.platform, id, self.retry)
                .await?
                .ok_or_else(|| PlatformError::Refused(format!("`{id}` disappeared")))?;
            let history = History::of(&snapshot).unwrap_or_default().with(entry);
            let mut update = match pin {
                Some(name) => ServiceUpdate::traffic(vec![TrafficTarget::to_revision(name, 100)]),
                None => ServiceUpdate::default(),
            };
            update = update.with_annotation(HISTORY_ANNOTATION, Some(history.encode()));
            write_guarded(self.platform, id, &snapshot.etag, &update, self.retry).await
        };
        if let Err(error) = written.await {
            let message = match pin {
                Some(name) => format!("`{name}` serves 100%, but naming it in the split failed ({error}): the split follows \"latest\" until the next deploy pins it"),
                None => format!("the release history could not record the failed first revision: {error}"),
            };
            self.notice(notes, message);
        }
    }

    /// A new rollout on an existing service, from the lock to the end.
    async fn run(
        &self,
        request: &DeployRequest,
        rollout_id: &str,
        snapshot: ServiceSnapshot,
        notes: &mut Vec<String>,
        interrupt: &mut Interrupt,
    ) -> Result<RolloutReport, DeployError> {
        let id = &request.id;
        let report =
            |canary: Option<String>, stable: Option<String>, outcome: Outcome| RolloutReport {
                id: Some(rollout_id.to_string()),
                service: id.name.clone(),
                canary,
                stable,
                outcome,
                notes: Vec::new(),
            };
        // A service whose revisions all failed (a first deploy with a bad image) serves
        // nothing: its split follows "latest" to a revision named `` (none is Ready). Nothing
        // serves, so the machine deploys it as a first deploy: never pin the split to `` (that
        // read revision `` six times and ended "did not start").
        let serving = snapshot
            .primary_revision()
            .filter(|name| !name.trim().is_empty());
        let policy = self.policy(request);
        let (state, action) = machine::advance(
            &policy,
            &State::start(),
            Input::Found {
                serving: serving.is_some(),
            },
        );
        let stable = match (action, serving) {
            (Action::CreateRevision, Some(stable)) => stable,
            _ => {
                return self
                    .deploy_first(
                        request,
                        rollout_id.to_string(),
                        Some(&snapshot),
                        &policy,
                        state,
                    )
                    .await
            }
        };
        if snapshot.traffic_follows_latest() {
            self.notice(notes, format!(
                "traffic followed \"latest\" (now `{stable}`); deployer pins it to `{stable}` explicitly"
            ));
        } else if snapshot.serving().len() > 1 {
            self.notice(notes, format!(
                "traffic was split across {} revisions; deployer moves it to `{stable}` and the canary",
                snapshot.serving().len()
            ));
        } else if snapshot.latest_ready_revision != stable {
            self.notice(
                notes,
                format!(
                    "pinned traffic: 100% on `{stable}` while the latest ready revision is `{}`",
                    snapshot.latest_ready_revision
                ),
            );
        }
        // The new revision's settings start from the stable revision's — the one serving —
        // never from the service's template, which may still describe a rolled-back revision.
        let base = self
            .platform
            .revision(id, &stable)
            .await?
            .map(|revision| revision.settings)
            .unwrap_or_default();
        let canary = naming::revision_name(&id.name, &request.commit);
        let spec = self.revision_spec(request, canary.clone(), Some(stable.clone()), base.clone());
        let changes = spec.settings.differences(&base);
        if !changes.is_empty() {
            self.reporter.event(&Event::SettingsChanged { changes });
        }
        let journal = Journal {
            id: rollout_id.to_string(),
            stable: Some(stable.clone()),
            canary: canary.clone(),
            commit: request.commit.clone(),
            commit_time: request.commit_time,
            image: request.image.clone(),
            owner: lock::current_owner(),
            started: Utc::now(),
            updated: Utc::now(),
            state: State::start(),
            decision: None,
        };
        let mut running = self.running(request, notes, interrupt, journal, &snapshot);

        // Safety: the new revision starts at 0% with a tag, and the rest of the split names the
        // stable revision explicitly. Nobody is served by it until its identity is verified.
        let update = ServiceUpdate {
            template: Some(spec),
            traffic: Some(split(&stable, &canary, 0)),
            ..ServiceUpdate::default()
        };
        let created = match self.write(&mut running, state.clone(), update).await {
            Ok(snapshot) => {
                running.canary_base = tag_url(&snapshot);
                self.reporter.event(&Event::RevisionCreated {
                    revision: canary.clone(),
                });
                Ok(())
            }
            Err(error) => {
                let start_failure = match self.platform.revision(id, &canary).await {
                    Ok(Some(revision)) => revision.failure,
                    _ => None,
                };
                Err(CreationFailure {
                    revision: canary.clone(),
                    error: error.to_string(),
                    start_failure,
                })
            }
        };
        let (state, action) =
            machine::advance(&running.policy, &state, Input::RevisionCreated(created));
        let journal = self.drive(&mut running, state, action).await;
        Ok(report(Some(canary), Some(stable), Outcome::of(&journal)))
    }

    fn revision_spec(
        &self,
        request: &DeployRequest,
        name: String,
        base: Option<String>,
        base_settings: RevisionSettings,
    ) -> RevisionSpec {
        let mut labels = crate::platform::cloud_run::revision_labels(&request.commit);
        if let Some(fingerprint) = &request.dirty {
            labels.insert(
                "deployer-dirty".to_string(),
                crate::platform::cloud_run::label_value(fingerprint),
            );
        }
        RevisionSpec {
            name,
            image: request.image.clone(),
            labels,
            base,
            settings: request.run.apply(&base_settings, &request.env),
        }
    }
}

/// How long a rollout's lock lives: the longest the rollout can take, plus margins.
pub(super) fn lock_ttl(request: &DeployRequest) -> Duration {
    rollout_duration(&request.policy)
        .saturating_add(request.ready_timeout)
        .saturating_add(Duration::from_secs(600))
}

/// The longest a rollout can take: every step held to its limit, plus the monitor (saturating:
/// absurd durations must not overflow).
pub fn rollout_duration(policy: &RolloutConfig) -> Duration {
    policy
        .hold
        .get()
        .saturating_mul(u32::try_from(policy.steps.len()).unwrap_or(u32::MAX))
        .saturating_add(policy.monitor_duration.get())
}
