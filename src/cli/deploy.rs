//! `deployer deploy SERVICE`: the guarded rollout, with live progress. Several services
//! (`deploy A B C`, `--all`, `--changed`) go through `cli/fleet.rs`, which runs each one's
//! rollout with [`deploy_service`].

use std::{path::Path, sync::Mutex};

use anyhow::Context as _;
use clap::Args;

use super::{
    block_on,
    rollout_progress::{Notifying, Progress},
    target, Context, UsageError,
};
use crate::{
    checks::{Providers, RequestMetrics},
    config::{HumanDuration, ServiceConfig},
    exit::ExitStatus,
    interaction::Prompter,
    notify::rollout::{RolloutNotice, RolloutNotifications, RolloutNotifier},
    pipeline::{
        self, Delivered, ImageSource, PipelineError, Plan, RepositoryPreparation, RequestSettings,
        SyntheticTraffic, TargetKind,
    },
    platform::{cloud_run::CloudRunPlatform, RetryPolicy, ServiceId},
    rollout::{
        analyser::SequentialAnalyser,
        driver::Driver,
        events::{Event, Outcome, RolloutReport, RolloutReporter},
        gates::ServiceChecks,
        identity::HttpProbe,
        journal::LocalJournal,
        ports::Interrupt,
    },
};

/// `deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The services to deploy. Several are deployed in the order of their `depends_on`, each
    /// with its own guarded rollout (see `--parallel`).
    #[arg(value_name = "SERVICE", required_unless_present_any = ["all", "changed"])]
    pub services: Vec<String>,
    /// Deploy every service defined.
    #[arg(long, conflicts_with_all = ["services", "changed"])]
    pub all: bool,
    /// Deploy the services whose deployed commit lags `main` on their own paths (drift's
    /// relevance: commits touching `preflight.paths`), and those not deployed yet.
    #[arg(long, conflicts_with = "services")]
    pub changed: bool,
    /// How many services of a deploy of several roll out at the same time (independent ones
    /// only: a service starts after every dependency in the deploy was promoted).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub parallel: u16,
    /// Deploy this image (by digest, `REPOSITORY@sha256:...`) instead of building one.
    /// Without it, deploy builds the service's image and pushes it (always for Cloud Run; for
    /// the local emulator when the image repository's registry answers, else the local image is
    /// deployed by its content id `sha256:...`).
    #[arg(long, value_name = "IMAGE", value_parser = super::args::Quiet(parse_image))]
    pub image: Option<String>,
    /// The commit the image was built from, 7 to 40 hex digits [default: `HEAD` of the
    /// repository].
    #[arg(long, value_name = "SHA", value_parser = parse_commit)]
    pub commit: Option<String>,
    /// An environment variable of the new revision (repeatable), e.g. `--env FAIL_RATE=0.3`.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = super::args::Quiet(parse_env))]
    pub env: Vec<(String, String)>,
    /// How long to wait for another rollout of the service to finish.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = super::args::duration_in(super::args::LOCK_WAIT))]
    pub lock_wait: HumanDuration,
    /// How long the new revision may take to become Ready and answer `/health`.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = super::args::duration_in(super::args::READY_TIMEOUT))]
    pub ready_timeout: HumanDuration,
    /// Requests per second of synthetic traffic sent to a `local` service while it rolls out,
    /// so that the analysis has data (0: none). Refused for Cloud Run targets: deployer never
    /// sends synthetic load to production.
    #[arg(long, value_name = "RATE", value_parser = super::args::traffic_rate)]
    pub traffic: Option<u32>,
    /// Skip the preflight checklist (recorded in the report). For emergencies only.
    #[arg(long)]
    pub skip_preflight: bool,
    #[command(flatten)]
    pub preflight: super::preflight::PreflightFlags,
    /// Validation warnings of service checks are accepted too with `--accept-warnings`.
    #[command(flatten)]
    pub providers: super::check::ProviderFlags,
}

/// `--commit`: 7 to 40 hexadecimal digits (a full or abbreviated git commit id).
fn parse_commit(text: &str) -> Result<String, String> {
    let length = text.chars().count();
    if !(7..=40).contains(&length) || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "`{}` is not a commit: 7 to 40 hexadecimal digits",
            text.escape_debug()
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// `--env KEY=VALUE`: a valid, unreserved name (`platform::check_env_name`), refused at parse
/// time (exit 2) before anything is written. The argument is echoed escaped and shortened by
/// characters: a 100 KB value was printed whole, and a name with a control character was sent.
fn parse_env(text: &str) -> Result<(String, String), String> {
    let shown = || crate::untrusted::escaped(&crate::untrusted::shortened(text, 60)).into_owned();
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{}` is not KEY=VALUE", shown()))?;
    crate::platform::check_env_name(key).map_err(|error| error.to_string())?;
    Ok((key.to_string(), value.to_string()))
}

/// `--image`: a valid image reference (`image::check_reference`), refused at parse time.
fn parse_image(text: &str) -> Result<String, String> {
    crate::image::check_reference(text)?;
    Ok(text.to_string())
}

/// The commit at `HEAD` of the repository holding `root` (`repo::head_commit`), as a usage error
/// that says what to pass instead.
fn head_commit(root: &Path) -> Result<String, UsageError> {
    crate::repo::head_commit(root).map_err(|error| UsageError {
        message: format!("cannot tell the commit being deployed ({error}): pass `--commit SHA`"),
    })
}

/// Ctrl-C as a rollout listens for it (never completes if the handler cannot be installed).
/// tokio installs its handler when the future is first polled, which a rollout does once
/// traffic moved: until then Ctrl-C stops the process as it always does, before anything
/// reached users (a Ctrl-C during a build or the checklist is obeyed at once, not kept for
/// the first canary step).
pub(super) fn ctrl_c() -> Interrupt {
    Box::pin(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

/// Ctrl-C for a loop that listens from its start (a deploy of several services or regions):
/// the handler is installed now, not at the first poll. The fleet polls its interrupt only
/// after the first rollout yields, and a Ctrl-C before that (a second into a preflight on a
/// loaded machine) killed the process with no report.
pub(super) fn ctrl_c_listening_now() -> Interrupt {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::interrupt()) {
            Ok(mut interrupt) => Box::pin(async move {
                if interrupt.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }),
            Err(_) => Box::pin(std::future::pending()),
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c()
    }
}

/// Synthetic requests per second for `local` targets (a canary at 10% then sees 5 req/s: the
/// rate of the analysis benchmark).
pub(super) const DEFAULT_LOCAL_TRAFFIC: u32 = 50;

/// `--image` with its commit (`--commit`, or `HEAD`), or a build; `--commit` alone must name
/// the commit being built.
fn image_source(root: &Path, args: &DeployArgs) -> Result<ImageSource, UsageError> {
    match (&args.image, &args.commit) {
        (Some(image), commit) => Ok(ImageSource::Given(Delivered {
            image: image.clone(),
            commit: match commit {
                Some(commit) => commit.clone(),
                None => head_commit(root)?,
            },
            dirty: None,
        })),
        (None, Some(commit)) => {
            let head = head_commit(root)?;
            if !crate::rollout::identity::same_commit(commit, &head) {
                return Err(UsageError {
                    message: format!(
                        "`--commit {commit}` differs from the commit being built (`{head}`): `--commit` only goes with `--image`"
                    ),
                });
            }
            Ok(ImageSource::Build)
        }
        (None, None) => Ok(ImageSource::Build),
    }
}

/// What a guarded rollout of one service talks to, built once per command (`deploy`,
/// `promote`, `abort`): the platform, the request counts of `rollout.request_metrics`, the
/// gated service checks, the analysis, the health probe, and the progress drawn on stderr.
pub(super) struct RolloutParts<'a> {
    pub(super) platform: CloudRunPlatform,
    metrics: Box<dyn RequestMetrics>,
    gates: ServiceChecks<'a>,
    analyser: SequentialAnalyser,
    probe: HttpProbe,
    pub(super) progress: Progress,
    prompter: Box<dyn Prompter>,
}

impl<'a> RolloutParts<'a> {
    pub(super) async fn connect(
        context: &Context,
        config: &'a ServiceConfig,
        id: &ServiceId,
        providers: &super::check::ProviderFlags,
    ) -> anyhow::Result<Self> {
        // Resolved once: for a local target it reads the emulator's state file.
        let endpoint = target::endpoint(config, context.endpoint.as_deref());
        let platform = CloudRunPlatform::connect(&endpoint, target::OPERATION_DEADLINE)
            .await?
            .with_waiting_notice(target::waiting_notice());
        // Request counts (`rollout.request_metrics`) and the gated service checks read the
        // same providers; for a local target the emulator serves Logging and Monitoring.
        let endpoints = super::check::endpoints(config, providers, context);
        let metrics = crate::checks::request_metrics_for(&config.rollout, &endpoints)
            .context("the request metrics of `rollout.request_metrics` cannot be read")?;
        Ok(Self {
            platform,
            metrics,
            gates: ServiceChecks::new(config, id, Providers::new(endpoints)),
            analyser: SequentialAnalyser::new(&config.rollout)
                .context("the rollout policy is not usable by the analysis")?,
            probe: HttpProbe::new(),
            progress: Progress::new(context),
            prompter: super::prompt::prompter(context),
        })
    }

    pub(super) fn driver(&self) -> Driver<'_> {
        Driver {
            platform: &self.platform,
            metrics: self.metrics.as_ref(),
            analyser: &self.analyser,
            probe: &self.probe,
            checks: &self.gates,
            reporter: &self.progress,
            prompter: self.prompter.as_ref(),
            local_journal: LocalJournal::from_environment(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Runs `deploy`: resolves the flags, then the pipeline (preflight → image → guarded rollout)
/// draws its events and the final report. Several services: `cli/fleet.rs`.
pub fn deploy(context: &Context, args: &DeployArgs) -> anyhow::Result<ExitStatus> {
    let [name] = args.services.as_slice() else {
        return super::fleet::deploy(context, args);
    };
    if args.all || args.changed {
        return super::fleet::deploy(context, args);
    }
    block_on(async {
        let deployed = deploy_service(context, args, name, false).await?;
        if !deployed.regions.is_empty() {
            super::fleet::print_regions(context, name, &deployed)?;
            return Ok(deployed.status);
        }
        print_report(context, &deployed.report)?;
        if super::github_actions::enabled() {
            let (annotations, summary) = github_actions_output(args, &deployed.report);
            super::github_actions::publish(context, &annotations, &summary);
        }
        Ok(deployed.status)
    })
}

/// One service's deploy as it ended: its report and exit status.
pub(super) struct Deployed {
    pub(super) report: RolloutReport,
    pub(super) status: ExitStatus,
    /// The image rolled out, once delivered (built or given): the later regions of a
    /// multi-region service deploy the canary region's.
    pub(super) delivered: Option<Delivered>,
    /// A multi-region service's line per region (empty for a one-region deploy); `report` is
    /// then the last region's that ran, `status` the worst region's.
    pub(super) regions: Vec<super::fleet::ServiceLine>,
}

/// The exit status of a rollout's outcome.
pub(super) fn exit_status(outcome: &Outcome) -> ExitStatus {
    match outcome {
        Outcome::Promoted { .. } => ExitStatus::Success,
        Outcome::StoppedBeforeTraffic { .. } => ExitStatus::StoppedBeforeTraffic,
        Outcome::RolledBack { .. } => ExitStatus::RolledBack,
        Outcome::RollbackFailed { .. } => ExitStatus::RollbackFailed,
        Outcome::Held { .. } => ExitStatus::Held,
    }
}

/// The whole deploy of service `name` with `args`' flags — its own lock, journal, checks,
/// rollback and notifications — without printing the report. `in_fleet`: one of several
/// rollouts drawing at once (progress lines prefixed with the service's name).
pub(super) async fn deploy_service(
    context: &Context,
    args: &DeployArgs,
    name: &str,
    in_fleet: bool,
) -> anyhow::Result<Deployed> {
    let (workspace, mut regions) = context.service_regions(name)?;
    if regions.len() > 1 {
        return super::fleet::deploy_regions(context, args, name, &workspace, regions).await;
    }
    let Some((config, id)) = regions.pop() else {
        return Err(UsageError {
            message: format!("service `{name}` has no region"),
        }
        .into());
    };
    let prefix = in_fleet.then(|| name.to_string());
    deploy_region(context, args, &workspace, config, id, None, prefix).await
}

/// The deploy of one service in one region (its guarded rollout, lock, journal, checks,
/// rollback, notifications): of `given`'s image when it is set (a later region of a
/// multi-region service: no build), else `args`'. `prefix`: the progress lines' `[prefix]`.
pub(super) async fn deploy_region(
    context: &Context,
    args: &DeployArgs,
    workspace: &crate::config::Workspace,
    config: ServiceConfig,
    id: ServiceId,
    given: Option<Delivered>,
    prefix: Option<String>,
) -> anyhow::Result<Deployed> {
    let kind = TargetKind::of(&config.target);
    let traffic_rate = match (kind, args.traffic) {
        (TargetKind::CloudRun, Some(rate)) if rate > 0 => {
            return Err(UsageError {
                message: format!(
                    "`--traffic {rate}` is only for `local` targets: deployer never sends synthetic load to Cloud Run"
                ),
            }
            .into())
        }
        (TargetKind::Local, rate) => rate.unwrap_or(DEFAULT_LOCAL_TRAFFIC),
        _ => 0,
    };
    let image = match given {
        Some(delivered) => ImageSource::Given(delivered),
        None => image_source(&workspace.root, args)?,
    };
    let started_emulator = target::ensure_emulator(&config, context.endpoint.as_deref())?;
    {
        let mut parts = RolloutParts::connect(context, &config, &id, &args.providers).await?;
        if let Some(prefix) = &prefix {
            parts.progress.within_fleet(prefix);
        }
        let (platform, progress) = (&parts.platform, &parts.progress);
        let notifying = Notifying {
            progress,
            notifications: RolloutNotifications::new(RolloutNotifier::new(&config, |name| {
                std::env::var(name).ok()
            })),
        };
        let driver = Driver {
            reporter: &notifying,
            ..parts.driver()
        };
        if let Some(line) = &started_emulator {
            progress.event(&Event::Notice {
                message: line.clone(),
            });
        }
        let delivered_image = std::sync::Arc::new(Mutex::new(None));
        let rollout = {
            let (id, config, root) = (id.clone(), config.clone(), workspace.root.clone());
            let settings = RequestSettings {
                env: args.env.iter().cloned().collect(),
                lock_wait: args.lock_wait.get(),
                ready_timeout: args.ready_timeout.get(),
                accept_warnings: args.preflight.accept_warnings,
            };
            let seen = std::sync::Arc::clone(&delivered_image);
            Box::new(move |delivered: Delivered| {
                *seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(delivered.clone());
                delivered.request(config, id, &root, settings)
            })
        };
        let plan = Plan {
            target: kind,
            target_name: id.to_string(),
            repository: config.image.repository.clone(),
            skip_preflight: args.skip_preflight,
            image,
            service: config.name.clone(),
            rollout,
            traffic: (traffic_rate > 0).then(|| SyntheticTraffic {
                rate: traffic_rate,
                platform: std::sync::Arc::new(platform.clone()),
            }),
        };
        let checklist = super::preflight::ChecklistDrawing::new(context);
        let mut build = super::build::CliReporter::new(context);
        let mut preparation = RepositoryPreparation {
            config: &config,
            root: &workspace.root,
            platform,
            id: &id,
            options: args.preflight.options(context),
            acceptance: args.preflight.acceptance(context),
            prompter: parts.prompter.as_ref(),
            checklist: &checklist,
            image: &mut build,
        };
        let result = pipeline::deploy(plan, &mut preparation, &driver, ctrl_c())
            .await
            .map_err(pipeline_error);
        progress.finish();
        // The outcome is notified now that the rollout's traffic writes are done; notifications
        // never change the outcome: what was not delivered is a note.
        let warnings = notifying
            .notifications
            .finish(|started| {
                let result = result.as_ref().map_err(|error| format!("{error:#}"));
                RolloutNotice::ending(started, result)
            })
            .await;
        let mut report = match result {
            Ok(report) => report,
            Err(error) => {
                for warning in warnings {
                    context.output.message(format!("warning: {warning}"));
                }
                return Err(error);
            }
        };
        report.notes.extend(warnings);
        if let Some(line) = started_emulator {
            report.notes.insert(0, line);
        }
        let status = exit_status(&report.outcome);
        let delivered = delivered_image
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok(Deployed {
            report,
            status,
            delivered,
            regions: Vec::new(),
        })
    }
}

/// A deploy that ended without a report, as the command line says it: a failed delivery as
/// the image module's own error (the hints read the `DeliveryError` in the chain, as after
/// `deployer build`), a rollout that could not start with its cause below it (exit 3 reads a
/// held lock in the chain).
fn pipeline_error(error: PipelineError) -> anyhow::Error {
    match error {
        PipelineError::Image(error) => error.into(),
        error @ PipelineError::RolloutNotStarted { .. } => error.into(),
    }
}

pub(super) fn print_report(context: &Context, report: &RolloutReport) -> anyhow::Result<()> {
    if context.output.is_json() {
        return context.output.json(report);
    }
    for note in &report.notes {
        context.output.message(format!("note: {note}"));
    }
    context.output.data(outcome_text(report));
    Ok(())
}

/// The final report's lines: the outcome, why, and what to do next.
pub(super) fn outcome_text(report: &RolloutReport) -> String {
    match &report.outcome {
        Outcome::Promoted { revision } => {
            format!("PROMOTED: `{revision}` serves 100% of `{}`", report.service)
        }
        Outcome::StoppedBeforeTraffic { reason } => match &report.stable {
            Some(stable) => format!(
                "STOPPED before any traffic moved: {reason}\n`{stable}` serves as before"
            ),
            None => format!(
                "STOPPED before any traffic moved: {reason}\n`{}` is unchanged",
                report.service
            ),
        },
        Outcome::RolledBack { reason, revision } => {
            format!("ROLLED BACK: `{revision}` serves 100% again\nwhy: {reason}")
        }
        Outcome::Held { reason } => format!(
            "HELD: the split was left as it is for a human — {reason}\nnext: `deployer rollback {}` or `deployer status {}`",
            report.service, report.service
        ),
        Outcome::RollbackFailed { reason } => format!(
            "ROLLBACK FAILED — a human must act now: {reason}\nnext: `deployer rollback {}` (one write, no analysis)",
            report.service
        ),
    }
}

/// In GitHub Actions: an `::error` for every outcome but a promotion, a `::warning` for a
/// promotion that skipped the preflight checklist (the checklist annotates its own results,
/// accepted warnings included), and the outcome with its notes as the step summary.
fn github_actions_output(
    args: &DeployArgs,
    report: &RolloutReport,
) -> (Vec<super::github_actions::Annotation>, String) {
    use super::github_actions::{cell, Annotation};
    let title = format!("Deploy: {}", report.service);
    let text = outcome_text(report);
    let mut annotations = Vec::new();
    match report.outcome {
        Outcome::Promoted { .. } if args.skip_preflight => annotations.push(Annotation::warning(
            title,
            format!("{text} without the preflight checklist (`--skip-preflight`)"),
        )),
        Outcome::Promoted { .. } => {}
        _ => annotations.push(Annotation::error(title, text.clone())),
    }
    let mut lines = text.lines();
    let mut summary = format!(
        "## Deploy `{}`: {}\n\n",
        cell(&report.service),
        cell(lines.next().unwrap_or_default())
    );
    for line in lines {
        summary.push_str(&format!("{}\n\n", cell(line)));
    }
    for note in &report.notes {
        summary.push_str(&format!("- note: {}\n", cell(note)));
    }
    summary.push('\n');
    (annotations, summary)
}
