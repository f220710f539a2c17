//! The deploy pipeline, one function that reads like the runbook it replaces (as Kamal's
//! `deploy` does): preflight → image → guarded rollout. The command line resolves flags and
//! draws through the reporters it hands over; everything else is decided here, in this order:
//!
//! 1. the preflight checklist (or the recorded `--skip-preflight`) and its decision: problems
//!    stop the deploy before anything is written;
//! 2. the image: the one given (by digest, with its commit), or a fresh build, pushed whenever
//!    the target needs a registry (always for Cloud Run; for the local emulator when the image
//!    repository's registry answers, else the engine's local image by its content id);
//! 3. the settings the target cannot apply are said before the revision exists (the emulator
//!    does not resolve Secret Manager references), and a service with session affinity, which
//!    skews the canary's share of requests;
//! 4. the guarded rollout ([`Driver::deploy`]), with synthetic traffic for a local target so the
//!    analysis has data.
//!
//! Steps 1 and 2 run through [`Preparation`]: [`RepositoryPreparation`] runs the checklist
//! ([`preflight::run`], then [`preflight::decide`]) and the build ([`image::build_service`]) on
//! the service's repository, reporting through preflight's and image's own reporter traits and
//! asking through the [`Prompter`]; tests script both. Every note of the way is a progress event
//! as it happens and a line of the final report.
//!
//! The pipeline stands above `preflight` (which reads the rollout lock) and `image`, and below
//! the command line: it is the one place that knows the order of a deploy.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{
    config::{ServiceConfig, Target},
    image::{self, DeliveryError},
    interaction::Prompter,
    platform::{Platform, ServiceId, SESSION_AFFINITY_WARNING},
    preflight::{self, Acceptance, Decision, DeployedSource, PreflightOptions, PreflightReport},
    repo::{short_commit, RECORDED_COMMIT_CHARS},
    rollout::{
        driver::Driver,
        events::{Event, Outcome, RolloutReport},
        ports::{DeployRequest, Interrupt},
        start::rollout_duration,
    },
    synthetic_load::TrafficGenerator,
};

/// What runs before a rollout: the checklist with its decision, and the image build (not
/// `Send`: the build's reporter draws on the caller's thread).
#[async_trait(?Send)]
pub trait Preparation {
    /// Runs the preflight checklist and its decision (warnings accepted by the caller's flags
    /// or a human's answer): true when it is safe to deploy. Never fails: whatever goes wrong is
    /// a step's WARN or FAIL.
    async fn checklist(&mut self) -> bool;
    /// Builds the service's image at the repository's working tree, and pushes it when `push`.
    async fn build(&mut self, push: bool) -> Result<Delivered, DeliveryError>;
}

/// What a deploy says about its checklist beyond each step (preflight's own
/// [`preflight::Reporter`]): that it starts, that it ran (before any question about its
/// warnings), and how it was decided.
pub trait ChecklistReporter: preflight::Reporter {
    /// The checklist of `service` starts.
    fn started(&self, service: &str);
    /// Every step ran; the decision (and its questions) comes next.
    fn finished(&self, report: &PreflightReport);
    /// The checklist was decided.
    fn decided(&self, report: &PreflightReport, decision: &Decision);
}

/// The checklist and the build of one service from its repository: [`preflight`] and
/// [`image::build_service`], reporting through the caller's reporters.
pub struct RepositoryPreparation<'a, C: ChecklistReporter> {
    /// The service.
    pub config: &'a ServiceConfig,
    /// The repository's working tree.
    pub root: &'a Path,
    /// Where the checklist reads what is deployed.
    pub platform: &'a dyn Platform,
    /// The service on `platform`.
    pub id: &'a ServiceId,
    /// The checklist's options (fetch, tests, the repository-wide steps shared by a fleet).
    pub options: PreflightOptions,
    /// Who may accept a warning.
    pub acceptance: Acceptance,
    /// Asked about warnings when a human can answer.
    pub prompter: &'a dyn Prompter,
    /// Hears the checklist.
    pub checklist: &'a C,
    /// Hears the build and the push.
    pub image: &'a mut dyn image::Reporter,
}

#[async_trait(?Send)]
impl<C: ChecklistReporter> Preparation for RepositoryPreparation<'_, C> {
    async fn checklist(&mut self) -> bool {
        self.checklist.started(&self.config.name);
        let deployed = DeployedSource::Platform {
            platform: self.platform,
            id: self.id.clone(),
        };
        let report = preflight::run(
            self.config,
            self.root,
            deployed,
            &self.options,
            self.checklist,
        )
        .await;
        self.checklist.finished(&report);
        let decision = preflight::decide(&report, self.acceptance, self.prompter);
        self.checklist.decided(&report, &decision);
        decision.safe_to_deploy
    }

    async fn build(&mut self, push: bool) -> Result<Delivered, DeliveryError> {
        let image::Delivery {
            plan,
            built,
            pushed,
        } = image::build_service(self.config, self.root, push, self.image).await?;
        Ok(Delivered {
            image: match pushed {
                Some(pushed) => pushed.pinned,
                None => built.id,
            },
            commit: plan.revision.commit,
            dirty: plan.revision.dirty,
        })
    }
}

/// Why a deploy ended without a report: nothing was started, or the rollout could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The image was not delivered (nothing was deployed).
    #[error(transparent)]
    Image(#[from] DeliveryError),
    /// The rollout could not start (another rollout's lock, the platform).
    #[error("deploy of `{service}` did not start")]
    RolloutNotStarted {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: crate::rollout::ports::DeployError,
    },
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

/// What a deploy's command line sets on its rollout beyond the service file.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// `--env`: environment variables of the new revision.
    pub env: BTreeMap<String, String>,
    /// `--lock-wait`.
    pub lock_wait: Duration,
    /// `--ready-timeout`.
    pub ready_timeout: Duration,
    /// `--accept-warnings`.
    pub accept_warnings: bool,
}

impl Delivered {
    /// The guarded rollout of this image as service `config` on `id`: the service file's run
    /// settings, rollout policy and health with the command line's `settings`; the commit's time
    /// is read from the repository at `root` (none when the commit is not there).
    pub fn request(
        self,
        config: ServiceConfig,
        id: ServiceId,
        root: &Path,
        settings: RequestSettings,
    ) -> DeployRequest {
        DeployRequest {
            id,
            service_name: config.name,
            commit_time: crate::repo::commit_time(root, &self.commit),
            image: self.image,
            commit: self.commit,
            dirty: self.dirty,
            run: config.run,
            env: settings.env,
            policy: config.rollout,
            health: config.health,
            lock_wait: settings.lock_wait,
            ready_timeout: settings.ready_timeout,
            accept_warnings: settings.accept_warnings,
        }
    }
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

impl TargetKind {
    /// The kind of a service file's `target`.
    pub fn of(target: &Target) -> Self {
        match target {
            Target::CloudRun { .. } => Self::CloudRun,
            Target::Local { .. } => Self::Local,
        }
    }
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

/// Why a deploy stopped at the checklist (the report's reason).
pub const PREFLIGHT_STOPPED: &str = "the preflight checklist found problems: nothing was changed";

/// Runs the whole deploy. An error means nothing was started (or the rollout could not start:
/// the error says which); every outcome of a started rollout is in the report.
pub async fn deploy(
    plan: Plan,
    preparation: &mut dyn Preparation,
    driver: &Driver<'_>,
    interrupt: Interrupt,
) -> Result<RolloutReport, PipelineError> {
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
    } else if !preparation.checklist().await {
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
                driver.notice(&mut notes, format!(
                        "the registry of `{repository}` does not answer: deploying the local image by its content id"
                    ),
                );
            }
            preparation.build(push).await?
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
        driver.warn(&mut notes, format!(
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
    let mut report = report.map_err(|source| PipelineError::RolloutNotStarted {
        service: rollout.service_name.clone(),
        source,
    })?;
    notes.append(&mut report.notes);
    report.notes = notes;
    Ok(report)
}
