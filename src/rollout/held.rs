//! A way forward for a held rollout: `deployer promote` and `deployer abort`.
//!
//! A rollout ends *held* when the machine could not decide (inconclusive with `hold`, metrics
//! unreadable with `hold`/`promote`, a service-wide failure, Ctrl-C "leave"): the split stays as
//! it was, the lock is released and the journal says `held`. A human then decides. Both
//! decisions go through the same state machine as a deploy ([`Manual`]), take the lock, and
//! record who and why in the journal and the release history in the write they make:
//!
//! - **promote**: the canary takes 100%, then the post-deploy monitor runs with the service's
//!   policy (a failure rolls back, as in a deploy); `skip_monitor` promotes without it, recorded
//!   as `promoted-unmonitored` (never known-good on that alone);
//! - **abort**: 100% back on the stable revision, the journal closed as `aborted`, the canary
//!   recorded bad.

use super::{
    driver::Driver,
    events::{Outcome, RolloutReport},
    journal::{Decision, Journal},
    machine::{self, Input, Manual, Phase},
    ports::{DeployError, DeployRequest, Interrupt},
};
use crate::{
    platform::{read_service, ServiceSnapshot},
    release,
};

/// Why a held rollout cannot be decided on.
#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    /// The service does not exist.
    #[error("service `{0}` not found")]
    NoService(String),
    /// Its last rollout is not held.
    #[error("{0}")]
    NotHeld(String),
    /// The lock or the platform.
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// The held rollout on `snapshot`, or why there is none.
pub fn held_journal(snapshot: &ServiceSnapshot) -> Result<Journal, HeldError> {
    let name = &snapshot.id.name;
    match Journal::of(snapshot) {
        Some(journal) if journal.phase() == Phase::Held => Ok(journal),
        Some(journal) if !journal.phase().is_terminal() => Err(HeldError::NotHeld(format!(
            "the rollout `{}` of `{name}` is still running (phase {:?}), not held: `deployer status {name} --watch` follows it",
            journal.id,
            journal.phase()
        ))),
        Some(journal) => Err(HeldError::NotHeld(format!(
            "nothing is held on `{name}`: its last rollout `{}` ended {:?}",
            journal.id,
            journal.phase()
        ))),
        None => Err(HeldError::NotHeld(format!(
            "nothing is held on `{name}`: no rollout is recorded on it"
        ))),
    }
}

impl Driver<'_> {
    /// Carries out a human's decision on the held rollout of `request.id`: takes the lock,
    /// feeds [`Input::Manual`] to the machine and drives it to its end. `request.policy` is
    /// the service's policy (its monitor; a zero `monitor_duration` skips it).
    pub async fn decide_held(
        &self,
        request: &DeployRequest,
        manual: Manual,
        reason: Option<String>,
        mut interrupt: Interrupt,
    ) -> Result<RolloutReport, HeldError> {
        let id = &request.id;
        let snapshot = read_service(self.platform, id, self.retry)
            .await
            .map_err(DeployError::from)?
            .ok_or_else(|| HeldError::NoService(id.path()))?;
        let mut journal = held_journal(&snapshot)?;
        let (lock, snapshot) = self
            .take_lock(request, &journal.id)
            .await
            .map_err(DeployError::from)?;
        // Taken with the lock: a deploy may have started and ended between the two reads.
        journal = match held_journal(&snapshot) {
            Ok(journal) => journal,
            Err(error) => {
                let mut notes = Vec::new();
                self.release(id, &lock.id, &mut notes).await;
                return Err(error);
            }
        };
        journal.decision = Some(Decision {
            kind: match manual {
                Manual::Promote => release::Kind::Promote,
                Manual::Abort => release::Kind::Abort,
            },
            actor: release::Actor::current(),
            reason,
            unmonitored: manual == Manual::Promote && request.policy.monitor_duration.0.is_zero(),
        });
        let policy = self.policy(request);
        let (state, action) = machine::advance(&policy, &journal.state, Input::Manual(manual));
        let mut notes = Vec::new();
        let mut running = self.running(request, &mut notes, &mut interrupt, journal, &snapshot);
        running.canary_base = super::driver::tag_url(&snapshot);
        let journal = self.drive(&mut running, state, action).await;
        self.release(id, &journal.id, &mut notes).await;
        Ok(RolloutReport {
            id: Some(journal.id.clone()),
            service: id.name.clone(),
            canary: Some(journal.canary.clone()),
            stable: journal.stable.clone(),
            outcome: Outcome::of(&journal),
            notes,
        })
    }
}
