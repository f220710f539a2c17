//! [`run`]: one health run, from the service files to the recorded results. Every check of every
//! service, its drift and its architecture, concurrently ([`super::gather`]); the score; the
//! alert cycle ([`super::alert_cycle`]: plan against the stored lifecycle, route to webhooks,
//! send one digest each, save what was delivered); the run appended to the history, or, for one
//! task of a sharded run, its share recorded and the run finished by the last task to report.
//! What the run reads outside (the platform, the wiring, the drift) comes through a [`Probe`] the
//! CLI implements; nothing here prints: lines meant for people go to [`Probe::say`].

use std::future::Future;

use serde::Serialize;

pub use super::alert_cycle::AlertReport;
use super::{
    alert_cycle::alert,
    gather::run_all,
    record::RunRecord,
    shard::{all_results, missing_tasks, Shard, TaskRecord},
    store::Store,
    HealthCheck, Score, Verdict,
};
use crate::{
    checks::{CheckContext, ProviderEndpoints},
    config::{CheckConfig, ServiceConfig},
    drift::DriftReport,
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
