//! `deployer health [--service S...]`: the unified health check. Every `health`-gated check of
//! every service, one "Deployment Drift" check per service, and one "Architecture" check per
//! service that declares event wiring (`deployer graph --check` for it), run concurrently (at most
//! `--concurrency` at once, each within its own timeout), as the dashboard or `--format json`.
//! Exit 0 PASS, 1 WARNING, 2 CRITICAL (see [`crate::health`]).

use std::{fmt::Write as _, time::Instant};

use futures::StreamExt as _;
use serde::Serialize;

use super::{
    check::{self, ProviderFlags},
    drift::{self as drift_cli, SourceArg},
    github_actions::{self, Annotation},
    graph as graph_cli,
    output::color_enabled_on_stdout,
    Context, UsageError,
};
use crate::{
    checks::{self, format_value, CheckContext, Providers, Status},
    config::{CheckConfig, Gate, ServiceConfig},
    exit::ExitStatus,
    health::{
        self,
        alerts::{self, Alert, Kind, Level},
        record::RunRecord,
        store::{self, Location, Store},
        HealthCheck, Score, Verdict,
    },
    notify::slack::Webhook,
    wiring::Declared,
};

/// `health`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HealthArgs {
    #[command(subcommand)]
    pub command: Option<HealthCommand>,
    /// Only these services [default: every service].
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Checks run at once, across all services (they wait on providers, not on this
    /// machine: the default runs 50 services × 6 checks in one round).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Where the drift's history comes from: the local repository, the GitHub API, or `auto`
    /// (the repository when there is one; in a container without a checkout, GitHub).
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub source: SourceArg,
    /// Do not fetch `main` for the drift check (compare with it as last fetched).
    #[arg(long)]
    pub no_fetch: bool,
    /// Do not compare the declared event wiring with the live project (no "Architecture"
    /// results; Pub/Sub and Cloud Scheduler are not read).
    #[arg(long)]
    pub no_architecture: bool,
    /// Do not send Slack alerts (the lifecycle state is left as it is).
    #[arg(long)]
    pub no_alerts: bool,
    /// Where the run history and the alert lifecycle are kept: `file` (the state directory)
    /// or `bigquery:PROJECT.DATASET.TABLE` (created when missing; the dataset must exist).
    #[arg(long, env = "DEPLOYER_HEALTH_HISTORY", value_name = "STORE", value_parser = parse_location)]
    pub history: Option<Location>,
    /// The schedule this run is part of (`6h`: runs at 00:00, 06:00, ... UTC, as
    /// `0 */6 * * *`): shows the next check on the dashboard and in JSON. Must divide a day.
    #[arg(long, env = "DEPLOYER_HEALTH_EVERY", value_name = "INTERVAL", value_parser = parse_every)]
    pub every: Option<std::time::Duration>,
    #[command(flatten)]
    pub providers: ProviderFlags,
}

/// `health` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum HealthCommand {
    /// Each check's trend from the recorded runs (a sparkline on a terminal, the series in
    /// JSON).
    History(HistoryArgs),
}

/// `health history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only runs this recent (`7d`, `12h`).
    #[arg(long, default_value = "7d", value_parser = parse_since)]
    pub since: std::time::Duration,
    /// Only the checks of this name (case-insensitive).
    #[arg(long, value_name = "NAME")]
    pub check: Option<String>,
    /// Where the runs were kept: `file` or `bigquery:PROJECT.DATASET.TABLE` (as `health
    /// --history`).
    #[arg(long, env = "DEPLOYER_HEALTH_HISTORY", value_name = "STORE", value_parser = parse_location)]
    pub history: Option<Location>,
    /// BigQuery REST endpoint of a `bigquery:` store [default: Google's].
    #[arg(long, env = "DEPLOYER_BIGQUERY_ENDPOINT", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub bigquery_endpoint: Option<String>,
}

fn parse_location(text: &str) -> Result<Location, String> {
    Location::parse(text)
}

/// A schedule's interval: at least a minute, and a divisor of a day, so that the runs fall at
/// the same times every day (as a cron schedule's do).
fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let every = humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not an interval (`6h`, `30m`): {error}"))?;
    let seconds = every.as_secs();
    if every.subsec_nanos() != 0 || seconds < 60 || 86_400 % seconds != 0 {
        return Err(format!(
            "`{text}` does not divide a day into whole runs (use e.g. `6h`, `4h`, `30m`, `24h`)"
        ));
    }
    Ok(every)
}

/// The next run of a schedule `every` after `now`: the next multiple of `every` since
/// midnight UTC (`6h`: 00:00, 06:00, 12:00, 18:00), as Cloud Scheduler's `0 */6 * * *` runs.
pub(super) fn next_check(
    now: chrono::DateTime<chrono::Utc>,
    every: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    let every = i64::try_from(every.as_secs()).unwrap_or(86_400).max(1);
    let seconds = now.timestamp();
    let next = (seconds.div_euclid(every) + 1) * every;
    chrono::DateTime::from_timestamp(next, 0).unwrap_or(now)
}

pub(super) fn parse_since(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a duration (`7d`, `12h`): {error}"))?;
    if duration > std::time::Duration::from_secs(10 * 365 * 86_400) {
        return Err(format!("`{text}` is more than 10 years"));
    }
    Ok(duration)
}

/// The JSON document.
#[derive(Debug, Serialize)]
struct HealthOutput<'a> {
    generated_at: chrono::DateTime<chrono::Utc>,
    score: &'a Score,
    exit_code: u8,
    checks: &'a [HealthCheck],
    alerts: &'a AlertReport,
    schedule: &'a Schedule,
    /// Each service's delivery metrics over the last 30 days, from its release history.
    delivery: &'a [super::history::ServiceDelivery],
}

/// When checks ran and run: this one, the one before it (from the history store), and the
/// next one when the run is scheduled (`--every`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Schedule {
    /// This run.
    pub last_check: chrono::DateTime<chrono::Utc>,
    /// The run recorded before this one, if any.
    pub previous_check: Option<PreviousCheck>,
    /// The schedule's interval (`6h`), when known.
    pub every: Option<String>,
    /// The next scheduled run, when `every` is known.
    pub next_check: Option<chrono::DateTime<chrono::Utc>>,
    /// The history store (`bigquery:P.D.T` or the file).
    pub history: String,
}

/// The run before this one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct PreviousCheck {
    pub at: chrono::DateTime<chrono::Utc>,
    pub verdict: Verdict,
    pub score: f64,
}

/// What happened to this run's alerts.
#[derive(Debug, Default, Serialize)]
struct AlertReport {
    /// The alerts of the run (new, worse, repeat, resolved).
    planned: Vec<PlannedAlert>,
    /// One per webhook.
    deliveries: Vec<Delivery>,
    /// Alerts with no webhook variable set.
    not_sent: usize,
}

#[derive(Debug, Serialize)]
struct PlannedAlert {
    service: String,
    check: String,
    kind: Kind,
    level: Level,
}

#[derive(Debug, Serialize)]
struct Delivery {
    /// The variable holding the webhook (never its value).
    variable: String,
    alerts: usize,
    delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One service's checks, ready to run.
struct Prepared {
    config: ServiceConfig,
    context: CheckContext,
    providers: Providers,
    /// Why the service's checks cannot run (the platform unreadable for a `{revision}`).
    blocked: Option<String>,
}

async fn prepare(context: &Context, config: ServiceConfig, providers: Providers) -> Prepared {
    let mut check_context = CheckContext::default();
    let mut blocked = None;
    match super::target::service_id(&config) {
        Ok(id) => {
            check_context.service = id.name.clone();
            check_context.project = id.project.clone();
            check_context.region = id.region.clone();
            let selected = checks::checks_for_gate(&config, Gate::Health);
            if check::needs_platform(&selected) {
                if let Err(error) =
                    check::read_revisions(&config, &id, context, &mut check_context).await
                {
                    blocked = Some(format!("{error:#}"));
                }
            }
        }
        Err(error) => blocked = Some(format!("{error:#}")),
    }
    Prepared {
        config,
        context: check_context,
        providers,
        blocked,
    }
}

/// An ERROR result for a check that could not be run.
fn not_run(config: &ServiceConfig, check: &CheckConfig, why: &str) -> HealthCheck {
    HealthCheck {
        service: config.name.clone(),
        check: check.name.clone(),
        provider: check.provider().as_str(),
        status: Status::Error,
        severity: checks::Severity::Warning,
        value: None,
        unit: check.unit,
        thresholds: Some(checks::Thresholds {
            comparison: check.comparison.symbol(),
            warn: check.warn,
            critical: check.critical,
        }),
        query: check.source.query_text().to_string(),
        elapsed_ms: 0,
        link: None,
        runbook: health::runbook_link(config),
        message: Some(why.to_string()),
    }
}

/// Runs every check and every drift measurement: the results, each service's checks then its
/// drift, in the order of the services.
pub(super) async fn run_all(
    context: &Context,
    args: &HealthArgs,
    root: &std::path::Path,
    configs: Vec<ServiceConfig>,
) -> Vec<HealthCheck> {
    let checks_future = async {
        // One set of providers (one connection pool each) per distinct set of endpoints, not
        // per service: building a client costs far more than a request.
        let mut shared: Vec<(checks::ProviderEndpoints, Providers)> = Vec::new();
        let mut services = Vec::new();
        for config in configs.iter().cloned() {
            let endpoints = check::endpoints(&config, &args.providers, context);
            let providers = match shared.iter().find(|(known, _)| *known == endpoints) {
                Some((_, providers)) => providers.clone(),
                None => {
                    let providers = Providers::new(endpoints.clone());
                    shared.push((endpoints, providers.clone()));
                    providers
                }
            };
            services.push((config, providers));
        }
        let prepared = futures::future::join_all(
            services
                .into_iter()
                .map(|(config, providers)| prepare(context, config, providers)),
        )
        .await;
        let jobs: Vec<(usize, &Prepared, &CheckConfig)> = prepared
            .iter()
            .enumerate()
            .flat_map(|(index, service)| {
                checks::checks_for_gate(&service.config, Gate::Health)
                    .into_iter()
                    .map(move |check| (index, service, check))
            })
            .collect();
        // Unordered: a slot is free as soon as any check ends (in order, one slow check would
        // hold every slot behind it); the results are put back in order below.
        let mut results = futures::stream::iter(jobs.into_iter().enumerate())
            .map(|(position, (index, service, check))| async move {
                let result = match &service.blocked {
                    Some(why) => not_run(&service.config, check, why),
                    None => HealthCheck::from_result(
                        &service.config,
                        &checks::run_check(check, &service.context, &service.providers).await,
                    ),
                };
                (position, index, result)
            })
            .buffer_unordered(usize::from(args.concurrency))
            .collect::<Vec<_>>()
            .await;
        results.sort_by_key(|(position, _, _)| *position);
        results
            .into_iter()
            .map(|(_, index, result)| (index, result))
            .collect::<Vec<_>>()
    };
    let drift_future = async {
        let started = Instant::now();
        let measured =
            drift_cli::measure(context, root, configs.clone(), args.source, !args.no_fetch).await;
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                let check = match &measured {
                    Ok((_, report)) => match report.services.get(index) {
                        Some(drift) => HealthCheck::from_drift(config, drift, elapsed),
                        None => drift_error(config, "no drift measured", elapsed),
                    },
                    Err(error) => drift_error(config, &super::short_cause(error), elapsed),
                };
                (index, check)
            })
            .collect::<Vec<_>>()
    };
    let architecture_future = async {
        if args.no_architecture {
            return Vec::new();
        }
        // Who consumes a topic is known only from every service's file, whatever `--service`
        // selects: a subscription another service declares is no bypass.
        let all = if args.services.is_empty() {
            configs.clone()
        } else {
            graph_cli::load_all(context, &[]).unwrap_or_else(|_| configs.clone())
        };
        let declared = Declared::from_configs(&all);
        let wired: Vec<(usize, &ServiceConfig)> = configs
            .iter()
            .enumerate()
            .filter(|(_, config)| {
                declared
                    .service(&config.name)
                    .is_some_and(|wiring| wiring.declares_anything())
            })
            .collect();
        if wired.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let findings = graph_cli::check_live(context, &all, &declared).await;
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        configs
            .iter()
            .enumerate()
            .filter(|(index, config)| {
                wired.iter().any(|(wired_index, _)| wired_index == index)
                    || findings
                        .iter()
                        .any(|finding| finding.services.contains(&config.name))
            })
            .map(|(index, config)| {
                (
                    index,
                    HealthCheck::from_architecture(config, &findings, elapsed),
                )
            })
            .collect::<Vec<_>>()
    };
    let (mut results, (drifts, architecture)) = futures::future::join(
        checks_future,
        futures::future::join(drift_future, architecture_future),
    )
    .await;
    results.extend(drifts);
    results.extend(architecture);
    // Stable: each service's checks keep their order, its drift and its architecture come
    // after them.
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, check)| check).collect()
}

fn drift_error(config: &ServiceConfig, why: &str, elapsed_ms: u64) -> HealthCheck {
    HealthCheck {
        service: config.name.clone(),
        check: health::DRIFT_CHECK.to_string(),
        provider: "drift",
        status: Status::Error,
        severity: checks::Severity::Warning,
        value: None,
        unit: crate::config::Unit::Count,
        thresholds: None,
        query: format!("serving revisions of `{}` vs main", config.name),
        elapsed_ms,
        link: None,
        runbook: health::runbook_link(config),
        message: Some(format!("drift unknown: {why}")),
    }
}

/// Runs `health`.
pub fn run(context: &Context, args: &HealthArgs) -> anyhow::Result<ExitStatus> {
    if let Some(HealthCommand::History(history_args)) = &args.command {
        return history_command(context, history_args);
    }
    let (root, configs) = drift_cli::load(context, &args.services)?;
    let generated_at = chrono::Utc::now();
    let store = Store::open(
        args.history.as_ref().unwrap_or(&Location::File),
        args.providers.bigquery_endpoint.as_deref(),
    );
    let (results, report, schedule) = super::block_on(async {
        let results = run_all(context, args, &root, configs.clone()).await;
        if results.is_empty() {
            return Err(UsageError {
                message: "no check to run".into(),
            }
            .into());
        }
        let score = health::score(&results);
        let previous = match store.latest().await {
            Ok(previous) => previous,
            Err(error) => {
                context
                    .output
                    .message(format!("warning: the previous run is unknown: {error}"));
                None
            }
        };
        let report = if args.no_alerts {
            AlertReport::default()
        } else {
            alert(context, &store, &configs, &results, &score, generated_at).await
        };
        if let Err(error) = store
            .append(&RunRecord::new(generated_at, &score, &results))
            .await
        {
            context
                .output
                .message(format!("warning: the run is not recorded: {error}"));
        }
        let schedule = Schedule {
            last_check: generated_at,
            previous_check: previous.map(|run| PreviousCheck {
                at: run.at,
                verdict: run.verdict,
                score: run.score,
            }),
            every: args
                .every
                .map(|every| humantime::format_duration(every).to_string()),
            next_check: args.every.map(|every| next_check(generated_at, every)),
            history: store.describe(),
        };
        Ok((results, report, schedule))
    })?;
    let score = health::score(&results);
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|value| value == "true") {
        github_actions(context, &results, &score);
    }
    let failed = report.deliveries.iter().any(|delivery| !delivery.delivered);
    let code = score.verdict.exit_code_with(failed);
    if context.output.is_json() {
        let delivery =
            super::block_on(super::history::delivery_of(context, &configs, generated_at))?;
        context.output.json(&HealthOutput {
            generated_at,
            score: &score,
            exit_code: code,
            checks: &results,
            alerts: &report,
            schedule: &schedule,
            delivery: &delivery,
        })?;
    } else {
        let paint = Painter {
            color: color_enabled_on_stdout(),
        };
        context
            .output
            .data(render(&results, &score, &schedule, &paint));
    }
    super::say_credentials_once(
        context,
        results.iter().filter_map(|check| check.message.as_deref()),
    );
    Ok(match code {
        0 => exit_for(Verdict::Pass),
        1 => exit_for(Verdict::Warning),
        _ => exit_for(Verdict::Critical),
    })
}

/// The annotation of a check that did not pass: `::error` for CRITICAL, `::warning` otherwise.
fn annotation(check: &HealthCheck) -> Option<Annotation> {
    let title = format!("Health: {} / {}", check.service, check.check);
    let message = format!(
        "{} {} (runbook: {})",
        check.status.label(),
        detail(check),
        check.runbook
    );
    match check.status {
        Status::Pass => None,
        Status::Critical => Some(Annotation::error(title, message)),
        _ => Some(Annotation::warning(title, message)),
    }
}

/// The Markdown of `$GITHUB_STEP_SUMMARY`.
fn step_summary(results: &[HealthCheck], score: &Score) -> String {
    let mut text = format!(
        "## Health: {} ({:.0}/100, {} of {} passed)\n\n",
        score.verdict.label(),
        score.percent.floor(),
        score.passed,
        score.total
    );
    text.push_str(&github_actions::table(
        &["service", "check", "status", "value"],
        results.iter().map(|check| {
            [
                check.service.clone(),
                check.check.clone(),
                check.status.label().to_string(),
                detail(check),
            ]
        }),
    ));
    text
}

/// Annotations (stderr with JSON, so stdout stays one document) and the step summary.
fn github_actions(context: &Context, results: &[HealthCheck], score: &Score) {
    let annotations: Vec<Annotation> = results.iter().filter_map(annotation).collect();
    github_actions::publish(context, &annotations, &step_summary(results, score));
}

fn variable_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// Plans this run's alerts against the stored lifecycle, sends one digest per webhook, and
/// keeps the state of what was delivered. Reports every step on stderr (never a URL).
async fn alert(
    context: &Context,
    store: &Store,
    configs: &[ServiceConfig],
    results: &[HealthCheck],
    score: &Score,
    now: chrono::DateTime<chrono::Utc>,
) -> AlertReport {
    let mut report = AlertReport::default();
    let previous = match store.load_alerts().await {
        Ok(state) => state,
        Err(error) => {
            context.output.message(format!(
                "warning: {error}: alerts start over (every failing check alerts as new)"
            ));
            Default::default()
        }
    };
    let config_of = |service: &str| configs.iter().find(|config| config.name == service);
    let (planned, next) = alerts::plan(&previous, results, now, |check| {
        config_of(&check.service)
            .and_then(|config| config.notifications.repeat_interval)
            .map(|interval| interval.get())
            .unwrap_or(alerts::DEFAULT_REPEAT_INTERVAL)
    });
    report.planned = planned
        .iter()
        .map(|alert| PlannedAlert {
            service: alert.check.service.clone(),
            check: alert.check.check.clone(),
            kind: alert.kind,
            level: alert.level,
        })
        .collect();
    let repositories = configs
        .iter()
        .filter_map(|config| {
            let repository = config.notifications.github_repository.as_ref()?;
            let server = std::env::var("GITHUB_SERVER_URL")
                .ok()
                .filter(|value| !value.trim().is_empty())
                .unwrap_or_else(|| "https://github.com".into());
            Some((
                config.name.clone(),
                format!("{}/{repository}/blob/main", server.trim_end_matches('/')),
            ))
        })
        .collect();
    let (destinations, unrouted) = alerts::route(
        planned,
        |service| {
            config_of(service)
                .map(|config| config.notifications.slack_webhook_env.clone())
                .unwrap_or_else(|| "SLACK_WEBHOOK_URL".into())
        },
        variable_set,
    );
    report.not_sent = unrouted.len();
    if !unrouted.is_empty() {
        let mut variables: Vec<String> = unrouted
            .iter()
            .filter_map(|alert| config_of(&alert.check.service))
            .map(|config| format!("`{}`", config.notifications.slack_webhook_env))
            .collect();
        variables.dedup();
        context.output.message(format!(
            "warning: {} alert(s) not sent: no Slack webhook is set ({})",
            unrouted.len(),
            variables.join(", ")
        ));
    }
    let mut undelivered: Vec<&Alert> = unrouted.iter().collect();
    for destination in &destinations {
        let message = alerts::digest(&grouped_by_cause(&destination.alerts), score, &repositories);
        let url = std::env::var(&destination.variable).unwrap_or_default();
        let sent = match Webhook::new(&destination.variable, &url) {
            Ok(webhook) => webhook.post(&message).await,
            Err(error) => Err(error),
        };
        match &sent {
            Ok(()) => context.output.message(format!(
                "Slack: sent {} alert(s) through the webhook in `{}`",
                destination.alerts.len(),
                destination.variable
            )),
            Err(error) => {
                context.output.message(format!("error: {error}"));
                undelivered.extend(destination.alerts.iter());
            }
        }
        report.deliveries.push(Delivery {
            variable: destination.variable.clone(),
            alerts: destination.alerts.len(),
            delivered: sent.is_ok(),
            error: sent.err().map(|error| error.to_string()),
        });
    }
    let kept = alerts::settle(&previous, next, &undelivered);
    if kept != previous {
        if let Err(error) = store.save_alerts(&kept, now).await {
            context
                .output
                .message(format!("error: the alert state is not saved: {error}"));
            report.deliveries.push(Delivery {
                variable: "state".into(),
                alerts: 0,
                delivered: false,
                error: Some(error.to_string()),
            });
        }
    }
    report
}

#[derive(Debug, Serialize)]
struct HistoryOutput {
    since: chrono::DateTime<chrono::Utc>,
    runs: usize,
    skipped_lines: usize,
    series: std::collections::BTreeMap<String, Vec<store::Point>>,
}

/// `health history`.
fn history_command(context: &Context, args: &HistoryArgs) -> anyhow::Result<ExitStatus> {
    let store = Store::open(
        args.history.as_ref().unwrap_or(&Location::File),
        args.bigquery_endpoint.as_deref(),
    );
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(args.since).unwrap_or(chrono::Duration::MAX);
    let (runs, skipped) = super::block_on(async { Ok(store.read(since).await?) })?;
    let series = store::series(&runs, args.check.as_deref());
    if skipped > 0 {
        context.output.message(format!(
            "warning: {skipped} unreadable record(s) of `{}` skipped",
            store.describe()
        ));
    }
    if context.output.is_json() {
        context.output.json(&HistoryOutput {
            since,
            runs: runs.len(),
            skipped_lines: skipped,
            series,
        })?;
        return Ok(ExitStatus::Success);
    }
    if series.is_empty() {
        context.output.data(format!(
            "no recorded run{} since {} (`{}`)",
            args.check
                .as_ref()
                .map(|name| format!(" of `{name}`"))
                .unwrap_or_default(),
            since.format("%Y-%m-%d %H:%M UTC"),
            store.describe()
        ));
        return Ok(ExitStatus::Success);
    }
    let sparklines = color_enabled_on_stdout();
    let width = series
        .keys()
        .map(|key| key.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = format!(
        "{} run(s) since {}\n",
        runs.len(),
        since.format("%Y-%m-%d %H:%M UTC")
    );
    for (key, points) in &series {
        let passed = points
            .iter()
            .filter(|point| point.status == Status::Pass)
            .count();
        let last = points
            .last()
            .map(|point| point.status.label())
            .unwrap_or("-");
        let trend = if sparklines {
            store::sparkline(&points.iter().map(|point| point.value).collect::<Vec<_>>())
        } else {
            points
                .iter()
                .map(|point| match point.value {
                    Some(value) => format!("{value}"),
                    None => point.status.label().to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            text,
            "{key}{}  {trend}  last {last}, {passed}/{} passed",
            " ".repeat(width - key.chars().count()),
            points.len()
        );
    }
    context.output.data(text.trim_end());
    Ok(ExitStatus::Success)
}

/// 0 PASS, 1 WARNING, 2 CRITICAL (the team's convention, shared with `drift`).
fn exit_for(verdict: Verdict) -> ExitStatus {
    match verdict {
        Verdict::Pass => ExitStatus::Success,
        Verdict::Warning => ExitStatus::Failure,
        Verdict::Critical => ExitStatus::Critical,
    }
}

/// Colour for the dashboard's labels (only on a terminal, never with `NO_COLOR`).
pub(super) struct Painter {
    pub color: bool,
}

impl Painter {
    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A status or verdict label: green PASS, yellow WARN(ING), red CRITICAL, magenta others.
    pub fn label(&self, label: &str) -> String {
        let code = match label {
            "PASS" => "1;32",
            "WARN" | "WARNING" => "1;33",
            "CRITICAL" => "1;31",
            _ => "1;35",
        };
        self.paint(label, code)
    }
}

/// `≥90%`: the threshold a value must hold to pass.
fn threshold_text(check: &HealthCheck) -> Option<String> {
    let thresholds = check.thresholds?;
    let symbol = match thresholds.comparison {
        ">=" => "≥",
        "<=" => "≤",
        other => other,
    };
    Some(format!(
        "{symbol}{}",
        format_value(thresholds.warn, check.unit)
    ))
}

/// The detail line: `92.4% (threshold: ≥90%)`, or why there is no value.
fn detail(check: &HealthCheck) -> String {
    match (check.value, check.provider) {
        (Some(value), "drift") => format!(
            "{} undeployed commit{} touching the service: {}",
            format_value(value, check.unit),
            if value == 1.0 { "" } else { "s" },
            check.message.as_deref().unwrap_or_default()
        ),
        (Some(value), _) => match threshold_text(check) {
            Some(threshold) => format!(
                "{} (threshold: {threshold})",
                format_value(value, check.unit)
            ),
            None => format_value(value, check.unit),
        },
        (None, _) => check.message.clone().unwrap_or_default(),
    }
}

/// The dashboard of the team's script: the score, one block per check, the score line.
pub(super) fn render(
    results: &[HealthCheck],
    score: &Score,
    schedule: &Schedule,
    paint: &Painter,
) -> String {
    let label = |text: &str| paint.label(text);
    let mut text = format!(
        "System Health · Score: {:.0}/100 ({})\n\n",
        score.percent.floor(),
        label(score.verdict.label())
    );
    let total = results.len();
    for (index, result) in results.iter().enumerate() {
        text.push_str(&check::title_line(
            index,
            total,
            &result.check,
            result.status.label(),
            &label,
        ));
        let _ = writeln!(text, "      {}", detail(result));
        let _ = writeln!(
            text,
            "      {} · {} · {} ms",
            result.service, result.provider, result.elapsed_ms
        );
        if !result.passed() {
            if result.value.is_some() && result.provider != "drift" {
                if let Some(message) = &result.message {
                    let _ = writeln!(text, "      {message}");
                }
            }
            if let Some(link) = &result.link {
                let _ = writeln!(text, "      {link}");
            }
            let _ = writeln!(text, "      runbook: {}", result.runbook);
        }
        text.push('\n');
    }
    let count = |status: Status| results.iter().filter(|r| r.status == status).count();
    let _ = writeln!(
        text,
        "Score: {:.0}/100 ({}): {} of {} passed · {} warning, {} critical, {} no data, {} error",
        score.percent.floor(),
        label(score.verdict.label()),
        score.passed,
        score.total,
        count(Status::Warn),
        count(Status::Critical),
        count(Status::NoData),
        count(Status::Error),
    );
    let minute = |at: &chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M UTC").to_string();
    let _ = write!(text, "Last Check: {}", minute(&schedule.last_check));
    if let Some(previous) = &schedule.previous_check {
        let _ = write!(
            text,
            " · previous {} ({})",
            minute(&previous.at),
            label(previous.verdict.label())
        );
    }
    if let (Some(next), Some(every)) = (&schedule.next_check, &schedule.every) {
        let _ = write!(text, "\nNext Check: {} (every {every})", minute(next));
    }
    text
}

/// The cause an alert without a value shares with others: `no Google credentials` whatever
/// the provider said around it, else its whole message.
fn cause(alert: &Alert) -> Option<String> {
    if alert.check.value.is_some() {
        return None;
    }
    let message = alert.check.message.as_deref()?;
    Some(if message.contains(checks::NO_CREDENTIALS) {
        format!(
            "{} (`gcloud auth application-default login`, or `GOOGLE_APPLICATION_CREDENTIALS` in CI)",
            checks::NO_CREDENTIALS
        )
    } else {
        message.to_string()
    })
}

/// `alerts` with those that share one cause (same kind and level, no value, one message —
/// six checks without Google credentials) merged into one line naming the checks: the digest
/// used to drown in six copies of one sentence.
fn grouped_by_cause(alerts: &[Alert]) -> Vec<Alert> {
    let mut grouped: Vec<(Option<String>, Vec<&Alert>)> = Vec::new();
    for alert in alerts {
        let key = cause(alert);
        let same = grouped.iter_mut().find(|(other, members)| {
            key.is_some()
                && *other == key
                && members[0].kind == alert.kind
                && members[0].level == alert.level
        });
        match same {
            Some((_, members)) => members.push(alert),
            None => grouped.push((key, vec![alert])),
        }
    }
    grouped
        .into_iter()
        .map(|(key, members)| match (key, members.as_slice()) {
            (Some(cause), [first, _, ..]) => {
                let mut merged = (*first).clone();
                let mut services: Vec<&str> = members
                    .iter()
                    .map(|alert| alert.check.service.as_str())
                    .collect();
                services.dedup();
                merged.check.service = services.join(", ");
                let mut names: Vec<&str> = Vec::new();
                for alert in &members {
                    if !names.contains(&alert.check.check.as_str()) {
                        names.push(&alert.check.check);
                    }
                }
                // One check of several services (`Architecture` of two) keeps its name.
                merged.check.check = match names.as_slice() {
                    [only] => (*only).to_string(),
                    _ => format!("{} checks ({})", members.len(), names.join(", ")),
                };
                merged.check.message = Some(cause);
                merged
            }
            (_, members) => members[0].clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` and `health` printed the missing-credentials sentence once per check and per
    /// service: six times in one Slack digest. Results that share one cause are one line.
    #[test]
    fn the_digest_groups_results_that_share_one_cause() {
        let alert = |service: &str, name: &str, message: &str| Alert {
            kind: alerts::Kind::New,
            level: alerts::Level::Warning,
            check: HealthCheck {
                service: service.into(),
                check: name.into(),
                message: Some(message.into()),
                ..sample(Status::Error, None)
            },
        };
        let alerts = vec![
            alert("a", "Coverage", "`bigquery` is unavailable: cannot create the BigQuery client: no Google credentials"),
            alert("a", "Deployment Drift", "drift unknown: the platform cannot be read: no Google credentials"),
            alert("b", "Latency", "`cloud-monitoring` is unavailable: no Google credentials"),
            alert("b", "Freshness", "`prometheus` is unavailable: connection refused"),
        ];
        let grouped = grouped_by_cause(&alerts);
        assert_eq!(grouped.len(), 2, "{grouped:#?}");
        assert_eq!(grouped[0].check.service, "a, b");
        assert_eq!(
            grouped[0].check.check,
            "3 checks (Coverage, Deployment Drift, Latency)"
        );
        assert!(grouped[0]
            .check
            .message
            .as_deref()
            .unwrap()
            .starts_with("no Google credentials"));
        assert_eq!(grouped[1], alerts[3]);
    }

    fn sample(status: Status, value: Option<f64>) -> HealthCheck {
        HealthCheck {
            service: "phase4-processors".into(),
            check: "Vegas Line Coverage".into(),
            provider: "bigquery",
            status,
            severity: match status {
                Status::Pass => checks::Severity::Ok,
                Status::Critical => checks::Severity::Critical,
                _ => checks::Severity::Warning,
            },
            value,
            unit: crate::config::Unit::Percent,
            thresholds: Some(checks::Thresholds {
                comparison: ">=",
                warn: 90.0,
                critical: 70.0,
            }),
            query: "SELECT 1".into(),
            elapsed_ms: 12,
            link: Some("https://console.cloud.google.com/bigquery".into()),
            runbook: "runbooks/phase4-processors.md#troubleshoot".into(),
            message: None,
        }
    }

    #[test]
    fn the_dashboard_reads_like_the_teams_script() {
        let results = vec![
            sample(Status::Pass, Some(92.4)),
            sample(Status::Critical, Some(44.2)),
        ];
        let score = health::score(&results);
        let at = chrono::DateTime::parse_from_rfc3339("2026-02-02T18:00:00Z")
            .unwrap()
            .to_utc();
        let schedule = Schedule {
            last_check: at,
            previous_check: None,
            every: None,
            next_check: None,
            history: "history.jsonl".into(),
        };
        let text = render(&results, &score, &schedule, &Painter { color: false });
        assert!(
            text.contains("[1/2] Vegas Line Coverage ...................... PASS\n      92.4% (threshold: ≥90%)\n"),
            "{text}"
        );
        assert!(text.contains("44.2% (threshold: ≥90%)"), "{text}");
        assert!(
            text.contains("runbook: runbooks/phase4-processors.md#troubleshoot"),
            "{text}"
        );
        assert!(
            text.contains("Score: 50/100 (CRITICAL): 1 of 2 passed"),
            "{text}"
        );
        assert!(text.contains("Last Check: 2026-02-02 18:00 UTC"), "{text}");
        assert!(!text.contains('\x1b'), "no colour unless asked: {text}");
        assert!(!text.contains("Next Check"), "not scheduled: {text}");
        let coloured = render(&results, &score, &schedule, &Painter { color: true });
        assert!(coloured.contains("\x1b[1;32mPASS\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[1;31mCRITICAL\x1b[0m"), "{coloured}");
    }

    #[test]
    fn github_actions_annotate_what_did_not_pass() {
        assert_eq!(annotation(&sample(Status::Pass, Some(92.4))), None);
        assert_eq!(
            annotation(&sample(Status::Critical, Some(44.2)))
                .unwrap()
                .command(),
            "::error title=Health%3A phase4-processors / Vegas Line Coverage::CRITICAL 44.2%25 (threshold: ≥90%25) (runbook: runbooks/phase4-processors.md#troubleshoot)"
        );
        assert!(annotation(&sample(Status::Warn, Some(80.0)))
            .unwrap()
            .command()
            .starts_with("::warning "));
        let results = vec![sample(Status::Critical, Some(44.2))];
        let summary = step_summary(&results, &health::score(&results));
        assert!(
            summary.starts_with("## Health: CRITICAL (0/100, 0 of 1 passed)"),
            "{summary}"
        );
        assert!(
            summary.contains(
                "| phase4-processors | Vegas Line Coverage | CRITICAL | 44.2% (threshold: ≥90%) |"
            ),
            "{summary}"
        );
    }

    #[test]
    fn a_scheduled_run_shows_the_previous_and_the_next_check() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let every = parse_every("6h").unwrap();
        // As `0 */6 * * *` runs: the next multiple of 6 h since midnight UTC.
        assert_eq!(
            next_check(at("2026-02-02T18:00:07Z"), every),
            at("2026-02-03T00:00:00Z")
        );
        assert_eq!(
            next_check(at("2026-02-02T14:23:00Z"), every),
            at("2026-02-02T18:00:00Z")
        );
        assert_eq!(
            next_check(at("2026-02-02T18:00:00Z"), every),
            at("2026-02-03T00:00:00Z")
        );
        assert_eq!(
            next_check(at("2026-02-02T10:10:00Z"), parse_every("30m").unwrap()),
            at("2026-02-02T10:30:00Z")
        );
        for bad in ["5h", "7d", "10s", "7m", "soon"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
        let results = vec![sample(Status::Pass, Some(92.4))];
        let score = health::score(&results);
        let schedule = Schedule {
            last_check: at("2026-02-02T18:00:07Z"),
            previous_check: Some(PreviousCheck {
                at: at("2026-02-02T12:00:05Z"),
                verdict: Verdict::Critical,
                score: 33.3,
            }),
            every: Some("6h".into()),
            next_check: Some(next_check(at("2026-02-02T18:00:07Z"), every)),
            history: "bigquery:p.d.t".into(),
        };
        let text = render(&results, &score, &schedule, &Painter { color: false });
        assert!(
            text.ends_with(
                "Last Check: 2026-02-02 18:00 UTC · previous 2026-02-02 12:00 UTC (CRITICAL)\nNext Check: 2026-02-03 00:00 UTC (every 6h)"
            ),
            "{text}"
        );
    }

    #[test]
    fn no_value_shows_why() {
        let mut check = sample(Status::NoData, None);
        check.message = Some("no row".into());
        assert_eq!(detail(&check), "no row");
        check.thresholds.as_mut().unwrap().comparison = "<=";
        check.value = Some(3.0);
        check.unit = crate::config::Unit::Count;
        assert_eq!(detail(&check), "3 (threshold: ≤90)");
    }
}
