//! `deployer rollback SERVICE [--to REVISION]` and `deployer unlock SERVICE`.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::{block_on, target, Context, UsageError};
use crate::{
    exit::ExitStatus,
    rollout::{
        lock,
        rollback::{self, RollbackError},
    },
};

/// `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The service.
    pub service: String,
    /// The revision to put 100% of traffic on [default: the stable revision of an unfinished
    /// rollout, else the newest Ready revision older than the one serving].
    #[arg(long, value_name = "REVISION")]
    pub to: Option<String>,
}

/// `unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The service whose rollout lock to break.
    pub service: String,
}

#[derive(Debug, Serialize)]
struct RollbackOutput<'a> {
    service: &'a str,
    from: &'a [(String, u8)],
    to: &'a str,
    why: &'a str,
    rolled_back: bool,
    elapsed_ms: u128,
}

/// Runs `rollback`: one read, one write. Non-interactive runs proceed without asking (the
/// command is the decision); interactive runs confirm unless `--yes`.
pub fn rollback(context: &Context, args: &RollbackArgs) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let (_, config, id) = context.service(&args.service)?;
    block_on(async {
        let platform = target::connect_with_deadline(
            &config,
            context.endpoint.as_deref(),
            target::ROLLBACK_OPERATION_DEADLINE,
        )
        .await?;
        let (snapshot, plan) = match rollback::prepare(&platform, &id, args.to.as_deref()).await {
            Ok(prepared) => prepared,
            Err(
                error @ (RollbackError::UnknownRevision { .. } | RollbackError::NotReady { .. }),
            ) => {
                // `--to` is echoed (twice): escaped, as everything the user typed.
                return Err(UsageError {
                    message: crate::untrusted::escaped(&format!(
                        "cannot roll back to `--to {}`: {error}",
                        args.to.as_deref().unwrap_or_default()
                    ))
                    .into_owned(),
                }
                .into());
            }
            Err(error) => return Err(error).context(format!("cannot roll back `{}`", config.name)),
        };
        let from = plan
            .from
            .iter()
            .map(|(revision, percent)| format!("`{revision}` {percent}%"))
            .collect::<Vec<_>>()
            .join(", ");
        if rollback::nothing_to_do(&snapshot, &plan) {
            context.output.message(format!(
                "`{}` already serves 100% of `{}`: nothing to do",
                plan.to, config.name
            ));
            if context.output.is_json() {
                context.output.json(&RollbackOutput {
                    service: &config.name,
                    from: &plan.from,
                    to: &plan.to,
                    why: &plan.why,
                    rolled_back: false,
                    elapsed_ms: started.elapsed().as_millis(),
                })?;
            }
            return Ok(ExitStatus::Success);
        }
        context.output.message(format!(
            "rollback `{}`: now {from}; 100% → `{}` ({})",
            config.name, plan.to, plan.why
        ));
        let prompter = super::prompt::prompter(context);
        if context.interactive
            && !context.assume_yes
            && !prompter.confirm(&format!("Move 100% of traffic to `{}`?", plan.to), false)
        {
            context
                .output
                .message("rollback cancelled; nothing changed");
            return Ok(ExitStatus::Failure);
        }
        let policy = rollback::RollbackPolicy::default();
        context.output.message(format!(
            "waiting for Cloud Run to move 100% of `{}` to `{}` (each try up to {}, retrying for up to {})",
            config.name,
            plan.to,
            humantime::format_duration(target::ROLLBACK_OPERATION_DEADLINE),
            humantime::format_duration(policy.budget)
        ));
        let after = rollback::execute_with(&platform, snapshot, &plan, None, policy)
            .await
            .with_context(|| format!("rollback of `{}` failed: a human must act", config.name))
            .map_err(|error| error.context(RollbackFailed))?;
        let elapsed = started.elapsed();
        if context.output.is_json() {
            context.output.json(&RollbackOutput {
                service: &config.name,
                from: &plan.from,
                to: &plan.to,
                why: &plan.why,
                rolled_back: true,
                elapsed_ms: elapsed.as_millis(),
            })?;
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
        Ok(ExitStatus::Success)
    })
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
