//! [`run`]: one health run, from the service files to the recorded results. Every check of every
//! service, its drift and its architecture, concurrently ([`run_all`]); the score; the alert
//! cycle (plan against the stored lifecycle, route to webhooks, send one digest each, save what
//! was delivered); the run appended to the history. What the run reads outside (the platform,
//! the wiring, the drift) comes through a [`Probe`] the CLI implements; nothing here prints:
//! lines meant for people go to [`Probe::say`].

use std::{future::Future, time::Instant};

use futures::StreamExt as _;
use serde::Serialize;

use super::{
    alerts::{self, Alert, Kind, Level},
    record::RunRecord,
    shard::{all_results, missing_tasks, Shard, TaskRecord},
    store::Store,
    HealthCheck, Score, Verdict,
};
use crate::{
    checks::{self, CheckContext, ProviderEndpoints, Providers, Status},
    config::{CheckConfig, Gate, ServiceConfig},
    drift::DriftReport,
    notify::slack::Webhook,
    platform::ServiceId,
    wiring::{conformance::Finding, Declared},
};

/// What a health run reads through the CLI's adapters.
pub trait Probe: Sync {
    /// The providers' endpoints of a service's checks.
    fn endpoints(&self, config: &ServiceConfig) -> ProviderEndpoints;
    /// Where a service runs, or why that is unknown.
    fn service_id(&self, config: &ServiceConfig) -> Result<ServiceId, String>;
    /// Whether `checks` name a revision or a URL of the service (read from the platform).
    fn needs_platform(&self, checks: &[&CheckConfig]) -> bool;
    /// Fills the revisions and URLs of `context` from the platform.
    fn read_revisions<'a>(
        &'a self,
        config: &'a ServiceConfig,
        id: &'a ServiceId,
        context: &'a mut CheckContext,
    ) -> impl Future<Output = Result<(), String>> + 'a;
    /// The drift of `configs`, in their order; the error as results show it.
    fn drift(
        &self,
        configs: Vec<ServiceConfig>,
    ) -> impl Future<Output = Result<DriftReport, String>>;
    /// The differences between the declared wiring of `all` and the live project.
    fn architecture<'a>(
        &'a self,
        all: &'a [ServiceConfig],
        declared: &'a Declared,
    ) -> impl Future<Output = Vec<Finding>> + 'a;
    /// A line meant for people (stderr).
    fn say(&self, line: String);
}

/// How the run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Checks run at once, across all services.
    pub concurrency: usize,
    /// Every service of the workspace, to compare the declared wiring with the live project
    /// (who consumes a topic is known only from every file); `None`: no "Architecture" results.
    pub architecture: Option<Vec<ServiceConfig>>,
    /// Send the Slack alerts (and keep their lifecycle).
    pub alerts: bool,
    /// The schedule's interval, when the run is scheduled.
    pub every: Option<std::time::Duration>,
    /// This task, when the run is one of several tasks ([`super::shard`]).
    pub shard: Option<Shard>,
}

/// When checks ran and run: this one, the one before it (from the history store), and the
/// next one when the run is scheduled (`--every`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
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
pub struct PreviousCheck {
    /// When it ran.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Its verdict.
    pub verdict: Verdict,
    /// Its score.
    pub score: f64,
}

/// What happened to this run's alerts.
#[derive(Debug, Default, Serialize)]
pub struct AlertReport {
    /// The alerts of the run (new, worse, repeat, resolved).
    pub planned: Vec<PlannedAlert>,
    /// One per webhook.
    pub deliveries: Vec<Delivery>,
    /// Alerts with no webhook variable set.
    pub not_sent: usize,
}

/// One alert of the run.
#[derive(Debug, Serialize)]
pub struct PlannedAlert {
    /// The service.
    pub service: String,
    /// The check.
    pub check: String,
    /// New, worse, repeat, resolved.
    pub kind: Kind,
    /// Its level.
    pub level: Level,
}

/// One digest sent (or not).
#[derive(Debug, Serialize)]
pub struct Delivery {
    /// The variable holding the webhook (never its value).
    pub variable: String,
    /// The alerts it carried.
    pub alerts: usize,
    /// Whether it was delivered.
    pub delivered: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A health run's outcome.
#[derive(Debug)]
pub struct Run {
    /// Each service's checks, then its drift, then its architecture, in the order of the
    /// services.
    pub results: Vec<HealthCheck>,
    /// Their score.
    pub score: Score,
    /// What happened to the alerts.
    pub alerts: AlertReport,
    /// This run, the one before, the next.
    pub schedule: Schedule,
    /// This task's part, when the run is one of several tasks.
    pub task: Option<TaskOutcome>,
}

/// What one task of a sharded run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskOutcome {
    /// The execution.
    pub execution: String,
    /// This task.
    pub index: u32,
    /// The tasks of the execution.
    pub count: u32,
    /// The services this task checked.
    pub services: usize,
    /// Whether its results are in the store.
    pub recorded: bool,
    /// The tasks that had not recorded their results when this task read the store.
    pub waiting_for: Vec<u32>,
    /// Whether this task sent the run's digest (and saved the alerts and the run).
    pub digest: bool,
    /// The whole run's score (every task's results), for the task that sent the digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_score: Option<Score>,
}

/// The run had no check to run.
#[derive(Debug, thiserror::Error)]
#[error("no check to run")]
pub struct NoCheck;

/// The next run of a schedule `every` after `now`: the next multiple of `every` since
/// midnight UTC (`6h`: 00:00, 06:00, 12:00, 18:00), as Cloud Scheduler's `0 */6 * * *` runs.
pub fn next_check(
    now: chrono::DateTime<chrono::Utc>,
    every: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    let every = i64::try_from(every.as_secs()).unwrap_or(86_400).max(1);
    let seconds = now.timestamp();
    let next = (seconds.div_euclid(every) + 1) * every;
    chrono::DateTime::from_timestamp(next, 0).unwrap_or(now)
}

/// Runs the checks of `configs` at `generated_at`: the results, the score, the alert cycle
/// (unless `options.alerts` is off), the run appended to `store`. One task of a sharded run
/// checks only its share, records it, and the one task that completes the run alerts and
/// appends it ([`finish_task`]).
pub async fn run(
    probe: &impl Probe,
    store: &Store,
    configs: &[ServiceConfig],
    options: &Options,
    generated_at: chrono::DateTime<chrono::Utc>,
) -> Result<Run, NoCheck> {
    let own = match &options.shard {
        Some(shard) => shard.share(configs),
        None => configs.to_vec(),
    };
    let services = own.len();
    let results = run_all(probe, options, own).await;
    // A task may have no service (more tasks than services): it still reports, or the run
    // would never be complete.
    if results.is_empty() && options.shard.is_none() {
        return Err(NoCheck);
    }
    let score = super::score(&results);
    let previous = match store.latest().await {
        Ok(previous) => previous,
        Err(error) => {
            probe.say(format!("warning: the previous run is unknown: {error}"));
            None
        }
    };
    let (report, task) = match &options.shard {
        None => {
            let report = if options.alerts {
                alert(probe, store, configs, &results, &score, generated_at).await
            } else {
                AlertReport::default()
            };
            if let Err(error) = store
                .append(&RunRecord::new(generated_at, &score, &results))
                .await
            {
                probe.say(format!("warning: the run is not recorded: {error}"));
            }
            (report, None)
        }
        Some(shard) => {
            let (report, task) = finish_task(
                probe,
                store,
                configs,
                options,
                shard,
                &results,
                services,
                generated_at,
            )
            .await;
            (report, Some(task))
        }
    };
    let schedule = Schedule {
        last_check: generated_at,
        previous_check: previous.map(|run| PreviousCheck {
            at: run.at,
            verdict: run.verdict,
            score: run.score,
        }),
        every: options
            .every
            .map(|every| humantime::format_duration(every).to_string()),
        next_check: options.every.map(|every| next_check(generated_at, every)),
        history: store.describe(),
    };
    Ok(Run {
        results,
        score,
        alerts: report,
        schedule,
        task,
    })
}

/// One task's end of a sharded run: records its results under the execution, reads every
/// task's, and, when all are there, claims the run's digest. The store's claim is atomic, so
/// of tasks finishing at once exactly one wins; that one plans, sends and saves the alerts over
/// every task's results and appends the run to the history. A task that sees others missing
/// leaves: one of them, finishing later, sees this task's record (each task writes before it
/// reads, so the last writer sees every record).
#[allow(clippy::too_many_arguments)]
async fn finish_task(
    probe: &impl Probe,
    store: &Store,
    configs: &[ServiceConfig],
    options: &Options,
    shard: &Shard,
    results: &[HealthCheck],
    services: usize,
    generated_at: chrono::DateTime<chrono::Utc>,
) -> (AlertReport, TaskOutcome) {
    let mut outcome = TaskOutcome {
        execution: shard.execution.clone(),
        index: shard.index,
        count: shard.count,
        services,
        recorded: false,
        waiting_for: Vec::new(),
        digest: false,
        run_score: None,
    };
    let label = format!(
        "task {} of {} (execution `{}`)",
        shard.index + 1,
        shard.count,
        shard.execution
    );
    let tasks = store.tasks();
    if let Err(error) = tasks.append_task(&TaskRecord::new(shard, generated_at, results)) {
        probe.say(format!(
            "error: {label}: the results are not recorded: {error}; the run sends no digest"
        ));
        return (AlertReport::default(), outcome);
    }
    outcome.recorded = true;
    let records = match tasks.task_records(&shard.execution) {
        Ok(records) => records,
        Err(error) => {
            probe.say(format!(
                "error: {label}: the other tasks' results cannot be read: {error}"
            ));
            return (AlertReport::default(), outcome);
        }
    };
    outcome.waiting_for = missing_tasks(&records, shard.count);
    if !outcome.waiting_for.is_empty() {
        probe.say(format!(
            "{label}: {} service(s) checked and recorded; {} task(s) still to report, the last one sends the digest",
            services,
            outcome.waiting_for.len()
        ));
        return (AlertReport::default(), outcome);
    }
    match tasks.claim_digest(&shard.execution, shard.index) {
        Ok(true) => {}
        Ok(false) => {
            probe.say(format!(
                "{label}: {services} service(s) checked and recorded; another task sends the digest"
            ));
            return (AlertReport::default(), outcome);
        }
        Err(error) => {
            probe.say(format!(
                "error: {label}: the digest cannot be claimed: {error}"
            ));
            return (AlertReport::default(), outcome);
        }
    }
    let all = all_results(&records);
    let run_score = super::score(&all);
    probe.say(format!(
        "{label}: every task reported ({} result(s)): this task sends the digest",
        all.len()
    ));
    let report = if options.alerts {
        alert(probe, store, configs, &all, &run_score, generated_at).await
    } else {
        AlertReport::default()
    };
    if let Err(error) = store
        .append(&RunRecord::new(generated_at, &run_score, &all))
        .await
    {
        probe.say(format!("warning: the run is not recorded: {error}"));
    }
    outcome.digest = true;
    outcome.run_score = Some(run_score);
    (report, outcome)
}

/// One service's checks, ready to run.
struct Prepared {
    config: ServiceConfig,
    context: CheckContext,
    providers: Providers,
    /// Why the service's checks cannot run (the platform unreadable for a `{revision}`).
    blocked: Option<String>,
}

async fn prepare(probe: &impl Probe, config: ServiceConfig, providers: Providers) -> Prepared {
    let mut check_context = CheckContext::default();
    let mut blocked = None;
    match probe.service_id(&config) {
        Ok(id) => {
            check_context.service = id.name.clone();
            check_context.project = id.project.clone();
            check_context.region = id.region.clone();
            let selected = checks::checks_for_gate(&config, Gate::Health);
            if probe.needs_platform(&selected) {
                if let Err(error) = probe.read_revisions(&config, &id, &mut check_context).await {
                    blocked = Some(error);
                }
            }
        }
        Err(error) => blocked = Some(error),
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
        service: config.target_label(),
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
        runbook: super::runbook_link(config),
        message: Some(why.to_string()),
    }
}

fn drift_error(config: &ServiceConfig, why: &str, elapsed_ms: u64) -> HealthCheck {
    HealthCheck {
        service: config.target_label(),
        check: super::DRIFT_CHECK.to_string(),
        provider: "drift",
        status: Status::Error,
        severity: checks::Severity::Warning,
        value: None,
        unit: crate::config::Unit::Count,
        thresholds: None,
        query: format!("serving revisions of `{}` vs main", config.name),
        elapsed_ms,
        link: None,
        runbook: super::runbook_link(config),
        message: Some(format!("drift unknown: {why}")),
    }
}

/// Runs every check and every drift measurement: the results, each service's checks then its
/// drift, in the order of the services.
pub async fn run_all(
    probe: &impl Probe,
    options: &Options,
    configs: Vec<ServiceConfig>,
) -> Vec<HealthCheck> {
    let checks_future = async {
        // One set of providers (one connection pool each) per distinct set of endpoints, not
        // per service: building a client costs far more than a request.
        let mut shared: Vec<(ProviderEndpoints, Providers)> = Vec::new();
        let mut services = Vec::new();
        for config in configs.iter().cloned() {
            let endpoints = probe.endpoints(&config);
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
                .map(|(config, providers)| prepare(probe, config, providers)),
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
            .buffer_unordered(options.concurrency.max(1))
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
        let measured = probe.drift(configs.clone()).await;
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                let check = match &measured {
                    Ok(report) => match report.services.get(index) {
                        Some(drift) => HealthCheck::from_drift(config, drift, elapsed),
                        None => drift_error(config, "no drift measured", elapsed),
                    },
                    Err(error) => drift_error(config, error, elapsed),
                };
                (index, check)
            })
            .collect::<Vec<_>>()
    };
    let architecture_future = async {
        let Some(all) = &options.architecture else {
            return Vec::new();
        };
        let declared = Declared::from_configs(all);
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
        let findings = probe.architecture(all, &declared).await;
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

fn variable_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// Plans this run's alerts against the stored lifecycle, sends one digest per webhook, and
/// keeps the state of what was delivered. Says every step (never a URL).
async fn alert(
    probe: &impl Probe,
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
            probe.say(format!(
                "warning: {error}: alerts start over (every failing check alerts as new)"
            ));
            Default::default()
        }
    };
    let config_of = |service: &str| {
        configs
            .iter()
            .find(|config| config.target_label() == service)
    };
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
                config.target_label(),
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
        probe.say(format!(
            "warning: {} alert(s) not sent: no Slack webhook is set ({})",
            unrouted.len(),
            variables.join(", ")
        ));
    }
    let mut undelivered: Vec<&Alert> = unrouted.iter().collect();
    for destination in &destinations {
        let message = alerts::digest(
            &alerts::grouped_by_cause(&destination.alerts),
            score,
            &repositories,
        );
        let url = std::env::var(&destination.variable).unwrap_or_default();
        let sent = match Webhook::new(&destination.variable, &url) {
            Ok(webhook) => webhook.post(&message).await,
            Err(error) => Err(error),
        };
        match &sent {
            Ok(()) => probe.say(format!(
                "Slack: sent {} alert(s) through the webhook in `{}`",
                destination.alerts.len(),
                destination.variable
            )),
            Err(error) => {
                probe.say(format!("error: {error}"));
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
            probe.say(format!("error: the alert state is not saved: {error}"));
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
