//! The history store: each run's results appended to `health/history.jsonl` in the state
//! directory (the one [`LocalJournal::from_environment`] uses: `DEPLOYER_STATE_DIR`, else
//! `$XDG_STATE_HOME/deployer`, else `~/.local/state/deployer`), and the alert lifecycle in
//! `health/alerts.json`, written atomically; or both in a BigQuery table
//! ([`super::bigquery_store`]), behind one [`Store`] chosen by a [`Location`]. Then the trends:
//! each check's series and a sparkline, as pure functions.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    alerts::AlertState,
    bigquery_store::{BigQueryStore, TableName},
    record::{parse_runs, HistoryError, RunRecord},
    shard::TaskRecord,
};
use crate::{checks::Status, rollout::journal::LocalJournal};

/// The files of the store.
#[derive(Debug, Clone)]
pub struct FileStore {
    directory: PathBuf,
}

impl FileStore {
    /// The store in the state directory.
    pub fn from_environment() -> Self {
        Self::in_directory(LocalJournal::from_environment().directory())
    }

    /// The store under `state_directory`.
    pub fn in_directory(state_directory: &Path) -> Self {
        Self {
            directory: state_directory.join("health"),
        }
    }

    /// The history file.
    pub fn history_path(&self) -> PathBuf {
        self.directory.join("history.jsonl")
    }

    /// The alert state file.
    pub fn alerts_path(&self) -> PathBuf {
        self.directory.join("alerts.json")
    }

    fn create_directory(&self) -> Result<(), HistoryError> {
        fs_err::create_dir_all(&self.directory).map_err(|source| HistoryError::Io {
            action: "create",
            path: self.directory.clone(),
            source,
        })
    }

    /// Appends `record` as one line.
    pub fn append(&self, record: &RunRecord) -> Result<(), HistoryError> {
        self.create_directory()?;
        let path = self.history_path();
        let io = |source| HistoryError::Io {
            action: "write",
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_string(record).map_err(|error| io(error.into()))?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)
    }

    /// The runs recorded at or after `since`, oldest first; lines that cannot be read are
    /// skipped and counted.
    pub fn read(&self, since: DateTime<Utc>) -> Result<(Vec<RunRecord>, usize), HistoryError> {
        let path = self.history_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(HistoryError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        Ok(parse_runs(text.lines(), since))
    }

    /// The latest run recorded.
    pub fn latest(&self) -> Result<Option<RunRecord>, HistoryError> {
        let (runs, _) = self.read(DateTime::<Utc>::MIN_UTC)?;
        Ok(runs.into_iter().next_back())
    }

    /// The alert state (empty when none was saved).
    pub fn load_alerts(&self) -> Result<AlertState, HistoryError> {
        let path = self.alerts_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|error| HistoryError::Corrupt {
                path,
                message: error.to_string(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(AlertState::default()),
            Err(source) => Err(HistoryError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Saves the alert state (write then rename: a crash never leaves half a file).
    pub fn save_alerts(&self, state: &AlertState) -> Result<(), HistoryError> {
        self.create_directory()?;
        let path = self.alerts_path();
        let temporary = self.directory.join("alerts.json.tmp");
        let io = |source| HistoryError::Io {
            action: "write",
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(state).map_err(|error| io(error.into()))?;
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)
    }

    /// The directory of an execution's task records and its digest claim.
    fn execution_directory(&self, execution: &str) -> PathBuf {
        self.directory.join("executions").join(execution)
    }

    /// Records one task's results (write then rename: a reader never sees half a record).
    pub fn append_task(&self, record: &TaskRecord) -> Result<(), HistoryError> {
        let directory = self.execution_directory(&record.execution);
        let io = |path: &Path, source| HistoryError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        };
        fs_err::create_dir_all(&directory).map_err(|source| io(&directory, source))?;
        let path = directory.join(format!("task-{}.json", record.task));
        let temporary = directory.join(format!("task-{}.json.tmp", record.task));
        let text = serde_json::to_string(record).map_err(|error| io(&path, error.into()))?;
        std::fs::write(&temporary, text).map_err(|source| io(&temporary, source))?;
        std::fs::rename(&temporary, &path).map_err(|source| io(&path, source))
    }

    /// The task records of `execution` (none when no task recorded yet).
    pub fn task_records(&self, execution: &str) -> Result<Vec<TaskRecord>, HistoryError> {
        let directory = self.execution_directory(execution);
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(HistoryError::Io {
                    action: "read",
                    path: directory,
                    source,
                })
            }
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("task-") && name.ends_with(".json")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| HistoryError::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            let record: TaskRecord =
                serde_json::from_str(&text).map_err(|error| HistoryError::Corrupt {
                    path: path.clone(),
                    message: error.to_string(),
                })?;
            if record.execution == execution {
                records.push(record);
            }
        }
        records.sort_by_key(|record| record.task);
        Ok(records)
    }

    /// Claims the digest of `execution`: true for the one caller that creates the claim
    /// (an exclusive create, `O_EXCL`: of tasks finishing at once, exactly one wins), false
    /// for every other.
    pub fn claim_digest(&self, execution: &str, task: u32) -> Result<bool, HistoryError> {
        let directory = self.execution_directory(execution);
        let path = directory.join("digest.claim");
        let io = |source| HistoryError::Io {
            action: "write",
            path: path.clone(),
            source,
        };
        fs_err::create_dir_all(&directory).map_err(&io)?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(format!("task {task}\n").as_bytes())
                    .map_err(io)?;
                Ok(true)
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(io(source)),
        }
    }
}

/// Where the history and the lifecycle are kept: `--history` / `DEPLOYER_HEALTH_HISTORY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `file`: the files of the state directory (the default).
    File,
    /// `bigquery:PROJECT.DATASET.TABLE`.
    BigQuery(TableName),
}

impl Location {
    /// Parses `file` or `bigquery:PROJECT.DATASET.TABLE`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "file" {
            return Ok(Location::File);
        }
        match text.split_once(':') {
            Some(("bigquery", table)) => TableName::parse(table).map(Location::BigQuery),
            _ => Err(format!(
                "`{text}` is not a history store: use `file` or `bigquery:PROJECT.DATASET.TABLE`"
            )),
        }
    }
}

/// The history store of a run.
#[derive(Debug)]
pub enum Store {
    /// Files in the state directory.
    File(FileStore),
    /// A BigQuery table.
    BigQuery(Box<BigQueryStore>),
}

impl Store {
    /// The store at `location`; BigQuery through `bigquery_endpoint` (the check provider's).
    pub fn open(location: &Location, bigquery_endpoint: Option<&str>) -> Self {
        match location {
            Location::File => Store::File(FileStore::from_environment()),
            Location::BigQuery(table) => Store::BigQuery(Box::new(BigQueryStore::new(
                table.clone(),
                bigquery_endpoint,
            ))),
        }
    }

    /// Where it is, as people read it: the history file, or `bigquery:PROJECT.DATASET.TABLE`.
    pub fn describe(&self) -> String {
        match self {
            Store::File(store) => store.history_path().display().to_string(),
            Store::BigQuery(store) => format!("bigquery:{}", store.table()),
        }
    }

    /// Appends a run.
    pub async fn append(&self, record: &RunRecord) -> Result<(), HistoryError> {
        match self {
            Store::File(store) => store.append(record),
            Store::BigQuery(store) => store.append(record).await,
        }
    }

    /// The runs since `since`, oldest first, and how many records were unreadable.
    pub async fn read(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(Vec<RunRecord>, usize), HistoryError> {
        match self {
            Store::File(store) => store.read(since),
            Store::BigQuery(store) => store.read(since).await,
        }
    }

    /// The latest run recorded.
    pub async fn latest(&self) -> Result<Option<RunRecord>, HistoryError> {
        match self {
            Store::File(store) => store.latest(),
            Store::BigQuery(store) => store.latest().await,
        }
    }

    /// The alert lifecycle state.
    pub async fn load_alerts(&self) -> Result<AlertState, HistoryError> {
        match self {
            Store::File(store) => store.load_alerts(),
            Store::BigQuery(store) => store.load_alerts().await,
        }
    }

    /// Saves the alert lifecycle state as of `at`.
    pub async fn save_alerts(
        &self,
        state: &AlertState,
        at: DateTime<Utc>,
    ) -> Result<(), HistoryError> {
        match self {
            Store::File(store) => store.save_alerts(state),
            Store::BigQuery(store) => store.save_alerts(state, at).await,
        }
    }

    /// Where the tasks of a sharded run meet: the state directory's files, whichever store
    /// keeps the history (a table has no atomic create-if-absent; a volume every task mounts,
    /// NFS, has `O_EXCL`).
    pub fn tasks(&self) -> FileStore {
        match self {
            Store::File(store) => store.clone(),
            Store::BigQuery(_) => FileStore::from_environment(),
        }
    }
}

/// One point of a check's trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// When.
    pub at: DateTime<Utc>,
    /// The status.
    pub status: Status,
    /// The value.
    pub value: Option<f64>,
}

/// Each check's series (`service/check` → points, oldest first), only checks named `check`
/// when given (case-insensitive).
pub fn series(runs: &[RunRecord], check: Option<&str>) -> BTreeMap<String, Vec<Point>> {
    let wanted = check.map(str::to_lowercase);
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for run in runs {
        for recorded in &run.checks {
            if wanted
                .as_ref()
                .is_some_and(|wanted| recorded.check.to_lowercase() != *wanted)
            {
                continue;
            }
            series
                .entry(format!("{}/{}", recorded.service, recorded.check))
                .or_default()
                .push(Point {
                    at: run.at,
                    status: recorded.status,
                    value: recorded.value,
                });
        }
    }
    series
}

/// A sparkline of `values` scaled between their minimum and maximum; a point with no value
/// is `·`.
pub fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let known: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let min = known.iter().copied().fold(f64::INFINITY, f64::min);
    let max = known.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|value| match value {
            Some(value) if value.is_finite() => {
                if max > min {
                    let step = ((value - min) / (max - min) * 7.0).round() as usize;
                    BARS[step.min(7)]
                } else {
                    BARS[3]
                }
            }
            _ => '·',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{alerts, score, tests::check};

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-02-02T00:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::hours(hours)
    }

    #[test]
    fn runs_and_alert_state_round_trip_through_files() {
        let directory = tempfile::tempdir().unwrap();
        let store = FileStore::in_directory(directory.path());
        assert!(store.read(at(0)).unwrap().0.is_empty());
        assert_eq!(store.load_alerts().unwrap(), AlertState::default());
        for (hour, status) in [(0, Status::Pass), (6, Status::Critical), (12, Status::Pass)] {
            let checks = vec![check("s", "Vegas", status)];
            store
                .append(&RunRecord::new(at(hour), &score(&checks), &checks))
                .unwrap();
        }
        // A line someone broke is skipped, not fatal.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(store.history_path())
            .unwrap();
        writeln!(file, "{{not json").unwrap();
        let (runs, skipped) = store.read(at(6)).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(skipped, 1);
        assert_eq!(runs[0].checks[0].status, Status::Critical);

        let (_, state) = alerts::plan(
            &AlertState::default(),
            &[check("s", "Vegas", Status::Critical)],
            at(6),
            |_| alerts::DEFAULT_REPEAT_INTERVAL,
        );
        store.save_alerts(&state).unwrap();
        // A new process (a new job) reads the same lifecycle.
        let again = FileStore::in_directory(directory.path());
        assert_eq!(again.load_alerts().unwrap(), state);
        std::fs::write(again.alerts_path(), "[]").unwrap();
        assert!(matches!(
            again.load_alerts(),
            Err(HistoryError::Corrupt { .. })
        ));
    }

    #[test]
    fn series_follow_each_check() {
        let runs: Vec<RunRecord> = (0..3)
            .map(|hour| {
                let mut vegas = check("p4", "Vegas", Status::Pass);
                vegas.value = Some(90.0 + hour as f64);
                let checks = vec![vegas, check("p3", "BDB", Status::Warn)];
                RunRecord::new(at(hour), &score(&checks), &checks)
            })
            .collect();
        let all = series(&runs, None);
        assert_eq!(all.len(), 2);
        let vegas = series(&runs, Some("vegas"));
        assert_eq!(vegas.len(), 1);
        let points = &vegas["p4/Vegas"];
        assert_eq!(
            points.iter().map(|p| p.value).collect::<Vec<_>>(),
            [Some(90.0), Some(91.0), Some(92.0)]
        );
    }

    #[test]
    fn sparklines_scale_between_min_and_max() {
        assert_eq!(sparkline(&[Some(0.0), Some(50.0), Some(100.0)]), "▁▅█");
        assert_eq!(sparkline(&[Some(5.0), None, Some(5.0)]), "▄·▄");
        assert_eq!(sparkline(&[]), "");
    }
}
