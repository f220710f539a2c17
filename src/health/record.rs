//! What the history stores, whichever store keeps it: one [`RunRecord`] per run, its lines parsed
//! leniently ([`parse_runs`]), and the store's [`HistoryError`]. Both stores (the file store in
//! [`super::store`], the table in [`super::bigquery_store`]) stand on this file, so neither
//! imports the other's types.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{HealthCheck, Score, Verdict};
use crate::checks::Status;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// `read`, `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A remote store (BigQuery) failed or refused.
    #[error("cannot {action} `{location}`: {message}")]
    Remote {
        /// `read`, `write to`, `create`.
        action: &'static str,
        /// `bigquery:PROJECT.DATASET.TABLE`.
        location: String,
        /// Why.
        message: String,
    },
    /// The alert state is not what deployer writes.
    #[error("`{}` is not an alert state: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// One check of a recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedCheck {
    /// The service.
    pub service: String,
    /// The check.
    pub check: String,
    /// The status.
    pub status: Status,
    /// The value.
    pub value: Option<f64>,
}

/// One run, as a line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// The score (passed / total × 100).
    pub score: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Every check.
    pub checks: Vec<RecordedCheck>,
}

impl RunRecord {
    /// The record of a run.
    pub fn new(at: DateTime<Utc>, score: &Score, checks: &[HealthCheck]) -> Self {
        Self {
            at,
            score: score.percent,
            verdict: score.verdict,
            checks: checks
                .iter()
                .map(|check| RecordedCheck {
                    service: check.service.clone(),
                    check: check.check.clone(),
                    status: check.status,
                    value: check.value,
                })
                .collect(),
        }
    }
}

/// The runs of `lines` (JSON, one run each) recorded at or after `since`, oldest first, and
/// how many lines could not be read (skipped, never fatal: one broken line loses one run).
pub fn parse_runs<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    since: DateTime<Utc>,
) -> (Vec<RunRecord>, usize) {
    let mut skipped = 0;
    let mut runs = Vec::new();
    for line in lines.into_iter().filter(|line| !line.trim().is_empty()) {
        match serde_json::from_str::<RunRecord>(line) {
            Ok(run) if run.at >= since => runs.push(run),
            Ok(_) => {}
            Err(_) => skipped += 1,
        }
    }
    runs.sort_by_key(|run| run.at);
    (runs, skipped)
}
