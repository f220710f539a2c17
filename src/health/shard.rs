//! The health job at fleet scale on Cloud Run Jobs' own parallelism. An execution of `N` tasks
//! (`CLOUD_RUN_TASK_COUNT`, each task's `CLOUD_RUN_TASK_INDEX`, all sharing
//! `CLOUD_RUN_EXECUTION`) splits the services: [`Shard::share`] gives each task a stable share
//! (the services sorted by name, dealt round-robin: every service in exactly one task, shares
//! differing by at most one). Each task checks its share and records its results in the
//! history store as a [`TaskRecord`] of the execution; then it reads the execution's records.
//! The task that sees every task's record claims the execution's digest with an atomic
//! create-if-absent; only the task whose claim succeeds plans, sends and saves the alerts over
//! every task's results, and appends the run to the history (one run, as an unsharded run
//! would). See `docs/HEALTH.md`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::HealthCheck;
use crate::{
    checks::{Severity, Status, Thresholds},
    config::{Provider, ServiceConfig, Unit},
};

/// One task of a sharded execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The execution the tasks share (`CLOUD_RUN_EXECUTION`).
    pub execution: String,
    /// This task (`CLOUD_RUN_TASK_INDEX`, from 0).
    pub index: u32,
    /// The tasks of the execution (`CLOUD_RUN_TASK_COUNT`).
    pub count: u32,
}

impl Shard {
    /// The task the environment describes: `None` for a run of one task (no variable, or a
    /// count of 1); an error naming the variable when one is malformed.
    pub fn from_environment(
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Shard>, String> {
        let number = |name: &str| -> Result<Option<u32>, String> {
            match variable(name).filter(|value| !value.trim().is_empty()) {
                None => Ok(None),
                Some(text) => text.trim().parse::<u32>().map(Some).map_err(|_| {
                    format!(
                        "`{name}` is `{}`: not a whole number (Cloud Run Jobs sets it)",
                        crate::untrusted::ellipsized(&text, 40)
                    )
                }),
            }
        };
        let count = number("CLOUD_RUN_TASK_COUNT")?.unwrap_or(1);
        if count <= 1 {
            return Ok(None);
        }
        let index = number("CLOUD_RUN_TASK_INDEX")?.ok_or_else(|| {
            format!("`CLOUD_RUN_TASK_COUNT` is {count} but `CLOUD_RUN_TASK_INDEX` is not set")
        })?;
        if index >= count {
            return Err(format!(
                "`CLOUD_RUN_TASK_INDEX` is {index}: not below `CLOUD_RUN_TASK_COUNT` ({count})"
            ));
        }
        let execution = variable("CLOUD_RUN_EXECUTION")
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                format!("`CLOUD_RUN_TASK_COUNT` is {count} but `CLOUD_RUN_EXECUTION` (the id every task of the run shares) is not set")
            })?;
        let valid = execution.chars().count() <= 128
            && execution
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !execution.starts_with('.');
        if !valid {
            return Err(format!(
                "`CLOUD_RUN_EXECUTION` is `{}`: use letters, digits, `-`, `_` and `.` (at most 128)",
                crate::untrusted::ellipsized(&execution, 40)
            ));
        }
        Ok(Some(Shard {
            execution,
            index,
            count,
        }))
    }

    /// This task's services: the services sorted by name, dealt round-robin over the tasks.
    /// Every task reads the same files, so the tasks agree without talking, every service falls
    /// in exactly one task, and the shares differ by at most one service (a hash of the name
    /// would be as stable, but 500 services over 10 tasks would give shares of ~40 to ~60, and
    /// the slowest task is the run's wall time).
    pub fn share(&self, configs: &[ServiceConfig]) -> Vec<ServiceConfig> {
        let mut sorted: Vec<&ServiceConfig> = configs.iter().collect();
        sorted.sort_by_key(|config| config.target_label());
        sorted
            .into_iter()
            .enumerate()
            .filter(|(position, _)| {
                *position as u64 % u64::from(self.count) == u64::from(self.index)
            })
            .map(|(_, config)| config.clone())
            .collect()
    }
}

/// What one task of an execution recorded: its results, for the task that sends the digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The execution.
    pub execution: String,
    /// The task.
    pub task: u32,
    /// The execution's tasks.
    pub count: u32,
    /// When the task ran.
    pub at: DateTime<Utc>,
    /// Its results.
    pub results: Vec<StoredCheck>,
}

impl TaskRecord {
    /// The record of `shard`'s results.
    pub fn new(shard: &Shard, at: DateTime<Utc>, results: &[HealthCheck]) -> Self {
        Self {
            execution: shard.execution.clone(),
            task: shard.index,
            count: shard.count,
            at,
            results: results.iter().map(StoredCheck::from).collect(),
        }
    }
}

/// The tasks of `count` that have no record in `records`.
pub fn missing_tasks(records: &[TaskRecord], count: u32) -> Vec<u32> {
    (0..count)
        .filter(|task| !records.iter().any(|record| record.task == *task))
        .collect()
}

/// Every result of `records`, task by task.
pub fn all_results(records: &[TaskRecord]) -> Vec<HealthCheck> {
    let mut sorted: Vec<&TaskRecord> = records.iter().collect();
    sorted.sort_by_key(|record| record.task);
    sorted.dedup_by_key(|record| record.task);
    sorted
        .into_iter()
        .flat_map(|record| record.results.iter().map(HealthCheck::from))
        .collect()
}

/// A [`HealthCheck`] as a task record keeps it (its `'static` names as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCheck {
    service: String,
    check: String,
    provider: String,
    status: Status,
    severity: String,
    value: Option<f64>,
    unit: Unit,
    thresholds: Option<(String, f64, f64)>,
    query: String,
    elapsed_ms: u64,
    link: Option<String>,
    runbook: String,
    message: Option<String>,
}

impl From<&HealthCheck> for StoredCheck {
    fn from(check: &HealthCheck) -> Self {
        Self {
            service: check.service.clone(),
            check: check.check.clone(),
            provider: check.provider.to_string(),
            status: check.status,
            severity: match check.severity {
                Severity::Ok => "ok",
                Severity::Warning => "warning",
                Severity::Critical => "critical",
            }
            .to_string(),
            value: check.value,
            unit: check.unit,
            thresholds: check.thresholds.map(|thresholds| {
                (
                    thresholds.comparison.to_string(),
                    thresholds.warn,
                    thresholds.critical,
                )
            }),
            query: check.query.clone(),
            elapsed_ms: check.elapsed_ms,
            link: check.link.clone(),
            runbook: check.runbook.clone(),
            message: check.message.clone(),
        }
    }
}

/// The `'static` name among `names` that reads `text` (`?` for one deployer does not write).
fn known(text: &str, names: &[&'static str]) -> &'static str {
    names
        .iter()
        .find(|name| **name == text)
        .copied()
        .unwrap_or("?")
}

impl From<&StoredCheck> for HealthCheck {
    fn from(stored: &StoredCheck) -> Self {
        let providers = [
            Provider::Http.as_str(),
            Provider::Bigquery.as_str(),
            Provider::CloudMonitoring.as_str(),
            Provider::CloudLogging.as_str(),
            Provider::Prometheus.as_str(),
            "drift",
            "architecture",
        ];
        Self {
            service: stored.service.clone(),
            check: stored.check.clone(),
            provider: known(&stored.provider, &providers),
            status: stored.status,
            severity: match stored.severity.as_str() {
                "ok" => Severity::Ok,
                "critical" => Severity::Critical,
                _ => Severity::Warning,
            },
            value: stored.value,
            unit: stored.unit,
            thresholds: stored
                .thresholds
                .as_ref()
                .map(|(comparison, warn, critical)| Thresholds {
                    comparison: known(comparison, &[">=", ">", "<=", "<"]),
                    warn: *warn,
                    critical: *critical,
                }),
            query: stored.query.clone(),
            elapsed_ms: stored.elapsed_ms,
            link: stored.link.clone(),
            runbook: stored.runbook.clone(),
            message: stored.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> ServiceConfig {
        toml::from_str(&format!(
            "name = \"{name}\"\nrunbook = \"runbooks/{name}.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"r/{name}\"\n"
        ))
        .unwrap()
    }

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(known, _)| known == name)
                .map(|(_, value)| value.clone())
        }
    }

    #[test]
    fn every_service_falls_in_exactly_one_task_whatever_the_order_of_the_files() {
        let configs: Vec<ServiceConfig> = (0..23).map(|n| config(&format!("svc-{n:02}"))).collect();
        let mut reversed = configs.clone();
        reversed.reverse();
        for count in [2, 7, 10] {
            let mut seen = Vec::new();
            for index in 0..count {
                let shard = Shard {
                    execution: "e".into(),
                    index,
                    count,
                };
                let share = shard.share(&configs);
                assert_eq!(share, shard.share(&reversed), "stable");
                assert!(share.len().abs_diff(23 / count as usize) <= 1);
                seen.extend(share.into_iter().map(|config| config.name));
            }
            seen.sort();
            let all: Vec<String> = configs.iter().map(|config| config.name.clone()).collect();
            assert_eq!(seen, all, "{count} tasks");
        }
    }

    #[test]
    fn the_environment_names_the_variable_that_is_wrong() {
        assert_eq!(Shard::from_environment(environment(&[])), Ok(None));
        assert_eq!(
            Shard::from_environment(environment(&[("CLOUD_RUN_TASK_COUNT", "1")])),
            Ok(None)
        );
        assert_eq!(
            Shard::from_environment(environment(&[
                ("CLOUD_RUN_TASK_COUNT", "3"),
                ("CLOUD_RUN_TASK_INDEX", "2"),
                ("CLOUD_RUN_EXECUTION", "deployer-health-x7k2p"),
            ])),
            Ok(Some(Shard {
                execution: "deployer-health-x7k2p".into(),
                index: 2,
                count: 3
            }))
        );
        for (pairs, variable) in [
            (
                vec![("CLOUD_RUN_TASK_COUNT", "ten")],
                "CLOUD_RUN_TASK_COUNT",
            ),
            (vec![("CLOUD_RUN_TASK_COUNT", "3")], "CLOUD_RUN_TASK_INDEX"),
            (
                vec![("CLOUD_RUN_TASK_COUNT", "3"), ("CLOUD_RUN_TASK_INDEX", "3")],
                "CLOUD_RUN_TASK_INDEX",
            ),
            (
                vec![("CLOUD_RUN_TASK_COUNT", "3"), ("CLOUD_RUN_TASK_INDEX", "0")],
                "CLOUD_RUN_EXECUTION",
            ),
            (
                vec![
                    ("CLOUD_RUN_TASK_COUNT", "3"),
                    ("CLOUD_RUN_TASK_INDEX", "0"),
                    ("CLOUD_RUN_EXECUTION", "../../etc"),
                ],
                "CLOUD_RUN_EXECUTION",
            ),
        ] {
            let error = Shard::from_environment(environment(&pairs)).unwrap_err();
            assert!(error.contains(variable), "{error}");
        }
    }

    #[test]
    fn a_task_record_gives_back_the_results_it_kept() {
        let mut check = crate::health::tests::check("a", "x", Status::Critical);
        check.message = Some("why".into());
        let shard = Shard {
            execution: "e".into(),
            index: 1,
            count: 2,
        };
        let record = TaskRecord::new(&shard, Utc::now(), std::slice::from_ref(&check));
        let text = serde_json::to_string(&record).unwrap();
        let read: TaskRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(all_results(&[read]), vec![check]);
        assert_eq!(missing_tasks(&[record], 3), vec![0, 2]);
    }
}
