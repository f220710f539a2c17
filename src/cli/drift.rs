//! `deployer drift [SERVICE...]`: what serves against what `main` holds, for every service (read
//! concurrently), as a table or `--format json`; exit 0 all OK, 1 worst WARN, 2 worst CRITICAL.
//! `--github-issue` keeps one GitHub issue per drifting service; in GitHub Actions
//! (`GITHUB_ACTIONS=true`) each WARN/CRITICAL service also becomes an annotation and the table
//! is appended to the step summary.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{
    github_actions::{self, Annotation},
    target, Context, UsageError,
};
use crate::{
    config::ServiceConfig,
    drift::{
        self, format_age, issue, DriftReport, HistorySource, ServiceDrift, ServiceInput,
        ServiceTarget, Severity,
    },
    exit::ExitStatus,
    notify::github::RepositoryName,
    repo::short,
};

/// `drift`.
#[derive(Debug, Args)]
pub struct DriftArgs {
    /// The services to check [default: every service].
    pub services: Vec<String>,
    /// Do not fetch `main`: compare with it as last fetched (offline).
    #[arg(long)]
    pub no_fetch: bool,
    /// Where the history comes from: the local repository, the GitHub API
    /// (`notifications.github_repository`), or `auto` (the repository when there is one).
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub source: SourceArg,
    /// Open, update, close or reopen one GitHub issue per drifting service (token from the
    /// variable `notifications.github_token_env` names; API base from `GITHUB_API_URL`).
    #[arg(long)]
    pub github_issue: bool,
}

/// `--source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    /// The local repository when there is one, else GitHub.
    Auto,
    /// The local repository.
    Git,
    /// The GitHub API.
    Github,
}

/// Relevant commits listed per revision in the text report (JSON has up to
/// [`drift::LISTED_COMMITS`]).
const SHOWN_COMMITS: usize = 5;

#[derive(Serialize)]
struct JsonOutput<'a> {
    #[serde(flatten)]
    report: &'a DriftReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    issues: Option<&'a [issue::Outcome]>,
}

/// The exit status of a worst severity. Drift shares the health check's convention
/// (0 OK / 1 WARN / 2 CRITICAL, `README.md`): CRITICAL is [`ExitStatus::Critical`], a finding,
/// never [`ExitStatus::Usage`], though both exit 2.
fn exit_for(severity: Severity) -> ExitStatus {
    match severity {
        Severity::Ok => ExitStatus::Success,
        Severity::Warn => ExitStatus::Failure,
        Severity::Critical => ExitStatus::Critical,
    }
}

pub(super) fn load(
    context: &Context,
    names: &[String],
) -> anyhow::Result<(std::path::PathBuf, Vec<ServiceConfig>)> {
    let workspace = context.workspace()?;
    let configs = if names.is_empty() {
        let (loaded, diagnostics) = workspace.load_all()?;
        if !diagnostics.is_empty() {
            return Err(diagnostics.into());
        }
        loaded.into_iter().map(|service| service.config).collect()
    } else {
        let mut configs = Vec::new();
        for name in names {
            configs.push(workspace.find(name)??.config);
        }
        configs
    };
    if configs.is_empty() {
        return Err(UsageError {
            message: format!(
                "no service is defined in `{}`",
                workspace.services_dir.display()
            ),
        }
        .into());
    }
    // A multi-region service is measured in each of its regions (canary first), or in the one
    // `--region` picks.
    let mut targets = Vec::with_capacity(configs.len());
    for config in configs {
        targets.extend(
            config
                .with_overrides(&context.overrides)
                .region_configs(context.overrides.region.as_deref())
                .map_err(|message| UsageError { message })?,
        );
    }
    Ok((workspace.root.clone(), targets))
}

/// Where each of `configs` runs: the services a drift or health run reads, in order. The one
/// place that turns service files into platform targets.
pub(super) fn service_targets(
    context: &Context,
    configs: Vec<ServiceConfig>,
) -> Result<Vec<ServiceTarget>, UsageError> {
    configs
        .into_iter()
        .map(|config| {
            Ok(ServiceTarget {
                id: target::service_id(&config)?,
                endpoint: target::endpoint(&config, context.endpoint.as_deref()),
                config,
            })
        })
        .collect()
}

/// Runs `drift`.
pub fn run(context: &Context, args: &DriftArgs) -> anyhow::Result<ExitStatus> {
    let (root, configs) = load(context, &args.services)?;
    super::block_on(async {
        let (inputs, report) =
            measure(context, &root, configs, args.source, !args.no_fetch).await?;
        let mut status = exit_for(report.worst);
        let mut outcomes = None;
        if args.github_issue {
            match sync_issues(context, &inputs, &report).await {
                Ok(found) => outcomes = Some(found),
                Err(error) => {
                    context.output.error(&error);
                    // The drift itself was measured: keep its exit status unless it was OK.
                    if status == ExitStatus::Success {
                        status = ExitStatus::Failure;
                    }
                }
            }
        }
        if context.output.is_json() {
            context.output.json(&JsonOutput {
                report: &report,
                issues: outcomes.as_deref(),
            })?;
        } else {
            context.output.data(render(&report));
        }
        super::say_credentials_once(
            context,
            report
                .services
                .iter()
                .map(|service| service.reason.as_str()),
        );
        if github_actions::enabled() {
            let annotations: Vec<Annotation> =
                report.services.iter().filter_map(annotation).collect();
            github_actions::publish(context, &annotations, &step_summary(&report));
        }
        Ok(status)
    })
}

/// Reads what serves `configs` and measures their drift ([`drift::measure`]): what `deployer
/// drift`, `deployer health` and `deployer fleet --changed` report.
pub(super) async fn measure(
    context: &Context,
    root: &std::path::Path,
    configs: Vec<ServiceConfig>,
    source: SourceArg,
    fetch: bool,
) -> anyhow::Result<(Vec<ServiceInput>, DriftReport)> {
    let targets = service_targets(context, configs)?;
    drift::measure(targets, root, source.into(), fetch, &|line| {
        context.output.message(line)
    })
    .await
}

impl From<SourceArg> for HistorySource {
    fn from(source: SourceArg) -> Self {
        match source {
            SourceArg::Auto => HistorySource::Auto,
            SourceArg::Git => HistorySource::Git,
            SourceArg::Github => HistorySource::Github,
        }
    }
}

/// Keeps the issues; prints one line per service that has or needs one.
async fn sync_issues(
    context: &Context,
    inputs: &[ServiceInput],
    report: &DriftReport,
) -> anyhow::Result<Vec<issue::Outcome>> {
    let fallback = drift::measure::default_repository()?;
    let mut targets = Vec::new();
    for (input, drift) in inputs.iter().zip(&report.services) {
        let repository = match &input.config.notifications.github_repository {
            Some(name) => RepositoryName::parse(name).with_context(|| {
                format!("`notifications.github_repository` of `{}`", drift.service)
            })?,
            None => match &fallback {
                Some(repository) => repository.clone(),
                None => {
                    context.output.message(format!(
                        "warning: `{}` has no `notifications.github_repository` (and `GITHUB_REPOSITORY` is unset): no issue kept",
                        drift.service
                    ));
                    continue;
                }
            },
        };
        targets.push((drift, repository));
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let client = drift::measure::github_client(inputs)?;
    let links = issue::Links {
        server_url: std::env::var("GITHUB_SERVER_URL")
            .ok()
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| "https://github.com".into()),
    };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for result in issue::sync(&client, &targets, &links).await {
        match result {
            Ok(outcome) => {
                if let (Some(number), Some(url)) = (outcome.number, &outcome.url) {
                    let verb = match outcome.action {
                        issue::Action::Created => "opened",
                        issue::Action::Updated => "updated",
                        issue::Action::Unchanged => "unchanged",
                        issue::Action::Closed => "closed",
                        issue::Action::Reopened => "reopened",
                        issue::Action::None => "left as it is",
                    };
                    context.output.message(format!(
                        "issue #{number} of `{}` {verb}: {url}",
                        outcome.service
                    ));
                }
                outcomes.push(outcome);
            }
            Err(error) => failures.push(error.to_string()),
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("keeping the drift issues failed: {}", failures.join("; "));
    }
    Ok(outcomes)
}

fn pad(text: &str, width: usize) -> String {
    let length = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(length)))
}

/// The table rows: one per serving revision (a service with none gets one row).
fn rows(report: &DriftReport) -> Vec<[String; 8]> {
    let mut rows = Vec::new();
    for service in &report.services {
        if service.revisions.is_empty() {
            rows.push([
                service.service.clone(),
                service.severity.label().into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for revision in &service.revisions {
            let commit = revision
                .commit
                .as_deref()
                .map(|commit| short(commit).to_string())
                .unwrap_or_else(|| "unknown".into());
            let (behind, relevant) = match &revision.facts {
                Some(facts) if facts.in_main => {
                    (facts.behind.to_string(), facts.relevant.to_string())
                }
                Some(facts) => (
                    format!("{} (off main)", facts.behind),
                    facts.relevant.to_string(),
                ),
                None => ("?".into(), "?".into()),
            };
            rows.push([
                service.service.clone(),
                revision.severity.label().into(),
                format!("{} {}%", revision.revision, revision.percent),
                commit,
                behind,
                relevant,
                revision
                    .oldest_relevant_age_seconds
                    .map(format_age)
                    .unwrap_or_else(|| "-".into()),
                revision
                    .deployed_age_seconds
                    .map(format_age)
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    rows
}

const HEADERS: [&str; 8] = [
    "SERVICE",
    "SEVERITY",
    "REVISION",
    "DEPLOYED",
    "BEHIND",
    "RELEVANT",
    "OLDEST UNDEPLOYED",
    "DEPLOYED AGE",
];

/// The text report: the table, then what explains each service that is not OK.
fn render(report: &DriftReport) -> String {
    let rows = rows(report);
    let mut widths = HEADERS.map(|header| header.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| pad(cell, width))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut text = line(&HEADERS.map(str::to_string));
    for row in &rows {
        let _ = write!(text, "\n{}", line(row));
    }
    for service in &report.services {
        let _ = write!(
            text,
            "\n\n{} {}: {}",
            service.severity.label(),
            service.service,
            service.reason
        );
        if let Some(note) = &service.main.note {
            let _ = write!(text, "\n  note: {note}");
        }
        for revision in &service.revisions {
            let Some(facts) = &revision.facts else {
                continue;
            };
            if let Some(note) = &facts.path_note {
                let _ = write!(text, "\n  note: {note}");
            }
            if !facts.relevant_commits.is_empty() {
                let shown = facts.relevant_commits.len().min(SHOWN_COMMITS);
                let _ = write!(
                    text,
                    "\n  `{}`: newest {shown} of {} undeployed commits touching the service:",
                    revision.revision, facts.relevant
                );
                for commit in facts.relevant_commits.iter().take(SHOWN_COMMITS) {
                    let _ = write!(
                        text,
                        "\n    {} {} ({}, {})",
                        short(&commit.id),
                        commit.subject,
                        commit.author,
                        commit.committed.format("%Y-%m-%d %H:%M UTC")
                    );
                }
            }
            if !facts.schema_changes.is_empty() {
                let _ = write!(
                    text,
                    "\n  schema changes not deployed: {}",
                    facts.schema_changes.join(", ")
                );
            }
        }
        if let Some(hint) = &service.hint {
            let _ = write!(text, "\n  hint: {hint}");
        }
    }
    text
}

/// The annotation of a service that is not OK (`::error` for CRITICAL, `::warning` for WARN).
fn annotation(service: &ServiceDrift) -> Option<Annotation> {
    let title = format!("Drift: {}", service.service);
    let message = format!(
        "{}{}",
        service.reason,
        service
            .hint
            .as_ref()
            .map(|hint| format!(" — {hint}"))
            .unwrap_or_default()
    );
    match service.severity {
        Severity::Ok => None,
        Severity::Warn => Some(Annotation::warning(title, message)),
        Severity::Critical => Some(Annotation::error(title, message)),
    }
}

/// The Markdown appended to `$GITHUB_STEP_SUMMARY`.
fn step_summary(report: &DriftReport) -> String {
    let mut text = format!("## Deployment drift: {}\n\n", report.worst.label());
    text.push_str(&github_actions::table(&HEADERS, rows(report)));
    for service in &report.services {
        if service.severity > Severity::Ok {
            let _ = writeln!(
                text,
                "- **{}** `{}`: {}",
                service.severity.label(),
                github_actions::cell(&service.service),
                github_actions::cell(&service.reason)
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_severity() {
        assert_eq!(exit_for(Severity::Ok).code(), 0);
        assert_eq!(exit_for(Severity::Warn).code(), 1);
        assert_eq!(exit_for(Severity::Critical), ExitStatus::Critical);
        assert_eq!(exit_for(Severity::Critical).code(), 2);
    }
}
