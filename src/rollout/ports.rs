//! What the rollout driver is given and talks through: the request ([`DeployRequest`]), Ctrl-C
//! ([`Interrupt`]), the errors that end a deploy before it starts ([`DeployError`]), and the
//! traits of the metrics it judges ([`Analyser`]) and of the service checks gated on a deploy
//! phase ([`GateChecks`]). The driver itself ([`super::driver`]) and its start-up
//! ([`super::start`]) carry them out; adapters and tests implement them.

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use async_trait::async_trait;
use chrono::Utc;

use super::{identity, lock::LockError, observation::MetricResult};
use crate::{
    checks::RequestCounts,
    config::{Gate, HealthConfig, RolloutConfig, RunConfig},
    platform::{PlatformError, ServiceId},
};

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
