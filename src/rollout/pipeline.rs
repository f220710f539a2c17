//! The deploy pipeline, one function that reads like the runbook it replaces (as Kamal's
//! `deploy` does): preflight → image → guarded rollout. The command line resolves flags and
//! draws; the stages that print as they go (the checklist, the build) are behind [`Stages`], and
//! everything else is decided here, in this order:
//!
//! 1. the preflight checklist (or the recorded `--skip-preflight`): problems stop the deploy
//!    before anything is written;
//! 2. the image: the one given (by digest, with its commit), or a fresh build, pushed whenever
//!    the target needs a registry (always for Cloud Run; for the local emulator when the image
//!    repository's registry answers, else the engine's local image by its content id);
//! 3. the settings the target cannot apply are said before the revision exists (the emulator
//!    does not resolve Secret Manager references), and a service with session affinity, which
//!    skews the canary's share of requests;
//! 4. the guarded rollout ([`Driver::deploy`]), with synthetic traffic for a local target so the
//!    analysis has data.
//!
//! Every note of the way is a progress event as it happens and a line of the final report.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use async_trait::async_trait;

use super::{
    driver::Driver,
    events::{Event, Outcome, RolloutReport},
    ports::{DeployRequest, Interrupt},
    start::rollout_duration,
};
use crate::{
    platform::Platform,
    repo::{short_commit, RECORDED_COMMIT_CHARS},
    synthetic_load::TrafficGenerator,
};

/// The stages of a deploy whose progress the caller draws (not `Send`: the image build's
/// reporter draws on the caller's thread).
#[async_trait(?Send)]
pub trait Stages {
    /// Runs the preflight checklist and its decision (accepting warnings as the caller's flags
    /// or a human allow): true when it is safe to deploy.
    async fn preflight(&self) -> anyhow::Result<bool>;
    /// Builds the service's image at the repository's `HEAD`, and pushes it when `push`.
    async fn build(&self, push: bool) -> anyhow::Result<Delivered>;
}

/// An image ready to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// By digest (`REPOSITORY@sha256:...`), or by content id (`sha256:...`) when not pushed.
    pub image: String,
    /// The commit it was built from.
    pub commit: String,
    /// The fingerprint of uncommitted changes it was built with, if any.
    pub dirty: Option<String>,
}

/// Where the image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `--image` (with `--commit`, or the repository's `HEAD`).
    Given(Delivered),
    /// A fresh build of the service.
    Build,
}

/// The target's kind, as far as the pipeline cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Google Cloud Run: images come from a registry, no synthetic load ever.
    CloudRun,
    /// The local emulator.
    Local,
}

/// Synthetic requests sent to a local service while it rolls out.
pub struct SyntheticTraffic {
    /// Requests per second (more than zero).
    pub rate: u32,
    /// Where the generator reads the service's URL.
    pub platform: Arc<dyn Platform>,
}

/// A deploy, its flags resolved.
pub struct Plan {
    /// The target's kind.
    pub target: TargetKind,
    /// Where the target is, for the opening line (`local emulator at ...`, a project/region).
    pub target_name: String,
    /// The image repository (`image.repository`), for the registry question.
    pub repository: String,
    /// `--skip-preflight`.
    pub skip_preflight: bool,
    /// `--image` or a build.
    pub image: ImageSource,
    /// The service's name, for the report of a deploy stopped before its rollout.
    pub service: String,
    /// The rollout of the image step 2 delivers.
    pub rollout: Box<dyn FnOnce(Delivered) -> DeployRequest + Send>,
    /// Synthetic traffic (local targets only).
    pub traffic: Option<SyntheticTraffic>,
}

/// Said before the canary when the service has session affinity on (and by `deployer doctor`).
pub const SESSION_AFFINITY_WARNING: &str = "session affinity is on: Cloud Run applies affinity before the traffic split, so the canary's share of requests will be skewed (a client with an affinity cookie stays on the revision that first served it) and each step's analysis rests on fewer or more requests than its percent";

/// Why a deploy stopped at the checklist (the report's reason).
pub const PREFLIGHT_STOPPED: &str = "the preflight checklist found problems: nothing was changed";

/// Runs the whole deploy. An error means nothing was started (or the rollout could not start:
/// the error says which); every outcome of a started rollout is in the report.
pub async fn deploy(
    plan: Plan,
    stages: &dyn Stages,
    driver: &Driver<'_>,
    interrupt: Interrupt,
) -> anyhow::Result<RolloutReport> {
    let Plan {
        target,
        target_name,
        repository,
        skip_preflight,
        image,
        service,
        rollout,
        traffic,
    } = plan;
    let mut notes = Vec::new();

    // 1. Preflight.
    if skip_preflight {
        driver.warn(
            &mut notes,
            "preflight checklist skipped (`--skip-preflight`)".to_string(),
        );
    } else if !stages.preflight().await? {
        let outcome = Outcome::StoppedBeforeTraffic {
            reason: PREFLIGHT_STOPPED.to_string(),
        };
        driver.reporter.event(&Event::Finished {
            outcome: outcome.clone(),
        });
        return Ok(RolloutReport {
            id: None,
            service,
            canary: None,
            stable: None,
            outcome,
            notes,
        });
    }

    // 2. The image.
    let delivered = match image {
        ImageSource::Given(delivered) => delivered,
        ImageSource::Build => {
            let push = match target {
                TargetKind::CloudRun => true,
                TargetKind::Local => crate::image::registry_answers(&repository).await,
            };
            if !push {
                driver.notice(
                    &mut notes,
                    format!(
                        "the registry of `{repository}` does not answer: deploying the local image by its content id"
                    ),
                );
            }
            stages.build(push).await?
        }
    };
    let rollout = rollout(delivered);

    // 3. What the target will not apply.
    if target == TargetKind::Local && !rollout.run.secrets.is_empty() {
        let names: Vec<String> = rollout
            .run
            .secrets
            .keys()
            .map(|name| format!("`{name}`"))
            .collect();
        driver.warn(
            &mut notes,
            format!(
                "the local emulator does not resolve Secret Manager references: {} will be absent in the container",
                names.join(", ")
            ),
        );
    }

    // Session affinity skews the split the analysis relies on: said before the canary. A read
    // that fails is left to the rollout, which reads the service first and says why.
    if let Ok(Some(snapshot)) = driver.platform.service(&rollout.id).await {
        if snapshot.session_affinity {
            driver.warn(&mut notes, SESSION_AFFINITY_WARNING.to_string());
        }
    }

    // 4. The guarded rollout, with synthetic traffic for a local target.
    driver.reporter.event(&Event::Deploying {
        service: rollout.service_name.clone(),
        target: target_name,
        image: rollout.image.clone(),
        commit: short_commit(&rollout.commit, RECORDED_COMMIT_CHARS).to_string(),
    });
    let generator = traffic.map(|traffic| {
        // Long enough for every step, the monitor and the wait for Ready.
        let limit = rollout_duration(&rollout.policy) + rollout.ready_timeout + Duration::from_secs(300);
        driver.reporter.event(&Event::Notice {
            message: format!(
                "sending {} req/s of synthetic traffic to `{}` once its URL is known (local target; `--traffic 0` turns it off)",
                traffic.rate, rollout.id
            ),
        });
        TrafficGenerator::start_for_service(traffic.platform, rollout.id.clone(), traffic.rate, limit)
    });
    let report = driver.deploy(&rollout, interrupt).await;
    if let Some(generator) = generator {
        notes.push(generator.stop().describe());
    }
    let mut report =
        report.with_context(|| format!("deploy of `{}` did not start", rollout.service_name))?;
    notes.append(&mut report.notes);
    report.notes = notes;
    Ok(report)
}
