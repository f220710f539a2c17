//! The unified health check: every `health`-gated check of every service and one "Deployment
//! Drift" check per service, folded into one score and one verdict.
//!
//! ```text
//! HealthCheck::from_result(&config, &result)   // a service check's result
//! HealthCheck::from_drift(&config, &drift, ms) // a service's drift
//! HealthCheck::from_architecture(&config, &findings, ms) // its wiring vs the live project
//! score(&checks) -> Score                      // passed / total × 100, the verdict, exit code
//! ```
//!
//! Score = passed / total × 100: ≥ 80 PASS, 50–79 WARNING, < 50 CRITICAL, and any CRITICAL
//! check makes the whole run CRITICAL. Only PASS passes: WARN, CRITICAL, NO DATA and ERROR do
//! not. [`run`] is one health run end to end: [`gather`] runs every check, drift and
//! architecture concurrently, [`alert_cycle`] plans, routes, sends and saves the run's alerts.
//! [`alerts`] holds the Slack alert lifecycle (pure functions of state, results and time)
//! and the digest; [`store`] the JSON-lines run history and the lifecycle state in the state
//! directory (or, [`bigquery_store`], in a BigQuery table), and the trends; [`record`] what both
//! stores keep. The webhook client is [`crate::notify::slack`]. Nothing here prints:
//! `src/cli/health.rs` does.

pub mod alert_cycle;
pub mod alerts;
pub mod bigquery_store;
pub mod gather;
pub mod record;
pub mod run;
pub mod shard;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::{
    checks::{CheckResult, Severity, Status, Thresholds},
    config::{ServiceConfig, Unit},
    drift::{self, ServiceDrift},
    wiring,
};

/// The name of the drift check of every service.
pub const DRIFT_CHECK: &str = "Deployment Drift";

/// The runbook section an alert links: where the service's runbook says what to look at.
pub const RUNBOOK_SECTION: &str = "troubleshoot";

/// One check of the health run, with everything a person (or a scheduler) needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    /// The service.
    pub service: String,
    /// The check's name.
    pub check: String,
    /// Its provider (`bigquery`, ..., `drift`).
    pub provider: &'static str,
    /// The verdict.
    pub status: Status,
    /// Its weight (`on_no_data` applied).
    pub severity: Severity,
    /// The measured value.
    pub value: Option<f64>,
    /// Unit of the value.
    pub unit: Unit,
    /// The thresholds (none for drift, whose thresholds are ages: see `detail`).
    pub thresholds: Option<Thresholds>,
    /// The query as run.
    pub query: String,
    /// Time taken, in milliseconds.
    pub elapsed_ms: u64,
    /// A page showing the same data.
    pub link: Option<String>,
    /// The runbook section to follow (`runbooks/x.md#troubleshoot`).
    pub runbook: String,
    /// Why there is no value, or what the value means (drift's reason).
    pub message: Option<String>,
}

/// The runbook section of `config`.
pub fn runbook_link(config: &ServiceConfig) -> String {
    format!("{}#{RUNBOOK_SECTION}", config.runbook)
}

impl HealthCheck {
    /// A service check's result.
    pub fn from_result(config: &ServiceConfig, result: &CheckResult) -> Self {
        Self {
            service: config.target_label(),
            check: result.name.clone(),
            provider: result.provider,
            status: result.status,
            severity: result.severity,
            value: result.value,
            unit: result.unit,
            thresholds: Some(result.thresholds),
            query: result.query.clone(),
            elapsed_ms: result.elapsed_ms,
            link: result.link.clone(),
            runbook: runbook_link(config),
            message: result.message.clone(),
        }
    }

    /// A service's drift: PASS / WARN / CRITICAL as drift judged it; ERROR when it could not
    /// be measured (the platform unreadable, not deployed, no commit known): never a pass.
    /// The value is the most undeployed service-relevant commits of a serving revision.
    pub fn from_drift(config: &ServiceConfig, drift: &ServiceDrift, elapsed_ms: u64) -> Self {
        let measured: Vec<_> = drift
            .revisions
            .iter()
            .filter_map(|revision| revision.facts.as_ref())
            .collect();
        let status = if measured.is_empty() {
            Status::Error
        } else {
            match drift.severity {
                drift::Severity::Ok => Status::Pass,
                drift::Severity::Warn => Status::Warn,
                drift::Severity::Critical => Status::Critical,
            }
        };
        let severity = match status {
            Status::Pass => Severity::Ok,
            Status::Critical => Severity::Critical,
            _ => Severity::Warning,
        };
        let value = measured.iter().map(|facts| facts.relevant).max();
        Self {
            service: config.target_label(),
            check: DRIFT_CHECK.to_string(),
            provider: "drift",
            status,
            severity,
            value: value.map(|count| count as f64),
            unit: Unit::Count,
            thresholds: None,
            query: format!(
                "serving revisions of `{}` vs `{}` (warn after {}, critical after {})",
                config.name,
                drift.main.reference,
                drift.thresholds.warn_after,
                drift.thresholds.critical_after
            ),
            elapsed_ms,
            link: None,
            runbook: runbook_link(config),
            message: Some(drift.reason.clone()),
        }
    }

    /// A service's architecture conformance (`deployer graph --check` for one service): PASS
    /// when nothing differs, WARN / CRITICAL by the worst finding about the service, ERROR
    /// when something could not be read (never a pass). The message names each finding's
    /// subscription or job, topic, delivery and fix, so the alert says what to delete or
    /// change; there is no value (a count of differences says nothing on its own).
    pub fn from_architecture(
        config: &ServiceConfig,
        findings: &[wiring::conformance::Finding],
        elapsed_ms: u64,
    ) -> Self {
        use wiring::conformance::{conformance, Conformance};
        let mine: Vec<&wiring::conformance::Finding> = findings
            .iter()
            .filter(|finding| finding.services.contains(&config.name))
            .collect();
        let (status, severity) = match conformance(findings, Some(&config.name)) {
            Conformance::Pass => (Status::Pass, Severity::Ok),
            Conformance::Warn => (Status::Warn, Severity::Warning),
            Conformance::Error => (Status::Error, Severity::Warning),
            Conformance::Critical => (Status::Critical, Severity::Critical),
        };
        let message = if mine.is_empty() {
            format!(
                "the live wiring matches `{}`'s declaration ({} subscription(s), {} topic(s) published, {} schedule(s))",
                config.name,
                config.subscriptions.len(),
                config.publishes.len(),
                config.schedules.len()
            )
        } else {
            mine.iter()
                .map(|finding| {
                    format!(
                        "{} {} (fix: {})",
                        finding.level.label(),
                        finding.message,
                        finding.fix
                    )
                })
                .collect::<Vec<_>>()
                .join(" · ")
        };
        Self {
            service: config.target_label(),
            check: wiring::ARCHITECTURE_CHECK.to_string(),
            provider: "architecture",
            status,
            severity,
            value: None,
            unit: Unit::Count,
            thresholds: None,
            query: format!(
                "declared wiring of `{}` vs Pub/Sub, Cloud Scheduler and Cloud Run",
                config.name
            ),
            elapsed_ms,
            link: None,
            runbook: runbook_link(config),
            message: Some(message),
        }
    }

    /// True when the check passed.
    pub fn passed(&self) -> bool {
        self.status == Status::Pass
    }

    /// The key of the check's alert lifecycle.
    pub fn key(&self) -> String {
        format!("{}/{}", self.service, self.check)
    }
}

/// The run's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Score ≥ 80 and no CRITICAL check.
    Pass,
    /// Score 50–79 and no CRITICAL check.
    Warning,
    /// Score < 50, or a CRITICAL check.
    Critical,
}

impl Verdict {
    /// `PASS`, `WARNING`, `CRITICAL`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
        }
    }

    /// The exit code of a run: the verdict's, and at least 1 when an alert could not be
    /// delivered (a failed delivery is never silent).
    pub fn exit_code_with(self, delivery_failed: bool) -> u8 {
        self.exit_code().max(u8::from(delivery_failed))
    }

    /// The exit code: 0 PASS, 1 WARNING, 2 CRITICAL.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
        }
    }
}

/// The run's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// Checks that passed.
    pub passed: usize,
    /// All checks.
    pub total: usize,
    /// passed / total × 100 (0 for no check).
    pub percent: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// The score of `checks`. No check at all is CRITICAL: nothing was shown to be healthy.
pub fn score(checks: &[HealthCheck]) -> Score {
    let total = checks.len();
    let passed = checks.iter().filter(|check| check.passed()).count();
    let percent = if total == 0 {
        0.0
    } else {
        passed as f64 * 100.0 / total as f64
    };
    let any_critical = checks
        .iter()
        .any(|check| check.status == Status::Critical || check.severity == Severity::Critical);
    let verdict = if any_critical || percent < 50.0 {
        Verdict::Critical
    } else if percent < 80.0 {
        Verdict::Warning
    } else {
        Verdict::Pass
    };
    Score {
        passed,
        total,
        percent,
        verdict,
    }
}

#[cfg(test)]
pub(crate) mod tests;
