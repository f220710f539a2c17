//! The rollout driver: the only async loop of a deploy. It carries out each
//! [`Action`] of the state machine ([`machine::advance`]) through the traits — [`Platform`],
//! [`RequestMetrics`], [`Analyser`], [`HealthProbe`], [`GateChecks`], [`Prompter`],
//! [`RolloutReporter`] — feeds back what happened, and journals every state in the same write as
//! the traffic change it describes. It decides nothing itself. What it reads (identity, each
//! look) is in `observe`, the recovery of a crashed rollout in [`recovery`](super::recovery), and
//! the whole deploy around it (preflight → image → rollout) in [`pipeline`](super::pipeline).
//!
//! Order of a deploy, and why:
//! 1. take the lock (one rollout per service);
//! 2. create the new revision with **0% traffic** and a tag, naming every revision of the split
//!    explicitly — a split that follows "latest" would send traffic to an unverified revision;
//!    its settings are the stable revision's, then the service file's `[run]`, then `--env`;
//! 3. verify identity on the tag URL (service, commit) and the image digest;
//! 4. validation checks, then canary steps, each judged as soon as the data allow;
//! 5. promote, then the post-deploy monitor;
//! 6. on any failure after traffic moved: one write putting 100% back on the stable revision.

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;

use super::{
    events::{Event, Outcome, RolloutReport, RolloutReporter},
    identity::{self, HealthProbe},
    journal::{Journal, LocalJournal, JOURNAL_ANNOTATION},
    lock::{self, Lock, LockError},
    machine::{
        self, Action, BeforeRollBack, CreationFailure, FirstDeploy, Input, MetricResult,
        Observation, Phase, Policy, State, Written,
    },
    naming, rollback,
};
use crate::{
    checks::{RequestCounts, RequestMetrics},
    config::{Gate, HealthConfig, RolloutConfig, RunConfig},
    interaction::Prompter,
    platform::{
        read_service, write_guarded, Platform, PlatformError, RetryPolicy, RevisionSettings,
        RevisionSpec, ServiceId, ServiceSnapshot, ServiceUpdate, TrafficTarget,
    },
    release::{self, Actor, History, HISTORY_ANNOTATION},
};

/// The tag every canary gets: its URL reaches the new revision alone.
pub const CANARY_TAG: &str = "canary";

/// The name of the request-error metric in observations.
pub const REQUEST_ERRORS: &str = "request errors";

/// Judges request counts (the statistics live in `crate::analysis`).
pub trait Analyser: Send + Sync {
    /// Judges the canary's counts against the stable revision's (`None` when there is no
    /// baseline, as in the post-deploy monitor): the request-error metric of one look.
    fn judge(&self, canary: RequestCounts, stable: Option<RequestCounts>) -> MetricResult;
}

/// What a gate's service checks are run for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckScope {
    /// The revision under test.
    pub revision: String,
    /// The stable revision, if any.
    pub stable_revision: Option<String>,
    /// The commit being deployed.
    pub commit: String,
    /// The canary's tag URL, if known (HTTP checks with a path go there).
    pub revision_url: Option<String>,
    /// The service URL (reaching the stable revision during a canary step).
    pub stable_url: Option<String>,
}

/// The service checks gated on a deploy phase (`validation`, `canary`, `monitor`).
#[async_trait]
pub trait GateChecks: Send + Sync {
    /// True when some check gates `gate`.
    fn gates(&self, gate: Gate) -> bool;
    /// Runs the checks of `gate` once, concurrently, each within its timeout: one result each.
    async fn run(&self, gate: Gate, scope: &CheckScope) -> Vec<MetricResult>;
}

/// A service without gated checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoChecks;

#[async_trait]
impl GateChecks for NoChecks {
    fn gates(&self, _: Gate) -> bool {
        false
    }

    async fn run(&self, _: Gate, _: &CheckScope) -> Vec<MetricResult> {
        Vec::new()
    }
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
    /// When that commit was made, when known (recorded for the lead time).
    pub commit_time: Option<chrono::DateTime<Utc>>,
    /// The fingerprint of uncommitted changes the image was built with, if any (recorded on the
    /// revision as `deployer-dirty`, so a build from a dirty tree is never taken for the commit).
    pub dirty: Option<String>,
    /// Settings of new revisions from the service file (`[run]`).
    pub run: RunConfig,
    /// `--env`: applied last.
    pub env: BTreeMap<String, String>,
    /// The rollout policy.
    pub policy: RolloutConfig,
    /// The health endpoint and identity fields.
    pub health: HealthConfig,
    /// How long to wait for another rollout's lock.
    pub lock_wait: Duration,
    /// How long a new revision may take to become Ready and answer `/health`.
    pub ready_timeout: Duration,
    /// Validation warnings are accepted without asking (`--accept-warnings`, for unattended
    /// runs: the preflight rule).
    pub accept_warnings: bool,
}

impl DeployRequest {
    /// What the new revision must be.
    pub fn expected(&self) -> identity::Expected<'_> {
        identity::Expected {
            service: &self.service_name,
            commit: &self.commit,
            image: &self.image,
            health: &self.health,
            ready_timeout: self.ready_timeout,
        }
    }
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
    /// Service checks gated on deploy phases.
    pub checks: &'a dyn GateChecks,
    /// Progress.
    pub reporter: &'a dyn RolloutReporter,
    /// Questions (resume or roll back, on Ctrl-C, validation warnings).
    pub prompter: &'a dyn Prompter,
    /// The local journal copy.
    pub local_journal: LocalJournal,
    /// Retries of platform calls.
    pub retry: RetryPolicy,
}

/// A rollout in progress: its journal (revisions and machine state) and the last etag.
pub(super) struct Running {
    pub(super) journal: Journal,
    pub(super) etag: String,
    /// When the current step or monitor started (its traffic write landed).
    pub(super) step_started: Instant,
    /// The canary's tag URL (without a path), once known.
    pub(super) canary_base: Option<String>,
    /// The service's main URL, once known.
    pub(super) service_url: Option<String>,
    /// The release history as of `etag`: the write that ends the rollout appends to it.
    pub(super) history: History,
}

impl Running {
    /// A rollout in progress on the service as `snapshot` shows it. An unreadable history is
    /// started afresh (a warning is logged): its verdicts could not be used anyway.
    pub(super) fn on(journal: Journal, snapshot: &ServiceSnapshot) -> Self {
        let history = History::of(snapshot).unwrap_or_else(|error| {
            tracing::info!(target: "deployer::progress", "warning: the release history is started afresh ({error})");
            History::default()
        });
        Self {
            journal,
            etag: snapshot.etag.clone(),
            step_started: Instant::now(),
            canary_base: None,
            service_url: Some(snapshot.uri.clone()),
            history,
        }
    }

    pub(super) fn stable(&self) -> String {
        self.journal.stable.clone().unwrap_or_default()
    }
}

impl Driver<'_> {
    pub(super) fn notice(&self, notes: &mut Vec<String>, message: String) {
        self.reporter.event(&Event::Notice {
            message: message.clone(),
        });
        notes.push(message);
    }

    pub(super) fn warn(&self, notes: &mut Vec<String>, message: String) {
        self.reporter.event(&Event::Warning {
            message: message.clone(),
        });
        notes.push(message);
    }

    pub(super) fn policy(&self, request: &DeployRequest) -> Policy {
        Policy::new(&request.policy, self.checks.gates(Gate::Validation))
    }

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
            let policy = self.policy(request);
            let (state, _) =
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
        let lock = Lock::new(&rollout_id, lock_ttl(request), Utc::now());
        let snapshot = lock::acquire(
            self.platform,
            id,
            &lock,
            request.lock_wait,
            Duration::from_secs(2),
        )
        .await?;
        self.reporter.event(&Event::LockTaken {
            holder: lock.describe(),
        });
        let report = self
            .run(request, &rollout_id, snapshot, &mut notes, &mut interrupt)
            .await;
        self.release(id, &rollout_id, &mut notes).await;
        let mut report = report?;
        notes.append(&mut report.notes);
        report.notes = notes;
        Ok(report)
    }

    pub(super) async fn release(&self, id: &ServiceId, rollout_id: &str, notes: &mut Vec<String>) {
        if let Err(error) = lock::release(self.platform, id, rollout_id).await {
            self.notice(
                notes,
                format!("could not release the lock: {error} (`deployer unlock` breaks it)"),
            );
        }
    }

    /// A first deploy: of a new service (`existing` None, created), or of one where no revision
    /// serves (`existing`, its template replaced and its split following "latest", as a created
    /// service's does).
    /// [`Action::DeployFirst`] from `state`, to the end.
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
        let mut running = Running::on(
            Journal {
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
            },
            &snapshot,
        );

        // Safety: the new revision starts at 0% with a tag, and the rest of the split names the
        // stable revision explicitly. Nobody is served by it until its identity is verified.
        let update = ServiceUpdate {
            template: Some(spec),
            traffic: Some(split(&stable, &canary, 0)),
            ..ServiceUpdate::default()
        };
        let created = match self.write(id, &mut running, state.clone(), update).await {
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
        let (state, action) = machine::advance(&policy, &state, Input::RevisionCreated(created));
        let journal = self
            .drive(
                request,
                &policy,
                &mut running,
                state,
                action,
                notes,
                interrupt,
            )
            .await;
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

    /// The loop: carry out `action`, feed back what happened, until the machine says done.
    /// Returns the final journal (also recorded locally).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn drive(
        &self,
        request: &DeployRequest,
        policy: &Policy,
        running: &mut Running,
        mut state: State,
        mut action: Action,
        notes: &mut Vec<String>,
        interrupt: &mut Interrupt,
    ) -> Journal {
        loop {
            let input = match action {
                // Start-up's decisions, carried out before this loop (`deploy`, `run`): no
                // later input is answered with them.
                Action::Done | Action::DeployFirst | Action::CreateRevision => break,
                Action::ChooseRecovery => Input::Recovered(self.recovery_choice(&running.journal)),
                Action::VerifyIdentity => Input::Identity(self.verify(request, running).await),
                Action::Validate => {
                    let results = self
                        .checks
                        .run(Gate::Validation, &self.scope(request, running))
                        .await;
                    self.reporter.event(&Event::Validation {
                        results: results.clone(),
                    });
                    Input::Validated(Observation::of(results))
                }
                Action::Confirm { warnings } => Input::Confirmed(
                    request.accept_warnings
                        || self.prompter.confirm(
                            &format!("Validation warnings: {warnings}. Continue the rollout?"),
                            false,
                        ),
                ),
                Action::MoveTraffic { percent } => {
                    match self
                        .move_traffic(request, running, state.clone(), percent)
                        .await
                    {
                        Ok(()) => Input::TrafficMoved,
                        Err(error) => Input::TrafficFailed(error.to_string()),
                    }
                }
                Action::Observe { wait } => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {
                            let elapsed = running.step_started.elapsed();
                            let observation = self.observe(request, policy, running, &state, elapsed).await;
                            Input::Observed { observation, elapsed }
                        }
                        () = &mut *interrupt => Input::Interrupted(self.interrupted()),
                    }
                }
                Action::RollBack | Action::ClearCanary => Input::Wrote(
                    self.roll_back(request, policy, running, state.clone())
                        .await,
                ),
                Action::Record => Input::Wrote(self.record(request, running, state.clone()).await),
                Action::Complete => {
                    // The promoted revision alone in the split (still tagged, so its URL stays).
                    let final_split =
                        vec![TrafficTarget::to_revision(&running.journal.canary, 100)
                            .tagged(CANARY_TAG)];
                    match self
                        .write(
                            &request.id,
                            running,
                            state.clone(),
                            ServiceUpdate::traffic(final_split),
                        )
                        .await
                    {
                        Ok(_) => Input::Wrote(Written::Done),
                        Err(error) => {
                            self.notice(notes, format!(
                                "promoted, but the final write (dropping `{}` from the split) failed: {error}",
                                running.stable()
                            ));
                            Input::Wrote(Written::Failed(error.to_string()))
                        }
                    }
                }
            };
            (state, action) = machine::advance(policy, &state, input);
        }
        running.journal = running.journal.with_state(state);
        self.local_journal.record(&request.id, &running.journal);
        if running.journal.phase().is_terminal() {
            self.reporter.event(&Event::Finished {
                outcome: Outcome::of(&running.journal),
            });
        }
        running.journal.clone()
    }

    /// Writes `update` plus the journal of `state`, guarded by the last etag; records the
    /// journal locally. The write that ends the rollout also appends its outcome to the
    /// release history: the record and the change it records land together or not at all.
    async fn write(
        &self,
        id: &ServiceId,
        running: &mut Running,
        state: State,
        mut update: ServiceUpdate,
    ) -> Result<ServiceSnapshot, PlatformError> {
        let journal = running.journal.with_state(state);
        update
            .annotations
            .insert(JOURNAL_ANNOTATION.to_string(), Some(journal.encode()));
        if let Some(entry) = journal.release_entry(release::Kind::Rollout, Actor::current()) {
            update.annotations.insert(
                HISTORY_ANNOTATION.to_string(),
                Some(running.history.with(entry).encode()),
            );
        }
        let snapshot = write_guarded(self.platform, id, &running.etag, &update, self.retry).await?;
        running.etag = snapshot.etag.clone();
        running.history = History::of(&snapshot).unwrap_or_default();
        running.journal = journal;
        self.local_journal.record(id, &running.journal);
        Ok(snapshot)
    }

    async fn move_traffic(
        &self,
        request: &DeployRequest,
        running: &mut Running,
        state: State,
        percent: u8,
    ) -> Result<(), PlatformError> {
        let traffic = split(&running.stable(), &running.journal.canary.clone(), percent);
        let snapshot = self
            .write(
                &request.id,
                running,
                state,
                ServiceUpdate::traffic(traffic.clone()),
            )
            .await?;
        if running.canary_base.is_none() {
            running.canary_base = tag_url(&snapshot);
        }
        running.step_started = Instant::now();
        self.reporter.event(&Event::TrafficMoved {
            canary_percent: percent,
            split: traffic,
        });
        Ok(())
    }

    /// 100% back on the stable revision, with the journal of `state` in the same write (the
    /// emergency-rollback write of [`rollback::execute`], which wins races by re-reading). What
    /// it reads first goes to the machine, which may answer that nothing is to be written
    /// (someone else already took the canary out of the split).
    async fn roll_back(
        &self,
        request: &DeployRequest,
        policy: &Policy,
        running: &mut Running,
        state: State,
    ) -> Written {
        let id = &request.id;
        let stable = running.stable();
        let reason = state.reason.clone().unwrap_or_default();
        self.reporter.event(&Event::RollingBack {
            to: stable.clone(),
            reason: reason.clone(),
        });
        let snapshot = match read_service(self.platform, id, self.retry).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Written::Failed(format!("`{}` disappeared", id.name)),
            Err(error) => return Written::Failed(error.to_string()),
        };
        let canary = &running.journal.canary;
        // Someone else wrote the service since our last write (its etag moved on).
        let changed_by_others = snapshot.etag != running.etag;
        let canary_share: u16 = snapshot
            .serving()
            .iter()
            .filter(|(name, _)| name == canary)
            .map(|(_, share)| u16::from(*share))
            .sum();
        let read = BeforeRollBack {
            canary_percent: canary_share,
            changed_by_others,
            serving: snapshot.primary_revision().unwrap_or_default(),
        };
        let (next, action) = machine::advance(policy, &state, Input::ReadBeforeRollBack(read));
        if action == Action::Done {
            return Written::Superseded(next.reason.unwrap_or_default());
        }
        let plan = rollback::RollbackPlan::to_stable(snapshot.serving(), stable, reason);
        let journal = running.journal.with_state(state);
        match rollback::execute(self.platform, snapshot, &plan, Some(&journal)).await {
            Ok(after) => {
                running.history = History::of(&after).unwrap_or_default();
                running.etag = after.etag;
                running.journal = journal;
                Written::Done
            }
            Err(error) => Written::Failed(error.to_string()),
        }
    }

    /// Writes the journal of `state`. A rollout held keeps its split as it is; one stopped
    /// before any traffic moved (its new revision could not be created or failed to start)
    /// pins 100% to the stable revision in the same write, which takes the canary out of the
    /// split: a split naming a revision that failed is refused by Cloud Run, so every later
    /// write of the service (the lock's release first) would be refused too.
    async fn record(
        &self,
        request: &DeployRequest,
        running: &mut Running,
        state: State,
    ) -> Written {
        let update = match (state.phase, running.journal.stable.as_deref()) {
            (Phase::Stopped, Some(stable)) => {
                ServiceUpdate::traffic(vec![TrafficTarget::to_revision(stable, 100)])
            }
            _ => ServiceUpdate::default(),
        };
        for _ in 0..2 {
            match self
                .write(&request.id, running, state.clone(), update.clone())
                .await
            {
                Ok(_) => return Written::Done,
                Err(PlatformError::Conflict(_)) => {
                    match read_service(self.platform, &request.id, self.retry).await {
                        Ok(Some(snapshot)) => running.etag = snapshot.etag,
                        _ => break,
                    }
                }
                Err(error) => return Written::Failed(error.to_string()),
            }
        }
        // If this write failed, the journal still says where the rollout was and the next run
        // treats it as interrupted.
        Written::Failed("the journal could not be written".into())
    }
}

/// The URL of the canary's tag (without a path), if the platform reports one.
pub(super) fn tag_url(snapshot: &ServiceSnapshot) -> Option<String> {
    snapshot
        .tag_uri(CANARY_TAG)
        .map(|url| url.trim_end_matches('/').to_string())
}

/// The split with the canary at `percent` and the stable revision at the rest.
pub fn split(stable: &str, canary: &str, percent: u8) -> Vec<TrafficTarget> {
    vec![
        TrafficTarget::to_revision(stable, 100 - percent.min(100)),
        TrafficTarget::to_revision(canary, percent.min(100)).tagged(CANARY_TAG),
    ]
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
