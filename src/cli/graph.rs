//! `deployer graph [SERVICE...] [--check]`: the declared event wiring as a Mermaid flowchart
//! (`--format json`: the wiring and the findings as data). With `--check`, the live project is
//! read and every difference is listed and drawn; exit 0 conforming, 1 warnings (or something
//! unreadable), 2 any CRITICAL. The rules are [`crate::wiring::conformance`]'s.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;

use super::{drift as drift_cli, target, Context, UsageError};
use crate::{
    config::ServiceConfig,
    exit::ExitStatus,
    platform::cloud_run::{CloudRunPlatform, Endpoint},
    wiring::{
        conformance::{self, Conformance, Finding},
        graph,
        live::{self, Endpoints},
        Declared, ServiceWiring,
    },
};

/// Time limit of reading one service's URLs.
const PLATFORM_TIME_LIMIT: Duration = Duration::from_secs(15);

/// `graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Only these services [default: every service that declares wiring].
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Compare with the live project (Pub/Sub, Cloud Scheduler, the services' URLs on Cloud
    /// Run) and mark every difference. Endpoints: `DEPLOYER_PUBSUB_ENDPOINT`,
    /// `DEPLOYER_SCHEDULER_ENDPOINT` [default: Google's; the local emulator for local targets].
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Serialize)]
struct GraphOutput<'a> {
    services: Vec<&'a ServiceWiring>,
    mermaid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<CheckOutput<'a>>,
}

#[derive(Debug, Serialize)]
struct CheckOutput<'a> {
    conformance: Conformance,
    exit_code: u8,
    elapsed_ms: u64,
    findings: &'a [Finding],
}

/// Every service (the wiring of all is needed to know who consumes a topic), and the names
/// selected on the command line (checked to exist).
pub(super) fn load_all(
    context: &Context,
    selected: &[String],
) -> anyhow::Result<Vec<ServiceConfig>> {
    let (_, configs) = drift_cli::load(context, &[])?;
    for name in selected {
        if !configs.iter().any(|config| config.name == *name) {
            // The workspace's own error, with its suggestion.
            context.workspace()?.find(name)??;
            return Err(UsageError {
                message: format!("no service named `{name}`"),
            }
            .into());
        }
    }
    Ok(configs)
}

/// Where Pub/Sub and Cloud Scheduler are read: the environment, else the local emulator when a
/// wired service's Cloud Run endpoint is a local `http://` one (as the checks' providers do).
pub(super) fn endpoints(context: &Context, configs: &[ServiceConfig]) -> Endpoints {
    let emulator = configs
        .iter()
        .filter(|config| {
            !(config.publishes.is_empty()
                && config.subscriptions.is_empty()
                && config.schedules.is_empty())
        })
        .find_map(
            |config| match target::endpoint(config, context.endpoint.as_deref()) {
                Endpoint::Custom(url) if url.starts_with("http://") => Some(url),
                _ => None,
            },
        );
    Endpoints::from_env().or_emulator(emulator.as_deref())
}

/// Reads every URL of each service from its platform (one client per distinct endpoint).
async fn read_urls(
    context: &Context,
    configs: &[ServiceConfig],
) -> BTreeMap<String, Result<Vec<String>, String>> {
    let mut platforms: Vec<(Endpoint, Result<CloudRunPlatform, String>)> = Vec::new();
    let mut pending = Vec::new();
    for config in configs {
        let id = target::service_id(config).map_err(|error| error.message);
        let endpoint = target::endpoint(config, context.endpoint.as_deref());
        let connected = match platforms.iter().find(|(known, _)| *known == endpoint) {
            Some((_, connected)) => connected.clone(),
            None => {
                let connected = CloudRunPlatform::connect(&endpoint, target::OPERATION_DEADLINE)
                    .await
                    .map_err(|error| format!("{:#}", anyhow::Error::from(error)));
                platforms.push((endpoint, connected.clone()));
                connected
            }
        };
        let name = config.name.clone();
        pending.push(async move {
            let urls = match (id, connected) {
                (Ok(id), Ok(platform)) => {
                    tokio::time::timeout(PLATFORM_TIME_LIMIT, live::service_urls(&platform, &id))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "Cloud Run did not answer within {}s",
                                PLATFORM_TIME_LIMIT.as_secs()
                            ))
                        })
                }
                (Err(why), _) | (_, Err(why)) => Err(why),
            };
            (name, urls)
        });
    }
    futures::future::join_all(pending)
        .await
        .into_iter()
        .collect()
}

/// Reads the live wiring `declared` needs and compares: the findings.
pub(super) async fn check_live(
    context: &Context,
    configs: &[ServiceConfig],
    declared: &Declared,
) -> Vec<Finding> {
    let endpoints = endpoints(context, configs);
    let (urls, observed_without_urls) = futures::future::join(
        read_urls(context, configs),
        live::observe(declared, &endpoints, BTreeMap::new()),
    )
    .await;
    let observed = conformance::Observed {
        service_urls: urls,
        ..observed_without_urls
    };
    conformance::check(declared, &observed)
}

/// The findings as text: one block per finding.
fn findings_text(findings: &[Finding], elapsed: Duration) -> String {
    let mut text = String::new();
    if findings.is_empty() {
        let _ = writeln!(
            text,
            "PASS: the live project matches the declared wiring ({} ms)",
            elapsed.as_millis()
        );
        return text;
    }
    for finding in findings {
        let _ = writeln!(text, "{} {}", finding.level.label(), finding.message);
        let _ = writeln!(text, "      {}", finding.resource);
        if let Some(topic) = &finding.topic {
            let _ = writeln!(text, "      topic: {topic}");
        }
        let _ = writeln!(text, "      delivers: {}", finding.delivers_to);
        let _ = writeln!(text, "      services: {}", finding.services.join(", "));
        let _ = writeln!(text, "      fix: {}", finding.fix);
    }
    let count = |level| {
        findings
            .iter()
            .filter(|finding| finding.level == level)
            .count()
    };
    let _ = writeln!(
        text,
        "{}: {} critical, {} error, {} warning ({} ms)",
        match conformance::conformance(findings, None) {
            Conformance::Pass => "PASS",
            Conformance::Warn => "WARN",
            Conformance::Error => "ERROR",
            Conformance::Critical => "CRITICAL",
        },
        count(conformance::Level::Critical),
        count(conformance::Level::Error),
        count(conformance::Level::Warn),
        elapsed.as_millis()
    );
    text
}

/// Runs `graph`.
pub fn run(context: &Context, args: &GraphArgs) -> anyhow::Result<ExitStatus> {
    let configs = load_all(context, &args.services)?;
    let declared = Declared::from_configs(&configs);
    let selected = |finding: &Finding| {
        args.services.is_empty()
            || finding
                .services
                .iter()
                .any(|service| args.services.contains(service))
    };
    let checked = if args.check {
        let started = std::time::Instant::now();
        let findings = super::block_on(async {
            Ok::<_, anyhow::Error>(check_live(context, &configs, &declared).await)
        })?;
        let findings: Vec<Finding> = findings.into_iter().filter(selected).collect();
        Some((findings, started.elapsed()))
    } else {
        None
    };
    let mermaid = graph::mermaid(
        &declared,
        &args.services,
        checked.as_ref().map(|(findings, _)| findings.as_slice()),
    );
    let code = checked
        .as_ref()
        .map_or(0, |(findings, _)| conformance::exit_code(findings));
    if context.output.is_json() {
        context.output.json(&GraphOutput {
            services: declared
                .services
                .iter()
                .filter(|wiring| {
                    if args.services.is_empty() {
                        wiring.declares_anything()
                    } else {
                        args.services.contains(&wiring.service)
                    }
                })
                .collect(),
            mermaid,
            check: checked.as_ref().map(|(findings, elapsed)| CheckOutput {
                conformance: conformance::conformance(findings, None),
                exit_code: code,
                elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                findings,
            }),
        })?;
    } else {
        context.output.data(mermaid.trim_end());
        if let Some((findings, elapsed)) = &checked {
            // The findings on stderr: stdout stays a diagram that can be pasted or redirected.
            context
                .output
                .message(findings_text(findings, *elapsed).trim_end());
        }
    }
    Ok(match code {
        0 => ExitStatus::Success,
        1 => ExitStatus::Failure,
        _ => ExitStatus::Critical,
    })
}
