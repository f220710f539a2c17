//! `deployer promote SERVICE` and `deployer abort SERVICE`: a human's decision on a held
//! rollout (`rollout::held`).

use std::time::Duration;

use clap::Args;

use super::{block_on, deploy::RolloutParts, Context, UsageError};
use crate::{
    config::{HumanDuration, Target},
    exit::ExitStatus,
    notify::rollout::{RolloutEvent, RolloutNotice, RolloutNotifier},
    rollout::{
        events::{Event, Outcome, RolloutReporter},
        held::{held_journal, HeldError},
        machine::Manual,
        ports::DeployRequest,
    },
    synthetic_load::TrafficGenerator,
};

/// `promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The service whose held rollout to promote.
    pub service: String,
    /// Why, recorded with who in the journal and the release history.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Promote without the post-deploy monitor (recorded as `promoted-unmonitored`: the
    /// revision is then not known-good for `rollback`).
    #[arg(long)]
    pub skip_monitor: bool,
    /// Requests per second of synthetic traffic sent to a `local` service during the monitor
    /// (0: none). Refused for Cloud Run targets.
    #[arg(long, value_name = "RATE", value_parser = super::args::traffic_rate)]
    pub traffic: Option<u32>,
    #[command(flatten)]
    pub providers: super::check::ProviderFlags,
}

/// `abort`.
#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The service whose held rollout to abort (100% back on its stable revision).
    pub service: String,
    /// Why, recorded with who in the journal and the release history.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// The longest `--reason`, in characters.
const MAX_REASON_CHARS: usize = 400;

/// A `--reason` (of `promote`, `abort`, `rollback --force`): trimmed, one line of at most
/// [`MAX_REASON_CHARS`] characters; blank is none.
pub(super) fn valid_reason(reason: Option<&str>) -> Result<Option<String>, UsageError> {
    match reason.map(str::trim).filter(|reason| !reason.is_empty()) {
        Some(reason)
            if reason.chars().count() > MAX_REASON_CHARS
                || reason.chars().any(char::is_control) =>
        {
            Err(UsageError {
                message: format!(
                    "`--reason` must be one line of at most {MAX_REASON_CHARS} characters"
                ),
            })
        }
        reason => Ok(reason.map(str::to_string)),
    }
}

/// Runs `promote`.
pub fn promote(context: &Context, args: &PromoteArgs) -> anyhow::Result<ExitStatus> {
    let reason = valid_reason(args.reason.as_deref())?;
    decide(
        context,
        &args.service,
        Manual::Promote,
        reason,
        args.skip_monitor,
        args.traffic,
        &args.providers,
    )
}

/// Runs `abort`.
pub fn abort(context: &Context, args: &AbortArgs) -> anyhow::Result<ExitStatus> {
    let reason = valid_reason(args.reason.as_deref())?;
    decide(
        context,
        &args.service,
        Manual::Abort,
        reason,
        false,
        Some(0),
        &super::check::ProviderFlags::default(),
    )
}

fn decide(
    context: &Context,
    service: &str,
    manual: Manual,
    reason: Option<String>,
    skip_monitor: bool,
    traffic: Option<u32>,
    providers: &super::check::ProviderFlags,
) -> anyhow::Result<ExitStatus> {
    let (_, config, id) = context.service(service)?;
    let rate = match (&config.target, traffic) {
        (Target::CloudRun { .. }, Some(rate)) if rate > 0 => {
            return Err(UsageError {
                message: format!(
                    "`--traffic {rate}` is only for `local` targets: deployer never sends synthetic load to Cloud Run"
                ),
            }
            .into())
        }
        (Target::Local { .. }, rate) => rate.unwrap_or(super::deploy::DEFAULT_LOCAL_TRAFFIC),
        _ => 0,
    };
    let mut policy = config.rollout.clone();
    if skip_monitor {
        policy.monitor_duration = HumanDuration(Duration::ZERO);
    }
    block_on(async {
        let parts = RolloutParts::connect(context, &config, &id, providers).await?;
        // Read once here to say what will happen (and refuse early); the driver reads again
        // under the lock.
        let snapshot = crate::platform::read_service(&parts.platform, &id, Default::default())
            .await?
            .ok_or_else(|| anyhow::anyhow!("service `{}` not found", config.name))?;
        let journal = match held_journal(&snapshot) {
            Ok(journal) => journal,
            Err(error) => {
                return Err(UsageError {
                    message: error.to_string(),
                }
                .into())
            }
        };
        let stable = journal.stable.clone().unwrap_or_default();
        let question = match manual {
            Manual::Promote => format!(
                "Promote `{}` (held at {}%: {}) to 100%{}?",
                journal.canary,
                journal.state.percent,
                journal.state.reason.as_deref().unwrap_or("held"),
                if skip_monitor {
                    ", without the monitor"
                } else {
                    ", then monitor it"
                }
            ),
            Manual::Abort => format!(
                "Abort the held rollout `{}`: 100% back on `{stable}`?",
                journal.id
            ),
        };
        context.output.message(question.trim_end_matches('?'));
        let prompter = super::prompt::prompter(context);
        if context.interactive && !context.assume_yes && !prompter.confirm(&question, false) {
            context.output.message("cancelled; nothing changed");
            return Ok(ExitStatus::Failure);
        }
        let request = DeployRequest {
            id: id.clone(),
            service_name: config.name.clone(),
            image: journal.image.clone(),
            commit: journal.commit.clone(),
            commit_time: journal.commit_time,
            dirty: None,
            run: config.run.clone(),
            env: Default::default(),
            policy,
            health: config.health.clone(),
            lock_wait: Duration::ZERO,
            ready_timeout: Duration::from_secs(120),
            accept_warnings: false,
        };
        let generator = (rate > 0 && manual == Manual::Promote).then(|| {
            let limit = crate::rollout::start::rollout_duration(&request.policy)
                + Duration::from_secs(300);
            parts.progress.event(&Event::Notice {
                message: format!(
                    "sending {rate} req/s of synthetic traffic to `{}` during the monitor (local target; `--traffic 0` turns it off)",
                    config.name
                ),
            });
            TrafficGenerator::start_for_service(
                std::sync::Arc::new(parts.platform.clone()),
                id.clone(),
                rate,
                limit,
            )
        });
        let driver = parts.driver();
        let result = driver
            .decide_held(&request, manual, reason, super::deploy::ctrl_c())
            .await;
        parts.progress.finish();
        let mut report = match result {
            Ok(report) => report,
            Err(HeldError::NotHeld(message)) => return Err(UsageError { message }.into()),
            Err(error) => {
                return Err(anyhow::Error::from(error).context(format!(
                    "could not {} the held rollout of `{}`",
                    match manual {
                        Manual::Promote => "promote",
                        Manual::Abort => "abort",
                    },
                    config.name
                )))
            }
        };
        if let Some(generator) = generator {
            report.notes.push(generator.stop().describe());
        }
        // The decision is carried out: tell the team (bounded; a failed send is a note).
        let notifier = RolloutNotifier::new(&config, |name| std::env::var(name).ok());
        let mut notice = RolloutNotice::of_report(&report);
        if manual == Manual::Abort && notice.event == RolloutEvent::RolledBack {
            notice.event = RolloutEvent::Aborted;
        }
        if notifier.wants(notice.event) {
            report.notes.extend(notifier.send(&notice).await);
        }
        super::deploy::print_report(context, &report)?;
        Ok(match (manual, &report.outcome) {
            (_, Outcome::Promoted { .. }) => ExitStatus::Success,
            // The abort was carried out: what the human asked for.
            (Manual::Abort, Outcome::RolledBack { .. }) => ExitStatus::Success,
            (Manual::Promote, Outcome::RolledBack { .. }) => ExitStatus::RolledBack,
            (_, Outcome::RollbackFailed { .. }) => ExitStatus::RollbackFailed,
            (_, Outcome::Held { .. }) => ExitStatus::Held,
            (_, Outcome::StoppedBeforeTraffic { .. }) => ExitStatus::StoppedBeforeTraffic,
        })
    })
}
