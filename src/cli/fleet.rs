//! `deployer deploy A B C`, `--all`, `--changed`: several services in one deploy. The plan is
//! `fleet::Fleet` (dependency order, what can start, what is not started); this file runs each
//! service's own deploy (`deploy::deploy_service`: its lock, journal, checks, rollback) up to
//! `--parallel` at once, stops starting new ones on Ctrl-C (running ones answer their own
//! prompt), and draws one fleet report.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;

use super::{
    block_on,
    deploy::{self, DeployArgs},
    drift::SourceArg,
    github_actions, Context, UsageError,
};
use crate::{
    exit::ExitStatus,
    fleet::{Fleet, ServiceState},
    rollout::events::{Outcome, RolloutReport},
};

/// One service's line of the fleet report (one per region of a multi-region service).
#[derive(Debug, Serialize)]
pub(super) struct ServiceLine {
    service: String,
    /// The region, for a multi-region service.
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// `promoted`, `stopped_before_traffic`, `rolled_back`, `held`, `rollback_failed`,
    /// `failed` (the deploy could not run) or `not_started`.
    result: &'static str,
    exit_code: u8,
    /// Seconds from its start to its end (not for one not started).
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    /// When it started and ended, in seconds since the fleet's deploy started.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_after: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_after: Option<f64>,
    detail: String,
    /// The service's own deploy report, when its rollout ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<RolloutReport>,
}

/// The fleet report.
#[derive(Debug, Serialize)]
struct FleetReport {
    /// The services in dependency order.
    order: Vec<String>,
    parallel: u16,
    interrupted: bool,
    seconds: f64,
    exit_code: u8,
    services: Vec<ServiceLine>,
}

fn result_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Promoted { .. } => "promoted",
        Outcome::StoppedBeforeTraffic { .. } => "stopped_before_traffic",
        Outcome::RolledBack { .. } => "rolled_back",
        Outcome::Held { .. } => "held",
        Outcome::RollbackFailed { .. } => "rollback_failed",
    }
}

/// Which services `--all`, `--changed` or the names choose.
fn selection(
    context: &Context,
    args: &DeployArgs,
    configs: &[crate::config::ServiceConfig],
) -> anyhow::Result<Vec<String>> {
    if args.all {
        return Ok(configs.iter().map(|config| config.name.clone()).collect());
    }
    if !args.changed {
        return Ok(args.services.clone());
    }
    let workspace = context.workspace()?;
    let configs: Vec<_> = configs
        .iter()
        .map(|config| config.clone().with_overrides(&context.overrides))
        .collect();
    let (_, report) = block_on(super::drift::measure(
        context,
        &workspace.root,
        configs,
        SourceArg::Auto,
        true,
    ))?;
    let mut changed = Vec::new();
    for service in &report.services {
        let lagging = service.revisions.is_empty()
            || service
                .revisions
                .iter()
                .any(|revision| match &revision.facts {
                    Some(facts) => facts.relevant > 0 || !facts.in_main,
                    None => false,
                });
        let unmeasured = service
            .revisions
            .iter()
            .any(|revision| revision.facts.is_none());
        if lagging {
            changed.push(service.service.clone());
        } else if unmeasured {
            context.output.message(format!(
                "`{}` is not deployed by `--changed`: its drift could not be measured ({})",
                service.service, service.reason
            ));
        }
    }
    Ok(changed)
}

/// Runs a deploy of several services.
pub fn deploy(context: &Context, args: &DeployArgs) -> anyhow::Result<ExitStatus> {
    let workspace = context.workspace()?;
    // Every file, validated together: unknown `depends_on` names and cycles are errors (exit 2).
    let (loaded, diagnostics) = workspace.load_all()?;
    if !diagnostics.is_empty() {
        return Err(diagnostics.into());
    }
    let configs: Vec<_> = loaded.into_iter().map(|service| service.config).collect();
    let graph: BTreeMap<String, Vec<String>> = configs
        .iter()
        .map(|config| (config.name.clone(), config.depends_on.clone()))
        .collect();
    let selected = selection(context, args, &configs)?;
    if selected.is_empty() {
        context
            .output
            .message("no service to deploy: every service's deployed commit is current");
        return Ok(ExitStatus::Success);
    }
    let mut fleet = Fleet::plan(&selected, &graph).map_err(|error| UsageError {
        message: error.to_string(),
    })?;
    context.output.message(format!(
        "deploying {} service(s) in dependency order: {} (at most {} at once)",
        fleet.order().len(),
        fleet.order().join(", "),
        args.parallel
    ));
    let started = Instant::now();
    let (mut lines, interrupted) = block_on(run(context, args, &mut fleet, started))?;
    let report = FleetReport {
        order: fleet.order().to_vec(),
        parallel: args.parallel,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
        exit_code: fleet.exit_status().code(),
        services: fleet
            .order()
            .iter()
            .flat_map(|name| lines_of(name, &fleet, &mut lines))
            .collect(),
    };
    print(context, &report)?;
    if github_actions::enabled() {
        github_actions::publish(context, &[], &step_summary(&report));
    }
    Ok(fleet.exit_status())
}

/// How a service's deploy ended: its report, or the error that stopped it.
struct Ended {
    result: anyhow::Result<deploy::Deployed>,
    /// Since the fleet's deploy started.
    started: Duration,
    ended: Duration,
}

async fn run(
    context: &Context,
    args: &DeployArgs,
    fleet: &mut Fleet,
    fleet_started: Instant,
) -> anyhow::Result<(BTreeMap<String, Ended>, bool)> {
    let mut running = FuturesUnordered::new();
    let mut ended = BTreeMap::new();
    let mut interrupt = deploy::ctrl_c_listening_now();
    let mut interrupted = false;
    loop {
        if !interrupted {
            for name in fleet.start_ready(usize::from(args.parallel)) {
                context.output.message(format!("starting `{name}`"));
                running.push(async move {
                    let started = fleet_started.elapsed();
                    let result = deploy::deploy_service(context, args, &name, true).await;
                    (
                        name,
                        Ended {
                            result,
                            started,
                            ended: fleet_started.elapsed(),
                        },
                    )
                });
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some((name, end)) = running.next() => {
                let status = match &end.result {
                    Ok(deployed) => deployed.status,
                    Err(error) => super::classify(error),
                };
                context.output.message(format!("`{name}` ended: exit {}", status.code()));
                fleet.finish(&name, status);
                ended.insert(name, end);
            }
            () = &mut interrupt, if !interrupted => {
                interrupted = true;
                fleet.interrupt();
                context.output.message(
                    "Ctrl-C: no new rollout starts; the running ones decide on their own prompt",
                );
            }
        }
    }
    Ok((ended, interrupted))
}

/// A service's lines: one, or one per region of a multi-region service that ran.
fn lines_of(name: &str, fleet: &Fleet, ended: &mut BTreeMap<String, Ended>) -> Vec<ServiceLine> {
    match ended.get_mut(name) {
        Some(Ended {
            result: Ok(deployed),
            ..
        }) if !deployed.regions.is_empty() => std::mem::take(&mut deployed.regions),
        _ => vec![line(name, fleet, ended)],
    }
}

/// The deploy of a multi-region service: its regions one after another, the canary region
/// first, each with its own guarded rollout (`deploy::deploy_region`) of the image the canary
/// region got; a region that does not promote leaves every later region not started, and
/// Ctrl-C between regions starts no other. `regions`: the service in each region, in order.
pub(super) async fn deploy_regions(
    context: &Context,
    args: &DeployArgs,
    name: &str,
    workspace: &crate::config::Workspace,
    regions: Vec<(crate::config::ServiceConfig, crate::platform::ServiceId)>,
) -> anyhow::Result<deploy::Deployed> {
    let order: Vec<String> = regions.iter().map(|(_, id)| id.region.clone()).collect();
    let mut wave = Fleet::chain(&order).map_err(|error| UsageError {
        message: format!("the regions of `{name}`: {error}"),
    })?;
    context.output.message(format!(
        "deploying `{name}` to {} regions, the canary region first: {}",
        order.len(),
        order.join(", ")
    ));
    let mut regions: BTreeMap<String, _> = regions
        .into_iter()
        .map(|(config, id)| (id.region.clone(), (config, id)))
        .collect();
    let started = Instant::now();
    let mut ended: BTreeMap<String, Ended> = BTreeMap::new();
    let mut delivered = None;
    let mut last = None;
    let mut interrupt = deploy::ctrl_c_listening_now();
    let mut interrupted = false;
    while let Some(region) = wave.start_ready(1).pop() {
        let Some((config, id)) = regions.remove(&region) else {
            break;
        };
        context
            .output
            .message(format!("`{name}` in {region}: starting"));
        let region_started = started.elapsed();
        let rollout = deploy::deploy_region(
            context,
            args,
            workspace,
            config,
            id,
            delivered.clone(),
            Some(format!("{name} {region}")),
        );
        tokio::pin!(rollout);
        let result = loop {
            tokio::select! {
                result = &mut rollout => break result,
                () = &mut interrupt, if !interrupted => {
                    interrupted = true;
                    wave.interrupt();
                    context.output.message(format!(
                        "Ctrl-C: no other region of `{name}` starts; {region} decides on its own prompt"
                    ));
                }
            }
        };
        let status = match &result {
            Ok(deployed) => deployed.status,
            Err(error) => super::classify(error),
        };
        context.output.message(format!(
            "`{name}` in {region} ended: exit {}",
            status.code()
        ));
        wave.finish(&region, status);
        if let Ok(deployed) = &result {
            delivered = deployed.delivered.clone().or(delivered);
            last = Some(deployed.report.clone());
        }
        ended.insert(
            region,
            Ended {
                result,
                started: region_started,
                ended: started.elapsed(),
            },
        );
    }
    let lines = wave
        .order()
        .iter()
        .map(|region| {
            let mut line = line(region, &wave, &ended);
            line.service = name.to_string();
            line.region = Some(region.clone());
            if let Some(ServiceState::NotStarted(crate::fleet::NotStarted::DependencyFailed {
                dependency,
            })) = wave.state(region)
            {
                line.detail = format!("not started: {dependency} did not promote");
            }
            line
        })
        .collect();
    let status = wave.exit_status();
    let report = match last {
        Some(report) => report,
        // The canary region's deploy could not run: its error is the service's.
        None => {
            return match ended.into_values().next().map(|end| end.result) {
                Some(Err(error)) => Err(error),
                _ => Err(anyhow::anyhow!("no region of `{name}` was deployed")),
            }
        }
    };
    Ok(deploy::Deployed {
        report,
        status,
        delivered,
        regions: lines,
    })
}

/// `deploy SERVICE` of a multi-region service: a line per region, as the fleet report.
pub(super) fn print_regions(
    context: &Context,
    name: &str,
    deployed: &deploy::Deployed,
) -> anyhow::Result<()> {
    let seconds = deployed
        .regions
        .iter()
        .filter_map(|line| line.ended_after)
        .fold(0.0, f64::max);
    if context.output.is_json() {
        return context
            .output
            .json(&serde_json::json!({
                "service": name,
                "exit_code": deployed.status.code(),
                "seconds": seconds,
                "regions": deployed.regions,
            }))
            .context("cannot write the deploy report");
    }
    let mut text = table(&deployed.regions);
    text.push_str(&format!(
        "{name}: {} region(s) in {seconds:.0}s, exit {}",
        deployed.regions.len(),
        deployed.status.code()
    ));
    context.output.data(text);
    Ok(())
}

fn line(name: &str, fleet: &Fleet, ended: &BTreeMap<String, Ended>) -> ServiceLine {
    let state = fleet.state(name);
    if let Some(ServiceState::NotStarted(why)) = state {
        return ServiceLine {
            service: name.to_string(),
            region: None,
            result: "not_started",
            exit_code: ExitStatus::StoppedBeforeTraffic.code(),
            seconds: None,
            started_after: None,
            ended_after: None,
            detail: why.to_string(),
            report: None,
        };
    }
    let Some(end) = ended.get(name) else {
        return ServiceLine {
            service: name.to_string(),
            region: None,
            result: "failed",
            exit_code: ExitStatus::Failure.code(),
            seconds: None,
            started_after: None,
            ended_after: None,
            detail: "did not end".into(),
            report: None,
        };
    };
    let seconds = Some(end.ended.saturating_sub(end.started).as_secs_f64());
    let (started_after, ended_after) = (
        Some(end.started.as_secs_f64()),
        Some(end.ended.as_secs_f64()),
    );
    match &end.result {
        Ok(deployed) => ServiceLine {
            service: name.to_string(),
            region: None,
            result: result_label(&deployed.report.outcome),
            exit_code: deployed.status.code(),
            seconds,
            started_after,
            ended_after,
            detail: deploy::outcome_text(&deployed.report).replace('\n', " — "),
            report: Some(deployed.report.clone()),
        },
        Err(error) => ServiceLine {
            service: name.to_string(),
            region: None,
            result: "failed",
            exit_code: super::classify(error).code(),
            seconds,
            started_after,
            ended_after,
            detail: format!("{error:#}"),
            report: None,
        },
    }
}

fn print(context: &Context, report: &FleetReport) -> anyhow::Result<()> {
    if context.output.is_json() {
        return context
            .output
            .json(report)
            .context("cannot write the fleet report");
    }
    let mut text = table(&report.services);
    text.push_str(&format!(
        "fleet: {} service(s) in {:.0}s, exit {}{}",
        report.services.len(),
        report.seconds,
        report.exit_code,
        if report.interrupted {
            " (interrupted: services not started were left as they are)"
        } else {
            ""
        }
    ));
    context.output.data(text);
    Ok(())
}

/// The report's table: a line per service, with a REGION column when a service has several.
fn table(lines: &[ServiceLine]) -> String {
    let width = lines
        .iter()
        .map(|line| line.service.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let regions = lines.iter().any(|line| line.region.is_some());
    let region_width = lines
        .iter()
        .filter_map(|line| line.region.as_ref().map(String::len))
        .max()
        .unwrap_or(6)
        .max(6);
    let region = |value: Option<&str>| {
        if regions {
            format!("{:<region_width$}  ", value.unwrap_or("-"))
        } else {
            String::new()
        }
    };
    let mut text = format!(
        "{:<width$}  {}{:<22}  {:>6}  DETAIL\n",
        "SERVICE",
        region(Some("REGION")),
        "RESULT",
        "TIME"
    );
    for line in lines {
        let time = line
            .seconds
            .map(|seconds| format!("{seconds:.0}s"))
            .unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "{:<width$}  {}{:<22}  {:>6}  {}\n",
            line.service,
            region(line.region.as_deref()),
            line.result.replace('_', " ").to_uppercase(),
            time,
            line.detail
        ));
    }
    text
}

fn step_summary(report: &FleetReport) -> String {
    let rows = report.services.iter().map(|line| {
        [
            line.service.clone(),
            line.result.replace('_', " "),
            line.detail.clone(),
        ]
    });
    format!(
        "## Deploy of {} services: exit {}\n\n{}\n",
        report.services.len(),
        report.exit_code,
        github_actions::table(&["service", "result", "detail"], rows)
    )
}
