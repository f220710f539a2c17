//! The rollout driver: the only async loop of a deploy. It carries out each
//! [`Action`] of the state machine ([`machine::advance`]) through the traits — [`Platform`],
//! [`RequestMetrics`], [`Analyser`], [`HealthProbe`], [`GateChecks`], [`Prompter`],
//! [`RolloutReporter`] — feeds back what happened, and journals every state in the same write as
//! the traffic change it describes. It decides nothing itself. The traits and the request are
//! in [`ports`](super::ports), the start of a deploy (reading the service, the lock, a first
//! deploy or the new revision at 0%) in [`start`](super::start), what it reads (identity, each
//! look) in `observe`, the recovery of a crashed rollout in [`recovery`](super::recovery), and
//! the whole deploy around it (preflight → image → rollout) in [`pipeline`](crate::pipeline).
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

use tokio::time::Instant;

use super::{
    events::{Event, Outcome, RolloutReporter},
    identity::HealthProbe,
    journal::{Journal, LocalJournal, JOURNAL_ANNOTATION},
    machine::{self, Action, BeforeRollBack, Input, Phase, Policy, State, Written},
    observation::Observation,
    ports::{Analyser, DeployRequest, GateChecks, Interrupt},
    rollback,
};
use crate::{
    checks::RequestMetrics,
    config::Gate,
    interaction::Prompter,
    platform::{
        read_service, write_guarded, Platform, PlatformError, RetryPolicy, ServiceSnapshot,
        ServiceUpdate, TrafficTarget,
    },
    release::{self, Actor, History, HISTORY_ANNOTATION},
};

/// The tag every canary gets: its URL reaches the new revision alone.
pub const CANARY_TAG: &str = "canary";

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

/// A rollout in progress: what it was asked (the request and its policy), what it reports (the
/// notes) and listens to (Ctrl-C), its journal (revisions and machine state) and the last etag.
pub(super) struct Running<'r> {
    /// What is deployed.
    pub(super) request: &'r DeployRequest,
    /// The machine's policy for it.
    pub(super) policy: Policy,
    /// The notes of the report.
    pub(super) notes: &'r mut Vec<String>,
    /// Completes on Ctrl-C.
    pub(super) interrupt: &'r mut Interrupt,
    /// The journal as last written.
    pub(super) journal: Journal,
    /// The service's etag after the last write.
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

impl Running<'_> {
    pub(super) fn stable(&self) -> String {
        self.journal.stable.clone().unwrap_or_default()
    }
}

impl Driver<'_> {
    /// A rollout of `request` in progress on the service as `snapshot` shows it. An unreadable
    /// history is started afresh (a warning is logged): its verdicts could not be used anyway.
    pub(super) fn running<'r>(
        &self,
        request: &'r DeployRequest,
        notes: &'r mut Vec<String>,
        interrupt: &'r mut Interrupt,
        journal: Journal,
        snapshot: &ServiceSnapshot,
    ) -> Running<'r> {
        let history = History::of(snapshot).unwrap_or_else(|error| {
            tracing::info!(target: "deployer::progress", "warning: the release history is started afresh ({error})");
            History::default()
        });
        Running {
            request,
            policy: self.policy(request),
            notes,
            interrupt,
            journal,
            etag: snapshot.etag.clone(),
            step_started: Instant::now(),
            canary_base: None,
            service_url: Some(snapshot.uri.clone()),
            history,
        }
    }

    pub(crate) fn notice(&self, notes: &mut Vec<String>, message: String) {
        self.reporter.event(&Event::Notice {
            message: message.clone(),
        });
        notes.push(message);
    }

    pub(crate) fn warn(&self, notes: &mut Vec<String>, message: String) {
        self.reporter.event(&Event::Warning {
            message: message.clone(),
        });
        notes.push(message);
    }

    pub(super) fn policy(&self, request: &DeployRequest) -> Policy {
        Policy::new(&request.policy, self.checks.gates(Gate::Validation))
    }

    /// The loop: carry out `action`, feed back what happened, until the machine says done.
    /// Returns the final journal (also recorded locally).
    pub(super) async fn drive(
        &self,
        running: &mut Running<'_>,
        mut state: State,
        mut action: Action,
    ) -> Journal {
        let request = running.request;
        loop {
            let input = match action {
                // Start-up's decisions, carried out before this loop (`deploy`, `run`): no
                // later input is answered with them.
                Action::Done | Action::DeployFirst | Action::CreateRevision => break,
                Action::ChooseRecovery => Input::Recovered(self.recovery_choice(&running.journal)),
                Action::VerifyIdentity => Input::Identity(self.verify(running).await),
                Action::Validate => {
                    let results = self
                        .checks
                        .run(Gate::Validation, &self.scope(running))
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
                    match self.move_traffic(running, state.clone(), percent).await {
                        Ok(()) => Input::TrafficMoved,
                        Err(error) => Input::TrafficFailed(error.to_string()),
                    }
                }
                Action::Observe { wait } => {
                    let interrupted = tokio::select! {
                        () = tokio::time::sleep(wait) => false,
                        () = &mut *running.interrupt => true,
                    };
                    if interrupted {
                        Input::Interrupted(self.interrupted())
                    } else {
                        let elapsed = running.step_started.elapsed();
                        let observation = self.observe(running, &state, elapsed).await;
                        Input::Observed {
                            observation,
                            elapsed,
                        }
                    }
                }
                Action::RollBack | Action::ClearCanary => {
                    Input::Wrote(self.roll_back(running, state.clone()).await)
                }
                Action::Record => Input::Wrote(self.record(running, state.clone()).await),
                Action::Complete => {
                    // The promoted revision alone in the split (still tagged, so its URL stays).
                    let final_split =
                        vec![TrafficTarget::to_revision(&running.journal.canary, 100)
                            .tagged(CANARY_TAG)];
                    match self
                        .write(running, state.clone(), ServiceUpdate::traffic(final_split))
                        .await
                    {
                        Ok(_) => Input::Wrote(Written::Done),
                        Err(error) => {
                            self.notice(running.notes, format!(
                                "promoted, but the final write (dropping `{}` from the split) failed: {error}",
                                running.stable()
                            ));
                            Input::Wrote(Written::Failed(error.to_string()))
                        }
                    }
                }
            };
            (state, action) = machine::advance(&running.policy, &state, input);
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
    pub(super) async fn write(
        &self,
        running: &mut Running<'_>,
        state: State,
        mut update: ServiceUpdate,
    ) -> Result<ServiceSnapshot, PlatformError> {
        let request = running.request;
        let id = &request.id;
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
        running: &mut Running<'_>,
        state: State,
        percent: u8,
    ) -> Result<(), PlatformError> {
        let traffic = split(&running.stable(), &running.journal.canary.clone(), percent);
        let snapshot = self
            .write(running, state, ServiceUpdate::traffic(traffic.clone()))
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
    async fn roll_back(&self, running: &mut Running<'_>, state: State) -> Written {
        let request = running.request;
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
        let (next, action) =
            machine::advance(&running.policy, &state, Input::ReadBeforeRollBack(read));
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
    async fn record(&self, running: &mut Running<'_>, state: State) -> Written {
        let request = running.request;
        let update = match (state.phase, running.journal.stable.as_deref()) {
            (Phase::Stopped, Some(stable)) => {
                ServiceUpdate::traffic(vec![TrafficTarget::to_revision(stable, 100)])
            }
            _ => ServiceUpdate::default(),
        };
        for _ in 0..2 {
            match self.write(running, state.clone(), update.clone()).await {
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
