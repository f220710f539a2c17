//! `deployer check SERVICE [--gate G] [--revision R]`: run a service's checks once, a dry run
//! of what the rollout's gates would see.
//!
//! Exit status by the worst result: 0 all pass, 1 worst is a warning (an ERROR counts as one:
//! it never passes), 2 worst is critical, 3 none could be evaluated (every check NO DATA or
//! ERROR). NO DATA weighs as its check's `on_no_data`.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{block_on, target, Context, UsageError};
use crate::{
    checks::{
        self, format_value, CheckContext, CheckResult, ProviderEndpoints, Providers, Scope, Status,
    },
    config::{CheckConfig, CheckSource, Gate, ServiceConfig},
    exit::ExitStatus,
    platform::{read_service, ServiceId},
};

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The service.
    pub service: String,
    /// Only the checks gating this phase: `validation`, `canary`, `monitor` or `health`.
    #[arg(long, value_name = "GATE", value_parser = parse_gate)]
    pub gate: Option<Gate>,
    /// The revision measured by `{revision}` [default: the revision serving the most traffic,
    /// read from the platform when a check needs it].
    #[arg(long, value_name = "REVISION")]
    pub revision: Option<String>,
    /// The commit for `{commit}`.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    #[command(flatten)]
    pub providers: ProviderFlags,
}

/// Where the metric providers are (`check` and `deploy`).
#[derive(Debug, Clone, Default, Args)]
pub struct ProviderFlags {
    /// BigQuery REST endpoint [default: Google's].
    #[arg(long, env = "DEPLOYER_BIGQUERY_ENDPOINT", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub bigquery_endpoint: Option<String>,
    /// Cloud Logging endpoint [default: the emulator for local targets, Google otherwise].
    #[arg(long, env = "DEPLOYER_LOGGING_ENDPOINT", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub logging_endpoint: Option<String>,
    /// Cloud Monitoring endpoint [default: the emulator for local targets, Google otherwise].
    #[arg(long, env = "DEPLOYER_MONITORING_ENDPOINT", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub monitoring_endpoint: Option<String>,
    /// Prometheus server of checks that name none (and of `request_metrics = "prometheus"`).
    #[arg(long, env = "DEPLOYER_PROMETHEUS_URL", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub prometheus_url: Option<String>,
}

fn parse_gate(text: &str) -> Result<Gate, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        format!("`{text}` is not a gate: use `validation`, `canary`, `monitor` or `health`")
    })
}

#[derive(Debug, Serialize)]
struct CheckOutput<'a> {
    service: &'a str,
    gate: Option<Gate>,
    revision: Option<&'a str>,
    exit_code: u8,
    results: &'a [CheckResult],
}

/// True when some check needs the platform: a revision placeholder, a path URL, a baseline.
pub(super) fn needs_platform(checks: &[&CheckConfig]) -> bool {
    checks.iter().any(|check| {
        let text = check.source.query_text();
        check.baseline
            || checks::uses_placeholder(text, "revision")
            || checks::uses_placeholder(text, "stable_revision")
            || matches!(&check.source, CheckSource::Http(http) if http.url.starts_with('/'))
    })
}

/// Endpoints from the flags (and environment); for a local target the emulator serves
/// Cloud Logging and Cloud Monitoring next to the Admin API.
pub fn endpoints(
    config: &ServiceConfig,
    flags: &ProviderFlags,
    context: &Context,
) -> ProviderEndpoints {
    let emulator = match target::endpoint(config, context.endpoint.as_deref()) {
        crate::platform::cloud_run::Endpoint::Custom(url) if url.starts_with("http://") => {
            Some(url)
        }
        _ => None,
    };
    ProviderEndpoints {
        bigquery: flags.bigquery_endpoint.clone(),
        logging: flags.logging_endpoint.clone(),
        monitoring: flags.monitoring_endpoint.clone(),
        prometheus: flags.prometheus_url.clone(),
    }
    .or_emulator(emulator.as_deref())
}

/// Fills the revisions and URLs of `check_context` from the platform.
pub(super) async fn read_revisions(
    config: &ServiceConfig,
    id: &ServiceId,
    context: &Context,
    check_context: &mut CheckContext,
) -> anyhow::Result<()> {
    let platform = target::connect(config, context.endpoint.as_deref()).await?;
    let snapshot = tokio::time::timeout(
        Duration::from_secs(30),
        read_service(&platform, id, Default::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("reading `{id}` took longer than 30 s"))??
    .ok_or_else(|| UsageError {
        message: format!(
            "`{}` is not deployed (`{id}` does not exist): its checks name a revision",
            config.name
        ),
    })?;
    check_context.stable_revision = snapshot.primary_revision();
    check_context.stable_url = Some(snapshot.uri.clone()).filter(|uri| !uri.is_empty());
    match &check_context.revision {
        Some(revision) => {
            // A revision under test is reached through its tag URL when it has one.
            check_context.revision_url = snapshot
                .traffic_statuses
                .iter()
                .find(|status| status.revision == *revision && status.uri.is_some())
                .and_then(|status| status.uri.clone())
                .or_else(|| {
                    (check_context.stable_revision.as_ref() == Some(revision))
                        .then(|| check_context.stable_url.clone())
                        .flatten()
                });
        }
        None => {
            check_context.revision = check_context.stable_revision.clone();
            check_context.revision_url = check_context.stable_url.clone();
        }
    }
    Ok(())
}

/// Runs `check`.
pub fn run(context: &Context, args: &CheckArgs) -> anyhow::Result<ExitStatus> {
    let (_, config, id) = context.service(&args.service)?;
    let selected: Vec<&CheckConfig> = match args.gate {
        Some(gate) => checks::checks_for_gate(&config, gate),
        None => config.checks.iter().collect(),
    };
    if selected.is_empty() {
        return Err(UsageError {
            message: match args.gate {
                Some(gate) => format!(
                    "service `{}` has no check gating `{}`",
                    config.name,
                    serde_json::to_value(gate)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
                None => format!("service `{}` has no `[[checks]]`", config.name),
            },
        }
        .into());
    }
    let mut check_context = CheckContext {
        service: id.name.clone(),
        project: id.project.clone(),
        region: id.region.clone(),
        revision: args.revision.clone(),
        commit: args.commit.clone(),
        ..CheckContext::default()
    };
    let providers = Providers::new(endpoints(&config, &args.providers, context));
    let results = block_on(async {
        if needs_platform(&selected) {
            read_revisions(&config, &id, context, &mut check_context).await?;
        }
        Ok(checks::run_checks(&selected, &check_context, &providers).await)
    })?;
    let code = checks::exit_code(&results);
    if context.output.is_json() {
        context.output.json(&CheckOutput {
            service: &config.name,
            gate: args.gate,
            revision: check_context.revision.as_deref(),
            exit_code: code,
            results: &results,
        })?;
    } else {
        context.output.data(render(&config.name, &results));
    }
    super::say_credentials_once(
        context,
        results
            .iter()
            .filter_map(|result| result.message.as_deref()),
    );
    // The numbers are `deployer check`'s own contract (README): 0 pass, 1 warn, 2 critical,
    // 3 nothing could be evaluated.
    Ok(match code {
        0 => ExitStatus::Success,
        1 => ExitStatus::Failure,
        2 => ExitStatus::Critical,
        _ => ExitStatus::StoppedBeforeTraffic,
    })
}

/// The dashboard: one block per check, then a summary line.
fn render(service: &str, results: &[CheckResult]) -> String {
    let mut text = format!("Checks of `{service}`\n\n");
    let total = results.len();
    for (index, result) in results.iter().enumerate() {
        text.push_str(&title_line(
            index,
            total,
            &result.name,
            result.status.label(),
            &|label| label.to_string(),
        ));
        text.push_str(&format!(
            "      {} · {} · {} ms\n",
            result.summary(),
            result.provider,
            result.elapsed_ms
        ));
        if let Some(revision) = &result.revision {
            text.push_str(&format!("      revision: {revision}\n"));
        }
        if let Some(baseline) = &result.baseline {
            text.push_str(&format!(
                "      stable revision {}: {} {}\n",
                baseline.revision,
                baseline.status.label(),
                baseline
                    .value
                    .map(|value| format_value(value, result.unit))
                    .or_else(|| baseline.message.clone())
                    .unwrap_or_default()
            ));
        }
        if result.scope == Scope::ServiceWide {
            text.push_str("      service-wide: the stable revision breaches too\n");
        }
        if result.status != Status::Pass {
            if result.value.is_some() {
                if let Some(message) = &result.message {
                    text.push_str(&format!("      {message}\n"));
                }
            }
            if let Some(link) = &result.link {
                text.push_str(&format!("      {link}\n"));
            }
        }
    }
    let count = |status: Status| results.iter().filter(|r| r.status == status).count();
    text.push_str(&format!(
        "\n{} passed, {} warning, {} critical, {} no data, {} error\n",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Critical),
        count(Status::NoData),
        count(Status::Error)
    ));
    text
}

/// The title line of a dashboard block: `[1/6] Vegas Line Coverage ........ PASS`, the label
/// passed through `paint` (colour, when the caller's output is a terminal). Shared by
/// `deployer check` and `deployer health`.
pub(super) fn title_line(
    index: usize,
    total: usize,
    name: &str,
    label: &str,
    paint: &dyn Fn(&str) -> String,
) -> String {
    let title = format!("[{}/{total}] {name} ", index + 1);
    let dots = 48usize.saturating_sub(title.chars().count()).max(3);
    format!("{title}{} {}\n", ".".repeat(dots), paint(label))
}
