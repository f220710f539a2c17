//! `deployer health [--service S...]`: the unified health check. Every `health`-gated check of
//! every service, one "Deployment Drift" check per service, and one "Architecture" check per
//! service that declares event wiring (`deployer graph --check` for it), run concurrently (at most
//! `--concurrency` at once, each within its own timeout), as the dashboard or `--format json`.
//! Exit 0 PASS, 1 WARNING, 2 CRITICAL (see [`crate::health`]).

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    check::{self, ProviderFlags},
    drift::{self as drift_cli, SourceArg},
    github_actions::{self, Annotation},
    graph as graph_cli,
    output::color_enabled_on_stdout,
    Context, UsageError,
};

mod history;
use crate::{
    checks::{self, format_value, CheckContext, Status},
    config::{CheckConfig, ServiceConfig},
    drift::DriftReport,
    exit::ExitStatus,
    health::{
        self,
        run::{AlertReport, Probe, Schedule, TaskOutcome},
        shard::Shard,
        store::{Location, Store},
        HealthCheck, Score, Verdict,
    },
    platform::ServiceId,
    wiring::{conformance::Finding, Declared},
};
pub use history::HistoryArgs;

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
    /// This task's part of a run of several tasks (`CLOUD_RUN_TASK_COUNT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a TaskOutcome>,
}

/// The health run's view of the outside, through the CLI's adapters: the platform of each
/// service's target, the drift, the live wiring.
struct CliProbe<'a> {
    context: &'a Context,
    args: &'a HealthArgs,
    root: &'a std::path::Path,
}

impl Probe for CliProbe<'_> {
    fn endpoints(&self, config: &ServiceConfig) -> checks::ProviderEndpoints {
        check::endpoints(config, &self.args.providers, self.context)
    }

    fn service_id(&self, config: &ServiceConfig) -> Result<ServiceId, String> {
        super::target::service_id(config).map_err(|error| format!("{error:#}"))
    }

    fn needs_platform(&self, checks: &[&CheckConfig]) -> bool {
        check::needs_platform(checks)
    }

    async fn read_revisions<'a>(
        &'a self,
        config: &'a ServiceConfig,
        id: &'a ServiceId,
        context: &'a mut CheckContext,
    ) -> Result<(), String> {
        check::read_revisions(config, id, self.context, context)
            .await
            .map_err(|error| format!("{error:#}"))
    }

    async fn drift(&self, configs: Vec<ServiceConfig>) -> Result<DriftReport, String> {
        drift_cli::measure(
            self.context,
            self.root,
            configs,
            self.args.source,
            !self.args.no_fetch,
        )
        .await
        .map(|(_, report)| report)
        .map_err(|error| super::short_cause(&error))
    }

    async fn architecture<'a>(
        &'a self,
        all: &'a [ServiceConfig],
        declared: &'a Declared,
    ) -> Vec<Finding> {
        graph_cli::check_live(self.context, all, declared).await
    }

    fn say(&self, line: String) {
        self.context.output.message(line);
    }
}

/// Runs `health`.
pub fn run(context: &Context, args: &HealthArgs) -> anyhow::Result<ExitStatus> {
    if let Some(HealthCommand::History(history_args)) = &args.command {
        return history::run(context, history_args);
    }
    let (root, configs) = drift_cli::load(context, &args.services)?;
    let generated_at = chrono::Utc::now();
    let location = args.history.as_ref().unwrap_or(&Location::File);
    // One task of a Cloud Run Job execution of several (`CLOUD_RUN_TASK_COUNT`).
    let shard = Shard::from_environment(|name| std::env::var(name).ok())
        .map_err(|message| UsageError { message })?;
    let store = Store::open(location, args.providers.bigquery_endpoint.as_deref());
    // Who consumes a topic is known only from every service's file, whatever `--service`
    // selects: a subscription another service declares is no bypass.
    let architecture = (!args.no_architecture).then(|| {
        if args.services.is_empty() {
            configs.clone()
        } else {
            graph_cli::load_all(context, &[]).unwrap_or_else(|_| configs.clone())
        }
    });
    let options = health::run::Options {
        concurrency: usize::from(args.concurrency),
        architecture,
        alerts: !args.no_alerts,
        every: args.every,
        shard,
    };
    let probe = CliProbe {
        context,
        args,
        root: &root,
    };
    let health::run::Run {
        results,
        alerts: report,
        schedule,
        task,
        ..
    } = super::block_on(async {
        health::run::run(&probe, &store, &configs, &options, generated_at)
            .await
            .map_err(|error| {
                UsageError {
                    message: error.to_string(),
                }
                .into()
            })
    })?;
    if results.is_empty() {
        // A task of a sharded run with no service in its share (more tasks than services).
        context
            .output
            .data("no service in this task's share: nothing to check");
        return Ok(ExitStatus::Success);
    }
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
            task: task.as_ref(),
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

#[cfg(test)]
mod tests;
