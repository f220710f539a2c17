//! [`run_all`]: every result of a health run, gathered concurrently. Each service's checks run
//! with one set of providers per distinct set of endpoints, at most `concurrency` at once; its
//! drift and its architecture are measured beside them through the [`Probe`]. A check that
//! cannot run (the platform unreadable for a `{revision}`) and a drift that cannot be measured
//! become ERROR results, so that every service always reports.

use std::time::Instant;

use futures::StreamExt as _;

use super::{
    run::{Options, Probe},
    HealthCheck,
};
use crate::{
    checks::{self, CheckContext, ProviderEndpoints, Providers, Status},
    config::{CheckConfig, Gate, ServiceConfig},
    wiring::Declared,
};

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
