//! `deployer rollback SERVICE [--to REVISION]` and `deployer unlock SERVICE`.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::{block_on, held::valid_reason, target, Context, UsageError};
use crate::{
    exit::ExitStatus,
    notify::rollout::{RolloutEvent, RolloutNotice, RolloutNotifier},
    rollout::{
        lock,
        rollback::{self, RollbackError, Target},
    },
};

/// `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The service.
    pub service: String,
    /// The revision to put 100% of traffic on [default: the stable revision of an unfinished
    /// rollout, else the last known-good revision of the release history, else (with a
    /// warning) the newest Ready revision with no record older than the one serving].
    /// A revision recorded bad is refused unless `--force`.
    #[arg(long, value_name = "REVISION", conflicts_with = "to_commit")]
    pub to: Option<String>,
    /// Put 100% on the newest known-good revision of this commit (a full or short sha).
    #[arg(long, value_name = "SHA")]
    pub to_commit: Option<String>,
    /// With `--to`: accept a revision the release history records as bad (rolled back,
    /// stopped, aborted). Needs a `--reason` (asked for on a terminal).
    #[arg(long, requires = "to")]
    pub force: bool,
    /// Why, recorded in the release history (`deployer history`).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print the plan (from, to, why) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--to-commit` must look like a commit id: 4 to 40 hexadecimal digits.
fn valid_commit(text: &str) -> bool {
    (4..=40).contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// The reason to record: `--reason`, else asked for on a terminal when `required`. Exit 2
/// when required and nobody can be asked.
fn reason(
    context: &Context,
    args: &RollbackArgs,
    required: bool,
) -> Result<Option<String>, UsageError> {
    let reason = match valid_reason(args.reason.as_deref())? {
        Some(reason) => Some(reason),
        None if required && context.interactive => valid_reason(
            super::prompt::text(
                "Why roll back to a revision recorded bad? (recorded in the history)",
            )
            .as_deref(),
        )?,
        None => None,
    };
    if required && reason.is_none() {
        return Err(UsageError {
            message: "`--force` needs a `--reason`: why roll back to a revision recorded bad (it is recorded in the release history)".into(),
        });
    }
    Ok(reason)
}

/// `unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The service whose rollout lock to break.
    pub service: String,
}

#[derive(Debug, Serialize)]
struct RollbackOutput {
    service: String,
    /// The region, in a rollback of several regions.
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    from: Vec<(String, u8)>,
    to: String,
    why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    rolled_back: bool,
    elapsed_ms: u128,
}

/// Runs `rollback`: one read, one write. Non-interactive runs proceed without asking (the
/// command is the decision); interactive runs confirm unless `--yes`.
pub fn rollback(context: &Context, args: &RollbackArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    if let Some(commit) = args
        .to_commit
        .as_deref()
        .filter(|commit| !valid_commit(commit))
    {
        return Err(UsageError {
            message: crate::untrusted::escaped(&format!(
                "`--to-commit {commit}` is not a commit id: 4 to 40 hexadecimal digits"
            ))
            .into_owned(),
        }
        .into());
    }
    let (_, regions) = context.service_regions(&args.service)?;
    let several = regions.len() > 1;
    block_on(async {
        let mut worst = ExitStatus::Success;
        let mut outputs = Vec::new();
        for (config, id) in regions {
            if several {
                context.output.message(format!("region {}:", id.region));
            }
            let region = id.region.clone();
            let (status, output) =
                rollback_region(context, args, config, id, started, several).await?;
            if crate::fleet::severity(status) > crate::fleet::severity(worst) {
                worst = status;
            }
            outputs.extend(output.map(|output| RollbackOutput {
                region: several.then_some(region),
                ..output
            }));
        }
        if context.output.is_json() {
            match outputs.as_slice() {
                [one] if !several => context.output.json(one)?,
                _ => context.output.json(&serde_json::json!({
                    "service": args.service,
                    "regions": outputs,
                }))?,
            }
        }
        Ok(worst)
    })
}

/// The rollback of a service in one region (every region of a multi-region service in turn,
/// or the one `--region` picks): its JSON output, printed by the caller.
async fn rollback_region(
    context: &Context,
    args: &RollbackArgs,
    config: crate::config::ServiceConfig,
    id: crate::platform::ServiceId,
    started: Instant,
    several: bool,
) -> anyhow::Result<(ExitStatus, Option<RollbackOutput>)> {
    {
        let platform = target::connect_with_deadline(
            &config,
            context.endpoint.as_deref(),
            target::ROLLBACK_OPERATION_DEADLINE,
        )
        .await?;
        let target = match (&args.to, &args.to_commit) {
            (Some(name), _) => Target::Revision {
                name,
                force: args.force,
            },
            (None, Some(commit)) => Target::Commit(commit),
            (None, None) => Target::Automatic,
        };
        let (snapshot, mut plan) = match rollback::prepare(&platform, &id, target).await {
            Ok(prepared) => prepared,
            // A region a stopped wave never reached has nothing to roll back.
            Err(RollbackError::NoService(_)) if several => {
                context.output.message(format!(
                    "`{}` is not deployed in {}: nothing to roll back there",
                    config.name, id.region
                ));
                return Ok((ExitStatus::Success, None));
            }
            Err(
                error @ (RollbackError::UnknownRevision { .. }
                | RollbackError::NotReady { .. }
                | RollbackError::KnownBad { .. }
                | RollbackError::NoKnownGoodOfCommit { .. }),
            ) => {
                let flag = match (&args.to, &args.to_commit) {
                    (Some(to), _) => format!("--to {to}"),
                    (None, Some(commit)) => format!("--to-commit {commit}"),
                    (None, None) => String::new(),
                };
                let hint = if matches!(error, RollbackError::KnownBad { .. }) {
                    "\nhint: `deployer history` shows what happened; to roll back to it anyway, add `--force --reason \"...\"`"
                } else {
                    ""
                };
                // `--to` is echoed (twice): escaped, as everything the user typed.
                return Err(UsageError {
                    message: crate::untrusted::escaped(&format!(
                        "cannot roll back to `{flag}`: {error}"
                    ))
                    .into_owned()
                        + hint,
                }
                .into());
            }
            Err(error) => return Err(error).context(format!("cannot roll back `{}`", config.name)),
        };
        plan.reason = reason(context, args, plan.warning.is_some() && args.force)?;
        let from = plan
            .from
            .iter()
            .map(|(revision, percent)| format!("`{revision}` {percent}%"))
            .collect::<Vec<_>>()
            .join(", ");
        let output =
            |plan: &'_ rollback::RollbackPlan, rolled_back: bool, elapsed: std::time::Duration| {
                RollbackOutput {
                    service: config.name.clone(),
                    region: None,
                    from: plan.from.clone(),
                    to: plan.to.clone(),
                    why: plan.why.clone(),
                    warning: plan.warning.clone(),
                    rolled_back,
                    elapsed_ms: elapsed.as_millis(),
                }
            };
        if rollback::nothing_to_do(&snapshot, &plan) {
            context.output.message(format!(
                "`{}` already serves 100% of `{}`: nothing to do",
                plan.to, config.name
            ));
            return Ok((
                ExitStatus::Success,
                Some(output(&plan, false, started.elapsed())),
            ));
        }
        context.output.message(format!(
            "rollback `{}`: now {from}; 100% → `{}` ({})",
            config.name, plan.to, plan.why
        ));
        if let Some(warning) = &plan.warning {
            context.output.message(format!("warning: {warning}"));
        }
        if args.dry_run {
            context
                .output
                .message("dry run: nothing changed (run without `--dry-run` to roll back)");
            return Ok((
                ExitStatus::Success,
                Some(output(&plan, false, started.elapsed())),
            ));
        }
        let prompter = super::prompt::prompter(context);
        if context.interactive
            && !context.assume_yes
            && !prompter.confirm(&format!("Move 100% of traffic to `{}`?", plan.to), false)
        {
            context
                .output
                .message("rollback cancelled; nothing changed");
            return Ok((ExitStatus::Failure, None));
        }
        let policy = rollback::RollbackPolicy::default();
        context.output.message(format!(
            "waiting for Cloud Run to move 100% of `{}` to `{}` (each try up to {}, retrying for up to {})",
            config.name,
            plan.to,
            humantime::format_duration(target::ROLLBACK_OPERATION_DEADLINE),
            humantime::format_duration(policy.budget)
        ));
        let executed = rollback::execute_with(&platform, snapshot, &plan, None, policy).await;
        // The rollback's own time: the notification below is not part of it.
        let elapsed = started.elapsed();
        // After the write (or its failure): tell the team, bounded; never the outcome's judge.
        let notifier = RolloutNotifier::new(&config, |name| std::env::var(name).ok());
        let actor = crate::release::Actor::current();
        let notice = RolloutNotice {
            revision: Some(plan.to.clone()),
            commit: plan.commit.clone(),
            reason: Some(match &executed {
                Ok(_) => format!(
                    "emergency rollback by {}: {}",
                    actor.who,
                    plan.reason.as_deref().unwrap_or(&plan.why)
                ),
                Err(error) => format!("emergency rollback by {} failed: {error}", actor.who),
            }),
            ..RolloutNotice::new(
                if executed.is_ok() {
                    RolloutEvent::RolledBack
                } else {
                    RolloutEvent::RollbackFailed
                },
                &config.name,
            )
        };
        if notifier.wants(notice.event) {
            for warning in notifier.send(&notice).await {
                context.output.message(format!("note: {warning}"));
            }
        }
        let after = executed
            .with_context(|| format!("rollback of `{}` failed: a human must act", config.name))
            .map_err(|error| error.context(RollbackFailed))?;
        if context.output.is_json() {
            return Ok((ExitStatus::Success, Some(output(&plan, true, elapsed))));
        } else {
            let serving = after
                .serving()
                .iter()
                .map(|(revision, percent)| format!("`{revision}` {percent}%"))
                .collect::<Vec<_>>()
                .join(", ");
            context.output.data(format!(
                "rolled back `{}`: {serving} (in {} ms)",
                config.name,
                elapsed.as_millis()
            ));
        }
        Ok((ExitStatus::Success, None))
    }
}

/// Marks a failed rollback so that the exit code says "a human is needed".
#[derive(Debug, thiserror::Error)]
#[error("rollback failed")]
pub struct RollbackFailed;

/// Runs `unlock`.
pub fn unlock(context: &Context, args: &UnlockArgs) -> anyhow::Result<ExitStatus> {
    let (_, config, id) = context.service(&args.service)?;
    block_on(async {
        let platform = target::connect(&config, context.endpoint.as_deref()).await?;
        let snapshot = crate::platform::read_service(&platform, &id, Default::default())
            .await?
            .with_context(|| format!("service `{}` not found", config.name))?;
        let Some(held) = lock::Lock::of(&snapshot) else {
            context
                .output
                .message(format!("`{}` is not locked", config.name));
            return Ok(ExitStatus::Success);
        };
        context.output.message(format!(
            "`{}` is locked by {}",
            config.name,
            held.describe()
        ));
        if !context.interactive && !context.assume_yes {
            return Err(UsageError {
                message: "refusing to break a lock without confirmation: pass `--yes`".into(),
            }
            .into());
        }
        let prompter = super::prompt::prompter(context);
        if context.interactive
            && !context.assume_yes
            && !prompter.confirm(
                "Break this lock? Only do so if that rollout is dead (its process is gone).",
                false,
            )
        {
            context.output.message("lock kept");
            return Ok(ExitStatus::Failure);
        }
        match lock::break_lock(&platform, &id).await? {
            Some(broken) => context.output.data(format!(
                "broke the lock of `{}` held by {}",
                config.name,
                broken.describe()
            )),
            None => context
                .output
                .message(format!("`{}` is not locked", config.name)),
        }
        Ok(ExitStatus::Success)
    })
}
