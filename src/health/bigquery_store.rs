//! The history store in a BigQuery table (`--history bigquery:PROJECT.DATASET.TABLE`), so that a
//! stateless Cloud Run Job keeps its run history and its alert lifecycle across executions.
//!
//! One append-only table, created when missing (`CREATE TABLE IF NOT EXISTS`; the dataset must
//! exist), one row per run and one per saved lifecycle state:
//!
//! | column | type | |
//! |---|---|---|
//! | `recorded_at` | TIMESTAMP | when the run ran |
//! | `kind` | STRING | `run` or `alerts` |
//! | `score` | FLOAT64 | the run's score (NULL for `alerts`) |
//! | `verdict` | STRING | `PASS` / `WARNING` / `CRITICAL` (NULL for `alerts`) |
//! | `record` | STRING | the JSON of the run (as a line of the file store) or of the state |
//!
//! The lifecycle is the latest `alerts` row; rows are only ever inserted (DML `INSERT` with
//! query parameters, never text pasted into SQL), through the same client, endpoint
//! (`DEPLOYER_BIGQUERY_ENDPOINT` / `--bigquery-endpoint`) and credentials as the `bigquery`
//! check provider.

use chrono::{DateTime, Utc};
use google_cloud_bigquery_v2::{
    client::JobService,
    model::{QueryParameter, QueryParameterType, QueryParameterValue, QueryRequest},
};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{
    alerts::AlertState,
    record::{parse_runs, HistoryError, RunRecord},
};
use crate::checks::{bigquery, LazyClient, ProviderError};

/// Each statement waits at most this long for BigQuery.
const WAIT_MS: u32 = 30_000;

/// A table's full name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The project (also where the jobs run).
    pub project: String,
    /// The dataset.
    pub dataset: String,
    /// The table.
    pub table: String,
}

impl TableName {
    /// Parses `PROJECT.DATASET.TABLE`: a project of lowercase letters, digits and `-`, a
    /// dataset of letters, digits and `_`, a table of letters, digits, `_` and `-`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let [project, dataset, table] = parts.as_slice() else {
            return Err(format!(
                "`{text}` is not PROJECT.DATASET.TABLE (three names separated by `.`)"
            ));
        };
        let valid = |name: &str, extra: &[char], lowercase: bool| {
            !name.is_empty()
                && name.len() <= 1024
                && name.chars().all(|c| {
                    c.is_ascii_digit()
                        || extra.contains(&c)
                        || if lowercase {
                            c.is_ascii_lowercase()
                        } else {
                            c.is_ascii_alphabetic()
                        }
                })
        };
        if !valid(project, &['-'], true) {
            return Err(format!(
                "the project `{project}` of `{text}` is not a project id (lowercase letters, digits, `-`)"
            ));
        }
        if !valid(dataset, &['_'], false) {
            return Err(format!(
                "the dataset `{dataset}` of `{text}` is not a dataset name (letters, digits, `_`)"
            ));
        }
        if !valid(table, &['_', '-'], false) {
            return Err(format!(
                "the table `{table}` of `{text}` is not a table name (letters, digits, `_`, `-`)"
            ));
        }
        Ok(Self {
            project: project.to_string(),
            dataset: dataset.to_string(),
            table: table.to_string(),
        })
    }

    /// `` `project.dataset.table` ``, quoted for SQL (the names are validated: no backtick).
    fn quoted(&self) -> String {
        format!("`{}.{}.{}`", self.project, self.dataset, self.table)
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}

/// The store in one BigQuery table.
#[derive(Debug)]
pub struct BigQueryStore {
    table: TableName,
    client: LazyClient<JobService>,
    created: OnceCell<()>,
}

fn parameter(name: &str, kind: &str, value: Option<String>) -> QueryParameter {
    let mut parameter_value = QueryParameterValue::new();
    if let Some(value) = value {
        parameter_value = parameter_value.set_value(value);
    }
    QueryParameter::new()
        .set_name(name)
        .set_parameter_type(QueryParameterType::new().set_type(kind))
        .set_parameter_value(parameter_value)
}

/// BigQuery's canonical timestamp text (microseconds, UTC).
fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
}

impl BigQueryStore {
    /// The store in `table`, through `endpoint` (Google's BigQuery when `None`).
    pub fn new(table: TableName, endpoint: Option<&str>) -> Self {
        Self {
            table,
            client: LazyClient::new(endpoint),
            created: OnceCell::new(),
        }
    }

    /// The table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    fn error(&self, action: &'static str, error: ProviderError) -> HistoryError {
        HistoryError::Remote {
            action,
            location: format!("bigquery:{}", self.table),
            message: error.to_string(),
        }
    }

    async fn client(&self) -> Result<&JobService, HistoryError> {
        self.client
            .get()
            .await
            .map_err(|error| HistoryError::Remote {
                action: "connect to",
                location: format!("bigquery:{}", self.table),
                message: format!("cannot create the BigQuery client: {}", error.cause()),
            })
    }

    async fn execute(
        &self,
        action: &'static str,
        sql: String,
        parameters: Vec<QueryParameter>,
    ) -> Result<Vec<serde_json::Map<String, Value>>, HistoryError> {
        let client = self.client().await?;
        let mut request = QueryRequest::new().set_query(sql).set_use_legacy_sql(false);
        if !parameters.is_empty() {
            request = request
                .set_parameter_mode("NAMED")
                .set_query_parameters(parameters);
        }
        bigquery::query_rows(client, &self.table.project, request, WAIT_MS)
            .await
            .map_err(|error| self.error(action, error))
    }

    /// Runs a statement on the table, created first when missing.
    async fn run(
        &self,
        action: &'static str,
        sql: String,
        parameters: Vec<QueryParameter>,
    ) -> Result<Vec<serde_json::Map<String, Value>>, HistoryError> {
        self.ensure_table().await?;
        self.execute(action, sql, parameters).await
    }

    /// Creates the table when it is missing, once per process.
    async fn ensure_table(&self) -> Result<(), HistoryError> {
        self.created
            .get_or_try_init(|| async {
                self.execute(
                    "create",
                    format!(
                        "CREATE TABLE IF NOT EXISTS {} (recorded_at TIMESTAMP, kind STRING, \
                         score FLOAT64, verdict STRING, record STRING)",
                        self.table.quoted()
                    ),
                    Vec::new(),
                )
                .await
                .map(|_| ())
            })
            .await
            .map(|_| ())
    }

    async fn insert(
        &self,
        at: DateTime<Utc>,
        kind: &str,
        run: Option<&RunRecord>,
        record: String,
    ) -> Result<(), HistoryError> {
        self.run(
            "write to",
            format!(
                "INSERT INTO {} (recorded_at, kind, score, verdict, record) \
                 VALUES (@recorded_at, @kind, @score, @verdict, @record)",
                self.table.quoted()
            ),
            vec![
                parameter("recorded_at", "TIMESTAMP", Some(timestamp(at))),
                parameter("kind", "STRING", Some(kind.into())),
                parameter("score", "FLOAT64", run.map(|run| run.score.to_string())),
                parameter(
                    "verdict",
                    "STRING",
                    run.map(|run| run.verdict.label().to_string()),
                ),
                parameter("record", "STRING", Some(record)),
            ],
        )
        .await
        .map(|_| ())
    }

    /// Appends `record` as one row.
    pub async fn append(&self, record: &RunRecord) -> Result<(), HistoryError> {
        let json = serde_json::to_string(record).map_err(|error| HistoryError::Remote {
            action: "write to",
            location: format!("bigquery:{}", self.table),
            message: error.to_string(),
        })?;
        self.insert(record.at, "run", Some(record), json).await
    }

    /// The `record` texts of the rows of `kind` (since `since`), oldest first, at most `limit`
    /// of the newest when given.
    async fn records(
        &self,
        kind: &str,
        since: Option<DateTime<Utc>>,
        limit: Option<u32>,
    ) -> Result<Vec<String>, HistoryError> {
        let mut parameters = vec![parameter("kind", "STRING", Some(kind.into()))];
        let mut sql = format!(
            "SELECT record, recorded_at FROM {} WHERE kind = @kind",
            self.table.quoted()
        );
        if let Some(since) = since {
            sql.push_str(" AND recorded_at >= @since");
            parameters.push(parameter("since", "TIMESTAMP", Some(timestamp(since))));
        }
        match limit {
            Some(limit) => sql.push_str(&format!(" ORDER BY recorded_at DESC LIMIT {limit}")),
            None => sql.push_str(" ORDER BY recorded_at"),
        }
        let rows = self.run("read", sql, parameters).await?;
        let mut texts: Vec<String> = rows
            .iter()
            .filter_map(|row| bigquery::cell(row, 0)?.as_str().map(str::to_string))
            .collect();
        if limit.is_some() {
            texts.reverse();
        }
        Ok(texts)
    }

    /// The runs recorded at or after `since`, oldest first; rows that cannot be read are
    /// skipped and counted.
    pub async fn read(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(Vec<RunRecord>, usize), HistoryError> {
        let texts = self.records("run", Some(since), None).await?;
        Ok(parse_runs(texts.iter().map(String::as_str), since))
    }

    /// The latest run recorded.
    pub async fn latest(&self) -> Result<Option<RunRecord>, HistoryError> {
        let texts = self.records("run", None, Some(1)).await?;
        Ok(texts
            .iter()
            .find_map(|text| serde_json::from_str(text).ok()))
    }

    /// The alert state: the latest saved (empty when none was).
    pub async fn load_alerts(&self) -> Result<AlertState, HistoryError> {
        let texts = self.records("alerts", None, Some(1)).await?;
        match texts.first() {
            None => Ok(AlertState::default()),
            Some(text) => serde_json::from_str(text).map_err(|error| HistoryError::Corrupt {
                path: format!("bigquery:{}", self.table).into(),
                message: error.to_string(),
            }),
        }
    }

    /// Saves the alert state as of `at` (a new row: the latest wins).
    pub async fn save_alerts(
        &self,
        state: &AlertState,
        at: DateTime<Utc>,
    ) -> Result<(), HistoryError> {
        let json = serde_json::to_string(state).map_err(|error| HistoryError::Remote {
            action: "write to",
            location: format!("bigquery:{}", self.table),
            message: error.to_string(),
        })?;
        self.insert(at, "alerts", None, json).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_three_valid_names() {
        let name = TableName::parse("nba-props-platform.ops.health_history").unwrap();
        assert_eq!(name.project, "nba-props-platform");
        assert_eq!(name.dataset, "ops");
        assert_eq!(name.table, "health_history");
        assert_eq!(name.quoted(), "`nba-props-platform.ops.health_history`");
        assert_eq!(name.to_string(), "nba-props-platform.ops.health_history");
        for bad in [
            "p.d",
            "p.d.t.x",
            "P.d.t",
            "p..t",
            "p.d-x.t",
            "p.d.t`; DROP TABLE x; --",
            "p.d.t x",
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_bigquery_canonical_in_utc() {
        let at = DateTime::parse_from_rfc3339("2026-02-02T18:00:00.123456789Z")
            .unwrap()
            .to_utc();
        assert_eq!(timestamp(at), "2026-02-02 18:00:00.123456+00:00");
    }
}
