//! The service checks of `services/*.toml` as metrics of a rollout: the [`GateChecks`] of a
//! deploy, on the providers of [`crate::checks`].
//!
//! A check result becomes a [`MetricResult`] of the look: PASS → `Pass`, WARN → `Warn`,
//! CRITICAL → `Fail` (service-wide when its baseline shows the stable revision breaching as
//! badly), NO DATA → `NoData`, ERROR → `Error`. So the state machine's rules apply to checks as
//! to the request-error test: CRITICAL rolls back (or stops the deploy at validation), and a
//! check that cannot be read never lets a gate pass.

use async_trait::async_trait;

use super::{
    observation::{MetricResult, Status},
    ports::{CheckScope, GateChecks},
};
use crate::{
    checks::{self, CheckContext, CheckResult, Providers, Scope},
    config::{Gate, ServiceConfig},
    platform::ServiceId,
};

/// The gated checks of one service.
pub struct ServiceChecks<'a> {
    config: &'a ServiceConfig,
    id: ServiceId,
    providers: Providers,
}

impl<'a> ServiceChecks<'a> {
    /// The checks of `config`, for the platform service `id`, read through `providers`.
    pub fn new(config: &'a ServiceConfig, id: &ServiceId, providers: Providers) -> Self {
        Self {
            config,
            id: id.clone(),
            providers,
        }
    }
}

/// A check's result in the rollout's vocabulary.
pub fn metric_result(result: &CheckResult) -> MetricResult {
    let status = match result.status {
        checks::Status::Pass => Status::Pass,
        checks::Status::Warn => Status::Warn,
        checks::Status::Critical => Status::Fail,
        checks::Status::NoData => Status::NoData,
        checks::Status::Error => Status::Error,
    };
    let mut detail = result.summary();
    if let Some(baseline) = &result.baseline {
        let value = baseline
            .value
            .map(|value| checks::format_value(value, result.unit))
            .unwrap_or_else(|| baseline.status.label().to_string());
        detail.push_str(&format!("; stable `{}`: {value}", baseline.revision));
    }
    let metric = MetricResult::new(result.name.clone(), status, detail);
    if status == Status::Fail && result.scope == Scope::ServiceWide {
        metric.service_wide()
    } else {
        metric
    }
}

#[async_trait]
impl GateChecks for ServiceChecks<'_> {
    fn gates(&self, gate: Gate) -> bool {
        !checks::checks_for_gate(self.config, gate).is_empty()
    }

    async fn run(&self, gate: Gate, scope: &CheckScope) -> Vec<MetricResult> {
        let selected = checks::checks_for_gate(self.config, gate);
        let context = CheckContext {
            service: self.id.name.clone(),
            project: self.id.project.clone(),
            region: self.id.region.clone(),
            revision: Some(scope.revision.clone()),
            stable_revision: scope.stable_revision.clone(),
            commit: Some(scope.commit.clone()),
            revision_url: scope.revision_url.clone(),
            stable_url: scope.stable_url.clone(),
        };
        checks::run_checks(&selected, &context, &self.providers)
            .await
            .iter()
            .map(metric_result)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{BaselineResult, Severity, Thresholds};
    use crate::config::Unit;

    fn result(status: checks::Status, scope: Scope) -> CheckResult {
        CheckResult {
            name: "Vegas Line Coverage".into(),
            provider: "bigquery",
            status,
            severity: Severity::Critical,
            value: Some(44.2),
            counts: None,
            unit: Unit::Percent,
            thresholds: Thresholds {
                comparison: ">=",
                warn: 90.0,
                critical: 70.0,
            },
            query: "SELECT 44.2".into(),
            link: None,
            elapsed_ms: 12,
            message: None,
            revision: Some("svc-2".into()),
            baseline: Some(BaselineResult {
                revision: "svc-1".into(),
                status,
                value: Some(43.0),
                query: "SELECT 43".into(),
                message: None,
            }),
            scope,
        }
    }

    #[test]
    fn check_results_become_metrics_of_the_look() {
        let critical = metric_result(&result(checks::Status::Critical, Scope::Revision));
        assert_eq!(critical.status, Status::Fail);
        assert!(!critical.service_wide);
        assert!(critical.detail.contains("44.2%"), "{}", critical.detail);
        assert!(
            critical.detail.contains("stable `svc-1`: 43"),
            "{}",
            critical.detail
        );
        let shared = metric_result(&result(checks::Status::Critical, Scope::ServiceWide));
        assert!(shared.service_wide);
        for (status, expected) in [
            (checks::Status::Pass, Status::Pass),
            (checks::Status::Warn, Status::Warn),
            (checks::Status::NoData, Status::NoData),
            (checks::Status::Error, Status::Error),
        ] {
            assert_eq!(
                metric_result(&result(status, Scope::Revision)).status,
                expected
            );
        }
    }
}
