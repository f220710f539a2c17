//! Recovery of a rollout found unfinished after a crash, `kill -9` or a lost machine.
//!
//! The journal on the service says where the rollout was. Before any traffic moved, the canary
//! is dropped (the only safe choice). After, the prompter chooses: roll it back (the safe
//! default, taken when nobody can be asked), resume it from the journalled step through the same
//! state machine, or leave it for a human. A rollout whose lock is alive is not recovered: it
//! is running elsewhere.

use super::{
    driver::{tag_url, Driver},
    events::{Event, Outcome, RolloutReport},
    journal::Journal,
    lock::{self, LockError},
    machine::{self, Action, Input, Phase, Recovery},
    ports::{DeployError, DeployRequest, Interrupt},
};
use crate::platform::{PlatformError, ServiceSnapshot};

impl Driver<'_> {
    /// Asks what to do with an unfinished rollout after traffic moved: roll it back (the safe
    /// default, taken when nobody can be asked), resume it, or leave it for a human.
    pub(super) fn recovery_choice(&self, journal: &Journal) -> Recovery {
        let stable = journal.stable.clone().unwrap_or_default();
        let options = [
            format!("roll it back (100% to `{stable}`), then deploy"),
            format!(
                "resume it: continue `{}` from {}% (this run then deploys nothing else)",
                journal.canary, journal.state.percent
            ),
            "leave it for a human (stop here)".to_string(),
        ];
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        match self
            .prompter
            .choose("An interrupted rollout was found. What now?", &options, 0)
        {
            1 => Recovery::Resume,
            2 => Recovery::Leave,
            _ => Recovery::RollBack,
        }
    }

    /// Deals with an interrupted rollout found in the journal. Before traffic moved, the canary
    /// is dropped (the only safe choice). After, the prompter chooses: roll back (the safe
    /// default, taken when nobody can be asked), resume it where it stopped, or leave it.
    /// `Some(report)` when this run ends with the recovered rollout (resumed); `None` when the
    /// requested deploy goes on.
    pub(super) async fn recover(
        &self,
        request: &DeployRequest,
        snapshot: &ServiceSnapshot,
        journal: Journal,
        notes: &mut Vec<String>,
        interrupt: &mut Interrupt,
    ) -> Result<Option<RolloutReport>, DeployError> {
        let id = &request.id;
        let Some(stable) = journal.stable.clone() else {
            self.notice(
                notes,
                format!(
                    "an interrupted rollout `{}` had no stable revision; left as it is",
                    journal.id
                ),
            );
            return Ok(None);
        };
        self.reporter.event(&Event::InterruptedRolloutFound {
            journal: Box::new(journal.clone()),
        });
        // The machine decides whether anyone is asked: before traffic moved, nobody is (the
        // canary is dropped).
        let policy = self.policy(request);
        let (mut state, mut action) = machine::advance(&policy, &journal.state, Input::Unfinished);
        // Before traffic moved the machine has stopped it (`ClearCanary`): carried out as a
        // rollback is, then the requested deploy goes on.
        let mut choice = Recovery::RollBack;
        if action == Action::ChooseRecovery {
            choice = self.recovery_choice(&journal);
            (state, action) = machine::advance(&policy, &journal.state, Input::Recovered(choice));
        }
        match choice {
            Recovery::Leave => Err(DeployError::Lock(LockError::Held {
                service: id.name.clone(),
                holder: format!("an interrupted rollout `{}` (left for a human)", journal.id),
            })),
            Recovery::Resume => {
                // The crashed run's lock is stale (expired, or its process is gone): replace it
                // with ours, under the same rollout id.
                lock::release(self.platform, id, &journal.id).await?;
                let (_lock, snapshot) = self.take_lock(request, &journal.id).await?;
                self.notice(
                    notes,
                    format!(
                        "resumed the interrupted rollout `{}`; the requested image was not deployed: run `deploy` again for it",
                        journal.id
                    ),
                );
                let mut running = self.running(request, notes, interrupt, journal, &snapshot);
                running.canary_base = tag_url(&snapshot);
                let journal = self.drive(&mut running, state, action).await;
                self.release(id, &journal.id, notes).await;
                Ok(Some(RolloutReport {
                    id: Some(journal.id.clone()),
                    service: id.name.clone(),
                    canary: Some(journal.canary.clone()),
                    stable: journal.stable.clone(),
                    outcome: Outcome::of(&journal),
                    notes: std::mem::take(notes),
                }))
            }
            Recovery::RollBack => {
                let mut running =
                    self.running(request, notes, interrupt, journal.clone(), snapshot);
                let done = self.drive(&mut running, state, action).await;
                match done.phase() {
                    Phase::RolledBack | Phase::Stopped => {
                        // The crashed run's lock is stale by construction: break it.
                        lock::release(self.platform, id, &journal.id).await?;
                        self.notice(
                            notes,
                            format!(
                                "interrupted rollout `{}` rolled back: 100% on `{stable}`",
                                journal.id
                            ),
                        );
                        Ok(None)
                    }
                    _ => Err(DeployError::Platform(PlatformError::Refused(format!(
                        "could not recover the interrupted rollout `{}`: {}",
                        journal.id,
                        done.state.reason.unwrap_or_default()
                    )))),
                }
            }
        }
    }
}
