//! `deployer history [SERVICE…]`: the release history read from the platform — every rollout,
//! emergency rollback, promotion and abort, newest first — and, with `--stats`, the delivery
//! metrics computed from it (docs/ROLLOUT.md, "Release history").

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use super::{block_on, target, Context};
use crate::{
    config::ServiceConfig,
    exit::ExitStatus,
    platform::{read_service, RetryPolicy},
    release::{
        metrics::{delivery, DeliveryMetrics, Spread},
        Entry, History,
    },
    repo::{short_commit, RECORDED_COMMIT_CHARS},
};

/// `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Services [default: every service].
    pub services: Vec<String>,
    /// Only events this recent (`30d`, `12h`) [default: everything kept; `30d` with `--stats`].
    #[arg(long, value_parser = super::health::parse_since, value_name = "DURATION")]
    pub since: Option<std::time::Duration>,
    /// At most this many events (newest first).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Delivery metrics instead of the events: deployment frequency, change failure rate,
    /// time to restore, lead time for changes — per service and for all of them.
    #[arg(long)]
    pub stats: bool,
}

/// The default window of `--stats`.
const STATS_WINDOW: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

#[derive(Debug, Serialize)]
struct Event<'a> {
    service: &'a str,
    #[serde(flatten)]
    entry: &'a Entry,
    duration_seconds: i64,
}

#[derive(Debug, Serialize)]
struct StatsOutput<'a> {
    services: Vec<ServiceStats<'a>>,
    all: DeliveryMetrics,
}

#[derive(Debug, Serialize)]
struct ServiceStats<'a> {
    service: &'a str,
    #[serde(flatten)]
    metrics: DeliveryMetrics,
}

/// One service's delivery metrics for `health --format json`, or why they could not be read.
#[derive(Debug, Serialize)]
pub(super) struct ServiceDelivery {
    service: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<DeliveryMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The delivery metrics of `configs` over the [`STATS_WINDOW`] before `now` (one read each).
pub(super) async fn delivery_of(
    context: &Context,
    configs: &[ServiceConfig],
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<ServiceDelivery>> {
    let since = now - chrono::Duration::from_std(STATS_WINDOW)?;
    let read = read_histories(context, configs).await;
    Ok(configs
        .iter()
        .zip(read)
        .map(|(config, history)| match history {
            Ok(history) => ServiceDelivery {
                service: config.name.clone(),
                metrics: Some(delivery(&[&history], since, now)),
                error: None,
            },
            Err(error) => ServiceDelivery {
                service: config.name.clone(),
                metrics: None,
                error: Some(error),
            },
        })
        .collect())
}

/// Reads each service's release history (one read per service, concurrently). A service that
/// cannot be read is an error line, not the end of the command.
async fn read_histories(
    context: &Context,
    configs: &[ServiceConfig],
) -> Vec<Result<History, String>> {
    let reads = configs.iter().map(|config| async move {
        let id = target::service_id(config).map_err(|error| error.message)?;
        let platform = target::connect(config, context.endpoint.as_deref())
            .await
            .map_err(|error| format!("{error:#}"))?;
        match read_service(&platform, &id, RetryPolicy::default()).await {
            Ok(Some(snapshot)) => History::of(&snapshot).map_err(|error| error.to_string()),
            Ok(None) => Ok(History::default()),
            Err(error) => Err(error.to_string()),
        }
    });
    futures::future::join_all(reads).await
}

/// Runs `history`.
pub fn history(context: &Context, args: &HistoryArgs) -> anyhow::Result<ExitStatus> {
    let (_, configs) = super::drift::load(context, &args.services)?;
    let now = Utc::now();
    let window = args.since.or(args.stats.then_some(STATS_WINDOW));
    let since = match window {
        Some(window) => {
            now - chrono::Duration::from_std(window).context("`--since` is too long")?
        }
        None => DateTime::<Utc>::MIN_UTC,
    };
    block_on(async {
        let read = read_histories(context, &configs).await;
        let mut failed = false;
        let mut histories = Vec::new();
        for (config, history) in configs.iter().zip(read) {
            match history {
                Ok(history) => histories.push((config.name.as_str(), history)),
                Err(error) => {
                    failed = true;
                    context.output.message(format!(
                        "{}: cannot read the history of `{}`: {error}",
                        context.output.error_label(),
                        config.name
                    ));
                }
            }
        }
        if args.stats {
            stats(context, &histories, since, now)?;
        } else {
            events(context, &histories, since, args.limit)?;
        }
        Ok(if failed {
            ExitStatus::Failure
        } else {
            ExitStatus::Success
        })
    })
}

fn events(
    context: &Context,
    histories: &[(&str, History)],
    since: DateTime<Utc>,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let mut events: Vec<Event<'_>> = histories
        .iter()
        .flat_map(|(service, history)| {
            history.newest_first().map(move |entry| Event {
                service,
                entry,
                duration_seconds: entry.duration().num_seconds(),
            })
        })
        .filter(|event| event.entry.at >= since)
        .collect();
    events.sort_by_key(|event| std::cmp::Reverse(event.entry.at));
    events.truncate(limit.unwrap_or(usize::MAX));
    if context.output.is_json() {
        return context.output.json(&events);
    }
    if events.is_empty() {
        context.output.message(
            "no release history recorded (deployer records every rollout and rollback on the service)",
        );
        return Ok(());
    }
    let several = histories.len() > 1;
    for event in &events {
        context.output.data(line(event, several));
    }
    for (service, history) in histories {
        if history.compacted > 0 {
            context.output.message(format!(
                "`{service}`: {} older event(s) were compacted away (their verdicts are kept)",
                history.compacted
            ));
        }
    }
    Ok(())
}

/// `2026-12-06 10:02 UTC  rolled back  hello-c23a17c-rhf  c23a17c6ab4c  alice@laptop  1m 12s  — why`.
fn line(event: &Event<'_>, several: bool) -> String {
    let entry = event.entry;
    let revision = match entry.kind {
        crate::release::Kind::EmergencyRollback => format!(
            "{} → {}",
            if entry.from.is_empty() {
                "-".to_string()
            } else {
                entry.from.join(", ")
            },
            entry.revision
        ),
        _ => entry.revision.clone(),
    };
    let commit: String = entry
        .commit
        .as_deref()
        .map(|commit| short_commit(commit, RECORDED_COMMIT_CHARS).to_string())
        .unwrap_or_else(|| "-".into());
    let duration = std::time::Duration::from_secs(event.duration_seconds.max(0) as u64);
    let mut text = format!(
        "{}  {}{:<26}  {:<30}  {:<12}  {}  {}",
        entry.at.format("%Y-%m-%d %H:%M UTC"),
        if several {
            format!("{:<24} ", event.service)
        } else {
            String::new()
        },
        entry.outcome.label(),
        revision,
        commit,
        entry.actor.who,
        humantime::format_duration(duration)
    );
    if let Some(run) = &entry.actor.run {
        text.push_str(&format!("  {run}"));
    }
    if let Some(why) = &entry.why {
        text.push_str(&format!("\n    why: {}", crate::untrusted::escaped(why)));
    }
    text
}

fn stats(
    context: &Context,
    histories: &[(&str, History)],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let services: Vec<ServiceStats<'_>> = histories
        .iter()
        .map(|(service, history)| ServiceStats {
            service,
            metrics: delivery(&[history], since, now),
        })
        .collect();
    let all = delivery(
        &histories
            .iter()
            .map(|(_, history)| history)
            .collect::<Vec<_>>(),
        since,
        now,
    );
    if context.output.is_json() {
        return context.output.json(&StatsOutput { services, all });
    }
    context.output.data(format!(
        "delivery metrics from {} to {}",
        since.format("%Y-%m-%d %H:%M UTC"),
        now.format("%Y-%m-%d %H:%M UTC")
    ));
    context.output.data(format!(
        "{:<24}  {:>8}  {:>8}  {:>10}  {:>12}  {:>18}  {:>14}",
        "service",
        "rollouts",
        "deploys",
        "deploys/day",
        "change fail",
        "time to restore",
        "lead time"
    ));
    let row = |name: &str, metrics: &DeliveryMetrics| {
        format!(
            "{:<24}  {:>8}  {:>8}  {:>10.2}  {:>12}  {:>18}  {:>14}{}",
            name,
            metrics.rollouts,
            metrics.deployments,
            metrics.deployments_per_day,
            metrics
                .change_failure_rate
                .map(|rate| format!(
                    "{:.0}% ({}/{})",
                    rate * 100.0,
                    metrics.failed,
                    metrics.rollouts
                ))
                .unwrap_or_else(|| "-".into()),
            spread(&metrics.time_to_restore),
            spread(&metrics.lead_time),
            metrics
                .covered_since
                .map(|covered| format!("  (history kept since {})", covered.format("%Y-%m-%d")))
                .unwrap_or_default()
        )
    };
    for service in &services {
        context.output.data(row(service.service, &service.metrics));
    }
    if services.len() > 1 {
        context.output.data(row("all services", &all));
    }
    Ok(())
}

/// "median 4m (n=3)", or "-".
fn spread(spread: &Spread) -> String {
    match spread.median_seconds {
        Some(median) => format!(
            "{} (n={})",
            humantime::format_duration(std::time::Duration::from_secs(median.max(0) as u64)),
            spread.count
        ),
        None => "-".into(),
    }
}
