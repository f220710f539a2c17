//! `deployer status SERVICE`: revisions, split, commits, rollout in progress, lock.

use clap::Args;
use serde::Serialize;

use super::{block_on, target, Context};
use crate::{
    exit::ExitStatus,
    platform::{read_revisions, read_service, RevisionSnapshot, ServiceSnapshot},
    release::{Entry, History, Kind},
    repo::{short_commit, RECORDED_COMMIT_CHARS},
    rollout::{
        journal::{Journal, LocalJournal},
        lock::Lock,
    },
};

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The service.
    pub service: String,
    /// Follow the rollout running on the service (started anywhere): its phase, step and split
    /// as they change, read from the platform, until it ends; the exit code is then its
    /// outcome's, as `deploy`'s (0 promoted, 3 stopped, 4 rolled back, 5 rollback failed,
    /// 6 held).
    #[arg(long)]
    pub watch: bool,
    /// How often `--watch` reads the service.
    #[arg(long, value_name = "DURATION", default_value = "2s", requires = "watch", value_parser = super::args::duration_in(super::args::WATCH_INTERVAL))]
    pub every: crate::config::HumanDuration,
}

/// `status --watch`: follows the rollout until it ends and exits by its outcome.
async fn watch(
    context: &Context,
    platform: &dyn crate::platform::Platform,
    id: &crate::platform::ServiceId,
    every: std::time::Duration,
) -> anyhow::Result<ExitStatus> {
    use crate::rollout::{events::Outcome, machine::Phase, watch};
    let end = watch::follow(platform, id, every, |update| {
        let journal = &update.journal;
        let split = update
            .split
            .iter()
            .map(|(revision, percent)| format!("`{revision}` {percent}%"))
            .collect::<Vec<_>>()
            .join(", ");
        if context.output.is_json() {
            let _ = context.output.json(&serde_json::json!({
                "rollout": journal.id,
                "phase": journal.phase(),
                "percent": journal.state.percent,
                "split": update.split,
                "updated": journal.updated,
            }));
        } else {
            context.output.data(format!(
                "{}  rollout `{}` {:?} at {}% ({} → {})  split: {split}",
                journal.updated.format("%H:%M:%S UTC"),
                journal.id,
                journal.phase(),
                journal.state.percent,
                journal.stable.as_deref().unwrap_or("-"),
                journal.canary
            ));
        }
    })
    .await?;
    if !context.output.is_json() {
        context.output.data(match Outcome::of(&end) {
            Outcome::Promoted { revision } => format!("PROMOTED: `{revision}` serves 100%"),
            Outcome::StoppedBeforeTraffic { reason } => {
                format!("STOPPED before any traffic moved: {reason}")
            }
            Outcome::RolledBack { reason, revision } => {
                format!("ROLLED BACK: `{revision}` serves 100% again\nwhy: {reason}")
            }
            Outcome::Held { reason } => format!("HELD for a human: {reason}"),
            Outcome::RollbackFailed { reason } => {
                format!("ROLLBACK FAILED — a human must act now: {reason}")
            }
        });
    }
    Ok(match end.phase() {
        Phase::Promoted | Phase::Aborted => ExitStatus::Success,
        Phase::RolledBack => ExitStatus::RolledBack,
        Phase::Stopped => ExitStatus::StoppedBeforeTraffic,
        Phase::Held => ExitStatus::Held,
        Phase::RollbackFailed => ExitStatus::RollbackFailed,
        // `follow` returns only finished journals, or a replaced one's last state.
        Phase::Verifying | Phase::Validating | Phase::Canary | Phase::Monitoring => {
            ExitStatus::Failure
        }
    })
}

#[derive(Debug, Serialize)]
struct StatusOutput {
    service: ServiceSnapshot,
    revisions: Vec<RevisionSnapshot>,
    rollout: Option<Journal>,
    lock: Option<Lock>,
    /// The release history's newest event (a rollout's end, an emergency rollback, ...).
    last_event: Option<Entry>,
}

/// Runs `status`. When the platform cannot be read, the local journal copy is shown.
/// A multi-region service (without `--region`) has a status per region, the canary region
/// first: one JSON object `{service, regions: [{region, ...}]}`, the text blocks one after
/// another; the exit code is 1 when a region is not deployed.
pub fn status(context: &Context, args: &StatusArgs) -> anyhow::Result<ExitStatus> {
    let (_, mut regions) = context.service_regions(&args.service)?;
    if regions.len() > 1 {
        if args.watch {
            return Err(super::UsageError {
                message: format!(
                    "`status --watch` follows one rollout: add `--region REGION` (one of {})",
                    regions
                        .iter()
                        .map(|(_, id)| id.region.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            .into());
        }
        return block_on(async {
            let mut worst = ExitStatus::Success;
            let mut outputs = Vec::new();
            for (config, id) in regions {
                let region = id.region.clone();
                match status_region(context, &config, &id).await? {
                    Some(output) => outputs.push(RegionStatus { region, output }),
                    None => worst = ExitStatus::Failure,
                }
            }
            if context.output.is_json() {
                context.output.json(&serde_json::json!({
                    "service": args.service,
                    "regions": outputs,
                }))?;
            } else {
                let blocks: Vec<String> = outputs
                    .iter()
                    .map(|status| {
                        format!("region     {}\n{}", status.region, render(&status.output))
                    })
                    .collect();
                context.output.data(blocks.join("\n\n"));
            }
            Ok(worst)
        });
    }
    let Some((config, id)) = regions.pop() else {
        return Ok(ExitStatus::Failure);
    };
    block_on(async {
        if args.watch {
            let platform = target::connect(&config, context.endpoint.as_deref()).await?;
            return watch(context, &platform, &id, args.every.get()).await;
        }
        let Some(output) = status_region(context, &config, &id).await? else {
            return Ok(ExitStatus::Failure);
        };
        if context.output.is_json() {
            context.output.json(&output)?;
        } else {
            context.output.data(render(&output));
        }
        Ok(ExitStatus::Success)
    })
}

/// One region's status in a multi-region service's.
#[derive(Debug, Serialize)]
struct RegionStatus {
    region: String,
    #[serde(flatten)]
    output: StatusOutput,
}

/// The status of a service in one region; `None` (said on stderr) when it is not deployed
/// there. When the platform cannot be read, the local journal copy is shown.
async fn status_region(
    context: &Context,
    config: &crate::config::ServiceConfig,
    id: &crate::platform::ServiceId,
) -> anyhow::Result<Option<StatusOutput>> {
    {
        let platform = target::connect(config, context.endpoint.as_deref()).await?;
        let snapshot = match read_service(&platform, id, Default::default()).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => {
                context.output.message(format!(
                    "`{}` is not deployed yet (`{id}` does not exist)",
                    config.name
                ));
                return Ok(None);
            }
            Err(error) => {
                if let Some(journal) = LocalJournal::from_environment().load(id) {
                    context.output.message(format!(
                        "the platform cannot be read ({error}); last rollout recorded locally: `{}` {:?} at {}% ({})",
                        journal.id, journal.state.phase, journal.state.percent, journal.updated
                    ));
                }
                return Err(error.into());
            }
        };
        let revisions = read_revisions(&platform, id, Default::default()).await?;
        let output = StatusOutput {
            last_event: History::of(&snapshot)
                .ok()
                .and_then(|history| history.last().cloned()),
            rollout: Journal::of(&snapshot),
            lock: Lock::of(&snapshot),
            service: snapshot,
            revisions,
        };
        Ok(Some(output))
    }
}

fn commit_of(revisions: &[RevisionSnapshot], name: &str) -> String {
    revisions
        .iter()
        .find(|revision| revision.name == name)
        .and_then(|revision| revision.labels.get("deployer-commit"))
        .map(|commit| short_commit(commit, RECORDED_COMMIT_CHARS).to_string())
        .unwrap_or_else(|| "-".into())
}

fn render(output: &StatusOutput) -> String {
    let service = &output.service;
    let mut lines = vec![
        format!("service    {}", service.id),
        format!("url        {}", service.uri),
        format!(
            "ready      {}{}",
            if service.ready { "yes" } else { "no" },
            service
                .failure
                .as_ref()
                .map(|failure| format!(" — {failure}"))
                .unwrap_or_default()
        ),
        format!(
            "latest     created `{}`, ready `{}`",
            service.latest_created_revision, service.latest_ready_revision
        ),
    ];
    let mut traffic: Vec<String> = service
        .traffic_statuses
        .iter()
        .map(|status| {
            format!(
                "{:>3}%  {}  commit {}{}",
                status.percent,
                status.revision,
                commit_of(&output.revisions, &status.revision),
                status
                    .tag
                    .as_ref()
                    .map(|tag| format!(
                        "  tag {tag}{}",
                        status
                            .uri
                            .as_ref()
                            .map(|uri| format!(" {uri}"))
                            .unwrap_or_default()
                    ))
                    .unwrap_or_default()
            )
        })
        .collect();
    if service.traffic_follows_latest() {
        traffic
            .push("       (follows \"latest\": the next ready revision gets this traffic)".into());
    }
    lines.push(format!("traffic    {}", traffic.join("\n           ")));
    lines.push(match &output.rollout {
        Some(journal) if !journal.phase().is_terminal() => format!(
            "rollout    IN PROGRESS `{}`: {:?} at {}% ({} → {}), owner {}, updated {}",
            journal.id,
            journal.state.phase,
            journal.state.percent,
            journal.stable.as_deref().unwrap_or("-"),
            journal.canary,
            journal.owner,
            journal.updated.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        Some(journal) => format!(
            "rollout    last `{}`: {:?}{} ({})",
            journal.id,
            journal.state.phase,
            journal
                .state
                .reason
                .as_ref()
                .map(|reason| format!(" — {reason}"))
                .unwrap_or_default(),
            journal.updated.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "rollout    none recorded".into(),
    });
    if let Some(event) = &output.last_event {
        let what = match event.kind {
            Kind::EmergencyRollback => format!(
                "emergency rollback {} → `{}`",
                event
                    .from
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                event.revision
            ),
            _ => format!("`{}` {}", event.revision, event.outcome.label()),
        };
        lines.push(format!(
            "last event {what} by {} at {}{} (`deployer history` for more)",
            event.actor.who,
            event.at.format("%Y-%m-%d %H:%M:%S UTC"),
            event
                .why
                .as_ref()
                .map(|why| format!(" — {}", crate::untrusted::escaped(why)))
                .unwrap_or_default()
        ));
    }
    lines.push(match &output.lock {
        Some(lock) => format!("lock       held by {}", lock.describe()),
        None => "lock       free".into(),
    });
    lines.push("revisions".into());
    for revision in &output.revisions {
        lines.push(format!(
            "  {}  {}  commit {}{}",
            revision.name,
            if revision.ready { "ready " } else { "FAILED" },
            revision
                .labels
                .get("deployer-commit")
                .map(|commit| short_commit(commit, RECORDED_COMMIT_CHARS).to_string())
                .unwrap_or_else(|| "-".into()),
            revision
                .failure
                .as_ref()
                .map(|failure| format!("  ({failure})"))
                .unwrap_or_default()
        ));
    }
    lines.join("\n")
}
